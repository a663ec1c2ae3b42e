"""From start/end logits of windows to one answer and an n-best list per example.

The span search itself is `kernels.span_decode` (exact, tensor code on the logits' device).
Here we merge each example's windows, add the "no answer" option when asked, compute n-best
probabilities, and turn token positions into character offsets and text.

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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.span_decode import NEG_INF, SpanCandidates, WindowSpans, top_k_stable, top_spans_per_window
from mrc.io import atomic_write_text

NBEST_KEYS = ("text", "probability", "start_logit", "end_logit", "char_start", "char_end")
NBEST_FILE_KEYS = ("text", "probability", "start_logit", "end_logit")     # nbest_predictions.json, as the seed


class NBestTable:
    """The n-best entries of every decoded example as columns `[E, n+1]`; a row becomes dicts on demand.

    Building ~20 dicts per question costs more than the whole tensor search, and evaluation
    during training reads only the answers, so `Prediction.nbest` is built on first access.
    """

    def __init__(self, contexts: list[str], count: np.ndarray, char_start: np.ndarray, char_end: np.ndarray,
                 start_logit: np.ndarray, end_logit: np.ndarray, probability: np.ndarray):
        self.contexts = contexts            # [E] context text of each example
        self.count = count                  # [E] entries in use (a prefix of each row)
        self.columns = (char_start, char_end, start_logit, end_logit, probability)

    def entries(self, e: int) -> list[dict]:
        """The n-best of example row e, best first; the null entry has text "" at char -1..-1."""
        context, count = self.contexts[e], int(self.count[e])
        rows = zip(*(column[e, :count].tolist() for column in self.columns))
        return [{"text": context[lo:hi] if lo >= 0 else "", "probability": p, "start_logit": sl,
                 "end_logit": el, "char_start": lo, "char_end": hi} for lo, hi, sl, el, p in rows]


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
class ExampleSpans:
    """The n best spans of each example (all `[E, n]`, best first, score -inf = none)."""

    score: Tensor
    row: Tensor          # row of the (store-ordered) logits the span comes from
    start: Tensor        # sequence positions in that window
    end: Tensor
    start_logit: Tensor
    end_logit: Tensor


def window_spans(store, windows: np.ndarray, device: torch.device) -> WindowSpans:
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


def example_groups(example_of_row: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For rows sorted by example: (example per group `[E]`, first row `[E]`, row count `[E]`)."""
    examples, counts = torch.unique_consecutive(example_of_row, return_counts=True)
    first = counts.cumsum(0) - counts
    return examples, first, counts


