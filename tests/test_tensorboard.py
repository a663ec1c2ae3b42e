"""mrc/tensorboard.py: --report_to tensorboard writes the logged scalars; without the package, one clear error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mrc.errors import MRCError
from mrc.tensorboard import RUNS_DIR, TAGS, require
from conftest import cli_module, train_args  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_event_files_hold_every_logged_scalar_at_its_step(unattended_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(unattended_run / RUNS_DIR), size_guidance={"scalars": 0})
    events.Reload()
    logged = [json.loads(line) for line in (unattended_run / "metrics.jsonl").read_text().splitlines()]
    expected_tags = {tag for key, tag in TAGS.items() if any(key in e for e in logged)}
    assert {"loss", "lr", "eval_exact_match", "eval_f1", "grad_norm", "loss_scale", "tokens_per_s"} <= expected_tags
    assert set(events.Tags()["scalars"]) == expected_tags
    for key, tag in TAGS.items():
        if tag not in expected_tags:
            continue
        written = [(s.step, s.value) for s in events.Scalars(tag)]
        wanted = [(e["step"], e[key]) for e in logged if key in e]
        assert [s for s, _ in written] == [s for s, _ in wanted], tag
        assert np.array_equal(np.float32([v for _, v in written]), np.float32([v for _, v in wanted])), tag


def test_asking_for_tensorboard_without_the_package_fails_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(MRCError, match=r"pip install -e '\.\[tensorboard\]'"):
        require("tensorboard")
    require("none")  # the default needs nothing

    cli = cli_module("train")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        cli.main(["--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(out), "--do_train",
                  "--train_file", "t.json", "--report_to", "tensorboard"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: --report_to tensorboard needs the tensorboard package")
    assert "Traceback" not in err and not out.exists()


def test_report_to_accepts_only_known_sinks(capsys):
    cli = cli_module("train")
    with pytest.raises(SystemExit):
        cli.parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--do_train", "--train_file", "t",
                        "--report_to", "wandb"])
    assert "invalid choice: 'wandb'" in capsys.readouterr().err


def test_a_resumed_run_shows_each_step_once(tiny_model, korquad_train_subset, tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = cli_module("train")
    out = tmp_path / "run"
    args = [*train_args(tiny_model, out, korquad_train_subset, tmp_path / "cache"), "--max_train_samples", "40",
            "--per_gpu_train_batch_size", "4", "--max_steps", "6", "--logging_steps", "2", "--save_steps", "2",
            "--report_to", "tensorboard"]
    cli.main(args)
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out / "checkpoint-6")  # as if the run died between steps 4 and 6's checkpoint
    shutil.rmtree(out / "checkpoint-4")
    cli.main([*args, "--resume"])        # steps 3..6 again from checkpoint-2
    events = EventAccumulator(str(out / RUNS_DIR), size_guidance={"scalars": 0})
    events.Reload()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [e["step"] for e in first] == [2, 4, 6]
    assert [(s.step, np.float32(s.value)) for s in events.Scalars("loss")] == \
        [(e["step"], np.float32(e["loss"])) for e in logged]
