"""From start/end logits of windows to one answer and an n-best list per example.

The span search itself is `mrc.span_search` (exact, tensor code on the logits' device): it
returns the n best spans of each example over all its windows. Here we add the "no answer" option
when asked, compute n-best probabilities, and turn token positions into character offsets and
text. Every n-best text is sliced during `decode`; the n-best lists are kept as columns
(`NBestTable`) and become lists of dicts only when `Prediction.nbest` is read (writing JSON).

Semantics (those of HF `postprocess_qa_predictions`, the legacy decoder, except where noted):
- n-best = the `n_best_size` best valid spans of the example over all its windows, best first;
  probability = softmax of start_logit + end_logit over the entries of the list.
- Entries are distinct spans. Like HF `run_qa.py` (and unlike legacy `run_squad.py`) we do not
  drop a span whose text equals a better span's text; the best answer is the same either way.
- Equal scores rank by earlier window, earlier start, then earlier end, on every device.
- With `null_score_diff_threshold` set (SQuAD v2, KLUE): the null score of an example is the
  smallest start[CLS] + end[CLS] over its windows; the null entry ("" at char -1..-1) joins the
  n-best by its score, or is appended when it ranks below all of them; the answer is "" when
  null_score > best_span_score + threshold. Without it the answer is always the best span.
- An example whose windows hold no valid span (an empty context) gets "" and an empty n-best
  (HF inserts a placeholder "empty" text instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mrc.config import field
from mrc.errors import MRCError
from mrc.span_search import NEG_INF, WindowSpans, top_spans_per_group
from mrc.store import DecodableWindows

NBEST_KEYS = ("text", "probability", "start_logit", "end_logit", "char_start", "char_end")
# Why a decoded example has no n-best at all (predict.py's errors.jsonl, the Reader's errors).
NO_ANSWER_SPAN = "no answer span: no context tokens left after tokenization"


@dataclass(frozen=True)
class DecodeConfig:
    """How logits become answers; shared by training-time evaluation, predict.py and the ensemble."""

    n_best_size: int = field(20, "answers kept per question in the n-best file")
    max_answer_length: int = field(30, "longest answer in tokens")
    version_2_with_negative: bool = field(False, "questions may be unanswerable (SQuAD v2, KLUE MRC): they train "
                                          "toward [CLS], and the answer is '' when the null score wins")
    null_score_diff_threshold: float = field(0.0, "with --version_2_with_negative: answer '' when "
                                             "null score - best span score > this")

    def __post_init__(self) -> None:
        for name in ("n_best_size", "max_answer_length"):
            if getattr(self, name) < 1:
                raise MRCError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not math.isfinite(self.null_score_diff_threshold):
            raise MRCError(f"--null_score_diff_threshold must be a finite number, got {self.null_score_diff_threshold}")

    @property
    def null_threshold(self) -> float | None:
        """The threshold `decode` takes: None unless unanswerable questions are expected."""
        return self.null_score_diff_threshold if self.version_2_with_negative else None


class NBestTable:
    """The n-best entries of every decoded example as columns, texts included.

    Row e holds example e's entries, best first: `count[e]` of them, a prefix of columns `[E, n+1]`;
    `texts[first[e] : first[e] + count[e]]` are their texts. Building ~20 dicts per question costs
    more than the whole search, so `Prediction.nbest` turns a row into dicts on first access only.
    """

    def __init__(self, texts: list[str], count: np.ndarray, char_start: np.ndarray, char_end: np.ndarray,
                 start_logit: np.ndarray, end_logit: np.ndarray, probability: np.ndarray):
        self.texts = texts                  # [sum(count)] entry texts, row after row ("" for the null entry)
        self.count = count                  # [E] entries in use
        self.first = np.cumsum(count) - count   # [E] where each row's texts begin
        self.char_start, self.char_end = char_start, char_end   # [E, n+1] paragraph offsets, -1 for null
        self.start_logit, self.end_logit = start_logit, end_logit   # [E, n+1] float32
        self.probability = probability      # [E, n+1] float64, softmax over each row's entries

    def entries(self, e: int) -> list[dict]:
        """The n-best of example row e as dicts with the keys NBEST_KEYS, best first."""
        count, first = int(self.count[e]), int(self.first[e])
        columns = (column[e, :count].tolist() for column in (self.probability, self.start_logit, self.end_logit,
                                                              self.char_start, self.char_end))
        # A dict display is about twice as fast as dict(zip(NBEST_KEYS, ...)); same keys, same order.
        return [{"text": text, "probability": p, "start_logit": sl, "end_logit": el, "char_start": lo, "char_end": hi}
                for text, p, sl, el, lo, hi in zip(self.texts[first:first + count], *columns)]


class Prediction:
    """The answer to one example. Offsets index the example's context (paragraph text).

    text is "" (char_start = char_end = -1) when the example is judged unanswerable or has no
    valid span; score is start_logit + end_logit of the answer (the null score for "");
    null_score_diff = null score - best span score, set only when decoding with a threshold.
    """

    __slots__ = ("example_id", "text", "char_start", "char_end", "score", "null_score_diff", "_nbest", "_table",
                 "_row")

    def __init__(self, example_id: str, text: str, char_start: int, char_end: int, score: float,
                 nbest: list[dict] | None = None, null_score_diff: float | None = None,
                 table: NBestTable | None = None, row: int = -1):
        self.example_id, self.text, self.char_start, self.char_end = example_id, text, char_start, char_end
        self.score, self.null_score_diff = score, null_score_diff
        self._nbest, self._table, self._row = nbest if nbest is not None else [], table, row

    @property
    def nbest(self) -> list[dict]:
        """Entries best first, each with the keys NBEST_KEYS; probabilities sum to 1."""
        if self._table is not None:
            self._nbest, self._table = self._table.entries(self._row), None
        return self._nbest

    def __repr__(self) -> str:
        return (f"Prediction(example_id={self.example_id!r}, text={self.text!r}, char_start={self.char_start}, "
                f"char_end={self.char_end}, score={self.score}, null_score_diff={self.null_score_diff})")


@dataclass(frozen=True)
class SpanColumns:
    """The n best spans of each example on the host (all `[E, n]`, best first, score -inf = none)."""

    score: np.ndarray
    row: np.ndarray          # row of the store-ordered windows the span lies in
    start: np.ndarray        # sequence positions in that window
    end: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray


@dataclass(frozen=True)
class NullEntry:
    """Each example's "no answer" option (all `[E]`): its score and the CLS logits behind it."""

    score: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray


