"""train.py end to end on a tiny model and real KorQuAD data (CPU).

A tiny ELECTRA (hidden 32, 2 layers) with the real KoELECTRA vocabulary keeps every run to a few
seconds. Runs that must match each other use dropout 0 (DDP, accumulation) or the same seed
(resume, where dropout stays on so the restored RNG state matters).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mrc.checkpoint import load_model, save_model
from mrc.data import read_examples
from mrc.dist import DistContext
from mrc.train_state import REQUIRED_FILES
from mrc.errors import MRCError
from mrc.model import ElectraForQA, ModelConfig
from mrc.reporting import Reporter
from mrc.train_data import load_train_data, read_train_examples
from conftest import cli_module, train_args  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Several small processes share few cores: one thread each avoids oversubscription stalls.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def make_tiny_model(folder: Path, vocab_folder: Path, dropout: float) -> Path:
    cfg = ModelConfig(hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    save_model(ElectraForQA(cfg), cfg, folder, vocab_folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, koelectra_folder) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", koelectra_folder, dropout=0.0)


@pytest.fixture(scope="module")
def tiny_model_dropout(tmp_path_factory, koelectra_folder) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_dropout") / "model", koelectra_folder, dropout=0.1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("window_cache")


@pytest.fixture
def one_thread():
    """In-process runs use one thread, like the subprocess runs they are compared with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli():
    """The repository-root train.py as a module (its `main` and `parse_args`)."""
    module = cli_module("train")
    return module


def run_train_py(args: list[str], *, prefix: list[str] | None = None,
                 timeout: int = 120) -> subprocess.CompletedProcess:
    command = (prefix or [sys.executable]) + ([] if prefix and "-c" in prefix else [str(REPO / "train.py")]) + args
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# The real script


def test_train_py_end_to_end(tiny_model, korquad_train_subset, korquad_dev, cache_dir, tmp_path):
    out = tmp_path / "run"
    result = run_train_py(train_args(
        tiny_model, out, korquad_train_subset, cache_dir, "--predict_file", str(korquad_dev), "--do_eval",
        "--evaluate_during_training", "--max_eval_samples", "30", "--per_gpu_train_batch_size", "8",
        "--learning_rate", "1e-3", "--max_steps", "40", "--logging_steps", "20", "--save_steps", "20"))
    assert result.returncode == 0, result.stderr
    assert "global batch = 8 per micro-batch x 1 accumulation x 1 process(es) = 8" in result.stderr

    log = metrics(out)
    assert [e["step"] for e in log] == [20, 40]
    assert log[1]["loss"] < log[0]["loss"] < 5.0  # ln(128 positions) ~ 4.85 at the start
    for key in ("lr", "grad_norm", "loss_scale", "tokens_per_s", "eval_exact_match", "eval_f1"):
        assert all(np.isfinite(e[key]) for e in log), key
    assert log[1]["lr"] == 0.0  # linear decay reaches 0 at the last step

    for step in (20, 40):
        folder = out / f"checkpoint-{step}"
        assert all((folder / name).is_file() for name in REQUIRED_FILES)
        assert json.loads((folder / "training_args.json").read_text())["learning_rate"] == 1e-3
        for pt in folder.glob("*.pt"):
            torch.load(pt, weights_only=True)  # no pickled objects in the training state
        predictions = json.loads((out / f"predictions_{step}.json").read_text())
        assert len(predictions) == 30 and all(isinstance(v, str) for v in predictions.values())
        nbest = json.loads((out / f"nbest_predictions_{step}.json").read_text())
        assert set(nbest) == set(predictions)
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results) == {"20", "40", "best"} and 0.0 <= results["40"]["f1"] <= 100.0

    final, _ = load_model(out, report=None)  # the final model is an HF folder in output_dir
    assert torch.equal(final.qa_outputs.weight, load_model(out / "checkpoint-40", report=None)[0].qa_outputs.weight)
    assert not list(out.glob(".*tmp"))  # no half-written folders left behind


# ---------------------------------------------------------------------------------------------
# Same optimizer steps however the global batch is split


# One epoch of the first 3 questions: 21 windows in global batches of 4, 4, 4, 3, 3, 3, so the
# 3-window batches split unevenly (2 + 1) between micro-batches or ranks. adam_epsilon 1 makes the
# update follow the gradient's size (plain Adam is scale-invariant and would hide a wrong loss
# weight, and it would blow rounding noise on zero-gradient parameters up to full steps);
# max_grad_norm 100 computes the norm without clipping, which is scale-invariant too.
EQUIVALENCE = ("--learning_rate", "0.02", "--adam_epsilon", "1", "--max_grad_norm", "100", "--max_steps", "6",
               "--logging_steps", "3", "--save_steps", "0", "--max_train_samples", "3")


