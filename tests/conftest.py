"""Shared test helpers. Real data lives in ../shared (or $MRC_SHARED); never copied into the repo."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared data folder: $MRC_SHARED, else ../shared beside the repository."""
    return Path(os.environ.get("MRC_SHARED", REPO.parent / "shared")).resolve()


def shared_path(rel: str) -> Path:
    """A file or folder under the shared folder; skips the test with the reason when it is absent."""
    p = shared_dir() / rel
    if not p.exists():
        pytest.skip(f"{p} not found: set MRC_SHARED to the shared data folder (it holds data/ and models/)")
    return p


@pytest.fixture(scope="session", autouse=True)
def window_cache_in_tmp(tmp_path_factory):
    """Window stores a test builds without naming a cache go to a temporary folder, never ./.cache of the
    repository (where they would outlive the run and be reused by the next one)."""
    before = os.environ.get("MRC_CACHE")
    os.environ["MRC_CACHE"] = str(tmp_path_factory.mktemp("mrc_cache"))
    yield
    if before is None:
        os.environ.pop("MRC_CACHE", None)
    else:
        os.environ["MRC_CACHE"] = before


def cli_module(name: str):
    """A root CLI script (`train`, `predict`, `eval`) loaded as a module, so tests call its `main(argv)`."""
    spec = importlib.util.spec_from_file_location(f"{name}_cli", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_args(model: Path, out: Path, train_file: Path, cache: Path, *extra: str) -> list[str]:
    """train.py flags of a small CPU run: windows of 128, the window cache in `cache` (not ./.cache)."""
    return ["--model_type", "electra", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--data_dir", str(train_file.parent), "--train_file", train_file.name, "--do_train",
            "--max_seq_length", "128", "--doc_stride", "48", "--max_query_length", "32", "--seed", "7",
            "--features_cache_dir", str(cache), *extra]


@pytest.fixture(scope="session")
def korquad_dev() -> Path:
    return shared_path("data/korquad/KorQuAD_v1.0_dev.json")


@pytest.fixture(scope="session")
def korquad_train_subset() -> Path:
    return shared_path("data/korquad/KorQuAD_v1.0_train.first5articles.json")


@pytest.fixture(scope="session")
def klue_dev() -> Path:
    return shared_path("data/klue-mrc/klue-mrc-v1_dev.sample80.json")


@pytest.fixture(scope="session")
def klue_train() -> Path:
    return shared_path("data/klue-mrc/klue-mrc-v1_train.sample80.json")


@pytest.fixture(scope="session")
def koelectra_folder() -> Path:
    return shared_path("models/koelectra-base-v3-discriminator")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, koelectra_folder) -> Path:
    """A 2-layer random model with the real KoELECTRA vocabulary, saved as a checkpoint folder."""
    from mrc.checkpoint import save_model
    from mrc.model import ElectraForQA, ModelConfig

    cfg = ModelConfig(vocab_size=35000, hidden_size=32, embedding_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_model(ElectraForQA(cfg), cfg, folder, tokenizer_folder=koelectra_folder)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread: on a busy shared machine, threads waiting for each other make tiny ops 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The flags of the shared long-run fixture: small --save_steps with --save_total_limit 2, every
# checkpoint evaluated, the best one loaded at the end, TensorBoard curves (when installed).
UNATTENDED_FLAGS = ("--max_steps", "50", "--logging_steps", "10", "--save_steps", "10", "--save_total_limit", "2",
                    "--evaluate_during_training", "--load_best_model_at_end", "--do_eval", "--max_eval_samples", "30",
                    "--per_gpu_train_batch_size", "8", "--learning_rate", "1e-3", "--max_seq_length", "128",
                    "--doc_stride", "48", "--max_query_length", "32", "--seed", "42")


@pytest.fixture(scope="session")
def unattended_run(tmp_path_factory, koelectra_folder, korquad_train_subset, korquad_dev) -> Path:
    """One demo-sized train.py run (in process) that the retention, card, TensorBoard and report tests read."""
    from mrc.checkpoint import save_model
    from mrc.model import ElectraForQA, ModelConfig

    root = tmp_path_factory.mktemp("unattended")
    cfg = ModelConfig(hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    save_model(ElectraForQA(cfg), cfg, root / "model", tokenizer_folder=koelectra_folder)
    report_to = ["--report_to", "tensorboard"] if importlib.util.find_spec("tensorboard") else []
    train_cli = cli_module("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_cli.main(["--model_name_or_path", str(root / "model"), "--output_dir", str(root / "run"),
                        "--data_dir", str(korquad_train_subset.parent), "--train_file", korquad_train_subset.name,
                        "--predict_file", str(korquad_dev), "--do_train", "--features_cache_dir", str(root / "cache"),
                        *UNATTENDED_FLAGS, *report_to])
    finally:
        torch.set_num_threads(threads)
    return root / "run"