def merge_per_example(cands: SpanCandidates, first: Tensor, counts: Tensor, n: int) -> ExampleSpans:
    """The n best spans of each example from the k best of each of its windows.

    Exact: an example's n best spans are among the n best of the windows they come from. An
    example with one window (most of them) keeps that window's list; the others rank their
    windows' lists laid out in window order, so `top_k_stable` keeps equal scores in window order.
    """
    rows, k = cands.score.shape
    groups, most = len(counts), int(counts.max())
    width = min(n, most * k)
    device = counts.device
    score = F.pad(cands.score[first], (0, width - k), value=NEG_INF)                           # [E, n]
    row = first[:, None].expand(groups, width).clone()                                          # [E, n]
    which = F.pad(torch.arange(k, device=device), (0, width - k)).expand(groups, width).clone()  # [E, n]
    multi = (counts > 1).nonzero()[:, 0]                                                        # [M]
    if len(multi):
        m_first, m_counts = first[multi], counts[multi]
        member = torch.repeat_interleave(torch.arange(len(multi), device=device), m_counts)   # [R]
        slot = torch.arange(len(member), device=device) - (m_counts.cumsum(0) - m_counts)[member]
        grid = cands.score.new_full((len(multi), most, k), NEG_INF)                             # [M, W, k]
        grid[member, slot] = cands.score[m_first[member] + slot]
        score[multi], flat = top_k_stable(grid.view(len(multi), most * k), width)               # [M, n]
        # Padded slots hold -inf; point them at a real window so the gathers below stay in range.
        row[multi] = m_first[:, None] + torch.minimum(flat // k, m_counts[:, None] - 1)
        which[multi] = flat % k

    def pick(values: Tensor) -> Tensor:
        return values[row, which]

    return ExampleSpans(score=score, row=row, start=pick(cands.start), end=pick(cands.end),
                        start_logit=pick(cands.start_logit), end_logit=pick(cands.end_logit))


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


def nbest_layout(span_score: Tensor, null: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Scores of the final n-best entries `[E, n+1]` in order, which entry is the null, and which span.

    Without a null score the last column is empty (-inf). With one, the null entry takes its
    place by score (spans first on equal scores, as HF appends the null after the spans), the
    list is cut to n entries, and a null that ranks below all n spans is appended as entry n+1.
    """
    groups, n = span_score.shape
    place = torch.arange(n + 1, device=span_score.device)[None, :]                 # [1, n+1]
    if null is None:
        rank = torch.full((groups, 1), n, device=span_score.device)
    else:
        rank = (span_score >= null[:, None]).sum(dim=1, keepdim=True)             # [E, 1]
    span_index = torch.where(place < rank, place, place - 1).clamp(0, n - 1)       # [E, n+1]
    is_null = place == rank
    scores = span_score.gather(1, span_index)
    if null is None:
        scores = torch.where(is_null, NEG_INF, scores)
    else:
        scores = torch.where(is_null, null[:, None], scores)
        scores = torch.where((place == n) & (rank < n), NEG_INF, scores)            # cut to n
    return scores, is_null.expand(groups, n + 1), span_index


def probabilities(scores: Tensor) -> Tensor:
    """Softmax over the finite entries of each row (float64); rows with none give zeros."""
    probs = torch.softmax(scores.double(), dim=1)
    return torch.nan_to_num(probs, nan=0.0)


def decode(start_logits, end_logits, store, window_indices, n_best_size: int, max_answer_length: int,
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
    cands = top_spans_per_window(start_logits, end_logits, window_spans(store, window_indices, device),
                                 max_answer_length, n_best_size)
    # From here on rows are in store order, so each example's windows are consecutive.
    rows = torch.from_numpy(order).to(device)
    cands = SpanCandidates(*(t[rows] for t in (cands.score, cands.start, cands.end, cands.start_logit,
                                                cands.end_logit)))
    cls_start, cls_end = start_logits[rows, 0].float(), end_logits[rows, 0].float()   # [N]
    example_of_row = torch.from_numpy(np.asarray(store.windows.example_index)[windows].astype(np.int64))
    examples, first, counts = example_groups(example_of_row.to(device))

    best = merge_per_example(cands, first, counts, n_best_size)
    null = null_row = None
    if null_score_diff_threshold is not None:
        null, null_row = min_null_per_example(cls_start + cls_end, first, counts)
    return _predictions(store, windows, examples, best, cls_start, cls_end, null, null_row,
                        null_score_diff_threshold)


def _predictions(store, windows: np.ndarray, examples: Tensor, best: ExampleSpans,
                 cls_start: Tensor, cls_end: Tensor, null: Tensor | None,
                 null_row: Tensor | None, threshold: float | None) -> list[Prediction]:
    """Host side: char offsets and text of the answers, and the n-best table behind them."""
    entry_score, is_null, span_index = nbest_layout(best.score, null)              # [E, n+1]
    probs = probabilities(entry_score).cpu().numpy()
    entry_score, is_null, span_index = (t.cpu().numpy() for t in (entry_score, is_null, span_index))
    span_score = best.score.cpu().numpy()                                          # [E, n]
    char_start, char_end = _span_chars(store, windows, best, np.isfinite(span_score))

    null_score = null_start = null_end = None
    if null is not None:
        null_score = null.cpu().numpy()                                            # [E]
        null_start = cls_start[null_row].cpu().numpy()[:, None]
        null_end = cls_end[null_row].cpu().numpy()[:, None]

    def entries(span_values: np.ndarray, null_values) -> np.ndarray:
        """A per-span column `[E, n]` laid out as the n-best entries `[E, n+1]`."""
        values = np.take_along_axis(span_values, span_index, axis=1)
        return np.where(is_null, null_values, values) if null is not None else values

    example_list = examples.cpu().tolist()
    paragraphs = np.asarray(store.example_paragraph)[example_list].tolist()
    texts = {p: store.paragraph_texts(p) for p in dict.fromkeys(paragraphs)}
    contexts = [texts[p] for p in paragraphs]
    table = NBestTable(contexts, np.isfinite(entry_score).sum(axis=1),   # finite entries form a prefix
                       entries(char_start, -1), entries(char_end, -1),
                       entries(best.start_logit.cpu().numpy(), null_start),
                       entries(best.end_logit.cpu().numpy(), null_end), probs)

    best_score, best_start, best_end = span_score[:, 0].tolist(), char_start[:, 0].tolist(), char_end[:, 0].tolist()
    diffs = (null_score - span_score[:, 0]).tolist() if null is not None else None
    out = []
    for e, example in enumerate(example_list):
        lo, hi = best_start[e], best_end[e]
        pred = Prediction(store.example_ids[example], contexts[e][lo:hi] if lo >= 0 else "", lo, hi, best_score[e],
                          table=table, row=e)
        if diffs is not None:
            pred.null_score_diff = diffs[e]
            if lo < 0 or diffs[e] > threshold:
                pred.text, pred.char_start, pred.char_end, pred.score = "", -1, -1, float(null_score[e])
        out.append(pred)
    return out


def _span_chars(store, windows: np.ndarray, best: ExampleSpans, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paragraph char offsets `[E, n]` of the n-best spans; -1 where there is no span."""
    char_start = np.full(valid.shape, -1, dtype=np.int64)
    char_end = np.full(valid.shape, -1, dtype=np.int64)
    window_of_span = windows[best.row.cpu().numpy()[valid]]
    char_start[valid], char_end[valid] = store.window_char_spans(
        window_of_span, best.start.cpu().numpy()[valid], best.end.cpu().numpy()[valid])
    return char_start, char_end


def write_predictions(predictions: list[Prediction], predictions_path: Path, nbest_path: Path | None = None,
                      overwrite: bool = True, null_odds_path: Path | None = None) -> None:
    """Write predictions.json `{id: text}` and, when asked, nbest_predictions.json and null_odds.json.

    Each file is written atomically (never half-written under its final name).
    """
    def dump(obj) -> str:
        return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"

    atomic_write_text(Path(predictions_path), dump({p.example_id: p.text for p in predictions}),
                      overwrite=overwrite)
    if nbest_path is not None:
        nbest = {p.example_id: [{key: entry[key] for key in NBEST_FILE_KEYS} for entry in p.nbest] for p in predictions}
        atomic_write_text(Path(nbest_path), dump(nbest), overwrite=overwrite)
    if null_odds_path is not None:
        odds = {p.example_id: p.null_score_diff for p in predictions if p.null_score_diff is not None}
        atomic_write_text(Path(null_odds_path), dump(odds), overwrite=overwrite)
