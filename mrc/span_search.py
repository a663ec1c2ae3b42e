"""Exact answer-span search over start/end logits, as tensor code on any device.

A span (i, j) of a window is valid when both tokens lie in the window's context,
i <= j < i + max_answer_length, and the start token i lies in the window's max-context interval
(every paragraph token is scored in exactly one window, BERT's `_check_is_max_context`). Its
score is start[i] + end[j]. We want the k best spans of each group of windows (an example's
windows, or each window alone).

Scoring the whole band [N, T, A] (A = max_answer_length) costs N*T*A adds and a top-k over it.
We avoid both without losing exactness, by thresholds instead of sorted top-k lists:
1. row_best[i] = start[i] + max(end[i : i + A]) is the best span starting at i (a sliding max,
   log2(A) tensor ops).
2. A window with k valid starts has k distinct spans scoring at least its k-th largest
   row_best, so the group's k-th best span scores at least `floor` = the largest of its windows'
   k-th row_best. A span at or above the floor starts in a row whose row_best is at or above it.
3. So only rows with row_best >= floor are scored in full ([C, A], C ~ k per group), only spans
   >= floor are kept, and those few are sorted. Everything tied with the k-th best is among
   them, so the tie rule below decides the order exactly as a full sort would.

Ties are broken the same way on every device: equal scores rank by earlier window, then earlier
start, then earlier end (the shorter span). Candidates are produced in that order and only stable
sorts reorder them.

On CPU a few steps run in numpy on the same memory, where torch's CPU kernels are several times
slower: the k-th largest value of each row (`np.sort` of short rows; `torch.topk` costs ~5x),
broadcast compares, and `flatnonzero` (`torch.nonzero` costs ~5x). The other steps write into
preallocated buffers where they can: on CPU, page faults of fresh [N, T] tensors cost as much as
the arithmetic. NaN logits inside a context give undefined spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

NEG_INF = float("-inf")
# Logit elements per chunk of windows: bounds the [rows, T] temporaries (about 16 MiB of float32
# on CPU, where the whole KorQuAD dev set fits in one chunk; more on GPUs).
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}


@dataclass(frozen=True)
class WindowSpans:
    """Where valid spans may lie in each window, as sequence positions (int64 `[N]` each)."""

    context_begin: Tensor   # first context token: query_length + 2
    context_end: Tensor     # one past the last context token: query_length + 2 + context_length
    start_begin: Tensor     # max-context interval [start_begin, start_end): where a span may start
    start_end: Tensor

    def take(self, rows: slice | Tensor) -> WindowSpans:
        """The bounds of windows `rows` only."""
        return WindowSpans(self.context_begin[rows], self.context_end[rows], self.start_begin[rows],
                           self.start_end[rows])


@dataclass(frozen=True)
class SpanCandidates:
    """The k best valid spans of each group (all `[G, k]`), best first.

    Groups with fewer than k valid spans are padded with score -inf; their other columns are
    meaningless there and must be filtered by `score > -inf`.
    """

    score: Tensor        # float32: start_logit + end_logit
    start: Tensor        # int64 sequence positions
    end: Tensor          # int64 sequence positions, inclusive
    start_logit: Tensor  # float32
    end_logit: Tensor    # float32
    row: Tensor          # int64 row of the logits (window) the span lies in


def top_k_stable(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest values of each row, largest first, equal values in index order.

    values: `[R, M]`. Returns (values `[R, k]`, indices `[R, k]`), k clipped to M.
    """
    order = values.sort(dim=1, descending=True, stable=True)
    return order.values[:, :k], order.indices[:, :k]


def kth_largest(values: Tensor, k: int) -> Tensor:
    """The k-th largest value of each row of `values` `[R, M]` (-inf when M < k), as `[R]`."""
    rows, width = values.shape
    if width < k:
        return values.new_full((rows,), NEG_INF)
    if values.device.type == "cpu":
        # numpy's vectorised sort of short rows beats torch's topk/kthvalue several times on CPU.
        return torch.from_numpy(np.sort(values.numpy(), axis=1)[:, width - k])
    return top_k_stable(values, k)[0][:, k - 1]


def in_range(pos: Tensor, begin: Tensor, end: Tensor) -> Tensor:
    """bool `[R, T]`: begin[r] <= pos[t] < end[r], for pos `[T]` and begin, end `[R]`."""
    if pos.device.type == "cpu":
        # numpy's broadcast compares on 16-bit positions are ~4x faster than torch's on CPU.
        small = np.int16 if len(pos) < 1 << 15 else np.int64
        p = pos.numpy().astype(small)
        # Clipping to [0, T] changes no answer and keeps the bounds inside 16 bits.
        lo, hi = (np.clip(t.numpy(), 0, len(pos)).astype(small)[:, None] for t in (begin, end))
        return torch.from_numpy((p >= lo) & (p < hi))
    return (pos >= begin[:, None]) & (pos < end[:, None])


