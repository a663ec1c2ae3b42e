"""Shared test helpers. Real data lives in ../shared (or $MRC_SHARED); never copied into the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
