"""Batches from the window store: padded tensors built on the fly, and length-grouped sampling.

Nothing padded is ever stored: `collate` gathers each window's question and context ids from the
memory-mapped arrays and pads only to the longest window of the batch (rounded up to a multiple
of 8 for tensor cores).
"""

from __future__ import annotations

import numpy as np
import torch

from mrc.errors import MRCError
from mrc.store import WindowStore

# Batches per mega-batch: windows are sorted by length inside a mega-batch, so batches hold
# similar lengths while the order stays random at the scale of an epoch.
MEGA_BATCH_BATCHES = 50


def collate(store: WindowStore, window_indices, *, with_labels: bool, pad_to_multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """`[CLS] question [SEP] context [SEP]` of each window, padded to the batch's longest.

    Returns int64 tensors input_ids, token_type_ids, attention_mask `[B, T]`, window_index `[B]`,
    and start_positions, end_positions `[B]` when `with_labels`. Vectorised: one gather per batch.
    """
    w = np.asarray(window_indices, dtype=np.int64)  # [B]
    if with_labels and not store.has_labels:
        raise MRCError("this window store was built without labels (prediction data); "
                       "build it with labels=True from a file that has answers to train or score on it")
    t = store.windows
    q = t.query_length[w].astype(np.int64)[:, None]  # [B, 1]
    c = t.context_length[w].astype(np.int64)[:, None]  # [B, 1]
    seq_len = q + c + 3
    longest = int(seq_len.max()) if len(w) else 0
    width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    pos = np.arange(width)[None, :]  # [1, T]
    is_question = (pos >= 1) & (pos <= q)  # [B, T]
    ctx_first = q + 2
    is_context = (pos >= ctx_first) & (pos < ctx_first + c)
    q_src = store.question_token_base[t.example_index[w]][:, None] + pos - 1  # [B, T] flat question index
    c_src = (store.paragraph_token_base[t.paragraph_index[w]] + t.token_start[w])[:, None] + pos - ctx_first
    sp = store.specials
    ids = np.full((len(w), width), sp.pad_id, dtype=np.int64)  # [B, T]
    ids[is_question] = store.question_ids[q_src[is_question]]
    ids[is_context] = store.context_ids[c_src[is_context]]
    ids[:, 0] = sp.cls_id
    rows = np.arange(len(w))
    ids[rows, q[:, 0] + 1] = sp.sep_id
    ids[rows, seq_len[:, 0] - 1] = sp.sep_id
    attention = pos < seq_len  # [B, T]
    types = (pos >= ctx_first) & attention  # context and its closing [SEP] are segment 1
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types.astype(np.int64)),
        "attention_mask": torch.from_numpy(attention.astype(np.int64)),
        "window_index": torch.from_numpy(w.copy()),
    }
    if with_labels:
        batch["start_positions"] = torch.from_numpy(np.asarray(t.start_position[w], dtype=np.int64))
        batch["end_positions"] = torch.from_numpy(np.asarray(t.end_position[w], dtype=np.int64))
    return batch


class LengthGroupedSampler:
    """Seeded, deterministic batches of similar-length windows.

    Per epoch: shuffle all windows with (seed, epoch); cut them into ceil(n / batch_size) batches
    of near-equal size (at most `batch_size`); sort windows by length inside each mega-batch of
    MEGA_BATCH_BATCHES batches; shuffle the batch order. Together the batches cover every window
    once. (Training splits each of these *global* batches between ranks: `mrc.schedule`.)
    """

    def __init__(self, lengths, batch_size: int, seed: int):
        if batch_size < 1:
            raise MRCError(f"batch size must be at least 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of window indices for `epoch` (same on every call and every machine)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        n_batches = len(self)
        sizes = np.full(n_batches, len(order) // max(n_batches, 1))
        sizes[:len(order) % max(n_batches, 1)] += 1
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for first in range(0, n_batches, MEGA_BATCH_BATCHES):
            lo, hi = bounds[first], bounds[min(first + MEGA_BATCH_BATCHES, n_batches)]
            chunk = order[lo:hi]
            order[lo:hi] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        batches = [order[bounds[b]:bounds[b + 1]] for b in range(n_batches)]
        return [batches[b] for b in rng.permutation(n_batches)]
