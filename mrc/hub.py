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
    for single, index, shard in (("model.safetensors", "model.safetensors.index.json", r"model-\d+-of-\d+\.safetensors"),
                                 ("pytorch_model.bin", "pytorch_model.bin.index.json", r"pytorch_model-\d+-of-\d+\.bin")):
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


def download_model(hub_id: str, revision: str | None = None, cache_dir: str | Path | None = None, *,
                   flag: str = "--model_name_or_path", say: Callable[[str], None] | None = None) -> Path:
    """The snapshot folder of `hub_id` at `revision` in the hub cache, downloading what is missing.

    With the network up, the revision is resolved on the hub (a branch may have moved) and only
    missing files are fetched; with it down or HF_HUB_OFFLINE=1, the cached snapshot of the
    revision is used when complete.
    """
    cache = hub_cache_dir(cache_dir)
    endpoint = hub_endpoint()
    offline = offline_mode()
    rev = revision or "main"
    where = f"{hub_id} (revision {rev}) on {endpoint}"
    api = HfApi(endpoint=endpoint)
    try:
        pinned = api.resolve_revision(hub_id, revision=revision, cache_dir=cache, local_files_only=offline)
        folder = cache / f"models--{hub_id.replace('/', '--')}" / "snapshots" / pinned.resolved
        if not missing_from_folder(folder):
            return folder
        if offline:
            raise LocalEntryNotFoundError(f"the cached snapshot {folder} lacks {', '.join(missing_from_folder(folder))}")
        try:
            wanted = files_to_fetch(api.list_repo_files(hub_id, revision=pinned.resolved))
        except ValueError as e:
            raise MRCError(f"{flag} {hub_id}: {where} has no {e}, so it is not a model this trainer can load "
                           "(it reads ELECTRA/BERT folders: config.json plus model.safetensors or "
                           "pytorch_model.bin); pass another model") from None
        if say is not None:
            say(f"downloading {', '.join(wanted)} of {where} into {cache}")
        folder = Path(snapshot_download(hub_id, revision=pinned, cache_dir=cache, endpoint=endpoint,
                                        allow_patterns=wanted))
    except GatedRepoError:
        raise MRCError(f"{flag} {hub_id}: {where} is a gated model and {token_state()}. Accept its conditions at "
                       f"{endpoint}/{hub_id} with your account, then log in with `hf auth login` or set HF_TOKEN "
                       "to a token of that account") from None
    except RepositoryNotFoundError:
        local = f"; if you meant a local folder, {Path(hub_id).resolve()} does not exist"
        raise MRCError(f"{flag} {hub_id}: no model of that name on {endpoint}, or it is private and {token_state()}. "
                       f"Check the id (spelling, owner/name); for a private model log in with `hf auth login` or set "
                       f"HF_TOKEN{local}{known_model_hint(hub_id)}") from None
    except RevisionNotFoundError:
        raise MRCError(f"--revision {rev}: {hub_id} on {endpoint} has no branch, tag or commit of that name; "
                       f"see {endpoint}/{hub_id}/tree/main for its branches and commits") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        advice = ("log in with `hf auth login` or set HF_TOKEN to a token with read access"
                  if status in (401, 403) else "retry later, or set HF_ENDPOINT to a mirror")
        raise MRCError(f"{flag} {hub_id}: {endpoint} answered HTTP {status} for {where} ({token_state()}); "
                       f"{advice}") from None
    except (RevisionResolutionError, LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise MRCError(not_cached_message(hub_id, rev, endpoint, cache, offline, flag, e)) from None
    except httpx2.TransportError as e:
        raise MRCError(f"{flag} {hub_id}: downloading {where} failed ({type(e).__name__}: {e}). Check the network "
                       "or proxy, or set HF_ENDPOINT to a mirror you can reach; then run the same command again: "
                       f"finished files stay in {cache} and are not downloaded twice") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise MRCError(f"{flag} {hub_id}: no space left on the disk of {cache} while downloading {where}. "
                           "Free some space, or pass --cache_dir (or set HF_HUB_CACHE) to a folder on a disk with "
                           "room, then run the same command again") from None
        raise MRCError(f"{flag} {hub_id}: downloading {where} into {cache} failed ({e}); run the same command again, "
                       "or check that the folder is writable") from None
    missing = missing_from_folder(folder)
    if missing:
        raise MRCError(f"{flag} {hub_id}: the snapshot of {where} in {folder} lacks {', '.join(missing)}; "
                       "this is not a model folder this trainer can load")
    return folder


def not_cached_message(hub_id: str, rev: str, endpoint: str, cache: Path, offline: bool, flag: str,
                       error: Exception) -> str:
    if offline:
        return (f"{flag} {hub_id}: HF_HUB_OFFLINE=1 and revision {rev} of {hub_id} is not (completely) in the "
                f"hub cache {cache}. Run once with network access (unset HF_HUB_OFFLINE) to download it, point "
                f"--cache_dir / HF_HUB_CACHE at the cache that holds it, or pass a local model folder")
    reason = error.__cause__ or error
    return (f"{flag} {hub_id}: cannot reach {endpoint} ({type(reason).__name__}: {str(reason).splitlines()[0]}) and "
            f"revision {rev} of {hub_id} is not in the hub cache {cache}. Check the network or proxy, set HF_ENDPOINT "
            "to a mirror you can reach, or pass a local model folder")


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