def logged_losses(out: Path) -> np.ndarray:
    return np.array([e["loss"] for e in metrics(out)])


@pytest.fixture(scope="module")
def reference_run(tiny_model, korquad_train_subset, cache_dir, tmp_path_factory) -> Path:
    """1 process, micro-batch 4, no accumulation, dropout off."""
    out = tmp_path_factory.mktemp("reference") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli().main(train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "4",
                              *EQUIVALENCE))
    finally:
        torch.set_num_threads(before)
    return out


def test_accumulation_matches_bigger_micro_batch(reference_run, tiny_model, korquad_train_subset, cache_dir,
                                                 tmp_path, one_thread):
    out = tmp_path / "accum"
    cli().main(train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "2",
                          "--gradient_accumulation_steps", "2", *EQUIVALENCE))
    trained = weights(out)
    assert max_difference(trained, weights(tiny_model)) > 1e-4  # the steps did move the weights
    assert max_difference(trained, weights(reference_run)) <= 1e-5
    assert np.allclose(logged_losses(out), logged_losses(reference_run), rtol=0, atol=1e-5)


def test_two_process_ddp_matches_one_process(reference_run, tiny_model, korquad_train_subset, cache_dir, tmp_path):
    out = tmp_path / "ddp"
    result = run_train_py(
        train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "2",
                   *EQUIVALENCE),
        prefix=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(29500 + os.getpid() % 1000)])
    assert result.returncode == 0, result.stderr
    assert "2 process(es) on cpu" in result.stderr and "= 4 windows per step" in result.stderr
    assert max_difference(weights(out), weights(reference_run)) <= 1e-5
    assert np.allclose(logged_losses(out), logged_losses(reference_run), rtol=0, atol=1e-5)  # mean over ranks


