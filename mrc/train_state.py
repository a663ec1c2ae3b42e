"""Training state on disk: checkpoints, the output folder's policy, the final model, resume.

`output_dir/checkpoint-<step>/` holds
- `model.safetensors`, `config.json`, tokenizer files: an HF folder (`mrc.checkpoint.save_model`);
- `training_args.json`: the resolved flags of the run (flat, one key per flag);
- `optimizer.pt`, `scheduler.pt`, `scaler.pt`: the state dicts of AdamW, the LR schedule, the GradScaler;
- `rng_state.pt`: every rank's torch / CUDA / numpy / python RNG state;
- `trainer_state.json`: step, epoch and the number of global batches of that epoch already consumed.

A checkpoint folder is written under a temp name and renamed into place (`mrc.io.atomic_dir`), so
a crash leaves either the whole checkpoint or none of it. The final model's files go directly into
`output_dir` (where the seed put them) through `mrc.io.replace_files`: readers see the old files
or all the new ones. Every `.pt` file holds only tensors, numbers, strings, lists and dicts: it
loads with `torch.load(weights_only=True)`, which never runs code from the file.
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
from torch import nn

from mrc import dist
from mrc.checkpoint import save_model
from mrc.errors import MRCError
from mrc.io import atomic_write_text, check_folder_path, finish_replace_files, replace_files
from mrc.model import ModelConfig
from mrc.model_card import CardInfo, write_card
from mrc.reporting import Reporter
from mrc.schedule import Progress, Schedule

CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
SCALER = "scaler.pt"
RNG_STATE = "rng_state.pt"
REQUIRED_FILES = ("config.json", "model.safetensors", TRAINER_STATE, OPTIMIZER, SCHEDULER, SCALER, RNG_STATE)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


MODEL_FILES = ("config.json", "model.safetensors", TRAINER_STATE)  # every checkpoint, --save_only_model's too


def model_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-<step>` folder holding a complete model (resumable or model-only), by step."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.fullmatch(path.name)
        if match and path.is_dir() and all((path / name).is_file() for name in MODEL_FILES):
            found.append((int(match.group(1)), path))
    return sorted(found)


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete (resumable) `checkpoint-<step>` folders of `output_dir`, by step."""
    return [(step, path) for step, path in model_checkpoints(output_dir) if is_training_checkpoint(path)]


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
                          write_args: Callable[[Path], None], model_only: bool = False) -> Callable[[Path], None]:
    """A `save_model(extra_writer=...)` callback adding the training state to the checkpoint folder
    (`model_only`: only the flags and the step, no optimizer, schedule, scaler or RNG state)."""

    def write(folder: Path) -> None:
        write_args(folder / "training_args.json")
        if not model_only:
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


# -- the output folder


def is_training_checkpoint(folder: Path) -> bool:
    """A complete `checkpoint-<step>` folder: model files plus everything an exact resume reads."""
    return Path(folder).is_dir() and all((Path(folder) / name).is_file() for name in REQUIRED_FILES)


def check_checkpoint(folder: Path) -> Path:
    """The folder of --resume_from_checkpoint, when it holds a complete training checkpoint."""
    if not folder.is_dir():
        raise MRCError(f"--resume_from_checkpoint {folder}: no such folder; pass a checkpoint-<step> folder of a run, "
                       "or --resume to continue the latest checkpoint in --output_dir")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise MRCError(f"--resume_from_checkpoint {folder}: not a complete training checkpoint (it lacks "
                       f"{', '.join(missing)}); pass a checkpoint-<step> folder this trainer wrote")
    return folder


def only_a_failed_start(out: Path) -> bool:
    """`out` holds only what a run writes as training starts (its flags, no logged step): the run
    failed before its first step was logged, so the same command may start over there."""
    files = {p.name: p for p in out.iterdir()}
    return set(files) <= {"training_args.json", "metrics.jsonl"} and (
        "metrics.jsonl" not in files or files["metrics.jsonl"].stat().st_size == 0)