def window_spans(store: DecodableWindows, windows: np.ndarray, device: torch.device) -> WindowSpans:
    """Sequence-position bounds of the context and the max-context interval of `windows`."""
    table = store.windows

    def column(values: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(values)[windows].astype(np.int64)).to(device)

    context_begin = column(table.query_length) + 2       # [CLS] q... [SEP]
    return WindowSpans(
        context_begin=context_begin,
        context_end=context_begin + column(table.context_length),
        start_begin=context_begin + column(table.max_context_start),
        start_end=context_begin + column(table.max_context_end),
    )


def min_null_per_example(null: Tensor, first: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """(null score `[E]`, row of the window holding it `[E]`): the minimum of `null` `[N]` over
    each example's windows.

    The minimum, as the legacy decoder: the window that sees the answer worst decides how
    answerable the example is. Equal minima go to the earliest window.
    """
    groups, most = len(counts), int(counts.max())
    group_of_row = torch.repeat_interleave(torch.arange(groups, device=counts.device), counts)
    slot = torch.arange(len(null), device=null.device) - first[group_of_row]
    grid = null.new_full((groups, most), float("inf"))                                          # [E, W]
    grid[group_of_row, slot] = null
    best_slot = grid.argmin(dim=1)              # first minimum on ties (documented by torch)
    return grid.gather(1, best_slot[:, None])[:, 0], first + best_slot


def nbest_layout(span_score: np.ndarray, null: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of the final n-best entries `[E, n+1]` in order, which entry is the null, and which span.

    Without a null score the last column is empty (-inf). With one, the null entry takes its
    place by score (spans first on equal scores, as HF appends the null after the spans), the
    list is cut to n entries, and a null that ranks below all n spans is appended as entry n+1.
    """
    groups, n = span_score.shape
    place = np.arange(n + 1)[None, :]                                              # [1, n+1]
    if null is None:
        rank = np.full((groups, 1), n)
    else:
        rank = (span_score >= null[:, None]).sum(axis=1, keepdims=True)            # [E, 1]
    span_index = np.where(place < rank, place, place - 1).clip(0, n - 1)           # [E, n+1]
    is_null = np.broadcast_to(place == rank, (groups, n + 1))
    scores = np.take_along_axis(span_score, span_index, axis=1)
    if null is None:
        scores = np.where(is_null, NEG_INF, scores)
    else:
        scores = np.where(is_null, null[:, None], scores)
        scores = np.where((place == n) & (rank < n), NEG_INF, scores)               # cut to n
    return scores, is_null, span_index


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax over the finite entries of each row (float64); rows with none give zeros."""
    scores = scores.astype(np.float64)
    top = scores.max(axis=1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def decode(start_logits, end_logits, store: DecodableWindows, window_indices, n_best_size: int, max_answer_length: int,
           null_score_diff_threshold: float | None = None) -> list[Prediction]:
    """One Prediction per example that has windows among `window_indices`, in store order.

    start_logits, end_logits: `[N, T]` tensors (any device, any float dtype) or arrays; row r
    belongs to window `window_indices[r]` (any order, no repeats). Positions past a window's
    sequence length may hold anything.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"n_best_size ({n_best_size}) and max_answer_length ({max_answer_length}) must be >= 1")
    start_logits, end_logits = torch.as_tensor(start_logits), torch.as_tensor(end_logits)
    window_indices = np.asarray(window_indices, dtype=np.int64)
    if start_logits.shape != end_logits.shape or start_logits.shape[0] != len(window_indices):
        raise ValueError(f"logits {tuple(start_logits.shape)} / {tuple(end_logits.shape)} do not match "
                         f"{len(window_indices)} window indices")
    if len(window_indices) == 0:
        return []
    order = np.argsort(window_indices, kind="stable")
    windows = window_indices[order]
    if np.any(windows[1:] == windows[:-1]):
        raise ValueError("window_indices repeats a window; each window must be decoded once")
    device = start_logits.device
    # Rows in store order, so each example's windows are consecutive and ties go to earlier windows.
    if np.any(order != np.arange(len(order))):
        rows = torch.from_numpy(order).to(device)
        start_logits, end_logits = start_logits[rows], end_logits[rows]
    examples, first_row, counts = np.unique(np.asarray(store.windows.example_index)[windows], return_index=True,
                                            return_counts=True)
    counts_t = torch.from_numpy(counts.astype(np.int64)).to(device)
    best = top_spans_per_group(start_logits, end_logits, window_spans(store, windows, device), counts_t,
                               max_answer_length, n_best_size)
    null = None
    if null_score_diff_threshold is not None:
        cls_start, cls_end = start_logits[:, 0].float(), end_logits[:, 0].float()       # [N]
        null_score, null_row = min_null_per_example(cls_start + cls_end, torch.from_numpy(first_row).to(device),
                                                    counts_t)
        null = NullEntry(null_score.cpu().numpy(), cls_start[null_row].cpu().numpy(),
                         cls_end[null_row].cpu().numpy())
    columns = SpanColumns(*(t.cpu().numpy() for t in (best.score, best.row, best.start, best.end,
                                                       best.start_logit, best.end_logit)))
    return _predictions(store, windows, examples, columns, null, null_score_diff_threshold)


def _predictions(store, windows: np.ndarray, examples: np.ndarray, spans: SpanColumns, null: NullEntry | None,
                 threshold: float | None) -> list[Prediction]:
    """Host side: char offsets and texts of the answers and of every n-best entry."""
    entry_score, is_null, span_index = nbest_layout(spans.score, None if null is None else null.score)   # [E, n+1]
    count = np.isfinite(entry_score).sum(axis=1)            # finite entries form a prefix of each row
    char_start, char_end = _span_chars(store, windows, spans, np.isfinite(spans.score))               # [E, n]

    def entries(span_values: np.ndarray, null_values) -> np.ndarray:
        """A per-span column `[E, n]` laid out as the n-best entries `[E, n+1]`."""
        values = np.take_along_axis(span_values, span_index, axis=1)
        return np.where(is_null, null_values, values) if null is not None else values

    entry_start, entry_end = entries(char_start, -1), entries(char_end, -1)
    # All paragraphs in one string (decoded once per store): every text is one slice of it.
    paragraphs = store.all_paragraph_texts
    base = paragraphs.base[np.asarray(store.example_paragraph)[examples]]                           # [E]
    used = np.arange(entry_score.shape[1])[None, :] < count[:, None]                                # [E, n+1]
    lo = np.where(entry_start >= 0, entry_start + base[:, None], 0)[used].tolist()
    hi = np.where(entry_start >= 0, entry_end + base[:, None], 0)[used].tolist()
    joined = paragraphs.joined
    table = NBestTable([joined[a:b] for a, b in zip(lo, hi)], count, entry_start, entry_end,
                       entries(spans.start_logit, None if null is None else null.start_logit[:, None]),
                       entries(spans.end_logit, None if null is None else null.end_logit[:, None]),
                       probabilities(entry_score))

    best_score = spans.score[:, 0]
    answerable = np.isfinite(best_score)
    diffs = [None] * len(examples)
    if null is not None:
        answerable &= ~(null.score - best_score > threshold)
        diffs = (null.score - best_score).tolist()
    # The best span is entry 0 of the n-best, or entry 1 behind a null entry ranked first.
    best_text = (table.first + is_null[:, 0]).tolist()
    texts, ids = table.texts, store.example_ids
    char_start = np.where(answerable, char_start[:, 0], -1).tolist()
    char_end = np.where(answerable, char_end[:, 0], -1).tolist()
    scores = (np.where(answerable, best_score, null.score) if null is not None else best_score).tolist()
    return [Prediction(ids[example], texts[at] if ok else "", lo, hi, score, None, diff, table, e)
            for e, (example, ok, at, lo, hi, score, diff) in enumerate(zip(
                examples.tolist(), answerable.tolist(), best_text, char_start, char_end, scores, diffs))]


def _span_chars(store, windows: np.ndarray, spans: SpanColumns, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paragraph char offsets `[E, n]` of the n-best spans; -1 where there is no span."""
    char_start = np.full(valid.shape, -1, dtype=np.int64)
    char_end = np.full(valid.shape, -1, dtype=np.int64)
    char_start[valid], char_end[valid] = store.window_char_spans(windows[spans.row[valid]], spans.start[valid],
                                                                 spans.end[valid])
    return char_start, char_end
