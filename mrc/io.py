"""Atomic file writes: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mrc.errors import MRCError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is fsynced and renamed onto `path`.

    With overwrite=False an existing `path` is an MRCError (checked before any work).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise MRCError(f"{path} already exists; pass --overwrite to replace it, or choose another output")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets ordinary permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # again: a writer may have replaced the file (safetensors: 0600)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: Path, text: str, *, overwrite: bool = True) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it takes the place of `path`.

    A new `path` appears in one rename. Replacing an existing one takes two: the old folder is
    renamed to `.name.old`, then the new one into place. A crash between the two leaves the old
    complete folder at `.name.old`, and the next `atomic_dir` (or `restore_replaced_dir`) of that
    path puts it back; a crash before them leaves only a `.name.*.tmp` folder. Never a partial `path`.
    """
    path = Path(path)
    restore_replaced_dir(path)
    if not overwrite and path.exists():
        raise MRCError(f"{path} already exists; pass --overwrite to replace it, or choose another output")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the final folder gets ordinary permissions
    try:
        yield tmp
        _ordinary_modes(tmp)
        _fsync_tree(tmp)
        if path.exists():
            old = _aside(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _ordinary_modes(folder: Path) -> None:
    """Files as the umask makes them (safetensors writes 0600), so a teammate can read a saved model."""
    mode = 0o666 & ~_umask()
    for f in folder.rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.chmod(f, mode)


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def restore_replaced_dir(path: Path) -> None:
    """Put back a folder that a crashed `atomic_dir` had moved aside and not yet replaced."""
    old = _aside(Path(path))
    if old.is_dir() and not Path(path).exists():
        os.replace(old, path)


PENDING_FILES = ".pending-files"


def replace_files(staging: Path, dest: Path) -> None:
    """Move every file of the complete folder `staging` into `dest`, as one all-or-nothing change.

    Several files cannot be renamed at once, so `staging` is first renamed to `dest/.pending-files`
    (one rename: from then on the change is committed) and its files are then moved one by one.
    A crash during the moves leaves the rest in `.pending-files`; `finish_replace_files(dest)`,
    which every reader of such a folder calls first, completes them. So a reader sees either the
    old files or all the new ones, never a mix.
    """
    dest = Path(dest)
    finish_replace_files(dest)
    _fsync_tree(staging)
    pending = dest / PENDING_FILES
    os.replace(staging, pending)
    finish_replace_files(dest)


def finish_replace_files(dest: Path) -> None:
    """Complete a `replace_files` into `dest` that a crash interrupted (nothing to do otherwise)."""
    pending = Path(dest) / PENDING_FILES
    if not pending.is_dir():
        return
    for f in sorted(pending.iterdir()):
        os.replace(f, Path(dest) / f.name)
    pending.rmdir()


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object (a config file); bad JSON is an MRCError naming line and column."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MRCError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise MRCError(f"{path}: must hold a JSON object")
    return data