def check_output_dir(out: Path, *, resume: bool, overwrite: bool, checkpoint: Path | None = None) -> Path | None:
    """The checkpoint to resume from (None = start fresh); refuses to train into a used folder.

    With --resume, a folder holding only what a run writes before its first checkpoint
    (a run stopped early) starts fresh. With --resume_from_checkpoint, that checkpoint; the
    output_dir may be the run's own folder (usually its parent), else it must be unused.
    """
    check_folder_path(out, "--output_dir")
    finish_replace_files(out)
    if checkpoint is not None:
        check_checkpoint(checkpoint)
        if checkpoint.resolve().parent == out.resolve():
            return checkpoint
    elif resume:
        found = latest_checkpoint(out)
        if found is not None:
            return found
    continuing = resume or checkpoint is not None
    early_run_files = {"training_args.json", "metrics.jsonl"} if continuing else set()
    used = out.is_dir() and not only_a_failed_start(out) and any(p.name not in early_run_files for p in out.iterdir())
    if used and not overwrite:
        where = ("is not the folder of that checkpoint's run and is not empty" if checkpoint is not None else
                 "holds no complete checkpoint to resume from" if resume else "is not empty")
        if resume and model_checkpoints(out):
            where += " (its checkpoints were saved with --save_only_model: no optimizer state to continue from)"
        raise MRCError(f"--output_dir {out} {where}; pass --overwrite_output_dir to train into it anyway, "
                       f"{'' if continuing else '--resume to continue its latest checkpoint, '}"
                       f"or choose another --output_dir")
    return checkpoint


def decide_start(out: Path, ctx: dist.DistContext, *, resume: bool, overwrite: bool,
                 checkpoint: Path | None = None) -> Path | None:
    """Rank 0 inspects output_dir and every rank gets the same answer (or the same error)."""
    answer: tuple[str | None, str | None] = (None, None)
    if ctx.is_main:
        try:
            found = check_output_dir(out, resume=resume, overwrite=overwrite, checkpoint=checkpoint)
            answer = (str(found) if found else None, None)
        except MRCError as e:
            answer = (None, str(e))
    resume_from, error = dist.broadcast_from_main(answer, ctx)
    if error:
        raise MRCError(error)
    return Path(resume_from) if resume_from else None


# Flags that do not change the training trajectory: a resume may change them silently.
TRAJECTORY_NEUTRAL = frozenset({
    "resume", "resume_from_checkpoint", "overwrite_output_dir",
    "do_eval", "evaluate_during_training", "eval_all_checkpoints",
    "per_gpu_eval_batch_size", "max_eval_samples", "predict_file", "logging_steps", "save_steps", "n_best_size",
    "max_answer_length", "null_score_diff_threshold", "verbose_logging", "local_rank", "threads", "dist_timeout",
    "do_lower_case", "overwrite_cache", "model_name_or_path", "cache_dir", "data_dir", "train_file",
    "save_total_limit", "load_best_model_at_end", "save_only_model", "report_to",
    "revision", "model_commit", "features_cache_dir", "train_sources",
    "extend_positions"})  # a checkpoint already holds the extended table; the flag only acts on a fresh start


def diff_args(saved_path: Path, now: dict[str, Any]) -> list[str]:
    """Settings that change the training trajectory and differ from the checkpoint's training_args.json."""
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
            if k in saved and k not in TRAJECTORY_NEUTRAL and saved[k] != now[k]]


# -- what a checkpoint saves


@dataclass
class Trainer:
    """The objects a step updates and a checkpoint saves."""

    model: nn.Module                 # DDP-wrapped when the world is larger than one
    model_cfg: ModelConfig
    tokenizer_folder: Path
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    training_args: dict[str, Any]    # the run's flat flags, saved as training_args.json in every folder
    card: CardInfo | None = None     # the README.md model card of every saved folder (rank 0)

    @property
    def plain_model(self) -> nn.Module:
        return dist.unwrap_model(self.model)

    def skipped_steps(self, step: int) -> int:
        """Optimizer steps the GradScaler skipped so far (AdamW counts only the steps it applied).

        Reads a device tensor: call at logging time only.
        """
        state = self.optimizer.state.get(self.optimizer.param_groups[0]["params"][0], {})
        applied = state.get("step", 0)
        return step - int(applied.item() if torch.is_tensor(applied) else applied)

    def write_args(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.training_args, indent=2, ensure_ascii=False) + "\n")


