"""mrc/schedule.py: which windows each epoch trains on, global batches, micro-batches (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from mrc.errors import MRCError
from mrc.schedule import Progress, Sampling, TrainData, epoch_windows, plan_schedule, rank_micro_batches


def sampling_data(n_files: int = 1, weights: list[float] | None = None, n: int = 1000) -> TrainData:
    negative = np.zeros(n, dtype=bool)
    negative[::3] = True  # 334 of 1,000 windows without the answer
    lengths = (50 + np.arange(n) * 7 % 400).astype(np.int32)
    return TrainData(store=None, window_file=(np.arange(n) % n_files).astype(np.int32),
                     weights=weights or [1.0] * n_files, is_negative=negative, lengths=lengths)


def sampling(**changes) -> Sampling:
    return Sampling(**{"seed": 7, "neg_ratio": 1.0, "global_batch": 16, "world_size": 1, "group_by_length": True,
                       **changes})


def test_neg_ratio_keeps_a_seeded_fraction_of_no_answer_windows():
    data = sampling_data()
    first, counts = epoch_windows(data, sampling(neg_ratio=0.25), epoch=0)
    assert (counts.windows, counts.with_answer, counts.without_answer, counts.kept_without_answer) == \
        (666 + 84, 666, 334, 84)
    assert len(first) == 750 and len(set(first)) == 750
    assert (~data.is_negative[first]).sum() == 666  # every window with the answer stays
    again, _ = epoch_windows(data, sampling(neg_ratio=0.25), epoch=0)
    assert np.array_equal(first, again)  # the same on every rank and after a resume
    second, _ = epoch_windows(data, sampling(neg_ratio=0.25), epoch=1)
    assert not np.array_equal(np.sort(first), np.sort(second))  # a new draw of negatives each epoch


def test_file_weights_repeat_or_subsample_a_file():
    data = sampling_data(n_files=2, weights=[2.0, 0.5])
    chosen, _ = epoch_windows(data, sampling(), epoch=0)
    per_file = np.bincount(data.window_file[chosen], minlength=2)
    assert per_file.tolist() == [1000, 250]  # file a: its 500 windows twice; file b: half of its 500


@pytest.mark.parametrize("group_by_length", [True, False])
def test_every_window_is_trained_once_per_epoch_in_global_batches(group_by_length):
    data = sampling_data()
    schedule = plan_schedule(data, sampling(group_by_length=group_by_length), num_train_epochs=2, max_steps=-1)
    assert len(schedule.epochs) == 2 and schedule.total_steps == 2 * 63   # ceil(1000 / 16)
    for batches in schedule.epochs:
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert max(len(b) for b in batches) == 16 and min(len(b) for b in batches) >= 8
    if group_by_length:  # a batch holds windows of similar length: less padding than a random draw
        spread = np.mean([np.ptp(data.lengths[b]) for b in schedule.epochs[0]])
        assert spread < 0.5 * np.ptp(data.lengths)


def test_fractional_epochs_and_max_steps_cut_the_last_epoch():
    data = sampling_data()
    half = plan_schedule(data, sampling(), num_train_epochs=1.5, max_steps=-1)
    assert [len(e) for e in half.epochs] == [63, 32] and half.epoch_sizes == [63, 63]
    capped = plan_schedule(data, sampling(), num_train_epochs=3, max_steps=70)
    assert capped.total_steps == 70 and [len(e) for e in capped.epochs] == [63, 7]
    # positions count against full epochs: a run cut by --max_steps resumes inside the epoch
    assert capped.position(70) == (1, 7) and capped.epoch_progress(Progress(70, 1, 7)) == pytest.approx(1 + 7 / 63)


def test_remaining_batches_resume_exactly_where_a_run_stopped():
    schedule = plan_schedule(sampling_data(), sampling(), num_train_epochs=2, max_steps=-1)
    everything = list(schedule.remaining(Progress()))
    assert [p.step for p, _ in everything] == list(range(1, 127))
    assert everything[62][0] == Progress(63, 1, 0)      # the epoch's last batch moves to the next epoch
    stopped_at = everything[40][0]
    rest = list(schedule.remaining(stopped_at))
    assert [p for p, _ in rest] == [p for p, _ in everything[41:]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(rest, everything[41:]))


def test_splitting_a_global_batch_does_not_change_its_mean_loss_weights():
    batch = np.arange(10)
    for world, accumulation in [(1, 1), (1, 3), (2, 1), (2, 2), (4, 3)]:
        parts = [part for rank in range(world) for part in rank_micro_batches(batch, rank, world, accumulation)]
        assert sorted(np.concatenate([rows for rows, _ in parts]).tolist()) == list(range(10))
        assert all(weight == pytest.approx(len(rows) * world / len(batch)) for rows, weight in parts)
        # DDP averages gradients over ranks: the weights then add up to one mean over the global batch
        assert sum(weight for _, weight in parts) / world == pytest.approx(1.0)


def test_an_epoch_smaller_than_the_world_is_a_clear_error():
    with pytest.raises(MRCError, match="fewer than the 8 processes"):
        plan_schedule(sampling_data(n=5), sampling(world_size=8, global_batch=8), num_train_epochs=1, max_steps=-1)
