"""Decoding picks the best valid span of each example, as a brute force would, and agrees with the
legacy 20 x 20 decoder wherever that decoder can see the best span."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mrc.decode import Prediction, decode
from mrc.store import ParagraphTexts

REPO = Path(__file__).resolve().parent.parent


def load_bench():
    """bench/bench_decode.py holds the legacy decoder; it is the reference here too."""
    spec = importlib.util.spec_from_file_location("bench_decode", REPO / "bench" / "bench_decode.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@dataclass
class Table:
    example_index: np.ndarray
    paragraph_index: np.ndarray
    token_start: np.ndarray
    context_length: np.ndarray
    query_length: np.ndarray
    max_context_start: np.ndarray
    max_context_end: np.ndarray


class FakeStore:
    """The WindowStore contract on synthetic paragraphs: words and word pieces as tokens,
    windows every `stride` tokens, max-context intervals by BERT's rule."""

    def __init__(self, rng: np.random.Generator, n_paragraphs: int, max_seq_length: int, stride: int):
        self.texts, self.offsets = [], []
        for _ in range(n_paragraphs):
            words = ["".join(rng.choice(list("가나다라마바사abc"), rng.integers(1, 6)))
                     for _ in range(rng.integers(1, 3 * max_seq_length))]
            text, offsets = "", []
            for word in words:
                at = len(text) + 1 if text else 0
                text = f"{text} {word}" if text else word
                cut = (len(word) + 1) // 2       # two pieces for longer words, like WordPiece
                offsets += [(at, at + cut), (at + cut, at + len(word))] if len(word) > 2 else [(at, at + len(word))]
            self.texts.append(text)
            self.offsets.append(np.array(offsets, dtype=np.int64))
        self.example_ids, self.example_paragraph, rows = [], [], []
        for e in range(2 * n_paragraphs):
            paragraph = e // 2
            self.example_ids.append(f"q{e}")
            self.example_paragraph.append(paragraph)
            query = int(rng.integers(1, 12))
            rows += self._windows(e, paragraph, query, max_seq_length - query - 3, stride)
        self.example_paragraph = np.array(self.example_paragraph)
        columns = np.array(rows, dtype=np.int32).T
        self.windows = Table(*columns)

    def _windows(self, example: int, paragraph: int, query: int, room: int, stride: int) -> list[tuple]:
        n = len(self.offsets[paragraph])
        spans, begin = [], 0
        while True:
            length = min(n - begin, room)
            spans.append((begin, length))
            if begin + length == n:
                break
            begin += min(length, stride)
        owner = []
        for tok in range(n):
            best, best_score = None, None
            for w, (b, length) in enumerate(spans):
                if b <= tok < b + length:
                    score = min(tok - b, b + length - 1 - tok) + 0.01 * length
                    if best_score is None or score > best_score:
                        best, best_score = w, score
            owner.append(best)
        owner = np.array(owner)
        rows = []
        for w, (b, length) in enumerate(spans):
            mine = np.flatnonzero(owner == w)
            rows.append((example, paragraph, b, length, query, mine[0] - b, mine[-1] + 1 - b))
        return rows

    def __len__(self) -> int:
        return len(self.windows.example_index)

    def paragraph_texts(self, i: int) -> str:
        return self.texts[i]

    @property
    def all_paragraph_texts(self) -> ParagraphTexts:
        raw = [t.encode("utf-8") for t in self.texts]
        return ParagraphTexts(np.frombuffer(b"".join(raw), dtype=np.uint8), np.cumsum([0] + [len(b) for b in raw]))

    def window_char_spans(self, w, start_pos, end_pos):
        w = np.asarray(w)
        tok_start = self.windows.token_start[w] - self.windows.query_length[w] - 2
        paragraph = self.windows.paragraph_index[w]
        cs = [self.offsets[p][t + s, 0] for p, t, s in zip(paragraph, tok_start, np.asarray(start_pos))]
        ce = [self.offsets[p][t + e, 1] for p, t, e in zip(paragraph, tok_start, np.asarray(end_pos))]
        return np.array(cs, dtype=np.int64), np.array(ce, dtype=np.int64)