def save_checkpoint(trainer: Trainer, progress: Progress, ctx: dist.DistContext, folder: Path, *,
                    model_only: bool = False) -> None:
    """Write an HF model folder plus the training state (rank 0 writes; every rank must call).

    `model_only` (--save_only_model): no optimizer, schedule, scaler or RNG state; not resumable.
    """
    rng_states = [] if model_only else dist.gather_to_main(capture_rng(), ctx)
    if ctx.is_main:
        writer = training_state_writer(optimizer=trainer.optimizer, scheduler=trainer.scheduler, scaler=trainer.scaler,
                                       progress=progress, rng_states=rng_states, write_args=trainer.write_args,
                                       model_only=model_only)
        save_model(trainer.plain_model, trainer.model_cfg, folder, trainer.tokenizer_folder,
                   extra_writer=with_card(writer, trainer, label=str(progress.step),
                                          role=checkpoint_role(progress.step, model_only), folder=folder))
    dist.barrier(ctx)


def checkpoint_role(step: int, model_only: bool) -> str:
    """What a checkpoint folder is, in its model card."""
    return f"the checkpoint of step {step}" + (" (model only: --save_only_model, not resumable)" if model_only
                                               else ", with the state --resume needs")


def refresh_checkpoint_cards(out: Path, card: CardInfo) -> None:
    """Rewrite the card of every checkpoint in `out` (rank 0): scores added since it was saved show up."""
    for step, folder in model_checkpoints(out):
        write_card(folder, card, label=str(step), role=checkpoint_role(step, not is_training_checkpoint(folder)),
                   folder_name=str(folder))


def with_card(writer: Callable[[Path], None], trainer: Trainer, *, label: str, role: str,
              folder: Path) -> Callable[[Path], None]:
    """`writer` plus the folder's README.md model card (when the trainer has card info)."""

    def write(tmp: Path) -> None:
        writer(tmp)
        if trainer.card is not None:
            write_card(tmp, trainer.card, label=label, role=role, folder_name=str(folder))

    return write


def save_final_model(trainer: Trainer, out: Path, ctx: dist.DistContext, *, label: str, role: str) -> None:
    """The trained model's HF files directly in output_dir, beside the checkpoints (rank 0).

    Built complete in `.final-model`, then moved in by `replace_files`: a crash at any moment
    leaves the old final model or the new one, never new weights beside an old config. `label`
    names the model's scores in the card (the final step, or the best checkpoint's).
    """
    if not ctx.is_main:
        return
    staging = out / ".final-model"
    save_model(trainer.plain_model, trainer.model_cfg, staging, trainer.tokenizer_folder,
               extra_writer=with_card(lambda tmp: trainer.write_args(tmp / "training_args.json"), trainer,
                                      label=label, role=role, folder=out))
    replace_files(staging, out)


def resume(trainer: Trainer, folder: Path, schedule: Schedule, ctx: dist.DistContext, report: Reporter) -> Progress:
    """Restore optimizer, schedule, scaler, RNG and data position from a checkpoint folder."""
    changed = diff_args(folder / "training_args.json", trainer.training_args)
    if changed:
        report.say(f"[yellow]resuming with settings that differ from {folder}: {'; '.join(changed)} "
                   "(the run will not match an uninterrupted one)[/]")
    progress, rng_restored = restore_training_state(folder, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                                                    scaler=trainer.scaler, rank=ctx.rank)
    if not rng_restored:
        report.say(f"[yellow]{folder} has no RNG state for rank {ctx.rank} (the job grew); that rank reseeds[/]")
    if (progress.epoch, progress.batches_done) != schedule.position(progress.step):
        report.say(f"[yellow]{folder}: its data position (epoch {progress.epoch + 1}, batch {progress.batches_done}) "
                   "does not match this schedule; continuing from the saved position[/]")
    report.say(f"resumed from {folder} at step {progress.step:,}")
    return progress
