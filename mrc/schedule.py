"""Which windows each epoch trains on, in which global batches, split how across ranks.

Pure numpy over index arrays: no model, no files. Each epoch draws its windows (file weights,
then `--neg_ratio`), groups them by length into *global* batches of micro-batch x accumulation x
world size windows, and every rank takes the same global batch list. Rank r's share of a global
batch is split into `accumulation` micro-batches, each padded only to its own longest window.
Because the global batches do not depend on how they are split, 1 process with micro-batch 4
and 2 processes with micro-batch 2 (or accumulation 2) take identical optimizer steps. Every
draw depends only on (seed, epoch), so a resumed run replans exactly the same schedule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from mrc.batching import LengthGroupedSampler
from mrc.errors import MRCError


@dataclass
class Progress:
    """Where training stands after `step` optimizer steps (saved in every checkpoint)."""

    step: int = 0           # optimizer steps done
    epoch: int = 0          # epoch the next global batch comes from (0-based)
    batches_done: int = 0   # global batches of `epoch` already consumed


@dataclass
class TrainData:
    """The training windows and what epoch sampling needs to know about each."""

    store: object                   # mrc.store.WindowStore
    window_file: np.ndarray         # int32 [N] index into `weights` of the file a window came from
    weights: list[float]            # per training file
    is_negative: np.ndarray         # bool [N] label is CLS (answer not inside the window)
    lengths: np.ndarray             # int32 [N] sequence length of each window


@dataclass(frozen=True)
class Sampling:
    """How an epoch draws and batches its windows."""

    seed: int
    neg_ratio: float        # fraction of the windows without the answer kept
    global_batch: int       # windows per optimizer step, all ranks together
    world_size: int
    group_by_length: bool


@dataclass(frozen=True)
class EpochCounts:
    windows: int                # drawn and kept
    with_answer: int
    without_answer: int         # drawn
    kept_without_answer: int
    steps: int                  # global batches of the full epoch


def epoch_windows(data: TrainData, sampling: Sampling, epoch: int) -> tuple[np.ndarray, EpochCounts]:
    """The windows one epoch trains on (file weights, then --neg_ratio), and their counts.

    A file of weight w contributes floor(w) copies of all its windows plus a seeded random
    fraction w - floor(w) of them; then a seeded fraction `neg_ratio` of the windows whose label is
    CLS is kept. Both draws depend only on (seed, epoch). `steps` is filled by `plan_schedule`.
    """
    rng = np.random.default_rng([sampling.seed, epoch, 0])
    parts = []
    for f, weight in enumerate(data.weights):
        mine = np.flatnonzero(data.window_file == f)
        whole, fraction = divmod(weight, 1.0)
        parts.extend([mine] * int(whole))
        if fraction > 0:
            parts.append(np.sort(rng.choice(mine, size=round(fraction * len(mine)), replace=False)))
    chosen = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    negative = data.is_negative[chosen]
    n_negative = int(negative.sum())
    keep = ~negative
    kept_negative = round(sampling.neg_ratio * n_negative)
    keep[np.flatnonzero(negative)[rng.choice(n_negative, size=kept_negative, replace=False)]] = True
    counts = EpochCounts(windows=int(keep.sum()), with_answer=int((~negative).sum()), without_answer=n_negative,
                         kept_without_answer=kept_negative, steps=0)
    return chosen[keep], counts


def global_batches(data: TrainData, windows: np.ndarray, sampling: Sampling, epoch: int) -> list[np.ndarray]:
    """The epoch's global batches (window indices), identical on every rank.

    A last batch smaller than the world size is dropped: every rank must get at least one window.
    """
    size = sampling.global_batch
    if sampling.group_by_length:
        sampler = LengthGroupedSampler(data.lengths[windows], size, sampling.seed)
        batches = [windows[b] for b in sampler.batches(epoch)]
    else:
        order = np.random.default_rng([sampling.seed, epoch, 1]).permutation(len(windows))
        batches = [windows[order[i:i + size]] for i in range(0, len(windows), size)]
    return [b for b in batches if len(b) >= sampling.world_size]


def rank_micro_batches(batch: np.ndarray, rank: int, world_size: int,
                       accumulation: int) -> list[tuple[np.ndarray, float]]:
    """This rank's micro-batches of a global batch, each with the weight of its mean loss.

    weight = rows x world / global rows: with DDP averaging gradients over ranks, the step's
    gradient is then the mean over the whole global batch however it was split (1 / accumulation
    when it splits evenly).
    """
    mine = batch[rank::world_size]
    return [(rows, len(rows) * world_size / len(batch)) for rows in np.array_split(mine, accumulation) if len(rows)]


@dataclass
class Schedule:
    """Every epoch's global batches, planned up front (index arrays only) to know the total steps."""

    epochs: list[list[np.ndarray]]  # global batches to train per epoch (the last one may be cut short)
    counts: list[EpochCounts]       # per planned epoch; counts[e].steps = global batches of the full epoch
    total_steps: int

    @property
    def epoch_sizes(self) -> list[int]:
        return [c.steps for c in self.counts]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batches done in it) after `step` optimizer steps."""
        for epoch, size in enumerate(self.epoch_sizes):
            if step < size:
                return epoch, step
            step -= size
        return len(self.epoch_sizes), step

    def epoch_progress(self, progress: Progress) -> float:
        """Epochs done, fractional (of full epochs, also when --max_steps cuts the last one)."""
        if progress.batches_done == 0:
            return float(progress.epoch)
        return progress.epoch + progress.batches_done / self.epoch_sizes[progress.epoch]

    def remaining(self, progress: Progress) -> Iterator[tuple[Progress, np.ndarray]]:
        """Each global batch still to train after `progress`, with the progress reached once it is trained."""
        step = progress.step
        for epoch in range(progress.epoch, len(self.epochs)):
            batches = self.epochs[epoch]
            for index in range(progress.batches_done if epoch == progress.epoch else 0, len(batches)):
                step += 1
                # Against the full epoch: a run cut short by --max_steps resumes inside it, not after it.
                done = (Progress(step, epoch + 1, 0) if index + 1 == self.epoch_sizes[epoch]
                        else Progress(step, epoch, index + 1))
                yield done, batches[index]


def plan_schedule(data: TrainData, sampling: Sampling, *, num_train_epochs: float, max_steps: int) -> Schedule:
    """Epochs until `num_train_epochs` (a fraction cuts the last one), or `max_steps` steps when > 0."""
    epochs: list[list[np.ndarray]] = []
    counts: list[EpochCounts] = []
    total = 0
    while True:
        epoch = len(epochs)
        windows, epoch_counts = epoch_windows(data, sampling, epoch)
        batches = global_batches(data, windows, sampling, epoch)
        if not batches:
            raise MRCError(f"an epoch has {epoch_counts.windows} windows, fewer than the {sampling.world_size} "
                           "processes; use more training data or fewer processes")
        counts.append(dataclasses.replace(epoch_counts, steps=len(batches)))
        if max_steps > 0:
            epochs.append(batches[:max_steps - total])
            total += len(epochs[-1])
            if total >= max_steps:
                return Schedule(epochs, counts, total)
        else:
            remaining = num_train_epochs - epoch
            if remaining < 1:
                batches = batches[:math.ceil(remaining * len(batches))]
            epochs.append(batches)
            total += len(batches)
            if epoch + 1 >= math.ceil(num_train_epochs):
                return Schedule(epochs, counts, total)