def brute_force_best(store, start: np.ndarray, end: np.ndarray, max_answer_length: int,
                     windows: np.ndarray | None = None) -> dict[str, tuple]:
    """Per example id: (score, window, i, j) of the best valid span over `windows` (default: all);
    ties to earlier window, i, j. start, end: `[len(store), T]`."""
    table = store.windows
    best: dict[str, tuple] = {}
    width = start.shape[1]
    for w in (range(len(store)) if windows is None else windows):
        first = int(table.query_length[w]) + 2
        c_end = min(first + int(table.context_length[w]), width)
        lo, hi = first + int(table.max_context_start[w]), first + int(table.max_context_end[w])
        i = np.arange(width)[:, None]
        j = np.arange(width)[None, :]
        valid = (i >= lo) & (i < hi) & (j >= i) & (j < i + max_answer_length) & (j < c_end)
        scores = np.where(valid, start[w][:, None] + end[w][None, :], -np.inf)
        flat = int(np.argmax(scores))                  # first maximum: smallest i, then smallest j
        candidate = (float(scores.flat[flat]), w, flat // width, flat % width)
        key = store.example_ids[table.example_index[w]]
        if key not in best or candidate[0] > best[key][0]:
            best[key] = candidate
    return best


@pytest.fixture(scope="module")
def store():
    return FakeStore(np.random.default_rng(0), n_paragraphs=30, max_seq_length=64, stride=16)


def random_logits(n: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=g), torch.randn(n, width, generator=g)


def test_fake_store_has_examples_with_many_windows(store):
    counts = np.bincount(store.windows.example_index)
    assert counts.max() >= 4 and (counts == 1).any()


def test_best_answer_equals_brute_force_over_all_valid_spans(store):
    start, end = random_logits(len(store), 64, seed=1)
    preds = decode(start, end, store, np.arange(len(store)), n_best_size=5, max_answer_length=10)
    expected = brute_force_best(store, start.numpy(), end.numpy(), 10)
    assert [p.example_id for p in preds] == store.example_ids
    for p in preds:
        score, w, i, j = expected[p.example_id]
        cs, ce = store.window_char_spans(np.array([w]), np.array([i]), np.array([j]))
        assert (p.char_start, p.char_end) == (cs[0], ce[0])
        assert p.score == pytest.approx(score, abs=1e-6)
        assert p.text == store.texts[store.example_paragraph[int(p.example_id[1:])]][cs[0]:ce[0]]


def test_window_order_of_the_logits_does_not_matter(store):
    start, end = random_logits(len(store), 64, seed=2)
    perm = np.random.default_rng(0).permutation(len(store))
    in_order = decode(start, end, store, np.arange(len(store)), 5, 10)
    shuffled = decode(start[perm], end[perm], store, perm, 5, 10)
    assert [(p.example_id, p.text, p.nbest) for p in shuffled] == [(p.example_id, p.text, p.nbest) for p in in_order]


def test_nbest_is_sorted_distinct_spans_with_softmax_probabilities(store):
    start, end = random_logits(len(store), 64, seed=3)
    preds = decode(start, end, store, np.arange(len(store)), n_best_size=20, max_answer_length=10)
    for p in preds:
        context = store.texts[store.example_paragraph[int(p.example_id[1:])]]
        scores = np.array([e["start_logit"] + e["end_logit"] for e in p.nbest])
        assert len(p.nbest) == 20
        assert np.all(np.diff(scores) <= 1e-6)
        assert len({(e["char_start"], e["char_end"]) for e in p.nbest}) == 20
        assert all(context[e["char_start"]:e["char_end"]] == e["text"] for e in p.nbest)
        expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose([e["probability"] for e in p.nbest], expected, rtol=1e-5)
        assert p.nbest[0]["text"] == p.text


def legacy_grid_holds(start: np.ndarray, end: np.ndarray, w: int, i: int, j: int, n_best: int) -> bool:
    """Whether (i, j) is among the legacy decoder's n_best starts x n_best ends of window w."""
    return i in np.argsort(start[w])[-n_best:] and j in np.argsort(end[w])[-n_best:]


def legacy_run(store, start, end, n_best, max_answer_length, threshold=None):
    windows = np.arange(len(store))
    features = bench.legacy_features(store, windows, start.shape[1])
    return bench.legacy_postprocess(bench.example_contexts(store, windows), store.example_ids, features,
                                    start, end, n_best, max_answer_length, threshold)


def test_same_best_answer_as_legacy_when_its_grid_holds_the_best_span_else_a_better_one():
    # Wide windows and few legacy candidates: often no top start/end pair is a valid span.
    store = FakeStore(np.random.default_rng(1), n_paragraphs=40, max_seq_length=128, stride=32)
    start, end = random_logits(len(store), 128, seed=4)
    s, e = start.numpy(), end.numpy()
    answers, nbest = legacy_run(store, s, e, 4, 30)
    preds = decode(start, end, store, np.arange(len(store)), 4, 30)
    expected = brute_force_best(store, s, e, 30)
    inside = outside = 0
    for p in preds:
        _, w, i, j = expected[p.example_id]
        if legacy_grid_holds(s, e, w, i, j, 4):
            inside += 1
            assert p.text == answers[p.example_id]
        else:
            outside += 1
            legacy_best = nbest[p.example_id][0]
            legacy_score = (legacy_best["start_logit"] + legacy_best["end_logit"]
                            if legacy_best["text"] != "empty" else float("-inf"))
            assert p.score > legacy_score
        # Ours is the true n-best, so its i-th entry never scores below the legacy i-th entry.
        ours = [x["start_logit"] + x["end_logit"] for x in p.nbest]
        theirs = [x["start_logit"] + x["end_logit"] for x in nbest[p.example_id] if x["text"] != "empty"]
        assert all(a >= b - 1e-6 for a, b in zip(ours, theirs))
    assert inside > 10 and outside > 10


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 2.0])
def test_null_answers_follow_the_legacy_rule(store, threshold):
    start, end = random_logits(len(store), 64, seed=5)
    start[:, 0] += 2.0      # make "no answer" competitive
    s, e = start.numpy(), end.numpy()
    answers, nbest = legacy_run(store, s, e, 20, 10, threshold)
    # The legacy grid misses the best span sometimes; compare where it does not.
    expected = brute_force_best(store, s, e, 10)
    preds = decode(start, end, store, np.arange(len(store)), 20, 10, null_score_diff_threshold=threshold)
    compared = empty = 0
    for p in preds:
        _, w, i, j = expected[p.example_id]
        if not legacy_grid_holds(s, e, w, i, j, 20):
            continue
        compared += 1
        empty += p.text == ""
        assert p.text == answers[p.example_id]
        null_entry = next(x for x in p.nbest if x["text"] == "")
        legacy_null = next(x for x in nbest[p.example_id] if x["text"] == "")
        assert null_entry["start_logit"] + null_entry["end_logit"] == pytest.approx(
            legacy_null["start_logit"] + legacy_null["end_logit"])
    assert compared > 20
    if threshold < 2.0:
        assert empty > 0