def test_two_nodes_over_loopback_match_one_process(reference_run, tiny_model, korquad_train_subset, cache_dir,
                                                   tmp_path):
    """`torchrun --nnodes 2 --node_rank R --rdzv_backend c10d` as on two machines: two agents, one process each."""
    out = tmp_path / "nodes"
    port = free_port()
    args = train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "2", *EQUIVALENCE)
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node",
         "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "mrc-test",
         "--local_addr", "127.0.0.1", str(REPO / "train.py"), *args],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        finished = [node.communicate(timeout=180) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], finished
    logs = "".join(err for _, err in finished)
    assert "2 process(es) on cpu" in logs and "= 4 windows per step" in logs
    assert max_difference(weights(out), weights(reference_run)) <= 1e-5
    assert np.allclose(logged_losses(out), logged_losses(reference_run), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Resume, interruption, faults


KILL_AFTER_SAVE = """
import os, runpy, signal, sys
import mrc.train as train
save = train.save_checkpoint
def save_then_die(trainer, progress, ctx, folder, **kwargs):
    save(trainer, progress, ctx, folder, **kwargs)
    if progress.step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
train.save_checkpoint = save_then_die
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_resume_after_sigkill_is_bit_identical(tiny_model_dropout, korquad_train_subset, cache_dir, tmp_path,
                                               one_thread):
    # 6 questions: 42 windows, 26 of them drawn per epoch at --neg_ratio 0.5, 7 steps per epoch. The
    # run dies after checkpoint-6 (epoch 1), so the resumed part crosses into epoch 2 (a new draw).
    common = ["--per_gpu_train_batch_size", "4", "--learning_rate", "1e-3", "--max_steps", "12", "--warmup_steps", "3",
              "--logging_steps", "2", "--save_steps", "3", "--max_train_samples", "6", "--neg_ratio", "0.5"]
    straight = tmp_path / "straight"
    cli().main(train_args(tiny_model_dropout, straight, korquad_train_subset, cache_dir, *common))

    resumed = tmp_path / "resumed"
    args = train_args(tiny_model_dropout, resumed, korquad_train_subset, cache_dir, *common)
    killed = run_train_py(args, prefix=[sys.executable, "-c", KILL_AFTER_SAVE.format(step=6)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (resumed / "checkpoint-6").is_dir() and not (resumed / "checkpoint-9").exists()
    assert not (resumed / "model.safetensors").exists()

    refused = run_train_py(args)  # the same command without --resume must not train over it
    assert refused.returncode == 2 and "--resume" in refused.stderr and "Traceback" not in refused.stderr

    again = run_train_py(args + ["--resume"])
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stderr and "checkpoint-6" in again.stderr
    final = weights(resumed)
    assert all(torch.equal(final[k], v) for k, v in weights(straight).items())
    assert all(torch.equal(weights(resumed / "checkpoint-9")[k], v)
               for k, v in weights(straight / "checkpoint-9").items())
    logged = [(e["step"], e["loss"]) for e in metrics(resumed)]  # each step logged once, across both runs
    assert logged == [(e["step"], e["loss"]) for e in metrics(straight)]
    assert [step for step, _ in logged] == [2, 4, 6, 8, 10, 12]


def test_a_run_that_fails_before_its_first_step_can_be_retried_with_the_same_command(
        tiny_model, korquad_train_subset, cache_dir, tmp_path, monkeypatch, capsys):
    """A failed start (here the first step fails, as an out-of-memory would) must not block the retry."""
    import mrc.train as train

    out = tmp_path / "out"
    args = train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "4",
                      "--max_steps", "1", "--max_train_samples", "6")

    def fail(*a, **k):
        raise MRCError("the first step failed")

    with monkeypatch.context() as patch:
        patch.setattr(train, "train_step", fail)
        with pytest.raises(SystemExit):
            cli().main(args)
    assert sorted(p.name for p in out.iterdir()) == ["training_args.json"]
    cli().main(args)
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("into", ["its own output_dir", "a new output_dir"])
def test_resume_from_checkpoint_continues_that_step_exactly(into, tiny_model_dropout, korquad_train_subset,
                                                            cache_dir, tmp_path, one_thread, capsys):
    """The seed's idiom (continue from a checkpoint folder) as --resume_from_checkpoint, from any checkpoint."""
    common = ["--per_gpu_train_batch_size", "4", "--learning_rate", "1e-3", "--max_steps", "6", "--logging_steps", "2",
              "--save_steps", "2", "--max_train_samples", "6"]
    straight = tmp_path / "straight"
    cli().main(train_args(tiny_model_dropout, straight, korquad_train_subset, cache_dir, *common))
    expected = weights(straight)
    out = straight if into == "its own output_dir" else tmp_path / "continued"
    capsys.readouterr()
    cli().main(train_args(tiny_model_dropout, out, korquad_train_subset, cache_dir, *common,
                          "--resume_from_checkpoint", str(straight / "checkpoint-2")))
    assert f"resumed from {straight / 'checkpoint-2'} at step 2" in capsys.readouterr().err
    assert max_difference(weights(out), expected) == 0
    # Its own metrics.jsonl keeps the steps up to the checkpoint and logs the rest once; a new folder logs what it ran.
    assert [e["step"] for e in metrics(out)] == ([2, 4, 6] if out == straight else [4, 6])


def test_a_checkpoint_given_as_the_model_starts_a_new_run_and_says_how_to_continue(
        tiny_model, korquad_train_subset, cache_dir, tmp_path, one_thread, capsys):
    run = tmp_path / "run"
    cli().main(train_args(tiny_model, run, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "4",
                          "--max_steps", "2", "--save_steps", "2", "--max_train_samples", "6"))
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    cli().main(train_args(run / "checkpoint-2", fresh, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size",
                          "4", "--max_steps", "1", "--logging_steps", "1", "--max_train_samples", "6"))
    err = " ".join(capsys.readouterr().err.split())
    assert "is a training checkpoint (step 2): this starts a new run from its weights at step 0" in err
    assert f"--resume_from_checkpoint {run / 'checkpoint-2'}" in err
    assert [e["step"] for e in metrics(fresh)] == [1]


@pytest.mark.parametrize("extra, message", [
    (["--resume_from_checkpoint", "nowhere"], "--resume_from_checkpoint nowhere: no such folder"),
    (["--resume_from_checkpoint", "{model}"], "not a complete training checkpoint .*optimizer.pt"),
    (["--resume_from_checkpoint", "{model}", "--resume"], "without --resume"),
])
def test_resume_from_checkpoint_refuses_what_it_cannot_continue(extra, message, tiny_model, korquad_train_subset,
                                                                cache_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli().main(train_args(tiny_model, out, korquad_train_subset, cache_dir,
                              *[a.format(model=tiny_model) for a in extra]))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and re.search(message, " ".join(err.split())) and "Traceback" not in err
    assert not out.exists()


INTERRUPT_AT_STEP = """
import os, runpy, signal, sys
import mrc.train as train
step_fn, calls = train.train_step, []
def step_then_ctrl_c(*args, **kwargs):
    calls.append(1)
    if len(calls) == {step}:
        os.kill(os.getpid(), signal.SIGINT)
    return step_fn(*args, **kwargs)
train.train_step = step_then_ctrl_c
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_model, korquad_train_subset, cache_dir, tmp_path):
    out = tmp_path / "interrupted"
    args = train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size", "4",
                      "--max_steps", "50", "--logging_steps", "0", "--save_steps", "0", "--max_train_samples", "40")
    result = run_train_py(args, prefix=[sys.executable, "-c", INTERRUPT_AT_STEP.format(step=3)])
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "interrupted: saved" in result.stderr
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["step"] == 3


RANK_1_DIES_AT_STEP = """
import os, runpy, sys
import mrc.train as train
step_fn, calls = train.train_step, []
def step_or_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == {step} and os.environ["RANK"] == "1":
        os._exit(3)
    return step_fn(*args, **kwargs)
train.train_step = step_or_die
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_rank_ends_the_other_with_a_message(tiny_model, korquad_train_subset, cache_dir, tmp_path):
    """Without torchrun's supervision (which would SIGTERM it), the surviving rank must not hang."""
    args = train_args(tiny_model, tmp_path / "crash", korquad_train_subset, cache_dir, "--per_gpu_train_batch_size",
                      "2", "--max_steps", "20", "--logging_steps", "0", "--save_steps", "0",
                      "--max_train_samples", "10")
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    command = [sys.executable, "-c", RANK_1_DIES_AT_STEP.format(step=2), *args]
    ranks = [subprocess.Popen(command, cwd=REPO, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        _, err0 = ranks[0].communicate(timeout=90)
        ranks[1].communicate(timeout=30)
    finally:
        for p in ranks:
            p.kill()
    assert ranks[1].returncode == 3
    assert ranks[0].returncode == 2, err0
    assert "rank 0: lost contact with the other ranks" in err0 and "Traceback" not in err0


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_model, korquad_train_subset, cache_dir, tmp_path,
                                                             monkeypatch, one_thread):
    import mrc.train

    calls = []
    real_loss = mrc.train.qa_loss

    def loss_goes_nan_at_step_5(*args):
        calls.append(1)
        loss = real_loss(*args)
        return loss * float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(mrc.train, "qa_loss", loss_goes_nan_at_step_5)
    out = tmp_path / "nan"
    cfg = cli().parse_args(train_args(tiny_model, out, korquad_train_subset, cache_dir, "--per_gpu_train_batch_size",
                                      "4", "--max_steps", "20", "--logging_steps", "3", "--save_steps", "2",
                                      "--max_train_samples", "40"))
    with pytest.raises(MRCError, match="step 5") as error:
        mrc.train.run(cfg)
    assert "checkpoint-4" in str(error.value)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert torch.isfinite(torch.cat([t.flatten() for t in weights(out / "checkpoint-4").values()])).all()
    assert not (out / "model.safetensors").exists()


def test_fp16_overflow_steps_are_skipped_and_counted_not_fatal(tiny_model, korquad_train_subset, cache_dir, tmp_path,
                                                                one_thread):
    out = tmp_path / "fp16"
    cli().main(train_args(tiny_model, out, korquad_train_subset, cache_dir, "--fp16", "--per_gpu_train_batch_size", "4",
                          "--learning_rate", "1e-3", "--max_steps", "6", "--logging_steps", "3", "--save_steps", "0",
                          "--max_train_samples", "20"))
    log = metrics(out)
    assert [e["step"] for e in log] == [3, 6] and all(np.isfinite(e["loss"]) for e in log)
    assert 0 < log[0]["epoch"] < log[1]["epoch"] < 1  # 6 steps of a longer epoch
    for e in log:  # each skipped step halves the scale (growth needs 2,000 clean steps)
        assert e["skipped_steps"] == round(np.log2(2.0**16 / e["loss_scale"]))
    assert (out / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Flags and errors a user meets


@pytest.mark.parametrize("extra, message", [
    (["--fp16", "--bf16"], "--fp16 and --bf16 exclude each other"),
    (["--neg_ratio", "1.5"], "--neg_ratio must be in [0, 1]"),
    (["--train_file", "a.json:-2"], "weight after ':' must be a positive number"),
    (["--doc_stride", "500"], "--doc_stride must be between 1 and"),
    (["--no-do_train"], "nothing to do: pass --do_train"),
    (["--evaluate_during_training"], "need --predict_file"),
])
def test_bad_flags_give_a_clean_error(extra, message, tiny_model, korquad_train_subset, cache_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli().main(train_args(tiny_model, tmp_path / "out", korquad_train_subset, cache_dir, *extra))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_file_given_twice_is_refused(tiny_model, korquad_train_subset, cache_dir, tmp_path, capsys):
    name = korquad_train_subset.name
    with pytest.raises(SystemExit) as stop:
        cli().main(train_args(tiny_model, tmp_path / "out", korquad_train_subset, cache_dir, "--train_file", name,
                              f"{name}:0.5"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "given twice in --train_file" in err and "Traceback" not in err


def test_seed_command_parses_with_the_same_meaning(tmp_path):
    """A run_korquad.py command line, with train.py put in its place."""
    cfg = cli().parse_args([
        "--model_type", "koelectra-base-v3", "--model_name_or_path", "monologg/koelectra-base-v3-discriminator",
        "--output_dir", str(tmp_path), "--data_dir", "data", "--train_file", "KorQuAD_v1.0_train.json",
        "--predict_file", "KorQuAD_v1.0_dev.json", "--do_train", "--do_eval", "--evaluate_during_training",
        "--max_seq_length", "512", "--doc_stride", "128", "--max_query_length", "64", "--per_gpu_train_batch_size",
        "16", "--per_gpu_eval_batch_size", "64", "--learning_rate", "5e-5", "--gradient_accumulation_steps", "2",
        "--weight_decay", "0.01", "--adam_epsilon", "1e-6", "--max_grad_norm", "1.0", "--num_train_epochs", "3",
        "--max_steps", "-1", "--warmup_steps", "100", "--n_best_size", "20", "--max_answer_length", "30",
        "--verbose_logging", "--logging_steps", "1000", "--save_steps", "1000", "--eval_all_checkpoints",
        "--overwrite_output_dir", "--seed", "42", "--local_rank", "-1", "--threads", "4", "--fp16"])
    assert [f.path for f in cfg.train_files] == [Path("data/KorQuAD_v1.0_train.json")]
    assert cfg.predict_path == Path("data/KorQuAD_v1.0_dev.json")
    assert cfg.global_batch(world_size=4) == 16 * 2 * 4
    assert cfg.precision.autocast_dtype == torch.float16 and cfg.group_by_length and cfg.neg_ratio == 1.0
    weighted = cli().parse_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--do_train",
                                 "--train_file", "korquad.json", "/abs/klue.jsonl:0.5"])
    assert [(str(f.path), f.weight) for f in weighted.train_files] == [("korquad.json", 1.0), ("/abs/klue.jsonl", 0.5)]


def test_non_empty_output_dir_is_refused(tiny_model, korquad_train_subset, cache_dir, tmp_path, capsys):
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("someone's results")
    with pytest.raises(SystemExit) as stop:
        cli().main(train_args(tiny_model, out, korquad_train_subset, cache_dir))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "is not empty" in err and "--overwrite_output_dir" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------
# Training data


@pytest.mark.parametrize("v2", [False, True])
def test_unanswerable_questions_train_toward_cls_only_with_v2(v2, tiny_model, klue_train, cache_dir, tmp_path):
    cfg = cli().parse_args(["--model_name_or_path", str(tiny_model), "--output_dir", str(tmp_path), "--do_train",
                            "--train_file", str(klue_train), "--max_seq_length", "128", "--doc_stride", "48",
                            "--features_cache_dir", str(cache_dir)] + (["--version_2_with_negative"] if v2 else []))
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    report = Reporter(ctx)
    train = read_train_examples(cfg.train_files, report, with_unanswerable=v2, max_samples=None, verbose=False)
    data = load_train_data(cfg.train_files, train, tiny_model, cfg.window, ctx, report,
                           cache_dir=cfg.features_cache_dir, sampling=cfg.sampling(world_size=1))
    impossible = {ex.id for ex in read_examples([klue_train])[0] if ex.is_impossible}
    assert len(impossible) == 45
    trained = {data.store.example_ids[e] for e in np.unique(data.store.windows.example_index)}
    if v2:
        assert impossible <= trained
        rows = np.isin(np.asarray(data.store.example_ids)[data.store.windows.example_index], list(impossible))
        assert data.is_negative[rows].all()  # every window of an unanswerable question is labelled CLS
    else:
        assert not impossible & trained
