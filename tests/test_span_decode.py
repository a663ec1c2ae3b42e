"""The span kernel is exact: its k best spans per window equal a brute force over all valid pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrc.span_search import CHUNK_ELEMENTS, WindowSpans, sliding_max, top_k_stable, top_spans_per_group


def top_spans_per_window(start_logits, end_logits, windows: WindowSpans, max_answer_length: int, k: int):
    """Each window as a group of its own: the k best spans of every window."""
    sizes = torch.ones(start_logits.shape[0], dtype=torch.long, device=start_logits.device)
    return top_spans_per_group(start_logits, end_logits, windows, sizes, max_answer_length, k)


def random_geometry(rng: np.random.Generator, n: int, width: int) -> WindowSpans:
    """Windows of random query/context length inside `width`, each with a random max-context interval."""
    query = rng.integers(1, 20, n)
    context = np.array([rng.integers(1, width - q - 3 + 1) for q in query])
    lo = np.array([rng.integers(0, c) for c in context])
    hi = np.array([rng.integers(l + 1, c + 1) for l, c in zip(lo, context)])
    begin = query + 2

    def t(a):
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return WindowSpans(context_begin=t(begin), context_end=t(begin + context),
                       start_begin=t(begin + lo), start_end=t(begin + hi))


def brute_force(start: np.ndarray, end: np.ndarray, spans: WindowSpans, max_answer_length: int,
                k: int) -> list[list[tuple[float, int, int]]]:
    """Per window, every valid (score, i, j) ranked by score, then earlier start, then earlier end."""
    out = []
    for w in range(start.shape[0]):
        c_end = int(spans.context_end[w])
        pairs = [(float(np.float32(start[w, i]) + np.float32(end[w, j])), i, j)
                 for i in range(int(spans.start_begin[w]), int(spans.start_end[w]))
                 for j in range(i, min(i + max_answer_length, c_end))]
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        out.append(pairs[:k])
    return out


def kernel_lists(cands) -> list[list[tuple[float, int, int]]]:
    score, start, end = cands.score.tolist(), cands.start.tolist(), cands.end.tolist()
    return [[(s, i, j) for s, i, j in zip(*row) if s != float("-inf")] for row in zip(score, start, end)]


@pytest.mark.parametrize("max_answer_length", [1, 5, 30])
@pytest.mark.parametrize("chunk_elements", [1 << 9, 1 << 18])     # many chunks of different widths; one chunk
def test_k_best_spans_equal_brute_force_on_random_logits(max_answer_length, chunk_elements, monkeypatch):
    monkeypatch.setitem(CHUNK_ELEMENTS, "cpu", chunk_elements)
    rng = np.random.default_rng(max_answer_length)
    n, width, k = 40, 64, 7
    spans = random_geometry(rng, n, width)
    start = rng.standard_normal((n, width)).astype(np.float32)
    end = rng.standard_normal((n, width)).astype(np.float32)
    got = top_spans_per_window(torch.from_numpy(start), torch.from_numpy(end), spans, max_answer_length, k)
    assert kernel_lists(got) == brute_force(start, end, spans, max_answer_length, k)


def test_ties_rank_by_earlier_start_then_earlier_end():
    # Integer logits in a tiny range: most spans tie, so only the tie rule decides the order.
    rng = np.random.default_rng(1)
    n, width, k = 30, 40, 10
    spans = random_geometry(rng, n, width)
    start = rng.integers(0, 3, (n, width)).astype(np.float32)
    end = rng.integers(0, 3, (n, width)).astype(np.float32)
    got = top_spans_per_window(torch.from_numpy(start), torch.from_numpy(end), spans, 6, k)
    assert kernel_lists(got) == brute_force(start, end, spans, 6, k)


def test_all_equal_logits_pick_the_first_single_token_span():
    spans = random_geometry(np.random.default_rng(2), 5, 32)
    zeros = torch.zeros(5, 32)
    got = top_spans_per_window(zeros, zeros, spans, 10, 3)
    assert got.start[:, 0].tolist() == spans.start_begin.tolist()
    assert got.end[:, 0].tolist() == spans.start_begin.tolist()


def test_anything_outside_the_context_is_ignored():
    rng = np.random.default_rng(3)
    n, width = 20, 48
    spans = random_geometry(rng, n, width)
    start = torch.from_numpy(rng.standard_normal((n, width)).astype(np.float32))
    end = torch.from_numpy(rng.standard_normal((n, width)).astype(np.float32))
    clean = top_spans_per_window(start, end, spans, 8, 5)
    pos = torch.arange(width)[None, :]
    outside = (pos < spans.context_begin[:, None]) | (pos >= spans.context_end[:, None])
    # Padding may hold +inf, -inf or NaN (fp16 overflow, masked_fill): none of it may win.
    garbage = torch.tensor([float("inf"), float("nan"), 1e30])[torch.randint(0, 3, (n, width))]
    dirty = top_spans_per_window(torch.where(outside, garbage, start), torch.where(outside, garbage, end),
                                 spans, 8, 5)
    assert kernel_lists(dirty) == kernel_lists(clean)


def test_windows_with_fewer_valid_spans_than_k_pad_with_minus_inf():
    begin = torch.tensor([3])
    spans = WindowSpans(context_begin=begin, context_end=begin + 2, start_begin=begin, start_end=begin + 1)
    got = top_spans_per_window(torch.randn(1, 8), torch.randn(1, 8), spans, 30, 5)
    assert len(kernel_lists(got)[0]) == 2          # (3, 3) and (3, 4)
    assert torch.isinf(got.score[0, 2:]).all()


@pytest.mark.parametrize("chunk_elements", [1 << 8, 1 << 18])     # groups split over chunks; one chunk
def test_k_best_spans_of_each_group_of_windows_equal_brute_force_with_ties(chunk_elements, monkeypatch):
    # Integer logits: many spans tie across the windows of a group, so the window order must decide.
    monkeypatch.setitem(CHUNK_ELEMENTS, "cpu", chunk_elements)
    rng = np.random.default_rng(7)
    n, width, k = 60, 40, 8
    spans = random_geometry(rng, n, width)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(1, 5), n - sum(sizes))))
    start = rng.integers(0, 3, (n, width)).astype(np.float32)
    end = rng.integers(0, 3, (n, width)).astype(np.float32)
    got = top_spans_per_group(torch.from_numpy(start), torch.from_numpy(end), spans, torch.tensor(sizes), 6, k)
    per_window = brute_force(start, end, spans, 6, width * 6)
    expected, first = [], 0
    for size in sizes:
        pairs = [(s, w, i, j) for w in range(first, first + size) for s, i, j in per_window[w]]
        expected.append(sorted(pairs, key=lambda p: (-p[0], p[1], p[2], p[3]))[:k])
        first += size
    rows, score, i, j = got.row.tolist(), got.score.tolist(), got.start.tolist(), got.end.tolist()
    assert [[(s, w, a, b) for s, w, a, b in zip(*row) if s != float("-inf")]
            for row in zip(score, rows, i, j)] == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_decode_like_their_float32_values(dtype):
    rng = np.random.default_rng(4)
    spans = random_geometry(rng, 10, 40)
    start = torch.randn(10, 40).to(dtype)
    end = torch.randn(10, 40).to(dtype)
    half = top_spans_per_window(start, end, spans, 7, 4)
    full = top_spans_per_window(start.float(), end.float(), spans, 7, 4)
    assert kernel_lists(half) == kernel_lists(full)
    assert half.score.dtype == torch.float32


def test_start_and_end_logits_of_each_span_add_up_to_its_score():
    spans = random_geometry(np.random.default_rng(5), 10, 40)
    start, end = torch.randn(10, 40), torch.randn(10, 40)
    got = top_spans_per_window(start, end, spans, 7, 4)
    valid = got.score > float("-inf")
    assert torch.equal(got.start_logit[valid], start.gather(1, got.start)[valid])
    assert torch.equal(got.end_logit[valid], end.gather(1, got.end)[valid])
    assert torch.equal(got.score[valid], (got.start_logit + got.end_logit)[valid])


@pytest.mark.parametrize("width, k", [(30, 9), (601, 20)])     # one level; two levels (blocks of 5)
def test_top_k_stable_orders_equal_values_by_index(width, k):
    values = torch.randint(0, 4, (50, width)).float()
    values[:10, 3:] = float("-inf")            # rows with fewer than k finite values
    values[10:20] = torch.randn(10, width)     # rows without ties
    got_values, got_index = top_k_stable(values, k)
    for row, vals, idx in zip(values.tolist(), got_values.tolist(), got_index.tolist()):
        expected = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        assert idx == expected
        assert vals == [row[i] for i in expected]


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 30])
def test_sliding_max_equals_the_max_of_each_window(width):
    x = torch.randn(4, 25)
    got = sliding_max(x, width)
    expected = torch.stack([x[:, t:t + width].max(dim=1).values for t in range(25)], dim=1)
    assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_same_spans_as_cpu_including_ties():
    rng = np.random.default_rng(6)
    spans = random_geometry(rng, 200, 512)
    start = torch.from_numpy(rng.integers(0, 4, (200, 512)).astype(np.float32))
    end = torch.from_numpy(rng.integers(0, 4, (200, 512)).astype(np.float32))
    cpu = top_spans_per_window(start, end, spans, 30, 20)
    gpu_spans = WindowSpans(*(t.cuda() for t in (spans.context_begin, spans.context_end,
                                                  spans.start_begin, spans.start_end)))
    gpu = top_spans_per_window(start.cuda(), end.cuda(), gpu_spans, 30, 20)
    assert kernel_lists(gpu) == kernel_lists(cpu)