def test_without_threshold_the_answer_is_never_empty(store):
    start, end = random_logits(len(store), 64, seed=6)
    start[:, 0] += 100.0
    end[:, 0] += 100.0
    preds = decode(start, end, store, np.arange(len(store)), 3, 10)
    assert all(p.text for p in preds)
    assert all(x["text"] for p in preds for x in p.nbest)


def test_examples_are_decoded_from_the_windows_given(store):
    start, end = random_logits(len(store), 64, seed=7)
    subset = np.flatnonzero(np.isin(store.windows.example_index, [3, 4, 5]))
    preds = decode(start[subset], end[subset], store, subset, 5, 10)
    full = decode(start, end, store, np.arange(len(store)), 5, 10)
    assert [p.example_id for p in preds] == ["q3", "q4", "q5"]
    assert [p.text for p in preds] == [p.text for p in full[3:6]]


def test_repeated_window_is_refused(store):
    start, end = random_logits(2, 64, seed=8)
    with pytest.raises(ValueError, match="repeats"):
        decode(start, end, store, np.array([0, 0]), 5, 10)


# ---- real KorQuAD dev windows (KoELECTRA v3 vocab, the seed's window settings) ------------------

@pytest.fixture(scope="module")
def dev_store(korquad_dev, koelectra_folder):
    from mrc.features import build_store
    from mrc.store import WindowConfig

    return build_store(korquad_dev, koelectra_folder, WindowConfig(512, 128, 64), labels=True, use_cache=False)


