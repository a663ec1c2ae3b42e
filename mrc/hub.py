"""Models by name: a local folder, or a Hugging Face Hub id downloaded into the standard HF cache.

`resolve_model(name_or_path, revision, cache_dir, ctx)` turns `--model_name_or_path` / `--model`
into a local folder. A hub id goes through `huggingface_hub`, the library `transformers` uses, so
the cache is the one `transformers` shares (`--cache_dir`, else `$HF_HUB_CACHE`, else
`$HF_HOME/hub`), mirrors come from `HF_ENDPOINT`, the token from `HF_TOKEN` or the stored login,
and `HF_HUB_OFFLINE=1` never touches the network. These settings are read when a model is
resolved, not when the library is imported. Only the files this trainer reads are fetched:
`config.json`, one weights format (safetensors when the repository has it, else PyTorch `.bin`,
single or sharded) and the tokenizer files. Each file is downloaded to an `.incomplete` name and
renamed into the cache when whole; a dropped connection is resumed with a Range request.

In a job of several ranks, rank 0 downloads while the others wait; they then read the snapshot
of the same commit (or fetch that exact commit themselves on a node that does not share the cache).
Every failure is an `MRCError` naming the id, the endpoint and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# huggingface_hub is a runtime dependency (setup.cfg); httpx2 is the HTTP client it is built on,
# whose transport errors reach us when a connection fails mid-download.
import httpx2
import huggingface_hub
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError, RevisionResolutionError)

from mrc import dist
from mrc.checkpoint import TOKENIZER_FILES, WEIGHT_FILES
from mrc.errors import MRCError

DEFAULT_ENDPOINT = "https://huggingface.co"
# Hub ids `python -m mrc.download` knows, the bundle name it takes for each, and the commit it pins.
KNOWN_MODELS = {"monologg/koelectra-base-v3-discriminator": ("koelectra-base-v3",
                                                             "da54619825c499c78bc3c8a689a9837e0d1d2284")}
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


# ---------------------------------------------------------------------------------------------
# Settings, read from the environment at call time


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where hub models are stored: `cache_dir`, else HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "huggingface" / "hub"


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1): never touch the network."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def looks_like_hub_id(name: str) -> bool:
    return HUB_ID_PATTERN.fullmatch(name) is not None


def snapshot_commit(folder: Path) -> str | None:
    """The commit a hub snapshot folder holds (`.../snapshots/<commit>`), None for any other folder."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and COMMIT_PATTERN.fullmatch(folder.name):
        return folder.name
    return None


# ---------------------------------------------------------------------------------------------
# Which files a model needs


def files_to_fetch(repo_files: list[str]) -> list[str]:
    """The files of a hub repository this trainer reads: config, one weights format, tokenizer files.

    Raises when the repository has no config.json or no weights in a format we read.
    """
    present = set(repo_files)
    weights: list[str] = []
    formats = (("model.safetensors", "model.safetensors.index.json", r"model-\d+-of-\d+\.safetensors"),
               ("pytorch_model.bin", "pytorch_model.bin.index.json", r"pytorch_model-\d+-of-\d+\.bin"))
    for single, index, shard in formats:
        if single in present:
            weights = [single]
        elif index in present:
            weights = [index] + sorted(f for f in present if re.fullmatch(shard, f))
        if weights:
            break
    missing = [what for what, ok in (("config.json", "config.json" in present),
                                     (f"weights ({' or '.join(WEIGHT_FILES)})", bool(weights))) if not ok]
    if missing:
        raise ValueError(" and ".join(missing))
    return ["config.json", *weights, *(f for f in TOKENIZER_FILES if f in present)]


