"""Exact answer-span search over start/end logits, as tensor code on any device.

A span (i, j) of a window is valid when both tokens lie in the window's context,
i <= j < i + max_answer_length, and the start token i lies in the window's max-context interval
(every paragraph token is scored in exactly one window, BERT's `_check_is_max_context`). Its
score is start[i] + end[j].

Scoring the whole band [N, T, A] (A = max_answer_length) costs N*T*A adds. We avoid it without
losing exactness: the best span starting at i scores start[i] + max(end[i : i + A]) (a sliding
max, log2(A) tensor ops), and a span can only be among a window's k best if its start row is
among the k best rows, because each better row already holds a span that beats it. So we keep
the k best rows per window and score only their band, [N, k, A].

Ties are broken the same way on every device: equal scores rank by earlier window, then earlier
start, then earlier end (the shorter span). `torch.topk` alone does not promise an order among
equal values, so `top_k_stable` fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NEG_INF = float("-inf")


@dataclass(frozen=True)
class WindowSpans:
    """Where valid spans may lie in each window, as sequence positions (int64 `[N]` each)."""

    context_begin: Tensor   # first context token: query_length + 2
    context_end: Tensor     # one past the last context token: query_length + 2 + context_length
    start_begin: Tensor     # max-context interval [start_begin, start_end): where a span may start
    start_end: Tensor


@dataclass(frozen=True)
class SpanCandidates:
    """The k best valid spans of each window, best first (all `[N, k]`).

    Rows with fewer than k valid spans are padded with score -inf; their positions are
    meaningless and must be filtered by `score > -inf`.
    """

    score: Tensor        # float32: start_logit + end_logit
    start: Tensor        # int64 sequence positions
    end: Tensor          # int64 sequence positions, inclusive
    start_logit: Tensor  # float32
    end_logit: Tensor    # float32


def top_k_stable(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest values of each row, largest first, equal values in index order.

    values: `[R, M]` without NaN. Returns (values `[R, k]`, indices `[R, k]`), k clipped to M.
    At the k-th place, equal values are taken earliest index first, so the kept set does not
    depend on the device's topk either.
    """
    rows, width = values.shape
    k = min(k, width)
    kth = values.topk(k, dim=1).values[:, -1:]                   # [R, 1]
    above = values > kth                                         # [R, M]
    ties = values == kth                                         # [R, M]
    room = k - above.sum(dim=1, keepdim=True)                    # [R, 1] tied places still free
    keep = above | (ties & (ties.cumsum(dim=1) <= room))         # [R, M] exactly k per row
    index = keep.nonzero()[:, 1].view(rows, k)                   # [R, k] ascending
    picked = values.gather(1, index)                             # [R, k]
    order = picked.sort(dim=1, descending=True, stable=True).indices
    return picked.gather(1, order), index.gather(1, order)


def sliding_max(x: Tensor, width: int) -> Tensor:
    """out[:, t] = max(x[:, t : t + width]), reading -inf past the end. x: `[R, T]`."""
    length = x.shape[1]
    cur = F.pad(x, (0, width - 1), value=NEG_INF)                # [R, T + width - 1]
    span = 1
    # cur[:, t] holds the max over [t, t + span); doubling span costs one op per step.
    while span * 2 <= width:
        cur = torch.maximum(cur[:, :-span], cur[:, span:])
        span *= 2
    # Two overlapping windows of `span` cover [t, t + width) exactly.
    return torch.maximum(cur[:, :length], cur[:, width - span: width - span + length])


def masked_logits(logits: Tensor, begin: Tensor, end: Tensor) -> Tensor:
    """logits as float32 `[N, T]` with -inf outside [begin, end) of each row (and at NaN)."""
    logits = logits.float()
    pos = torch.arange(logits.shape[1], device=logits.device)    # [T]
    inside = (pos >= begin[:, None]) & (pos < end[:, None])      # [N, T]
    return torch.where(inside & ~logits.isnan(), logits, NEG_INF)


def top_spans_per_window(start_logits: Tensor, end_logits: Tensor, windows: WindowSpans,
                         max_answer_length: int, k: int) -> SpanCandidates:
    """The k best valid spans of every window (exact, see the module doc).

    start_logits, end_logits: `[N, T]`, any float dtype; values outside the context (padding
    included) may be anything, they are masked here.
    """
    n = start_logits.shape[0]
    width = max_answer_length
    start = masked_logits(start_logits, windows.start_begin, windows.start_end)      # [N, T]
    end = masked_logits(end_logits, windows.context_begin, windows.context_end)      # [N, T]
    row_best = start + sliding_max(end, width)                                        # [N, T]
    _, rows = top_k_stable(row_best, k)                                               # [N, k]
    rows = rows.sort(dim=1).values      # position order, so flat index order is (start, end)

    end_padded = F.pad(end, (0, width), value=NEG_INF)                                # [N, T + A]
    band_ends = rows[:, :, None] + torch.arange(width, device=rows.device)           # [N, k, A]
    band_end_logit = end_padded.gather(1, band_ends.view(n, -1))                      # [N, k*A]
    band_start_logit = start.gather(1, rows).repeat_interleave(width, dim=1)          # [N, k*A]
    score, flat = top_k_stable(band_start_logit + band_end_logit, k)                  # [N, k]

    span_start = rows.gather(1, flat // width)                                        # [N, k]
    span_end = span_start + flat % width                                              # [N, k]
    return SpanCandidates(
        score=score,
        start=span_start,
        end=span_end,
        start_logit=band_start_logit.gather(1, flat),
        end_logit=band_end_logit.gather(1, flat),
    )


def null_scores(start_logits: Tensor, end_logits: Tensor) -> Tensor:
    """Score of the "no answer" span (CLS, CLS) per window: `[N]` float32."""
    return start_logits[:, 0].float() + end_logits[:, 0].float()