def dev_sample(dev_store, n_examples: int) -> np.ndarray:
    """Windows of the first examples with several windows and as many single-window ones."""
    counts = np.bincount(dev_store.windows.example_index)
    picked = np.concatenate([np.flatnonzero(counts > 1)[:n_examples], np.flatnonzero(counts == 1)[:n_examples]])
    return np.flatnonzero(np.isin(dev_store.windows.example_index, picked))


def test_dev_windows_best_answer_equals_brute_force(dev_store):
    windows = dev_sample(dev_store, 60)
    start, end = random_logits(len(dev_store), 512, seed=10)
    preds = {p.example_id: p for p in decode(start, end, dev_store, np.arange(len(dev_store)), 20, 30)}
    expected = brute_force_best(dev_store, start.numpy(), end.numpy(), 30, windows)
    assert len(expected) == 120
    for example_id, (score, w, i, j) in expected.items():
        cs, ce = dev_store.window_char_spans(np.array([w]), np.array([i]), np.array([j]))
        assert (preds[example_id].char_start, preds[example_id].char_end) == (cs[0], ce[0])
        assert preds[example_id].score == pytest.approx(score, abs=1e-5)


def test_dev_windows_agree_with_legacy_inside_its_grid(dev_store):
    windows = dev_sample(dev_store, 40)
    start, end = random_logits(len(windows), 512, seed=11)
    s, e = start.numpy(), end.numpy()
    features = bench.legacy_features(dev_store, windows, 512)
    answers, nbest = bench.legacy_postprocess(bench.example_contexts(dev_store, windows), dev_store.example_ids,
                                              features, s, e, 20, 30)
    preds = decode(start, end, dev_store, windows, 20, 30)
    expected = brute_force_best(dev_store, *full_rows(s, e, windows, len(dev_store)), 30, windows)
    row_of = {w: r for r, w in enumerate(windows)}
    inside = 0
    for p in preds:
        _, w, i, j = expected[p.example_id]
        if legacy_grid_holds(s, e, row_of[w], i, j, 20):
            inside += 1
            assert p.text == answers[p.example_id]
        else:
            assert p.score > nbest[p.example_id][0]["start_logit"] + nbest[p.example_id][0]["end_logit"]
    assert len(preds) == 80 and 0 < inside < 80


def full_rows(s: np.ndarray, e: np.ndarray, windows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a window subset placed at their store rows (other rows -inf)."""
    start = np.full((n, s.shape[1]), -np.inf, np.float32)
    end = np.full((n, s.shape[1]), -np.inf, np.float32)
    start[windows], end[windows] = s, e
    return start, end


def test_dev_logits_peaked_at_the_labels_decode_to_the_gold_answers(dev_store, korquad_dev):
    from mrc.data import read_examples

    examples = {ex.id: ex for ex in read_examples(korquad_dev)[0]}
    table = dev_store.windows
    start = torch.zeros(len(dev_store), 512)
    end = torch.zeros(len(dev_store), 512)
    rows = torch.arange(len(dev_store))
    labelled = torch.from_numpy(table.start_position > 0).float()
    start[rows, torch.from_numpy(table.start_position.astype(np.int64))] = 10.0 * labelled
    end[rows, torch.from_numpy(table.end_position.astype(np.int64))] = 10.0 * labelled
    preds = decode(start, end, dev_store, rows.numpy(), 20, 30)
    exact = 0
    for p in preds:
        ex = examples[p.example_id]
        answer = ex.answers[0]
        # The decoded span is whole tokens around the gold characters (tokens hold no whitespace).
        lead = len(answer.text) - len(answer.text.lstrip())
        trail = len(answer.text) - len(answer.text.rstrip())
        assert p.char_start <= answer.start + lead and answer.end - trail <= p.char_end
        assert p.text == ex.context[p.char_start:p.char_end]
        exact += p.text == answer.text
    assert len(preds) == 5774 and exact / len(preds) > 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_logits_decode_like_cpu_logits(store):
    start, end = random_logits(len(store), 64, seed=9)
    cpu = decode(start, end, store, np.arange(len(store)), 20, 10, null_score_diff_threshold=0.0)
    gpu = decode(start.cuda(), end.cuda(), store, np.arange(len(store)), 20, 10, null_score_diff_threshold=0.0)
    def answers(preds):
        return [(p.text, [x["text"] for x in p.nbest]) for p in preds]

    assert answers(gpu) == answers(cpu)
