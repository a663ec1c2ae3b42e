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

On CPU the cost is dominated by per-row top-k selection, so windows go in chunks of similar
length (each cut to its longest window and small enough for the cache) and wide rows are ranked
in two levels (block maxima first). NaN logits inside a context give undefined spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NEG_INF = float("-inf")
# Logit elements per chunk of windows: about 1 MiB of float32 on CPU (cache-sized), big on GPU.
CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 26}


@dataclass(frozen=True)
class WindowSpans:
    """Where valid spans may lie in each window, as sequence positions (int64 `[N]` each)."""

    context_begin: Tensor   # first context token: query_length + 2
    context_end: Tensor     # one past the last context token: query_length + 2 + context_length
    start_begin: Tensor     # max-context interval [start_begin, start_end): where a span may start
    start_end: Tensor

    def take(self, rows: Tensor) -> WindowSpans:
        """The bounds of windows `rows` only."""
        return WindowSpans(self.context_begin[rows], self.context_end[rows], self.start_begin[rows],
                           self.start_end[rows])


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

    values: `[R, M]`. Returns (values `[R, k]`, distinct indices `[R, k]`), k clipped to M.
    """
    index = top_k_indices(values, k)                             # [R, k] ascending
    picked = values.gather(1, index)                             # [R, k]
    order = picked.sort(dim=1, descending=True, stable=True).indices
    return picked.gather(1, order), index.gather(1, order)


def top_k_indices(values: Tensor, k: int) -> Tensor:
    """Indices `[R, k]` of the k largest values of each row, in ascending index order.

    At the k-th place, equal values are taken earliest index first, so the kept set does not
    depend on the device's topk either. Wide rows are searched in two levels (see
    `_top_k_set_by_blocks`): on CPU topk costs ~10 ns per value, a block max well under 1.
    """
    width = values.shape[1]
    k = min(k, width)
    block = int((width / k) ** 0.5)         # balances reading M / block maxima against k * block values
    if block >= 3 and width // block > k:
        index = _top_k_set_by_blocks(values, k, block)
    else:
        index = _top_k_set(values, k)
    return index.sort(dim=1).values


def _top_k_set(values: Tensor, k: int) -> Tensor:
    """Indices `[R, k]` (in no order) of the k largest values, ties at the k-th place to the earliest."""
    width = values.shape[1]
    probe = values.topk(min(k + 1, width), dim=1)                # [R, k+1] largest first
    index = probe.indices[:, :k]                                 # [R, k]
    if width > k:
        kth = probe.values[:, k - 1]
        # The kept set is ambiguous only where the k-th value ties with the next one.
        ambiguous = (kth == probe.values[:, k]).nonzero()[:, 0]  # [R'] (few rows)
        if len(ambiguous):
            index = index.index_put((ambiguous,), _earliest_top_k(values[ambiguous], kth[ambiguous], k))
    return index


def _earliest_top_k(values: Tensor, kth: Tensor, k: int) -> Tensor:
    """Indices `[R, k]` of the values above `kth` plus the earliest ones equal to it."""
    above = values > kth[:, None]                                # [R, M]
    ties = values == kth[:, None]                                # [R, M]
    room = k - above.sum(dim=1, keepdim=True)                    # [R, 1] tied places still free
    keep = above | (ties & (ties.cumsum(dim=1) <= room))         # [R, M] exactly k per row
    return keep.nonzero()[:, 1].view(len(values), k)


def _top_k_set_by_blocks(values: Tensor, k: int, block: int) -> Tensor:
    """`_top_k_set` reading only the k blocks of `block` values with the largest maxima.

    Exact: a value outside those blocks has k block maxima at least as large ahead of it, and
    where maxima tie at the k-th place the earliest block holds the earliest equal values.
    The -inf padding of the last block sits after every real value, so it is never kept.
    """
    rows, width = values.shape
    blocks = -(-width // block)
    padded = F.pad(values, (0, blocks * block - width), value=NEG_INF)               # [R, nb * B]
    maxima = padded.view(rows, blocks, block).amax(dim=2)                             # [R, nb]
    chosen = top_k_indices(maxima, k)                                                 # [R, k] ascending
    columns = (chosen[:, :, None] * block + torch.arange(block, device=values.device)).view(rows, -1)
    return columns.gather(1, _top_k_set(padded.gather(1, columns), k))                # [R, k]


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
    """logits as float32 `[N, T]` with -inf outside [begin, end) of each row."""
    pos = torch.arange(logits.shape[1], device=logits.device)    # [T]
    inside = (pos >= begin[:, None]) & (pos < end[:, None])      # [N, T]
    return torch.where(inside, logits.float(), NEG_INF)


def top_spans_per_window(start_logits: Tensor, end_logits: Tensor, windows: WindowSpans,
                         max_answer_length: int, k: int) -> SpanCandidates:
    """The k best valid spans of every window (exact, see the module doc).

    start_logits, end_logits: `[N, T]`, any float dtype; values outside the context (padding
    included) may be anything, they are masked here. Windows are searched in chunks of similar
    context end: each chunk is cut to its own longest window (less padding) and, on CPU, stays
    small enough to live in cache.
    """
    n, length = start_logits.shape
    device = start_logits.device
    k = min(k, length)
    if n == 0:
        empty = torch.empty((0, k), device=device)
        return SpanCandidates(empty, empty.long(), empty.long(), empty, empty)
    context_end = windows.context_end.clamp(max=length)
    order = torch.argsort(context_end, stable=True)                                   # [N] shortest first
    chunk_widths = context_end[order].tolist()                                        # host sync, once
    rows_per_chunk = max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cuda"]) // length)
    parts = []
    for lo in range(0, n, rows_per_chunk):
        rows = order[lo:lo + rows_per_chunk]
        width = max(1, chunk_widths[min(lo + rows_per_chunk, n) - 1])
        # Narrow first, then pick rows: only `width` columns are copied.
        part = _top_spans_dense(start_logits[:, :width][rows], end_logits[:, :width][rows], windows.take(rows),
                                max_answer_length, k)
        parts.append([F.pad(t, (0, k - t.shape[1]), value=NEG_INF if t.is_floating_point() else 0)
                      for t in (part.score, part.start, part.end, part.start_logit, part.end_logit)])
    back = torch.argsort(order)                                                       # [N] chunk order -> input order
    return SpanCandidates(*(torch.cat(columns)[back] for columns in zip(*parts)))


def _top_spans_dense(start_logits: Tensor, end_logits: Tensor, windows: WindowSpans,
                     max_answer_length: int, k: int) -> SpanCandidates:
    """`top_spans_per_window` on one chunk, all rows padded to the same width T."""
    n = start_logits.shape[0]
    width = max_answer_length
    start = masked_logits(start_logits, windows.start_begin, windows.start_end)      # [n, T]
    end = masked_logits(end_logits, windows.context_begin, windows.context_end)      # [n, T]
    row_best = start + sliding_max(end, width)                                        # [n, T]
    rows = top_k_indices(row_best, k)   # [n, k] in position order, so flat band order is (start, end)
    k_rows = rows.shape[1]

    # bands[b, i] is the view end[b, i : i + A]; indexing it copies only the kept rows' bands.
    bands = F.pad(end, (0, width - 1), value=NEG_INF).unfold(1, width, 1)             # [n, T, A] view
    band_end_logit = bands[torch.arange(n, device=rows.device)[:, None], rows].view(n, -1)   # [n, k*A]
    row_start_logit = start.gather(1, rows)                                           # [n, k]
    band = (row_start_logit[:, :, None] + band_end_logit.view(n, k_rows, width)).view(n, -1)   # [n, k*A]
    score, flat = top_k_stable(band, k)                                               # [n, k]
    return SpanCandidates(
        score=score,
        start=rows.gather(1, flat // width),
        end=rows.gather(1, flat // width) + flat % width,
        start_logit=row_start_logit.gather(1, flat // width),
        end_logit=band_end_logit.gather(1, flat),
    )