def sliding_max(x: Tensor, width: int) -> Tensor:
    """out[:, t] = max(x[:, t : t + width]), reading -inf past the end. x: `[R, T]`."""
    return _sliding_max_padded(F.pad(x, (0, width - 1), value=NEG_INF), width)


def _sliding_max_padded(padded: Tensor, width: int) -> Tensor:
    """`sliding_max` of x from x padded with width - 1 columns of -inf: `[R, T + width - 1]` -> `[R, T]`.

    The steps write into two scratch buffers: fresh tensors per step cost more in page faults
    than the maxima themselves on CPU.
    """
    length = padded.shape[1] - (width - 1)
    scratch = (torch.empty_like(padded), torch.empty_like(padded))
    cur, span, which = padded, 1, 0
    # cur[:, t] holds the max over [t, t + span); doubling span costs one op per step.
    while span * 2 <= width:
        nxt = scratch[which][:, :cur.shape[1] - span]
        torch.maximum(cur[:, :-span], cur[:, span:], out=nxt)
        cur, span, which = nxt, span * 2, 1 - which
    # Two overlapping windows of `span` cover [t, t + width) exactly.
    return torch.maximum(cur[:, :length], cur[:, width - span: width - span + length],
                         out=scratch[which][:, :length])


def top_spans_per_group(start_logits: Tensor, end_logits: Tensor, windows: WindowSpans, group_sizes: Tensor,
                        max_answer_length: int, k: int) -> SpanCandidates:
    """The k best valid spans of every group of consecutive windows (`[G, k]`; exact).

    start_logits, end_logits: `[N, T]`, any float dtype; values outside the context (padding
    included) may be anything, they are masked here. group_sizes: int64 `[G]`, windows per group,
    summing to N; within a group, earlier rows are earlier windows (for ties). Rows go in chunks
    of whole groups to bound memory.
    """
    n, length = start_logits.shape
    device = start_logits.device
    k = min(k, length)
    limit = max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cuda"]) // max(length, 1))
    parts = []
    for g_lo, g_hi, r_lo, r_hi in _chunks(group_sizes.tolist(), limit):            # host sync, once
        rows = slice(r_lo, r_hi)
        part = _top_spans_dense(start_logits[rows], end_logits[rows], windows.take(rows), group_sizes[g_lo:g_hi],
                                max_answer_length, k)
        parts.append(part if r_lo == 0 else SpanCandidates(part.score, part.start, part.end, part.start_logit,
                                                           part.end_logit, part.row + r_lo))
    return parts[0] if len(parts) == 1 else SpanCandidates(*(torch.cat(columns) for columns in zip(*(
        (p.score, p.start, p.end, p.start_logit, p.end_logit, p.row) for p in parts))))


def _chunks(sizes: list[int], limit: int) -> list[tuple[int, int, int, int]]:
    """(first group, end group, first row, end row) of consecutive chunks of whole groups, each
    of at most `limit` rows unless one group alone is longer. At least one chunk."""
    chunks, g_lo, r_lo, rows = [], 0, 0, 0
    for g, size in enumerate(sizes):
        if rows and rows + size > limit:
            chunks.append((g_lo, g, r_lo, r_lo + rows))
            g_lo, r_lo, rows = g, r_lo + rows, 0
        rows += size
    chunks.append((g_lo, len(sizes), r_lo, r_lo + rows))
    return chunks


def _top_spans_dense(start_logits: Tensor, end_logits: Tensor, windows: WindowSpans, group_sizes: Tensor,
                     max_answer_length: int, k: int) -> SpanCandidates:
    """`top_spans_per_group` on one chunk of whole groups, its rows numbered from 0."""
    n, device = start_logits.shape[0], start_logits.device
    groups = len(group_sizes)
    if n == 0:
        empty = torch.empty((groups, k), device=device)
        return SpanCandidates(empty, empty.long(), empty.long(), empty, empty, empty.long())
    end, row_best = _row_best(start_logits, end_logits, windows, max_answer_length)   # [n, T + A - 1], [n, T]
    group_of_row = torch.repeat_interleave(torch.arange(groups, device=device), group_sizes, output_size=n)
    floor = torch.full((groups,), NEG_INF, device=device).scatter_reduce(
        0, group_of_row, kth_largest(row_best, k).to(device), reduce="amax")         # [G]
    # The lowest finite float, where a group has fewer than k valid starts: -inf never qualifies.
    row_floor = floor.clamp(min=torch.finfo(torch.float32).min).index_select(0, group_of_row)   # [n]
    spans = _spans_above_floor(start_logits, end, row_best, row_floor, max_answer_length)
    return _best_per_group(spans, group_of_row.index_select(0, spans.row), groups, k)


