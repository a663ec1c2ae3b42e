"""Model inference over a window store, across the ranks of a job (used by `mrc.evaluation`).

`batches_logits` runs windows through the model in length-sorted batches, each padded only to its
own longest window. `iter_predictions` runs a whole store across the ranks and decodes on rank 0,
chunk by chunk: a chunk holds whole examples, so the logits in memory never exceed one chunk
however large the input is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from mrc import dist
from mrc.batching import collate
from mrc.decode import DecodeConfig, Prediction, decode
from mrc.logits import WindowLogitsWriter

# Windows per decode chunk: 4,096 windows of 512 positions are 16 MiB of float32 logits.
DEFAULT_CHUNK_WINDOWS = 4096


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off for inference; the caller's mode (training mid-run) comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions into `lengths`, longest first (stable on ties), cut into batches of `batch_size`.

    Longest first, so a batch size too large for the device fails on the first batch.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[first:first + batch_size] for first in range(0, len(order), batch_size)]


def batches_logits(model: nn.Module, store, batches: list[np.ndarray], *, device: torch.device,
                   autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the windows of `batches` (window indices, one array per forward pass), float32
    `[n, T]` on `device`, rows in the order of the concatenated batches.

    T is the longest sequence among the windows; a row's positions past its own sequence length
    hold -inf (collate pads each batch to a multiple of 8, and those positions, like a shorter
    window's padding, must never look like a candidate).
    """
    windows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)   # [n]
    lengths = np.asarray(store.sequence_lengths())[windows].astype(np.int64)          # [n]
    width = int(lengths.max()) if len(windows) else 0
    start = torch.full((len(windows), width), float("-inf"), dtype=torch.float32, device=device)
    end = torch.full((len(windows), width), float("-inf"), dtype=torch.float32, device=device)
    model = dist.unwrap_model(model)
    first = 0
    with _eval_mode(model), torch.inference_mode(), _autocast(device, autocast_dtype):
        for batch_windows in batches:
            batch = collate(store, batch_windows, with_labels=False)
            batch_start, batch_end = model(batch["input_ids"].to(device, non_blocking=True),
                                           batch["token_type_ids"].to(device, non_blocking=True),
                                           batch["attention_mask"].to(device, non_blocking=True))  # [B, T_b]
            used = min(batch_start.shape[1], width)
            rows = slice(first, first + len(batch_windows))
            start[rows, :used] = batch_start[:, :used].float()
            end[rows, :used] = batch_end[:, :used].float()
            first += len(batch_windows)
    past_end = torch.arange(width, device=device)[None, :] >= torch.from_numpy(lengths).to(device)[:, None]
    start.masked_fill_(past_end, float("-inf"))
    end.masked_fill_(past_end, float("-inf"))
    return start, end


def example_chunks(example_index: np.ndarray, chunk_windows: int) -> list[tuple[int, int]]:
    """Split windows `[0, N)` into `[lo, hi)` ranges of about `chunk_windows`, never inside an example.

    `example_index` is the store's per-window example column (an example's windows are consecutive).
    An example with more windows than `chunk_windows` gets a chunk of its own.
    """
    n = len(example_index)
    if n == 0:
        return []
    example_starts = np.flatnonzero(np.diff(example_index, prepend=example_index[0] - 1) != 0)
    chunks = []
    lo = 0
    while lo < n:
        after = np.searchsorted(example_starts, lo + chunk_windows, side="left")
        hi = int(example_starts[after]) if after < len(example_starts) else n
        chunks.append((lo, hi))
        lo = hi
    return chunks


@dataclass
class ChunkLogits:
    """Logits of the windows `[lo, hi)` of a store, merged from every rank (rank 0 only)."""

    lo: int
    hi: int
    start: torch.Tensor     # [hi - lo, T] float32
    end: torch.Tensor       # [hi - lo, T] float32

    @property
    def window_indices(self) -> np.ndarray:
        return np.arange(self.lo, self.hi, dtype=np.int64)


def _merge_rank_parts(lo: int, hi: int, parts: list, device: torch.device) -> ChunkLogits:
    """Put each rank's rows (window indices, start, end) back at their window positions.

    Narrower parts are padded with -inf to the widest one.
    """
    width = max(part_start.shape[1] for _, part_start, _ in parts)
    start = torch.full((hi - lo, width), float("-inf"), dtype=torch.float32, device=device)
    end = torch.full((hi - lo, width), float("-inf"), dtype=torch.float32, device=device)
    for windows, part_start, part_end in parts:
        rows = torch.from_numpy(windows - lo).to(device)
        start[rows, :part_start.shape[1]] = torch.as_tensor(part_start, device=device)
        end[rows, :part_end.shape[1]] = torch.as_tensor(part_end, device=device)
    return ChunkLogits(lo, hi, start, end)


def iter_chunk_logits(model: nn.Module, store, ctx: dist.DistContext, *, batch_size: int,
                      autocast_dtype: torch.dtype | None = None,
                      chunk_windows: int = DEFAULT_CHUNK_WINDOWS) -> Iterator[ChunkLogits | None]:
    """Logits of the whole store, one chunk of whole examples at a time.

    Each chunk is cut into length-sorted batches the same way whatever the world size, and rank r
    runs batches r, r + world, ... (every window exactly once; ranks get similar lengths). Since a
    window always meets the same batch-mates and padding, 1 process and N processes compute the
    same logits. Rank 0 receives the merged chunk, the other ranks None; every rank must consume
    the whole iterator (each chunk ends in a collective).
    """
    lengths = np.asarray(store.sequence_lengths())
    for lo, hi in example_chunks(np.asarray(store.windows.example_index), chunk_windows):
        batches = [lo + b for b in length_sorted_batches(lengths[lo:hi], batch_size)]
        mine = batches[ctx.rank::ctx.world_size]
        start, end = batches_logits(model, store, mine, device=ctx.device, autocast_dtype=autocast_dtype)
        mine_windows = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
        parts = dist.gather_to_main((mine_windows, start.cpu().numpy(), end.cpu().numpy()), ctx) \
            if ctx.is_distributed else [(mine_windows, start, end)]
        yield _merge_rank_parts(lo, hi, parts, ctx.device) if ctx.is_main else None


def iter_predictions(model: nn.Module, store, ctx: dist.DistContext, *, batch_size: int,
                     autocast_dtype: torch.dtype | None, decoding: DecodeConfig, logits_path: Path | None = None,
                     chunk_windows: int = DEFAULT_CHUNK_WINDOWS) -> Iterator[list[Prediction]]:
    """Predictions of the store chunk by chunk (rank 0); other ranks yield empty lists.

    With `logits_path`, rank 0 also writes every window's logits there (see `mrc.logits`).
    """
    writer = WindowLogitsWriter(logits_path, store) if ctx.is_main and logits_path is not None else None
    with writer or contextlib.nullcontext():
        for chunk in iter_chunk_logits(model, store, ctx, batch_size=batch_size, autocast_dtype=autocast_dtype,
                                       chunk_windows=chunk_windows):
            if chunk is None:
                yield []
                continue
            if writer is not None:
                writer.add(chunk.lo, chunk.start.cpu().numpy(), chunk.end.cpu().numpy())
            yield decode(chunk.start, chunk.end, store, chunk.window_indices, n_best_size=decoding.n_best_size,
                         max_answer_length=decoding.max_answer_length,
                         null_score_diff_threshold=decoding.null_threshold)
