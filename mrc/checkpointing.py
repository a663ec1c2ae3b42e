"""Training checkpoints: an HF model folder plus everything needed to continue bit-identically.

`output_dir/checkpoint-<step>/` holds
- `model.safetensors`, `config.json`, tokenizer files: an HF folder (`mrc.checkpoint.save_model`);
- `training_args.json`: the resolved TrainConfig;
- `optimizer.pt`, `scheduler.pt`, `scaler.pt`: the state dicts of AdamW, the LR schedule, the GradScaler;
- `rng_state.pt`: every rank's torch / CUDA / numpy / python RNG state;
- `trainer_state.json`: step, epoch and the number of global batches of that epoch already consumed.

The folder is written under a temp name and renamed in one step (`mrc.io.atomic_dir`), so a
crash leaves either the whole checkpoint or none of it. Every `.pt` file holds only tensors,
numbers, strings, lists and dicts: it loads with `torch.load(weights_only=True)`, which never
runs code from the file.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mrc.errors import MRCError

CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
SCALER = "scaler.pt"
RNG_STATE = "rng_state.pt"
REQUIRED_FILES = ("config.json", "model.safetensors", TRAINER_STATE, OPTIMIZER, SCHEDULER, SCALER, RNG_STATE)


@dataclass
class Progress:
    """Where training stands after `step` optimizer steps."""

    step: int = 0           # optimizer steps done
    epoch: int = 0          # epoch the next global batch comes from (0-based)
    batches_done: int = 0   # global batches of `epoch` already consumed


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete `checkpoint-<step>` folders of `output_dir`, by step."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.fullmatch(path.name)
        if match and path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and plain numbers (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))


def training_state_writer(*, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                          scaler: torch.amp.GradScaler, progress: Progress, rng_states: list[dict[str, Any]],
                          write_args: Callable[[Path], None]) -> Callable[[Path], None]:
    """A `save_model(extra_writer=...)` callback adding the training state to the checkpoint folder."""

    def write(folder: Path) -> None:
        write_args(folder / "training_args.json")
        torch.save(optimizer.state_dict(), folder / OPTIMIZER)
        torch.save(scheduler.state_dict(), folder / SCHEDULER)
        torch.save(scaler.state_dict(), folder / SCALER)
        torch.save(rng_states, folder / RNG_STATE)
        (folder / TRAINER_STATE).write_text(json.dumps(asdict(progress), indent=2) + "\n", encoding="utf-8")

    return write


def load_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: the user must pick another checkpoint
        raise MRCError(f"{path}: cannot be read ({type(e).__name__}: {e}); delete this checkpoint folder "
                       "to resume from the one before it") from None


def read_progress(folder: Path) -> Progress:
    path = Path(folder) / TRAINER_STATE
    try:
        return Progress(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise MRCError(f"{path}: not a trainer state written by this trainer ({e}); delete this checkpoint "
                       "folder to resume from the one before it") from None


def restore_training_state(folder: Path, *, optimizer: torch.optim.Optimizer,
                           scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                           rank: int) -> tuple[Progress, bool]:
    """Load optimizer, schedule, scaler and this rank's RNG state; returns (progress, rng_restored).

    A rank the checkpoint has no RNG state for (the job grew) keeps its freshly seeded RNG.
    """
    folder = Path(folder)
    optimizer.load_state_dict(load_pt(folder / OPTIMIZER))
    scheduler.load_state_dict(load_pt(folder / SCHEDULER))
    scaler.load_state_dict(load_pt(folder / SCALER))
    rng_states = load_pt(folder / RNG_STATE)
    if rank < len(rng_states):
        restore_rng(rng_states[rank])
    return read_progress(folder), rank < len(rng_states)
