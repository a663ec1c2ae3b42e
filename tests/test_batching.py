"""Batches built from the store, the length-grouped sampler and DDP shards."""

from __future__ import annotations

import numpy as np
import pytest

from mrc.batching import LengthGroupedSampler, collate
from mrc.errors import MRCError
from mrc.features import build_store
from mrc.store import WindowConfig


@pytest.fixture(scope="module")
def store(korquad_train_subset, koelectra_folder):
    # Short windows: many windows per paragraph, of varied lengths, and many without the answer.
    return build_store(korquad_train_subset, koelectra_folder, WindowConfig(96, 40, 24), labels=True, use_cache=False)


def reference_window(store, w: int) -> tuple[list[int], list[int]]:
    """input_ids and token_type_ids of one window, assembled the obvious way."""
    t, sp = store.windows, store.specials
    e, p = int(t.example_index[w]), int(t.paragraph_index[w])
    q = store.question_ids[store.question_token_base[e]:store.question_token_base[e + 1]].tolist()
    first = int(store.paragraph_token_base[p] + t.token_start[w])
    c = store.context_ids[first:first + int(t.context_length[w])].tolist()
    ids = [sp.cls_id, *q, sp.sep_id, *c, sp.sep_id]
    return ids, [0] * (len(q) + 2) + [1] * (len(c) + 1)


def test_collate_assembles_windows_and_pads_to_a_multiple_of_8(store):
    rng = np.random.default_rng(0)
    windows = rng.choice(len(store), size=13, replace=False)
    batch = collate(store, windows, with_labels=True)
    lengths = store.sequence_lengths()[windows]
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width - 8 < lengths.max() <= width
    for row, w in enumerate(windows):
        ids, types = reference_window(store, int(w))
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["token_type_ids"][row, :n].tolist() == types
        assert (batch["input_ids"][row, n:] == store.pad_id).all()
        assert (batch["token_type_ids"][row, n:] == 0).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
    assert batch["window_index"].tolist() == windows.tolist()
    assert batch["start_positions"].tolist() == store.windows.start_position[windows].tolist()
    assert batch["end_positions"].tolist() == store.windows.end_position[windows].tolist()
    assert all(v.dtype.is_floating_point is False and v.dtype.itemsize == 8 for v in batch.values())


def test_collate_label_positions_point_at_the_answer_tokens(store, korquad_train_subset):
    from mrc.data import read_examples

    examples, _ = read_examples(korquad_train_subset)
    labelled = np.flatnonzero(store.windows.start_position > 0)[:20]
    batch = collate(store, labelled, with_labels=True)
    for row, w in enumerate(labelled):
        s, e = int(batch["start_positions"][row]), int(batch["end_positions"][row])
        assert batch["token_type_ids"][row, s] == 1 and batch["token_type_ids"][row, e] == 1
        cs, ce = store.window_char_spans([w], [s], [e])
        span = store.paragraph_texts(int(store.windows.paragraph_index[w]))[int(cs[0]):int(ce[0])]
        assert examples[store.windows.example_index[w]].answers[0].text.strip() in span


@pytest.mark.parametrize("n, batch_size", [(1001, 16), (37, 4), (5, 2), (4096, 32), (16, 16)])
def test_sampler_batches_cover_every_window_once(n, batch_size):
    lengths = np.random.default_rng(1).integers(20, 512, size=n)
    batches = LengthGroupedSampler(lengths, batch_size, seed=42).batches(3)
    assert len(batches) == len(LengthGroupedSampler(lengths, batch_size, 42)) == -(-n // batch_size)
    every = np.concatenate(batches)
    assert np.array_equal(np.sort(every), np.arange(n))
    assert all(0 < len(b) <= batch_size for b in batches)


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths = np.random.default_rng(2).integers(20, 512, size=500)
    same = [LengthGroupedSampler(lengths, 8, seed=7).batches(1) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*same))
    other_epoch = LengthGroupedSampler(lengths, 8, seed=7).batches(2)
    other_seed = LengthGroupedSampler(lengths, 8, seed=8).batches(1)
    assert not all(np.array_equal(a, b) for a, b in zip(same[0], other_epoch))
    assert not all(np.array_equal(a, b) for a, b in zip(same[0], other_seed))


def test_sampler_groups_similar_lengths_and_saves_padding():
    lengths = np.random.default_rng(3).integers(20, 512, size=4000)
    grouped = LengthGroupedSampler(lengths, 16, seed=0).batches(0)
    padded = sum(len(b) * lengths[b].max() for b in grouped)
    random_batches = np.array_split(np.random.default_rng(4).permutation(4000), len(grouped))
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.7 * padded_random
    # The batch order is shuffled: not sorted from longest to shortest over the epoch.
    firsts = [lengths[b].max() for b in grouped]
    assert firsts != sorted(firsts, reverse=True)


def test_sampler_refuses_an_empty_batch_size():
    with pytest.raises(MRCError, match="at least 1"):
        LengthGroupedSampler(np.ones(3), 0, seed=0)
