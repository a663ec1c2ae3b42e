"""Which checkpoints a run keeps: --save_total_limit, --load_best_model_at_end, --save_only_model.

A long run saves a checkpoint every --save_steps; with KoELECTRA-base and its optimizer state
each is about 1.3 GB. `--save_total_limit N` keeps the N newest `checkpoint-<step>` folders and
never deletes two others: the best one by dev F1 (when checkpoints are evaluated) and the newest
one `--resume` can continue from. Deleting happens only after the new checkpoint is complete
(it is renamed into place first), and a folder is renamed to `.checkpoint-<step>.deleting`
before it is removed, so a crash in the middle never leaves a half-deleted checkpoint that looks
complete. `--save_only_model` leaves the optimizer, schedule, scaler and RNG state out (about a
third of the size); such checkpoints still predict and evaluate but cannot be resumed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mrc import dist
from mrc.checkpoint import load_model
from mrc.config import field
from mrc.errors import MRCError
from mrc.reporting import Reporter
from mrc.train_state import list_checkpoints, model_checkpoints

DELETING_SUFFIX = ".deleting"


@dataclass(frozen=True)
class CheckpointConfig:
    """How many checkpoints a run keeps, what they hold, and which one becomes the final model."""

    save_total_limit: int | None = field(None, "keep only the N newest checkpoint-<step> folders, plus the best "
                                         "by dev F1 and the newest resumable one; default: keep all")
    load_best_model_at_end: bool = field(False, "the final model in output_dir gets the weights of the checkpoint "
                                         "with the best dev F1 (needs --evaluate_during_training)")
    save_only_model: bool = field(False, "checkpoints hold the model only, without optimizer, schedule and RNG "
                                  "state (a third of the size); --resume cannot continue from them")

    def __post_init__(self) -> None:
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise MRCError(f"--save_total_limit must be at least 1 (or left out to keep every checkpoint), "
                           f"got {self.save_total_limit}")


def check_with_schedule(cfg: CheckpointConfig, *, evaluate_during_training: bool, logging_steps: int,
                        save_steps: int) -> None:
    """--load_best_model_at_end needs every checkpoint scored: evaluations on the save steps."""
    if not cfg.load_best_model_at_end:
        return
    if not evaluate_during_training:
        raise MRCError("--load_best_model_at_end picks the checkpoint with the best dev F1; add "
                       "--evaluate_during_training and --predict_file so checkpoints are scored")
    if logging_steps <= 0 or save_steps <= 0 or save_steps % logging_steps != 0:
        raise MRCError(f"--load_best_model_at_end needs every checkpoint evaluated: --save_steps ({save_steps}) "
                       f"must be a positive multiple of --logging_steps ({logging_steps}), which is when "
                       "evaluations run")


def best_step(scores: dict[str, dict[str, Any]], steps: list[int]) -> int | None:
    """The step of `steps` with the highest F1 in `scores` ({"<step>": {"f1": ...}}); the earliest on a tie."""
    scored = [s for s in steps if "f1" in scores.get(str(s), {})]
    return max(scored, key=lambda s: (scores[str(s)]["f1"], -s)) if scored else None


def steps_to_delete(steps: list[int], limit: int | None, keep: set[int]) -> list[int]:
    """The checkpoints beyond the `limit` newest, except those in `keep` (best, resumable)."""
    if limit is None:
        return []
    newest = set(sorted(steps)[-limit:])
    return [s for s in sorted(steps) if s not in newest and s not in keep]


def rotate_checkpoints(output_dir: Path, cfg: CheckpointConfig, scores: dict[str, dict[str, Any]]) -> list[Path]:
    """Delete the checkpoints --save_total_limit no longer keeps (rank 0, after a checkpoint is complete).

    Returns the deleted folders.
    """
    out = Path(output_dir)
    finish_deletions(out)
    checkpoints = dict(model_checkpoints(out))
    keep = {best_step(scores, list(checkpoints))}
    resumable = list_checkpoints(out)
    if resumable:
        keep.add(resumable[-1][0])
    deleted = []
    for step in steps_to_delete(list(checkpoints), cfg.save_total_limit, keep):
        folder = checkpoints[step]
        doomed = folder.with_name(f".{folder.name}{DELETING_SUFFIX}")
        os.replace(folder, doomed)  # one rename: from here on no reader takes it for a checkpoint
        shutil.rmtree(doomed, ignore_errors=True)
        deleted.append(folder)
    return deleted


def finish_deletions(output_dir: Path) -> None:
    """Remove what a crash left of checkpoints that were being deleted."""
    for doomed in Path(output_dir).glob(f".checkpoint-*{DELETING_SUFFIX}"):
        shutil.rmtree(doomed, ignore_errors=True)


def best_checkpoint(output_dir: Path, scores: dict[str, dict[str, Any]], final_step: int) -> tuple[int, Path] | None:
    """(step, folder) of the best evaluated checkpoint, or None when the final model itself is the best
    (or nothing was scored): what --load_best_model_at_end puts in output_dir."""
    checkpoints = dict(model_checkpoints(output_dir))
    best = best_step(scores, sorted(set(checkpoints) | {final_step}))
    if best is None or best == final_step:
        return None
    return best, checkpoints[best]


def keep_checkpoints(out: Path, cfg: CheckpointConfig, scores: dict[str, dict[str, Any]], ctx: dist.DistContext,
                     report: Reporter) -> None:
    """--save_total_limit, right after a checkpoint is complete (rank 0 deletes; every rank waits)."""
    if cfg.save_total_limit is None:
        return
    if ctx.is_main:
        deleted = rotate_checkpoints(out, cfg, scores)
        if deleted:
            report.say(f"--save_total_limit {cfg.save_total_limit}: deleted {', '.join(p.name for p in deleted)}")
    dist.barrier(ctx)


def load_best_weights(model: nn.Module, out: Path, scores: dict[str, dict[str, Any]], final_step: int,
                      ctx: dist.DistContext, report: Reporter) -> tuple[str, str]:
    """--load_best_model_at_end: the best checkpoint's weights into the bare `model`, on every rank.

    `scores` is rank 0's eval_results.json. Returns (the label of the model's scores there, what the
    final model folder is), for the eval table and the model card.
    """
    best = best_checkpoint(out, scores, final_step) if ctx.is_main else None
    best = dist.broadcast_from_main(best, ctx)
    if best is None:
        report.say(f"--load_best_model_at_end: the final model (step {final_step}) is the best evaluated one")
        return str(final_step), f"the final model (step {final_step}), the best by dev F1 of the evaluated steps"
    step, folder = best
    best_model, _ = load_model(folder, report=None)
    model.load_state_dict(best_model.state_dict())
    if ctx.is_main:
        f1, em = scores[str(step)]["f1"], scores[str(step)]["exact_match"]
        report.say(f"--load_best_model_at_end: the final model in {out} gets the weights of {folder} "
                   f"(step {step}: F1 {f1:.2f}, EM {em:.2f}, the best by dev F1)")
    return str(step), f"the final model: the weights of {folder.name} (step {step}), the best checkpoint by dev F1"
