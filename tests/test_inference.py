"""mrc/inference.py: batched logits equal unbatched ones, chunked decoding, logits files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mrc import dist
from mrc.batching import collate
from mrc.checkpoint import load_model
from mrc.data import read_examples
from mrc.decode import DecodeConfig, decode
from mrc.features import build_store
from mrc.store import WindowConfig
from mrc.inference import batches_logits, example_chunks, iter_predictions, length_sorted_batches
from mrc.logits import load_window_logits

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = dist.DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# Short windows so that long paragraphs make several windows per question.
WINDOWS = WindowConfig(max_seq_length=128, doc_stride=48, max_query_length=32)


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(tiny_model, report=None)[0].eval()


@pytest.fixture(scope="module")
def store(tiny_model, korquad_train_subset):
    """The first 40 questions (several windows each with these short windows), kept in memory."""
    examples, _ = read_examples([korquad_train_subset])
    return build_store(examples[:40], tiny_model, WINDOWS, labels=False, use_cache=False)


def one_window_logits(model, store, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of window w run alone (no batch-mates, no padding): what a batch must reproduce."""
    batch = collate(store, np.array([w]), with_labels=False, pad_to_multiple_of=1)
    with torch.no_grad():
        start, end = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    return start[0], end[0]


def predictions(model, store, **settings) -> list:
    return [p for chunk in iter_predictions(model, store, CPU, autocast_dtype=None,
                                            decoding=DecodeConfig(n_best_size=5, max_answer_length=30), **settings)
            for p in chunk]


def test_batched_logits_match_unbatched_runs(model, store):
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(store))[:23]           # mixed lengths, odd count: a short last batch
    batches = [chosen[b] for b in length_sorted_batches(store.sequence_lengths()[chosen], 4)]
    windows = np.concatenate(batches)
    start, end = batches_logits(model, store, batches, device=torch.device("cpu"))
    lengths = store.sequence_lengths()[windows]
    assert start.shape == end.shape == (len(windows), lengths.max())
    for row, w in enumerate(windows):
        alone_start, alone_end = one_window_logits(model, store, int(w))
        n = int(lengths[row])
        torch.testing.assert_close(start[row, :n], alone_start, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(end[row, :n], alone_end, atol=1e-5, rtol=1e-5)
        assert torch.isneginf(start[row, n:]).all() and torch.isneginf(end[row, n:]).all()


def test_batched_logits_leave_a_training_model_in_training_mode(model, store):
    model.train()
    try:
        batches_logits(model, store, [np.arange(2), np.arange(2, 3)], device=torch.device("cpu"))
        assert model.training, "train-time evaluation must not switch dropout off for the rest of training"
    finally:
        model.eval()


def test_chunks_cover_every_window_once_and_never_split_an_example():
    example_index = np.repeat(np.arange(6), [1, 3, 9, 1, 2, 2])   # example 2 alone exceeds the chunk size
    chunks = example_chunks(example_index, chunk_windows=4)
    covered = np.concatenate([np.arange(lo, hi) for lo, hi in chunks])
    np.testing.assert_array_equal(covered, np.arange(len(example_index)))
    for lo, hi in chunks:
        assert lo == 0 or example_index[lo - 1] != example_index[lo]
        assert hi == len(example_index) or example_index[hi - 1] != example_index[hi]
    assert (4, 13) in chunks


def test_small_chunks_give_the_same_predictions_as_one_chunk(model, store):
    # Batches of one window: chunk borders then cannot change any window's batch-mates or padding.
    whole = predictions(model, store, batch_size=1, chunk_windows=len(store))
    chunked = predictions(model, store, batch_size=1, chunk_windows=16)
    assert len(whole) == store.num_examples
    assert [(p.example_id, p.text, p.nbest) for p in chunked] == [(p.example_id, p.text, p.nbest) for p in whole]


def test_saved_logits_decode_to_the_same_answers(model, store, tmp_path):
    path = tmp_path / "logits.npz"
    predicted = predictions(model, store, batch_size=8, logits_path=path, chunk_windows=40)
    saved = load_window_logits(path)
    start, end = saved.padded()
    again = decode(start, end, saved, np.arange(len(saved)), n_best_size=5, max_answer_length=30)
    assert [p.text for p in again] == [p.text for p in predicted]