def _row_best(start_logits: Tensor, end_logits: Tensor, windows: WindowSpans, width: int) -> tuple[Tensor, Tensor]:
    """(end logits banded as `_end_logits_banded`, row_best `[n, T]`: the best span score of each
    start, -inf where no span may start). Columns past the last context are dropped."""
    length = max(1, min(start_logits.shape[1], int(windows.context_end.max())))      # host sync
    end = _end_logits_banded(end_logits[:, :length], windows.context_end.clamp(max=length), width)
    row_best = _sliding_max_padded(end, width)                                        # [n, T] view
    row_best += start_logits[:, :length]
    may_start = in_range(torch.arange(length, device=end.device), windows.start_begin, windows.start_end)
    torch.where(may_start, row_best, torch.tensor(NEG_INF, device=end.device), out=row_best)
    return end, row_best


def _spans_above_floor(start_logits: Tensor, end: Tensor, row_best: Tensor, row_floor: Tensor,
                       width: int) -> SpanCandidates:
    """Every valid span scoring at least its row's floor, flat (`[S]` each), in (window, start, end)
    order; only the starts whose row_best reaches the floor have their band scored."""
    length, stride = row_best.shape[1], end.shape[1]
    at = flat_at_least(row_best, row_floor)                                           # [C] (window, start) order
    cand_row, cand_start = at // length, at % length
    band = end.view(-1).unfold(0, width, 1).index_select(0, cand_row * stride + cand_start)        # [C, A]
    cand_start_logit = start_logits.reshape(-1).index_select(
        0, cand_row * start_logits.shape[1] + cand_start).float()                    # [C]
    band_score = band + cand_start_logit[:, None]                                     # [C, A]
    at = flat_at_least(band_score, row_floor.index_select(0, cand_row))               # [S]
    cand, offset = at // width, at % width
    start = cand_start.index_select(0, cand)
    return SpanCandidates(
        score=band_score.view(-1).index_select(0, at) + 0.0,    # -0.0 becomes 0.0, as the sort key needs
        start=start,
        end=start + offset,
        start_logit=cand_start_logit.index_select(0, cand),
        end_logit=band.reshape(-1).index_select(0, at),
        row=cand_row.index_select(0, cand),
    )


def _best_per_group(spans: SpanCandidates, group: Tensor, groups: int, k: int) -> SpanCandidates:
    """The k best of flat `spans` `[S]` in each of `groups` groups (`group` `[S]`), as `[G, k]`.

    The stable sort keeps equal scores in the input order, (window, start, end).
    """
    order = _by_group_best_first(group, spans.score)                                 # [S]
    group = group.index_select(0, order)
    spans_per_group = torch.bincount(group, minlength=groups)                        # [G]
    first = (spans_per_group.cumsum(0) - spans_per_group).index_select(0, group)      # [S]
    rank = torch.arange(len(order), device=group.device) - first
    top = flat_at_least(-rank[None, :], rank.new_full((1,), 1 - k))                  # [<= G*k]: rank < k
    order, slot = order.index_select(0, top), (group * k + rank).index_select(0, top)

    def place(values: Tensor, fill: float) -> Tensor:
        out = values.new_full((groups * k,), fill)
        out.index_copy_(0, slot, values.index_select(0, order))
        return out.view(groups, k)

    return SpanCandidates(place(spans.score, NEG_INF), place(spans.start, 0), place(spans.end, 0),
                          place(spans.start_logit, NEG_INF), place(spans.end_logit, NEG_INF), place(spans.row, 0))


def _end_logits_banded(end_logits: Tensor, context_end: Tensor, width: int) -> Tensor:
    """End logits `[n, T]` as float32 `[n, T + A - 1]`, -inf on the A - 1 columns after each context.

    Those are the only columns past the context that the band of a valid start reaches (it starts
    before the context end), so garbage further right is left alone: it only reaches rows that
    are not valid starts, which are masked.
    """
    n, length = end_logits.shape
    stride = length + width - 1
    end = torch.empty((n, stride), device=end_logits.device)
    end[:, :length] = end_logits
    rows = torch.arange(n, device=end.device)[:, None] * stride                           # [n, 1]
    end.view(-1)[(rows + context_end[:, None] + torch.arange(width - 1, device=end.device)).view(-1)] = NEG_INF
    return end


def flat_at_least(values: Tensor, row_floor: Tensor) -> Tensor:
    """Indices `[K]`, in row-major order, of the entries of `values` `[R, M]` at or above their row's
    floor `[R]` (int64)."""
    if values.device.type == "cpu":
        # numpy's broadcast compare and flatnonzero are several times faster than torch's on CPU.
        return torch.from_numpy(np.flatnonzero(values.numpy() >= row_floor.numpy()[:, None]))
    return (values >= row_floor[:, None]).reshape(-1).nonzero()[:, 0]

def _by_group_best_first(group: Tensor, score: Tensor) -> Tensor:
    """The order `[S]` that sorts spans by group, then by score descending, ties kept in input order.

    One stable sort of an int64 key: the group in the high 32 bits, and in the low 32 the score's
    float32 bits turned into an integer of the same order (negative floats have their magnitude
    bits flipped), inverted for descending order. score must hold no -0.0 and no NaN.
    """
    bits = score.view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()                        # [S] same order as score
    key = group * (1 << 32) + ((1 << 31) - 1 - ordered)                                  # [S]
    return key.sort(stable=True).indices
