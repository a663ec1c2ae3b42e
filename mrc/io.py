"""Atomic file writes: a crash never leaves a half-written file under the final name.

Every writer goes through here, and here an `OSError` becomes an `MRCError` naming the path and
the cause (`fs_errors`): a file where a folder must be, a read-only file system, no space left.
`check_folder_path` / `check_file_path` run the same checks before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mrc.errors import MRCError
from mrc.text import parse_json

# errno -> (what the user reads, what to do); anything else falls back to the system's own words.
_CAUSES = {
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EEXIST: ("a file is in the way where a folder must be", "move it or choose another path"),
    errno.EISDIR: ("is a folder, not a file", "choose a file path"),
    errno.EROFS: ("read-only file system", "choose a path on a writable disk"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another disk"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("permission denied", "fix the permissions or choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}


def os_error(path: Path | str, e: OSError) -> MRCError:
    """The MRCError for an OSError met while writing `path`: the path, the cause, what to do."""
    cause, advice = _CAUSES.get(e.errno, (e.strerror or str(e), "choose another path"))
    where = e.filename if e.filename and Path(e.filename) != Path(path) else None
    at = f" ({where})" if where and not str(where).endswith(".tmp") else ""
    return MRCError(f"{path}: cannot write: {cause}{at}; {advice}")


@contextlib.contextmanager
def fs_errors(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised inside into `os_error(path, ...)`; MRCErrors pass through."""
    try:
        yield
    except MRCError:
        raise
    except OSError as e:
        raise os_error(path, e) from None


def ensure_dir(path: Path | str) -> Path:
    """`mkdir -p path`, with the cause as an MRCError when it cannot be made."""
    path = Path(path)
    check_folder_path(path)
    with fs_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_folder_path(path: Path | str, flag: str = "") -> None:
    """Before anything is written: `path` (a folder to create or fill) must not be empty, nor a
    file, nor lie under a file. Writes nothing."""
    name = f"{flag} " if flag else ""
    if str(path).strip() == "":
        raise MRCError(f"{flag or 'an output folder'} is empty; give a folder path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MRCError(f"{name}{path}: is a file, not a folder; choose a folder path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MRCError(f"{name}{path}: {parent} is a file, not a folder; choose another path")
            break


def check_file_path(path: Path | str, flag: str = "", *, overwrite: bool = True) -> None:
    """Before anything is written: `path` (a file to write) must not be empty, nor a folder, nor
    lie under a file, nor exist unless `overwrite`. Writes nothing."""
    name = f"{flag} " if flag else ""
    if str(path).strip() == "":
        raise MRCError(f"{flag or 'an output file'} is empty; give a file path")
    path = Path(path)
    if path.is_dir():
        raise MRCError(f"{name}{path}: is a folder, not a file; give a file path")
    check_folder_path(path.parent, flag)
    if not overwrite and path.exists():
        raise MRCError(f"{name}{path} already exists; pass --overwrite to replace it, or choose another output")


def refuse_input_as_output(outputs: list[Path], inputs: list[Path]) -> None:
    """An output path that is also an input is always an error, --overwrite or not."""
    resolved = {Path(p).resolve(): Path(p) for p in inputs}
    for out in outputs:
        if Path(out).resolve() in resolved:
            raise MRCError(f"output {out} is also the input {resolved[Path(out).resolve()]}; writing it would destroy "
                           f"the input: choose another output path")


def temp_prefix(name: str) -> str:
    """Prefix of the temp file or folder that becomes `name`: `.name.<host>-<pid>-`, so a later run can
    tell the leftovers of a killed writer from the work of a live one."""
    return f".{name}.{socket.gethostname()}-{os.getpid()}-"


def remove_dead_temps(folder: Path, pattern: str) -> None:
    """Delete the temp files and folders matching `pattern` in `folder` whose writer is gone (this
    host's dead pids only: another process, or a rank on another host, may be writing its own now)."""
    mine = re.compile(rf"\.{re.escape(socket.gethostname())}-(\d+)-\w+\.tmp$")   # .<name>.<host>-<pid>-<random>.tmp
    for entry in Path(folder).glob(pattern):
        match = mine.search(entry.name)
        if match and not _alive(int(match.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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
    check_file_path(path, overwrite=overwrite)
    with fs_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(path.parent, f".{path.name}.*.tmp")
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets ordinary permissions
    tmp_path = Path(tmp)
    try:
        with fs_errors(path):
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
    check_folder_path(path)
    with fs_errors(path):
        restore_replaced_dir(path)
    if not overwrite and path.exists():
        raise MRCError(f"{path} already exists; pass --overwrite to replace it, or choose another output")
    with fs_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(path.parent, f".{path.name}.*.tmp")
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the final folder gets ordinary permissions
    try:
        with fs_errors(path):
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
    with fs_errors(dest):
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
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise MRCError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise MRCError(f"{path}: cannot be read: {e.strerror or e}") from None
    data, _ = parse_json(text, str(path))
    if not isinstance(data, dict):
        raise MRCError(f"{path}: must hold a JSON object")
    return data