def missing_from_folder(folder: Path) -> list[str]:
    """What a model folder lacks to be loaded (an interrupted snapshot); [] when complete."""
    folder = Path(folder)
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    found = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if found is None:
        missing.append(" or ".join(WEIGHT_FILES))
    elif found.name.endswith(".index.json"):
        try:
            shards = set(json.loads(found.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            shards = set()
        missing += sorted(s for s in shards if not (folder / s).is_file())
    if not any((folder / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        missing.append("vocab.txt or tokenizer.json")
    return missing


# ---------------------------------------------------------------------------------------------
# Downloading


def token_state() -> str:
    """How the request was authenticated, for error messages."""
    return ("a token was sent (HF_TOKEN or the stored login)" if huggingface_hub.get_token()
            else "no token was sent (HF_TOKEN is unset and there is no stored login)")


@dataclass(frozen=True)
class HubRequest:
    """One model to fetch, with the settings it is fetched under (for the download and its messages)."""

    hub_id: str
    revision: str | None
    cache: Path
    endpoint: str
    offline: bool
    flag: str

    @property
    def where(self) -> str:
        return f"{self.hub_id} (revision {self.revision or 'main'}) on {self.endpoint}"


def download_model(hub_id: str, revision: str | None = None, cache_dir: str | Path | None = None, *,
                   flag: str = "--model_name_or_path", say: Callable[[str], None] | None = None) -> Path:
    """The snapshot folder of `hub_id` at `revision` in the hub cache, downloading what is missing."""
    request = HubRequest(hub_id, revision, hub_cache_dir(cache_dir), hub_endpoint(), offline_mode(), flag)
    try:
        folder = fetch_snapshot(request, say)
    except (HfHubHTTPError, RevisionResolutionError, LocalEntryNotFoundError, OfflineModeIsEnabled,
            httpx2.TransportError, OSError) as e:
        raise MRCError(failure_message(request, e)) from None
    missing = missing_from_folder(folder)
    if missing:
        raise MRCError(f"{flag} {hub_id}: the snapshot of {request.where} in {folder} lacks {', '.join(missing)}; "
                       "this is not a model folder this trainer can load")
    return folder


def fetch_snapshot(request: HubRequest, say: Callable[[str], None] | None) -> Path:
    """The happy path: pin the revision to a commit, then fetch the files that commit's snapshot lacks.

    With the network up the revision is resolved on the hub (a branch may have moved); with it
    down or HF_HUB_OFFLINE=1, the commit the cache last saw for it is used, when complete.
    """
    api = HfApi(endpoint=request.endpoint)
    pinned = api.resolve_revision(request.hub_id, revision=request.revision, cache_dir=request.cache,
                                  local_files_only=request.offline)
    folder = request.cache / f"models--{request.hub_id.replace('/', '--')}" / "snapshots" / pinned.resolved
    missing = missing_from_folder(folder)
    if not missing:
        return folder
    if request.offline:
        raise LocalEntryNotFoundError(f"the cached snapshot {folder} lacks {', '.join(missing)}")
    try:
        wanted = files_to_fetch(api.list_repo_files(request.hub_id, revision=pinned.resolved))
    except ValueError as e:
        raise MRCError(f"{request.flag} {request.hub_id}: {request.where} has no {e}, so it is not a model this "
                       "trainer can load (it reads ELECTRA/BERT folders: config.json plus model.safetensors or "
                       "pytorch_model.bin); pass another model") from None
    if say is not None:
        say(f"downloading {', '.join(wanted)} of {request.where} into {request.cache}")
    return Path(snapshot_download(request.hub_id, revision=pinned, cache_dir=request.cache,
                                  endpoint=request.endpoint, allow_patterns=wanted))


def failure_message(request: HubRequest, error: Exception) -> str:
    """One actionable line for a failed fetch: what happened to which id on which endpoint, what to do.

    Order matters: the hub's HTTP errors are OSErrors too.
    """
    head = f"{request.flag} {request.hub_id}"
    endpoint, hub_id = request.endpoint, request.hub_id
    if isinstance(error, GatedRepoError):
        return (f"{head}: {request.where} is a gated model and {token_state()}. Accept its conditions at "
                f"{endpoint}/{hub_id} with your account, then log in with `hf auth login` or set HF_TOKEN to a "
                "token of that account")
    if isinstance(error, RepositoryNotFoundError):
        return (f"{head}: no model of that name on {endpoint}, or it is private and {token_state()}. Check the id "
                "(spelling, owner/name); for a private model log in with `hf auth login` or set HF_TOKEN; if you "
                f"meant a local folder, {Path(hub_id).resolve()} does not exist{known_model_hint(hub_id)}")
    if isinstance(error, RevisionNotFoundError):
        return (f"--revision {request.revision}: {hub_id} on {endpoint} has no branch, tag or commit of that name; "
                f"see {endpoint}/{hub_id}/tree/main for its branches and commits")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "?"
        advice = ("log in with `hf auth login` or set HF_TOKEN to a token with read access"
                  if status in (401, 403) else "retry later, or set HF_ENDPOINT to a mirror")
        return f"{head}: {endpoint} answered HTTP {status} for {request.where} ({token_state()}); {advice}"
    if isinstance(error, (RevisionResolutionError, LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return not_cached_message(request, error)
    if isinstance(error, httpx2.TransportError):
        return (f"{head}: downloading {request.where} failed ({type(error).__name__}: {error}). Check the network "
                "or proxy, or set HF_ENDPOINT to a mirror you can reach; then run the same command again: "
                f"finished files stay in {request.cache} and are not downloaded twice")
    if getattr(error, "errno", None) == errno.ENOSPC:
        return (f"{head}: no space left on the disk of {request.cache} while downloading {request.where}. Free "
                "some space, or pass --cache_dir (or set HF_HUB_CACHE) to a folder on a disk with room, then run "
                "the same command again")
    return (f"{head}: downloading {request.where} into {request.cache} failed ({error}); run the same command "
            "again, or check that the folder is writable")


def not_cached_message(request: HubRequest, error: Exception) -> str:
    rev = request.revision or "main"
    head = f"{request.flag} {request.hub_id}"
    if request.offline:
        return (f"{head}: HF_HUB_OFFLINE=1 and revision {rev} of {request.hub_id} is not (completely) in the hub "
                f"cache {request.cache}. Run once with network access (unset HF_HUB_OFFLINE) to download it, point "
                "--cache_dir / HF_HUB_CACHE at the cache that holds it, or pass a local model folder")
    reason = error.__cause__ or error
    return (f"{head}: cannot reach {request.endpoint} ({type(reason).__name__}: {str(reason).splitlines()[0]}) and "
            f"revision {rev} of {request.hub_id} is not in the hub cache {request.cache}. Check the network or "
            "proxy, set HF_ENDPOINT to a mirror you can reach, or pass a local model folder")


def known_model_hint(name: str) -> str:
    """For a path like models/koelectra-base-v3-discriminator (the old recipe): the hub id to pass instead."""
    by_basename = {hub_id.split("/")[-1]: hub_id for hub_id in KNOWN_MODELS}
    hub_id = by_basename.get(Path(name).name)
    if hub_id is None or hub_id == name:
        return ""
    return (f". To download {hub_id}, pass --model_name_or_path {hub_id} (or fetch it into a folder with "
            f"`python -m mrc.download {KNOWN_MODELS[hub_id][0]}`)")


# ---------------------------------------------------------------------------------------------
# The one entry point


def resolve_model(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                  ctx: dist.DistContext | None = None, *, flag: str = "--model_name_or_path",
                  say: Callable[[str], None] | None = None) -> Path:
    """A local folder for a model named by path or by hub id (downloaded if needed; every rank gets it).

    `say` gets the download and resolved-commit lines (rank 0 only).
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if revision:
            raise MRCError(f"--revision {revision} applies to hub ids, but {flag} {name} is a local folder; "
                           "drop --revision, or pass the hub id")
        return path
    if path.exists():
        raise MRCError(f"{flag} {name} is a file; pass the folder that holds config.json and the weights")
    if not looks_like_hub_id(name):
        raise MRCError(f"{flag} {name}: no such folder, and not a hub id (owner/name). Pass a folder holding "
                       f"config.json and model.safetensors or pytorch_model.bin (plus vocab.txt and "
                       f"tokenizer_config.json), or a hub id such as {next(iter(KNOWN_MODELS))}")
    if ctx is None or not ctx.is_distributed:
        folder = download_model(name, revision, cache_dir, flag=flag, say=say)
    else:
        folder = download_on_main(name, revision, cache_dir, ctx, flag=flag, say=say)
    if say is not None and (ctx is None or ctx.is_main):
        say(f"{name}: revision {revision or 'main'} = commit {snapshot_commit(folder) or '?'}, files in {folder}")
    return folder


def download_on_main(hub_id: str, revision: str | None, cache_dir: str | Path | None, ctx: dist.DistContext, *,
                     flag: str, say: Callable[[str], None] | None) -> Path:
    """Rank 0 downloads; every rank then gets its folder, or its error."""
    answer: tuple[str | None, str | None] = (None, None)
    if ctx.is_main:
        try:
            answer = (str(download_model(hub_id, revision, cache_dir, flag=flag, say=say)), None)
        except MRCError as e:
            answer = (None, str(e))
    folder, error = dist.broadcast_from_main(answer, ctx)
    if error:
        raise MRCError(error)
    if ctx.is_main or not missing_from_folder(Path(folder)):
        return Path(folder)
    # This rank does not see rank 0's cache (another node): fetch the same commit here.
    return download_model(hub_id, snapshot_commit(Path(folder)) or revision, cache_dir, flag=flag)
