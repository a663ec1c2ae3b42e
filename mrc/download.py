"""Fetch the real data sets and models: `python -m mrc.download korquad | klue-mrc | koelectra-base-v3 | OWNER/NAME`.

Models come from the Hugging Face Hub through `mrc.hub`, the same path train.py takes for a hub id:
into the standard HF cache, only the files the trainer reads, honouring HF_ENDPOINT, HF_TOKEN and
HF_HUB_OFFLINE. `koelectra-base-v3` is pinned to one commit whose files are also checked against
known sha256 sums; `--dir` copies a model's files into a plain folder as well.

Data sets are not on the Hub: each file streams into `<name>.part` beside its final name and is
renamed into place only after its size and sha256 match (where they are known), so a final name
always holds a verified file. An interrupted download resumes from the `.part` file with an HTTP
Range request; a server that ignores Range sends the whole file again and the `.part` file
restarts from zero. Data sets need only the standard library's urllib.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from mrc.config import field, parse_config, print_config
from mrc.errors import MRCError, cli_entry
from mrc.hub import KNOWN_MODELS, hub_cache_dir, looks_like_hub_id, resolve_model, snapshot_commit
from mrc.io import atomic_path, ensure_dir, fs_errors

BASE_URL_ENV = "MRC_DOWNLOAD_BASE_URL"
CHUNK_BYTES = 1 << 20
# Seconds without a byte before a connection counts as dead; long enough for a slow mirror.
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RemoteFile:
    """One file of a bundle: fetched from `<base_url>/<name>`, stored as `<dir>/<name>`."""

    name: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Bundle:
    """A set of files that belong together (a data set's splits, a model folder)."""

    name: str
    description: str
    base_url: str
    default_dir: str
    files: tuple[RemoteFile, ...]
    homepage: str


# Official hosts. KLUE is pinned to one commit so the checksums below stay valid if its branch moves.
_KLUE_COMMIT = "3efd98708a40ff49251fddde35453f8fbb11f536"

BUNDLES: dict[str, Bundle] = {
    "korquad": Bundle(
        name="korquad",
        description="KorQuAD 1.0 train and dev (CC BY-ND 2.0 KR, LG CNS)",
        base_url="https://korquad.github.io/dataset",
        default_dir="data/korquad",
        files=(
            RemoteFile("KorQuAD_v1.0_train.json", 38_527_475,
                       "40d5115879a701751781df721d901abfa736d8db5f89000f2619433f39bf2dd2"),
            RemoteFile("KorQuAD_v1.0_dev.json", 3_881_058,
                       "25ffeb51e6c51ec02c071b60a10188e10005c144110f0d876b26079d80a35bdf"),
        ),
        homepage="https://korquad.github.io/KorQuad%201.0/",
    ),
    "klue-mrc": Bundle(
        name="klue-mrc",
        description="KLUE MRC v1.1 train and dev (CC BY-SA 4.0, KLUE)",
        base_url=f"https://raw.githubusercontent.com/KLUE-benchmark/KLUE/{_KLUE_COMMIT}/klue_benchmark/klue-mrc-v1.1",
        default_dir="data/klue-mrc",
        files=(
            RemoteFile("klue-mrc-v1.1_train.json", 47_952_737,
                       "c52c7b82a6015c09ea8be1fea49c912e73012d8b44d3653256d91c65d519c3df"),
            RemoteFile("klue-mrc-v1.1_dev.json", 18_712_914,
                       "b31bb073e47cdeb19f2f1bae03d916ecabf945140334c75842d6994f700d4f47"),
        ),
        homepage="https://github.com/KLUE-benchmark/KLUE/tree/main/klue_benchmark/klue-mrc-v1.1",
    ),
}


@dataclass(frozen=True)
class HubModel:
    """A model `python -m mrc.download` knows by a short name: its hub id, pinned commit and file checksums."""

    name: str
    hub_id: str
    revision: str
    files: tuple[RemoteFile, ...]


MODELS: dict[str, HubModel] = {
    "koelectra-base-v3": HubModel(
        name="koelectra-base-v3",
        hub_id="monologg/koelectra-base-v3-discriminator",
        revision=KNOWN_MODELS["monologg/koelectra-base-v3-discriminator"][1],
        files=(
            RemoteFile("config.json", 467, "b0524c98036d679fd7a38a304a678cbf8d71226283c1f2f6ce08408e85eea56e"),
            RemoteFile("tokenizer_config.json", 61,
                       "cd074f01387ed507bc657bebc91c9653874194ba612ceecffe72e6d5c631988c"),
            RemoteFile("vocab.txt", 263_326, "9f50b0a44b0272dcf78bfd7a52a0815588f69918bb87ec60b21ca235c5aa0eb4"),
            RemoteFile("pytorch_model.bin", None, "f3f249cc07826bc2964a2c0dbbd0d239df4fe55efc03ba33e1bd1584cf56c566"),
        ),
    ),
}


@dataclass
class DownloadConfig:
    bundle: str = field(help="what to fetch: " + ", ".join([*BUNDLES, *MODELS]) + ", or a hub model id OWNER/NAME",
                        positional=True)
    dir: Path | None = field(None, help="data sets: destination folder (default data/<set>); models: also copy the "
                             "files into this plain folder (they always go to the Hugging Face cache)")
    base_url: str | None = field(None, help=f"data sets: fetch from this URL prefix instead of the official host "
                                 f"(or set ${BASE_URL_ENV}); models use HF_ENDPOINT")
    revision: str | None = field(None, help="models: branch, tag or commit (default: the pinned commit of a known "
                                 "model, else main)")
    cache_dir: Path | None = field(None, help="models: Hugging Face cache folder (default $HF_HUB_CACHE, else "
                                   "$HF_HOME/hub, else ~/.cache/huggingface/hub)")

    def __post_init__(self) -> None:
        if self.bundle not in BUNDLES and self.bundle not in MODELS and not looks_like_hub_id(self.bundle):
            raise MRCError(f"unknown download '{self.bundle}': choose one of {', '.join([*BUNDLES, *MODELS])}, "
                           "or give a hub model id OWNER/NAME")
        if self.dir is not None:
            self.dir = Path(self.dir)
        if self.base_url is not None and not re.match(r"^(https?|file)://", self.base_url):
            raise MRCError(f"--base_url {self.base_url!r} is not a URL: give one starting with https:// or http://")
        if self.base_url is not None and self.bundle not in BUNDLES:
            raise MRCError("--base_url applies to data sets; for models set HF_ENDPOINT to a hub mirror")
        if self.revision is not None and self.bundle in BUNDLES:
            raise MRCError("--revision applies to models (hub repositories), not to data sets; drop it")

    @property
    def is_model(self) -> bool:
        return self.bundle not in BUNDLES


def file_matches(path: Path, remote: RemoteFile) -> tuple[bool, str]:
    """Check a local file against the known size and sha256; (ok, reason when not ok)."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return False, f"size {size:,} bytes, expected {remote.size:,}"
    if remote.sha256 is not None:
        digest = sha256_of(path)
        if digest != remote.sha256:
            return False, f"sha256 {digest}, expected {remote.sha256}"
    return True, ""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (model weights do not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def manual_instructions(bundle: Bundle, dest: Path) -> str:
    """How to place the files by hand on a machine that cannot reach the host."""
    lines = [f"To place the files by hand, fetch these on a machine with internet access (see {bundle.homepage})",
             f"and copy them into {dest}/ under these names:"]
    for f in bundle.files:
        facts = ", ".join(x for x in (f"{f.size:,} bytes" if f.size else "",
                                      f"sha256 {f.sha256}" if f.sha256 else "") if x)
        lines.append(f"  {f.name}  ({facts})  from {bundle.base_url}/{f.name}")
    lines.append(f"Then re-run `python -m mrc.download {bundle.name} --dir {dest}`: it verifies every file "
                 "and skips the ones already in place.")
    return "\n".join(lines)


def open_range(url: str, offset: int) -> tuple[object, int, int | None]:
    """Open `url` asking for bytes from `offset`; (response, offset the body starts at, total size if known).

    A 206 reply continues the partial file; a 200 reply means the server ignored Range and
    sends everything, so the caller restarts from zero.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "mrc-download/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    status = getattr(response, "status", 200)
    length = response.headers.get("Content-Length")
    if offset and status == 206:
        total = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
        return response, offset, int(total.group(1)) if total else None
    return response, 0, int(length) if length is not None else None


def fetch_to_part(url: str, part: Path, progress: Progress, label: str) -> int:
    """Stream `url` into `part`, resuming from its current length when the server allows.

    Returns the offset the transfer resumed from (0 when it started over).
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response, start, total = open_range(url, offset)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            return offset  # the .part already holds every byte; verification decides if it is good
        raise
    task = progress.add_task(label, total=total, completed=start)
    # Errors of the file (a full disk, a read-only one) are MRCErrors naming it; the network's are the caller's.
    with fs_errors(part):
        out = open(part, "ab" if start else "wb")
    try:
        with response:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                with fs_errors(part):
                    out.write(chunk)
                progress.advance(task, len(chunk))
            with fs_errors(part):
                out.flush()
                os.fsync(out.fileno())
    finally:
        with fs_errors(part):  # closing flushes the buffer, which a full disk refuses too
            out.close()
    return start


def download_file(bundle: Bundle, remote: RemoteFile, dest: Path, base_url: str, console: Console) -> str:
    """Make `dest/remote.name` a verified copy of the remote file; returns what was done."""
    final = dest / remote.name
    if final.exists():
        ok, why = file_matches(final, remote)
        if ok:
            return "verified, kept" if remote.sha256 else "present, kept (no checksum known)"
        console.print(f"[yellow]{final} does not match ({why}); downloading it again[/]")
    part = final.with_name(final.name + ".part")
    url = f"{base_url.rstrip('/')}/{remote.name}"
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        try:
            resumed_from = fetch_to_part(url, part, progress, remote.name)
        except urllib.error.HTTPError as e:
            raise MRCError(f"{url} answered HTTP {e.code} {e.reason}.\n{manual_instructions(bundle, dest)}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            kept = (f" The {part.stat().st_size:,} bytes received so far are kept in {part}; "
                    "re-running resumes from there.") if part.exists() and part.stat().st_size else ""
            raise MRCError(f"could not download {url}: {reason}. Is this machine offline?{kept}\n"
                           f"{manual_instructions(bundle, dest)}") from None
    ok, why = file_matches(part, remote)
    if not ok:
        part.unlink()
        raise MRCError(f"{url} does not match the published file ({why}); the download was deleted. "
                       "Re-run to fetch it again; if it fails the same way, the host serves a different file "
                       f"than this project expects: place the official file by hand.\n{manual_instructions(bundle, dest)}")
    os.replace(part, final)
    if remote.sha256 is None:
        return "downloaded (no checksum known)"
    return f"resumed at byte {resumed_from:,}, verified" if resumed_from else "downloaded, verified"


def download_bundle(bundle: Bundle, dest: Path, base_url: str | None = None,
                    console: Console | None = None) -> dict[str, str]:
    """Fetch every file of `bundle` into `dest`; {file name: what was done}."""
    console = console or Console(stderr=True)
    ensure_dir(dest)
    source = base_url or bundle.base_url
    console.print(f"{bundle.description}\n  from {source}\n  into {dest}")
    return {f.name: download_file(bundle, f, dest, source, console) for f in bundle.files}


def download_model(cfg: DownloadConfig, console: Console) -> dict[str, str]:
    """A hub model into the HF cache (and --dir); {file name: what was done}."""
    known = MODELS.get(cfg.bundle)
    hub_id = known.hub_id if known else cfg.bundle
    revision = cfg.revision or (known.revision if known else None)
    console.print(f"{hub_id} (revision {revision or 'main'})\n"
                  f"  into the Hugging Face cache {hub_cache_dir(cfg.cache_dir)}")
    folder = resolve_model(hub_id, revision, cfg.cache_dir, flag="model", say=console.print)
    done = {p.name: "in the cache" for p in sorted(folder.iterdir()) if p.is_file()}
    if known and snapshot_commit(folder) == known.revision:
        for remote in known.files:
            ok, why = file_matches(folder / remote.name, remote)
            if not ok:
                raise MRCError(f"{folder / remote.name} does not match the published file ({why}); delete "
                               f"{folder.parent.parent} and run the same command again")
            done[remote.name] = "in the cache, verified"
    if cfg.dir is not None:
        ensure_dir(cfg.dir)
        for name in done:
            with atomic_path(cfg.dir / name) as tmp:
                shutil.copyfile(folder / name, tmp)  # follows the cache's symlinks to the blobs
            done[name] += f", copied to {cfg.dir}"
    console.print(f"pass --model_name_or_path {hub_id}" + (f" --revision {revision}" if revision else "")
                  + (f" (or the folder {cfg.dir})" if cfg.dir else "") + " to train.py")
    return done


def run(cfg: DownloadConfig) -> dict[str, str]:
    """Download what `cfg` names and print one line per file."""
    console = Console(stderr=True)
    if cfg.is_model:
        done = download_model(cfg, console)
    else:
        bundle = BUNDLES[cfg.bundle]
        dest = cfg.dir or Path(bundle.default_dir)
        base_url = cfg.base_url or os.environ.get(BASE_URL_ENV) or None
        done = download_bundle(bundle, dest, base_url, console)
    for name, what in done.items():
        console.print(f"  [green]{name}[/]: {what}")
    return done


@cli_entry
def main(argv: list[str] | None = None) -> dict[str, str]:
    cfg = parse_config(DownloadConfig, argv, prog="python -m mrc.download",
                       description="Download KorQuAD 1.0 or KLUE MRC (resumable, checksum-verified), "
                                   "or a model from the Hugging Face Hub into its cache.")
    print_config(cfg, "download")
    return run(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
