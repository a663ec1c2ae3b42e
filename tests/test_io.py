"""mrc/io.py: a crash at any moment leaves a complete old or a complete new file or folder."""

from __future__ import annotations

import os

import pytest

from mrc import io
from mrc.io import atomic_dir, finish_replace_files, replace_files


def write_folder(folder, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def contents(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


OLD = {"config.json": "old config", "model.safetensors": "old weights", "vocab.txt": "vocab"}
NEW = {"config.json": "new config", "model.safetensors": "new weights", "vocab.txt": "vocab",
       "training_args.json": "args"}


def crash_on_call(monkeypatch, n: int):
    """Make the n-th os.replace inside mrc.io raise, as a crash (power cut, SIGKILL) would stop it."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("crash")
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_replacing_the_files_of_a_folder_never_mixes_old_and_new(tmp_path, monkeypatch, crash_at):
    out = write_folder(tmp_path / "out", OLD)
    staging = write_folder(tmp_path / "out" / ".final-model", NEW)
    crash_on_call(monkeypatch, crash_at)
    with pytest.raises(KeyboardInterrupt):
        replace_files(staging, out)
    monkeypatch.undo()
    finish_replace_files(out)   # what every reader does first
    seen = contents(out)
    assert seen in (OLD, NEW), seen
    # the first rename commits the change: after it, the new files win
    assert seen == (OLD if crash_at == 1 else NEW)


def test_replacing_files_without_a_crash(tmp_path):
    out = write_folder(tmp_path / "out", OLD)
    replace_files(write_folder(tmp_path / "out" / ".final-model", NEW), out)
    assert contents(out) == NEW and sorted(p.name for p in out.iterdir()) == sorted(NEW)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_replacing_a_folder_leaves_the_old_or_the_new_one(tmp_path, monkeypatch, crash_at):
    target = write_folder(tmp_path / "checkpoint-3", OLD)
    crash_on_call(monkeypatch, crash_at)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            write_folder(tmp, NEW)
    monkeypatch.undo()
    io.restore_replaced_dir(target)
    assert contents(target) == OLD      # the new one was never complete under the name
    with atomic_dir(target) as tmp:
        write_folder(tmp, NEW)
    assert contents(target) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]   # nothing left beside it


# -- file modes: a teammate on the same server can read what a run saved


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def test_saved_model_files_get_the_modes_the_umask_gives(umask, tmp_path):
    import torch
    from mrc.checkpoint import save_model
    from mrc.model import ElectraForQA, ModelConfig

    cfg = ModelConfig(vocab_size=64, hidden_size=8, embedding_size=8, num_hidden_layers=1, num_attention_heads=1,
                      intermediate_size=16, max_position_embeddings=16)
    vocab = write_folder(tmp_path / "vocab", {"vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\n"})
    os.chmod(vocab / "vocab.txt", 0o400)  # a read-only source file must not make a private copy
    folder = tmp_path / "model"
    save_model(ElectraForQA(cfg), cfg, folder, vocab,
               extra_writer=lambda tmp: torch.save({"step": torch.tensor(1)}, tmp / "optimizer.pt"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert set(modes) == {"model.safetensors", "config.json", "vocab.txt", "optimizer.pt"}
    assert modes == {name: 0o666 & ~umask for name in modes}
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_file_writes_get_the_modes_the_umask_gives(umask, tmp_path):
    from safetensors.torch import save_file
    import torch

    io.atomic_write_text(tmp_path / "a.json", "{}")
    with io.atomic_path(tmp_path / "b.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))  # replaces the temp file with its own 0600 one
    for name in ("a.json", "b.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
