"""mrc/retention.py: which checkpoints a long run keeps, and which becomes the final model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mrc.errors import MRCError
from mrc.retention import (DELETING_SUFFIX, CheckpointConfig, best_checkpoint, best_step, rotate_checkpoints,
                           steps_to_delete)
from mrc.train_state import MODEL_FILES, REQUIRED_FILES, latest_checkpoint, model_checkpoints
from conftest import cli_module, train_args  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def fake_checkpoint(out: Path, step: int, *, resumable: bool = True) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in REQUIRED_FILES if resumable else MODEL_FILES:
        (folder / name).write_text("x")
    return folder


def scores_of(f1: dict[int, float]) -> dict[str, dict[str, float]]:
    return {str(step): {"exact_match": value / 2, "f1": value} for step, value in f1.items()}


# -- the rule, swept over limits, best positions and resumability


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("best_at", [None, 0, 2, 4, 6])   # index of the best-scored checkpoint
@pytest.mark.parametrize("model_only_from", [None, 3])   # checkpoints from this index on lack optimizer state
def test_rotation_keeps_the_newest_the_best_and_the_resumable(tmp_path, limit, best_at, model_only_from):
    steps = [100 * (i + 1) for i in range(7)]
    for i, step in enumerate(steps):
        fake_checkpoint(tmp_path, step, resumable=model_only_from is None or i < model_only_from)
    f1 = {step: 50.0 for step in steps}
    if best_at is not None:
        f1[steps[best_at]] = 90.0
    scores = scores_of(f1) if best_at is not None else {}
    resumable_before = latest_checkpoint(tmp_path)

    deleted = rotate_checkpoints(tmp_path, CheckpointConfig(save_total_limit=limit), scores)

    kept = {step for step, _ in model_checkpoints(tmp_path)}
    expected = set(steps[-limit:])
    if best_at is not None:
        expected.add(steps[best_at])
    expected.add(int(resumable_before.name.split("-")[1]))
    assert kept == expected
    assert {int(p.name.split("-")[1]) for p in deleted} == set(steps) - expected
    assert latest_checkpoint(tmp_path) == resumable_before  # a resume still finds what it needs
    assert not list(tmp_path.glob(f".*{DELETING_SUFFIX}"))


def test_without_a_limit_nothing_is_deleted(tmp_path):
    for step in (10, 20, 30):
        fake_checkpoint(tmp_path, step)
    assert rotate_checkpoints(tmp_path, CheckpointConfig(), {}) == []
    assert steps_to_delete([10, 20, 30], None, set()) == []
    assert len(model_checkpoints(tmp_path)) == 3


def test_an_incomplete_or_half_deleted_folder_is_never_counted_and_is_cleaned_up(tmp_path):
    for step in (10, 20, 30):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-40").mkdir()                   # being written (no files yet): not a checkpoint
    leftover = tmp_path / f".checkpoint-5{DELETING_SUFFIX}"  # a crash in the middle of a deletion
    leftover.mkdir()
    (leftover / "model.safetensors").write_text("x")
    deleted = rotate_checkpoints(tmp_path, CheckpointConfig(save_total_limit=1), {})
    assert [p.name for p in deleted] == ["checkpoint-10", "checkpoint-20"]
    assert (tmp_path / "checkpoint-40").is_dir() and not leftover.exists()


@pytest.mark.parametrize("f1, steps, expected", [
    ({10: 1.0, 20: 3.0, 30: 2.0}, [10, 20, 30], 20),
    ({10: 3.0, 20: 3.0}, [10, 20], 10),           # a tie keeps the earlier one
    ({10: 1.0, 20: 9.0}, [10], 10),               # a step without a checkpoint is no candidate
    ({}, [10, 20], None),
])
def test_best_step(f1, steps, expected):
    assert best_step(scores_of(f1), steps) == expected


@pytest.mark.parametrize("final_f1, expected", [(99.0, None), (1.0, 20)])
def test_best_checkpoint_is_none_when_the_final_model_is_best(tmp_path, final_f1, expected):
    for step in (10, 20):
        fake_checkpoint(tmp_path, step)
    best = best_checkpoint(tmp_path, scores_of({10: 5.0, 20: 7.0, 25: final_f1}), final_step=25)
    assert (best[0] if best else None) == expected


@pytest.mark.parametrize("extra, message", [
    (["--save_total_limit", "0"], "--save_total_limit must be at least 1"),
    (["--load_best_model_at_end"], "add --evaluate_during_training"),
    (["--load_best_model_at_end", "--evaluate_during_training", "--predict_file", "dev.json", "--logging_steps", "20",
      "--save_steps", "30"], "must be a positive multiple of --logging_steps"),
    (["--load_best_model_at_end", "--evaluate_during_training", "--predict_file", "dev.json", "--logging_steps", "20",
      "--save_steps", "0"], "must be a positive multiple of --logging_steps"),
])
def test_bad_retention_flags_are_refused_before_any_work(extra, message):
    cli = cli_module("train")
    with pytest.raises(MRCError, match=message):
        cli.parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--do_train", "--train_file", "t.json",
                        *extra])


# -- a real run: --save_steps 10 --save_total_limit 2 --load_best_model_at_end


def test_a_long_run_ends_with_exactly_the_promised_checkpoints(unattended_run):
    results = json.loads((unattended_run / "eval_results.json").read_text())
    scores = {k: v for k, v in results.items() if k != "best"}
    assert set(scores) == {"10", "20", "30", "40", "50"}  # every checkpoint was scored
    best = best_step(scores, [10, 20, 30, 40, 50])
    kept = {step for step, _ in model_checkpoints(unattended_run)}
    assert kept == {40, 50, best}
    assert all((unattended_run / f"checkpoint-{s}").is_dir() == (s in kept) for s in (10, 20, 30, 40, 50))
    assert all(set(REQUIRED_FILES) <= {p.name for p in (unattended_run / f"checkpoint-{s}").iterdir()} for s in kept)

    final = load_file(str(unattended_run / "model.safetensors"))
    chosen = load_file(str(unattended_run / f"checkpoint-{best}" / "model.safetensors"))
    assert final.keys() == chosen.keys() and all(torch.equal(final[k], chosen[k]) for k in final)
    if best != 50:
        last = load_file(str(unattended_run / "checkpoint-50" / "model.safetensors"))
        assert any(not torch.equal(final[k], last[k]) for k in final)  # not just the last weights
    assert results["best"] == str(best)


def test_save_only_model_checkpoints_evaluate_but_do_not_resume(unattended_run, tmp_path, korquad_train_subset,
                                                                korquad_dev, capsys):
    cli = cli_module("train")
    out = tmp_path / "model_only"
    args = [*train_args(unattended_run, out, korquad_train_subset, tmp_path / "cache"),
            "--max_train_samples", "24",
            "--per_gpu_train_batch_size", "8", "--max_steps", "4", "--logging_steps", "2", "--save_steps", "2",
            "--save_total_limit", "1", "--save_only_model",
            "--do_eval", "--eval_all_checkpoints", "--predict_file", str(korquad_dev), "--max_eval_samples", "5"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli.main(args)
    finally:
        torch.set_num_threads(threads)
    assert [s for s, _ in model_checkpoints(out)] == [4]
    names = {p.name for p in (out / "checkpoint-4").iterdir()}
    assert {"model.safetensors", "config.json", "trainer_state.json", "README.md"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pt"}
    assert latest_checkpoint(out) is None
    f1 = json.loads((out / "eval_results.json").read_text())["4"]["f1"]  # scored at the end, card rewritten
    card = (out / "checkpoint-4" / "README.md").read_text()
    assert f"    - type: f1\n      value: {round(f1, 2)}\n" in card and "not resumable" in card
    with pytest.raises(SystemExit) as stop:
        cli.main([*args, "--resume"])
    assert stop.value.code == 2 and "saved with --save_only_model" in capsys.readouterr().err


def test_every_file_the_run_saved_has_the_modes_the_umask_gives(unattended_run):
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in unattended_run.rglob("*") if p.is_file()]
    assert {"model.safetensors", "optimizer.pt", "README.md", "metrics.jsonl"} <= {p.name for p in files}
    assert {str(p.relative_to(unattended_run)): p.stat().st_mode & 0o777 for p in files} == \
        {str(p.relative_to(unattended_run)): 0o666 & ~umask for p in files}
