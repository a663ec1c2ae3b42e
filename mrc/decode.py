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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kernels.span_decode import (NEG_INF, SpanCandidates, WindowSpans, null_scores, top_k_stable,
                                 top_spans_per_window)
from mrc.io import atomic_write_text


@dataclass
class Prediction:
    """The answer to one example. Offsets index the example's context (paragraph text)."""

    example_id: str
    text: str                # "" when the example is judged unanswerable (or has no valid span)
    char_start: int          # -1 for ""
    char_end: int            # exclusive; -1 for ""
    score: float             # start_logit + end_logit of the answer (the null score for "")
    nbest: list[dict] = field(default_factory=list)   # text, probability, start_logit, end_logit, char_start, char_end
    null_score_diff: float | None = None   # null score - best span score; only with a threshold


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

    Exact: an example's n best spans are among the n best of the windows they come from.
    Windows are laid out in order, so `top_k_stable` keeps equal scores in window order.
    """
    rows, k = cands.score.shape
    groups, most = len(counts), int(counts.max())
    group_of_row = torch.repeat_interleave(torch.arange(groups, device=counts.device), counts)  # [N]
    slot = torch.arange(rows, device=counts.device) - first[group_of_row]                       # [N]
    grid = cands.score.new_full((groups, most, k), NEG_INF)                                      # [E, W, k]
    grid[group_of_row, slot] = cands.score
    score, flat = top_k_stable(grid.view(groups, most * k), n)                                   # [E, n]
    slot_of_best = flat // k
    row = first[:, None] + torch.minimum(slot_of_best, counts[:, None] - 1)   # padded slots hold -inf
    which = flat % k

    def pick(values: Tensor) -> Tensor:
        return values[row, which]

    return ExampleSpans(score=score, row=row, start=pick(cands.start), end=pick(cands.end),
                        start_logit=pick(cands.start_logit), end_logit=pick(cands.end_logit))


def min_null_per_example(start_logits: Tensor, end_logits: Tensor, first: Tensor,
                         counts: Tensor) -> tuple[Tensor, Tensor]:
    """(null score `[E]`, row of the window holding it `[E]`): the minimum over each example's windows.

    The minimum, as the legacy decoder: the window that sees the answer worst decides how
    answerable the example is. Equal minima go to the earliest window.
    """
    null = null_scores(start_logits, end_logits)                                                # [N]
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
    rows = torch.from_numpy(order).to(device)
    start_logits, end_logits = start_logits[rows], end_logits[rows]            # [N, T] store order
    example_of_row = torch.from_numpy(np.asarray(store.windows.example_index)[windows].astype(np.int64))
    examples, first, counts = example_groups(example_of_row.to(device))

    cands = top_spans_per_window(start_logits, end_logits, window_spans(store, windows, device),
                                 max_answer_length, n_best_size)
    best = merge_per_example(cands, first, counts, n_best_size)
    null = null_row = None
    if null_score_diff_threshold is not None:
        null, null_row = min_null_per_example(start_logits, end_logits, first, counts)
    return _predictions(store, windows, examples, best, start_logits, end_logits, null, null_row,
                        null_score_diff_threshold)


def _predictions(store, windows: np.ndarray, examples: Tensor, best: ExampleSpans,
                 start_logits: Tensor, end_logits: Tensor, null: Tensor | None,
                 null_row: Tensor | None, threshold: float | None) -> list[Prediction]:
    """Host side: char offsets and text for every n-best entry, then the Prediction records."""
    entry_score, is_null, span_index = nbest_layout(best.score, null)
    probs = probabilities(entry_score).cpu().numpy()                               # [E, n+1]
    entry_score = entry_score.cpu().numpy()
    is_null = is_null.cpu().numpy()
    span_index = span_index.cpu().numpy()

    span_score = best.score.cpu().numpy()                                          # [E, n]
    valid = np.isfinite(span_score)
    window_of_span = windows[best.row.cpu().numpy()]
    char_start = np.full(span_score.shape, -1, dtype=np.int64)
    char_end = np.full(span_score.shape, -1, dtype=np.int64)
    cs, ce = store.window_char_spans(window_of_span[valid], best.start.cpu().numpy()[valid],
                                     best.end.cpu().numpy()[valid])
    char_start[valid], char_end[valid] = cs, ce
    start_logit = best.start_logit.cpu().numpy()
    end_logit = best.end_logit.cpu().numpy()
    if null is not None:
        null_np = null.cpu().numpy()
        null_rows = null_row.cpu()
        null_start_logit = start_logits[null_rows, 0].float().cpu().numpy()
        null_end_logit = end_logits[null_rows, 0].float().cpu().numpy()

    example_ids = store.example_ids
    example_paragraph = np.asarray(store.example_paragraph)
    paragraph_cache: dict[int, str] = {}
    out = []
    for e, example in enumerate(examples.cpu().tolist()):
        paragraph = int(example_paragraph[example])
        if paragraph not in paragraph_cache:
            paragraph_cache[paragraph] = store.paragraph_texts(paragraph)
        context = paragraph_cache[paragraph]
        nbest = []
        for place in range(entry_score.shape[1]):
            if not np.isfinite(entry_score[e, place]):
                continue
            if is_null[e, place]:
                nbest.append({"text": "", "probability": float(probs[e, place]),
                              "start_logit": float(null_start_logit[e]), "end_logit": float(null_end_logit[e]),
                              "char_start": -1, "char_end": -1})
                continue
            s = span_index[e, place]
            lo, hi = int(char_start[e, s]), int(char_end[e, s])
            nbest.append({"text": context[lo:hi], "probability": float(probs[e, place]),
                          "start_logit": float(start_logit[e, s]), "end_logit": float(end_logit[e, s]),
                          "char_start": lo, "char_end": hi})
        has_span = bool(valid[e, 0])
        pred = Prediction(example_id=example_ids[example], text="", char_start=-1, char_end=-1,
                          score=float(span_score[e, 0]), nbest=nbest)
        if has_span:
            lo, hi = int(char_start[e, 0]), int(char_end[e, 0])
            pred.text, pred.char_start, pred.char_end = context[lo:hi], lo, hi
        if null is not None:
            pred.null_score_diff = float(null_np[e] - span_score[e, 0])
            if not has_span or pred.null_score_diff > threshold:
                pred.text, pred.char_start, pred.char_end, pred.score = "", -1, -1, float(null_np[e])
        out.append(pred)
    return out


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
        nbest = {p.example_id: [{key: entry[key] for key in ("text", "probability", "start_logit", "end_logit")}
                                for entry in p.nbest] for p in predictions}
        atomic_write_text(Path(nbest_path), dump(nbest), overwrite=overwrite)
    if null_odds_path is not None:
        odds = {p.example_id: p.null_score_diff for p in predictions if p.null_score_diff is not None}
        atomic_write_text(Path(null_odds_path), dump(odds), overwrite=overwrite)
