"""Fine-tuning for extractive QA: the hand-written training loop behind `train.py`.

One code path for `python train.py` (CPU or one GPU) and `torchrun --nproc_per_node N train.py`
(DDP from the torchrun environment, gloo on CPU, nccl on GPU). The flags are those of the seed's
`run_korquad.py` (HF legacy `run_squad.py`) plus a few new ones; see docs/train.md.

How a step is fed: each epoch draws its windows (file weights, `--neg_ratio`), groups them by
length into *global* batches of micro-batch x accumulation x world size windows, and every rank
takes the same global batch list. Rank r's share of a global batch is split into `accumulation`
micro-batches, each padded only to its own longest window. Because the global batches do not
depend on how they are split, 1 process with micro-batch 4 and 2 processes with micro-batch 2
(or accumulation 2) take identical optimizer steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch import nn

from mrc import dist
from mrc.checkpoint import load_model, resolve_model_folder, save_model
from mrc.checkpointing import (Progress as TrainProgress, capture_rng, checkpoint_dir, latest_checkpoint,
                               list_checkpoints, read_progress, restore_training_state, training_state_writer)
from mrc.config import field, print_config, save_config, to_dict
from mrc.data import Example, read_examples
from mrc.errors import MRCError
from mrc.io import atomic_write_text
from mrc.loss import qa_loss
from mrc.optim import build_optimizer, linear_warmup_decay

MODEL_TYPES = ("electra", "bert")


@dataclass(frozen=True)
class TrainFile:
    """One `--train_file` entry: a path and how many times per epoch its windows are used."""

    path: Path
    weight: float = 1.0


def parse_train_file(spec: str, data_dir: str | None) -> TrainFile:
    """`path` or `path:weight` (weight > 0), joined to `data_dir` like the seed's os.path.join."""
    path, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            path, weight = head, float(tail)
        except ValueError:
            path, weight = spec, 1.0
    if not weight > 0 or math.isinf(weight):
        raise MRCError(f"--train_file {spec}: the weight after ':' must be a positive number (e.g. klue.json:0.5)")
    return TrainFile(Path(data_dir or "") / path, weight)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; the flags of train.py are built from these fields."""

    # -- what to train, on what, where the results go (the seed's flags) --
    model_name_or_path: str = field(help="model folder to fine-tune (config.json, weights, vocab.txt), or a hub "
                                    "id already in the local Hugging Face cache")
    output_dir: str = field(help="folder for checkpoints, the final model, predictions and metrics.jsonl")
    model_type: str | None = field(None, "accepted for run_korquad.py commands; the architecture comes from the "
                                   "model's config.json (electra or bert)")
    data_dir: str | None = field(None, "folder --train_file and --predict_file are relative to")
    train_file: list[str] = field(default_factory=list, help="training file(s): KorQuAD/SQuAD/KLUE JSON or JSON "
                                  "Lines; PATH:WEIGHT uses a file WEIGHT times per epoch (e.g. klue.json:0.5)")
    predict_file: str | None = field(None, "evaluation file (KorQuAD/SQuAD/KLUE JSON or JSON Lines, with answers)")
    cache_dir: str | None = field(None, "window store cache folder (default $MRC_CACHE, else ./.cache/mrc)")
    max_seq_length: int = field(384, "tokens per window: [CLS] question [SEP] context [SEP] (seed KorQuAD: 512)")
    doc_stride: int = field(128, "paragraph tokens between the starts of consecutive windows of a long context")
    max_query_length: int = field(64, "question tokens kept; longer questions are cut")
    do_train: bool = field(False, "train on --train_file")
    do_eval: bool = field(False, "evaluate on --predict_file at the end (official KorQuAD v1.0 EM/F1)")
    evaluate_during_training: bool = field(False, "also evaluate every --logging_steps optimizer steps")
    per_gpu_train_batch_size: int = field(8, "windows per micro-batch in each process (one GPU per process)")
    per_gpu_eval_batch_size: int = field(8, "windows per evaluation forward pass in each process")
    learning_rate: float = field(5e-5, "peak AdamW learning rate")
    gradient_accumulation_steps: int = field(1, "micro-batches summed into one optimizer step")
    weight_decay: float = field(0.0, "AdamW weight decay (never on biases and LayerNorm)")
    adam_epsilon: float = field(1e-8, "AdamW epsilon")
    max_grad_norm: float = field(1.0, "clip the global gradient norm to this (0 = no clipping)")
    num_train_epochs: float = field(3.0, "epochs to train (a fraction trains part of the last epoch)")
    max_steps: int = field(-1, "if > 0: optimizer steps to train, overriding --num_train_epochs")
    warmup_steps: int = field(0, "steps of linear learning-rate warmup from 0; then linear decay to 0")
    n_best_size: int = field(20, "answers kept per question in nbest_predictions_<step>.json")
    max_answer_length: int = field(30, "longest answer in tokens")
    verbose_logging: bool = field(False, "print every skipped question and the per-file window counts")
    logging_steps: int = field(500, "log (and with --evaluate_during_training evaluate) every N steps; 0 = never")
    save_steps: int = field(500, "write output_dir/checkpoint-<step> every N optimizer steps; 0 = never")
    eval_all_checkpoints: bool = field(False, "with --do_eval: evaluate every checkpoint-<step> and name the best")
    overwrite_output_dir: bool = field(False, "train into an output_dir that already holds files")
    seed: int = field(42, "seed of initialisation, dropout and data order")
    local_rank: int = field(-1, "set by torch.distributed.launch; ignored (ranks come from the torchrun environment)",
                            flags=("--local-rank",))
    threads: int = field(1, "accepted for run_korquad.py commands (its feature-conversion processes); "
                         "tokenization here is batched inside `tokenizers`")
    fp16: bool = field(False, "float16 autocast with a dynamic loss scale (GradScaler)")
    fp16_opt_level: str = field("O1", "accepted for run_korquad.py commands (apex); torch.amp has no levels")
    do_lower_case: bool = field(False, "accepted for run_korquad.py commands; casing comes from the model "
                                "folder's tokenizer_config.json (KoELECTRA v3 is cased)")
    overwrite_cache: bool = field(False, "accepted for run_korquad.py commands; the window cache is keyed by the "
                                  "input, tokenizer and settings, so a stale cache is never reused")
    # -- new in this trainer --
    bf16: bool = field(False, "bfloat16 autocast (no loss scale needed); Ampere or newer GPUs")
    neg_ratio: float = field(1.0, "fraction of the windows without the answer kept each epoch (seeded); 1 = all")
    group_by_length: bool = field(True, "batch windows of similar length together (less padding)")
    resume: bool = field(False, "continue from the latest complete checkpoint in output_dir, exactly")
    max_train_samples: int | None = field(None, "use only the first N training questions")
    max_eval_samples: int | None = field(None, "evaluate only the first N questions of --predict_file")
    no_cuda: bool = field(False, "run on CPU even when a GPU is visible")
    version_2_with_negative: bool = field(False, "unanswerable questions train toward [CLS] and may be "
                                          "predicted as no answer (SQuAD v2, KLUE)")
    null_score_diff_threshold: float = field(0.0, "with --version_2_with_negative: answer '' when "
                                             "null score - best span score > this")
    dist_timeout: int = field(1800, "seconds a rank waits for the others in a collective before the job fails")

    def __post_init__(self) -> None:
        if not (self.do_train or self.do_eval):
            raise MRCError("nothing to do: pass --do_train and/or --do_eval")
        if self.do_train and not self.train_file:
            raise MRCError("--do_train needs --train_file FILE [FILE:WEIGHT ...]")
        if (self.do_eval or self.evaluate_during_training) and not self.predict_file:
            raise MRCError("--do_eval and --evaluate_during_training need --predict_file FILE")
        if self.model_type is not None and not any(t in self.model_type.lower() for t in MODEL_TYPES):
            raise MRCError(f"--model_type {self.model_type!r}: this trainer runs {' and '.join(MODEL_TYPES)} "
                           "encoders; drop --model_type (config.json decides) or pass electra/bert")
        for name in ("max_seq_length", "doc_stride", "max_query_length", "per_gpu_train_batch_size",
                     "per_gpu_eval_batch_size", "gradient_accumulation_steps", "n_best_size", "max_answer_length",
                     "threads", "dist_timeout"):
            if getattr(self, name) < 1:
                raise MRCError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise MRCError(f"--learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0 or not self.adam_epsilon > 0 or self.max_grad_norm < 0:
            raise MRCError("--weight_decay and --max_grad_norm must be >= 0 and --adam_epsilon > 0")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise MRCError(f"--num_train_epochs must be positive (got {self.num_train_epochs}), or set --max_steps")
        if self.warmup_steps < 0:
            raise MRCError(f"--warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.fp16 and self.bf16:
            raise MRCError("--fp16 and --bf16 exclude each other; pick one")
        if not 0.0 <= self.neg_ratio <= 1.0:
            raise MRCError(f"--neg_ratio must be in [0, 1] (1 keeps every window), got {self.neg_ratio}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise MRCError(f"--{name} must be at least 1 when given, got {getattr(self, name)}")
        if self.evaluate_during_training and self.logging_steps <= 0:
            raise MRCError("--evaluate_during_training evaluates every --logging_steps; set --logging_steps > 0")
        if self.eval_all_checkpoints and not self.do_eval:
            raise MRCError("--eval_all_checkpoints runs in the final evaluation; add --do_eval")
        self.train_files  # parses every PATH:WEIGHT now, so a bad weight fails before any work
        self.window_config()  # checks max_seq_length / doc_stride / max_query_length together

    @property
    def train_files(self) -> list[TrainFile]:
        return [parse_train_file(spec, self.data_dir) for spec in self.train_file]

    @property
    def predict_path(self) -> Path | None:
        return Path(self.data_dir or "") / self.predict_file if self.predict_file else None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.float16 if self.fp16 else torch.bfloat16 if self.bf16 else None

    def window_config(self):
        from mrc.features import WindowConfig

        return WindowConfig(max_seq_length=self.max_seq_length, doc_stride=self.doc_stride,
                            max_query_length=self.max_query_length)

    def global_batch(self, world_size: int) -> int:
        """Windows per optimizer step: micro-batch x accumulation x world size."""
        return self.per_gpu_train_batch_size * self.gradient_accumulation_steps * world_size


# ---------------------------------------------------------------------------------------------
# Output of rank 0: console, progress bar, metrics.jsonl


class Reporter:
    """Everything rank 0 prints or appends to metrics.jsonl; silent on the other ranks."""

    def __init__(self, ctx: dist.DistContext, output_dir: Path):
        self.enabled = ctx.is_main
        self.console = Console(stderr=True)
        self.metrics_path = output_dir / "metrics.jsonl"
        self.progress: Progress | None = None
        self.task = None

    def say(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True)  # log files keep whole lines

    def restart_metrics(self, keep_through_step: int) -> None:
        """Drop metrics.jsonl entries past `keep_through_step` (a resumed run logs them again; 0 = a fresh run)."""
        if not self.enabled or not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", math.inf) <= keep_through_step:
                    kept.append(line + "\n")
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        atomic_write_text(self.metrics_path, "".join(kept))

    def record(self, entry: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    @contextlib.contextmanager
    def progress_bar(self, total_steps: int, done: int) -> Iterator[None]:
        columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
                   TextColumn("{task.fields[tokens_per_s]} tok/s"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, disable=not self.enabled) as progress:
            self.progress = progress
            self.task = progress.add_task("train", total=total_steps, completed=done, epoch="-", loss="-",
                                          lr="-", tokens_per_s="-")
            try:
                yield
            finally:
                self.progress = None

    def log_line(self, entry: dict[str, Any], total_steps: int) -> None:
        """In a log file (no live progress bar) each logging step also gets a line."""
        if self.enabled and not self.console.is_terminal:
            self.say(f"step {entry['step']:,}/{total_steps:,} epoch {entry['epoch']:.2f} loss {entry['loss']:.4f} "
                     f"lr {entry['lr']:.2e} grad_norm {entry['grad_norm']:.3f} {entry['tokens_per_s']:,.0f} tok/s")

    def advance(self, step: int, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, **fields)


# ---------------------------------------------------------------------------------------------
# Data: examples, window stores, the windows of each epoch


@dataclass
class TrainData:
    """The training windows and what epoch sampling needs to know about each."""

    store: Any                      # mrc.features.WindowStore
    window_file: np.ndarray         # int32 [N] index into `weights` of the file a window came from
    weights: list[float]            # per training file
    is_negative: np.ndarray         # bool [N] label is CLS (answer not inside the window)
    lengths: np.ndarray             # int32 [N] sequence length of each window


def read_train_examples(cfg: TrainConfig, report: Reporter) -> tuple[list[Example], np.ndarray]:
    """Training examples of every file (first --max_train_samples) and the file index of each."""
    examples: list[Example] = []
    file_of: list[int] = []
    first_file: dict[str, int] = {}
    for i, train_file in enumerate(cfg.train_files):
        read, stats = read_examples([train_file.path])
        for ex in read:
            if first_file.setdefault(ex.id, i) != i:
                raise MRCError(f"{train_file.path}: question id {ex.id!r} is also in "
                               f"{cfg.train_files[first_file[ex.id]].path}; ids must be unique across --train_file "
                               "files (give a file once, with a weight such as :2, to repeat it)")
        report.say(f"{train_file.path}: {stats.summary()}")
        if cfg.verbose_logging:
            for where in stats.skipped_where:
                report.say(f"  skipped {where}")
        usable = [ex for ex in read if ex.answers or (ex.is_impossible and cfg.version_2_with_negative)]
        if len(usable) < len(read):
            why = "unlabelled" if cfg.version_2_with_negative else "unanswerable or unlabelled"
            hint = "" if cfg.version_2_with_negative else " (pass --version_2_with_negative to train them toward [CLS])"
            report.say(f"{train_file.path}: {len(read) - len(usable):,} {why} questions not trained on{hint}")
        examples.extend(usable)
        file_of.extend([i] * len(usable))
    if cfg.max_train_samples is not None:
        examples, file_of = examples[:cfg.max_train_samples], file_of[:cfg.max_train_samples]
    if not examples:
        raise MRCError(f"no trainable questions in {', '.join(cfg.train_file)}; check the files have answers")
    return examples, np.asarray(file_of, dtype=np.int32)


def build_store_on_all_ranks(examples: list[Example], model_folder: Path, cfg: TrainConfig, *, labels: bool,
                             ctx: dist.DistContext):
    """The window store of `examples`; rank 0 fills the cache first, the other ranks then open it."""
    from mrc.features import build_store

    store = None
    if ctx.is_main:
        store = build_store(examples, model_folder, cfg.window_config(), labels=labels, cache_dir=cfg.cache_dir)
    dist.barrier(ctx)
    if not ctx.is_main:
        store = build_store(examples, model_folder, cfg.window_config(), labels=labels, cache_dir=cfg.cache_dir)
    return store


def load_train_data(cfg: TrainConfig, model_folder: Path, ctx: dist.DistContext, report: Reporter) -> TrainData:
    examples, file_of = read_train_examples(cfg, report)
    store = build_store_on_all_ranks(examples, model_folder, cfg, labels=True, ctx=ctx)
    file_by_id = {ex.id: f for ex, f in zip(examples, file_of)}
    example_file = np.asarray([file_by_id[i] for i in store.example_ids], dtype=np.int32)
    windows = store.windows
    data = TrainData(store=store, window_file=example_file[np.asarray(windows.example_index)],
                     weights=[f.weight for f in cfg.train_files],
                     is_negative=(np.asarray(windows.start_position) == 0) & (np.asarray(windows.end_position) == 0),
                     lengths=np.asarray(store.sequence_lengths()))
    report.say(f"training windows: {len(store):,} from {len(examples):,} questions "
               f"({int(data.is_negative.sum()):,} without the answer)")
    return data


def epoch_windows(data: TrainData, cfg: TrainConfig, epoch: int) -> tuple[np.ndarray, dict[str, int]]:
    """The windows one epoch trains on (file weights, then --neg_ratio), and their counts.

    A file of weight w contributes floor(w) copies of all its windows plus a seeded random
    fraction w - floor(w) of them; then a seeded fraction `neg_ratio` of the windows whose label is
    CLS is kept. Both draws depend only on (seed, epoch), so a resumed run redraws the same epoch.
    """
    rng = np.random.default_rng([cfg.seed, epoch, 0])
    parts = []
    for f, weight in enumerate(data.weights):
        mine = np.flatnonzero(data.window_file == f)
        whole, fraction = divmod(weight, 1.0)
        parts.extend([mine] * int(whole))
        if fraction > 0:
            parts.append(np.sort(rng.choice(mine, size=round(fraction * len(mine)), replace=False)))
    chosen = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    negative = data.is_negative[chosen]
    n_negative = int(negative.sum())
    keep = ~negative
    kept_negative = round(cfg.neg_ratio * n_negative)
    keep[np.flatnonzero(negative)[rng.choice(n_negative, size=kept_negative, replace=False)]] = True
    counts = {"windows": int(keep.sum()), "with_answer": int((~negative).sum()), "without_answer": n_negative,
              "kept_without_answer": kept_negative}
    return chosen[keep], counts


def global_batches(data: TrainData, windows: np.ndarray, cfg: TrainConfig, world_size: int,
                   epoch: int) -> list[np.ndarray]:
    """The epoch's global batches (window indices), identical on every rank.

    A last batch smaller than the world size is dropped: every rank must get at least one window.
    """
    from mrc.batching import LengthGroupedSampler

    size = cfg.global_batch(world_size)
    if cfg.group_by_length:
        sampler = LengthGroupedSampler(data.lengths[windows], size, cfg.seed)
        batches = [windows[b] for b in sampler.batches(epoch)]
    else:
        order = np.random.default_rng([cfg.seed, epoch, 1]).permutation(len(windows))
        batches = [windows[order[i:i + size]] for i in range(0, len(windows), size)]
    return [b for b in batches if len(b) >= world_size]


def rank_micro_batches(batch: np.ndarray, ctx: dist.DistContext, accumulation: int) -> list[tuple[np.ndarray, float]]:
    """This rank's micro-batches of a global batch, each with the weight of its mean loss.

    weight = rows x world / global rows: with DDP averaging gradients over ranks, the step's
    gradient is then the mean over the whole global batch however it was split (1 / accumulation
    when it splits evenly).
    """
    mine = batch[ctx.rank::ctx.world_size]
    return [(rows, len(rows) * ctx.world_size / len(batch)) for rows in np.array_split(mine, accumulation)
            if len(rows)]


@dataclass
class Schedule:
    """Every epoch's global batches, planned up front (index arrays only) to know the total steps."""

    epochs: list[list[np.ndarray]]  # global batches to train per epoch (the last one may be cut short)
    epoch_sizes: list[int]          # global batches in each full epoch (positions count against these)
    total_steps: int

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batches done in it) after `step` optimizer steps."""
        for epoch, size in enumerate(self.epoch_sizes):
            if step < size:
                return epoch, step
            step -= size
        return len(self.epoch_sizes), step


def plan_schedule(data: TrainData, cfg: TrainConfig, ctx: dist.DistContext, report: Reporter) -> Schedule:
    """Epochs until --num_train_epochs (a fraction cuts the last one) or --max_steps steps; prints counts."""
    epochs: list[list[np.ndarray]] = []
    sizes: list[int] = []
    target = cfg.max_steps if cfg.max_steps > 0 else None
    total = 0
    while True:
        epoch = len(epochs)
        windows, counts = epoch_windows(data, cfg, epoch)
        batches = global_batches(data, windows, cfg, ctx.world_size, epoch)
        if not batches:
            raise MRCError(f"an epoch has {counts['windows']} windows, fewer than the {ctx.world_size} processes; "
                           "use more training data or fewer processes")
        if cfg.neg_ratio < 1.0 or cfg.verbose_logging or epoch == 0:
            report.say(f"epoch {epoch + 1}: {counts['windows']:,} windows ({counts['with_answer']:,} with the answer, "
                       f"{counts['kept_without_answer']:,} of {counts['without_answer']:,} without it kept at "
                       f"--neg_ratio {cfg.neg_ratio:g}) in {len(batches):,} steps")
        sizes.append(len(batches))
        if target is None:
            remaining = cfg.num_train_epochs - epoch
            if remaining < 1:
                batches = batches[:math.ceil(remaining * len(batches))]
            epochs.append(batches)
            total += len(batches)
            if epoch + 1 >= math.ceil(cfg.num_train_epochs):
                return Schedule(epochs, sizes, total)
        else:
            epochs.append(batches[:target - total])
            total += len(epochs[-1])
            if total >= target:
                return Schedule(epochs, sizes, total)


def collate_to_device(store, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    from mrc.batching import collate

    batch = collate(store, rows, with_labels=True)
    del batch["window_index"]  # decoding needs it, training does not
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


# ---------------------------------------------------------------------------------------------
# The train step


@dataclass
class StepResult:
    """Device tensors of one optimizer step (read on the host only at logging intervals)."""

    loss: torch.Tensor        # sum of micro-batch mean losses x weights; its mean over ranks = global-batch mean
    grad_norm: torch.Tensor   # before clipping; inf/nan on an fp16 overflow step (then skipped)


def train_step(model: nn.Module, micro_batches: list[tuple[dict[str, torch.Tensor], float]],
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               scaler: torch.amp.GradScaler, autocast_dtype: torch.dtype | None, max_grad_norm: float) -> StepResult:
    """One optimizer step over this rank's micro-batches of a global batch (no host sync)."""
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    last = len(micro_batches) - 1
    for i, (batch, weight) in enumerate(micro_batches):
        with dist.maybe_no_sync(model, skip_sync=i < last):  # gradients all-reduce once, on the last micro-step
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                start_logits, end_logits = model(batch["input_ids"], batch["token_type_ids"],
                                                 batch["attention_mask"])  # [b, T] each, float32
                loss = qa_loss(start_logits, end_logits, batch["start_positions"], batch["end_positions"],
                               batch["attention_mask"])
            scaler.scale(loss * weight).backward()  # weight = 1 / accumulation when the batch splits evenly
        loss_sum += loss.detach() * weight
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else math.inf)
    scaler.step(optimizer)  # skips the update when fp16 gradients overflowed
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum, grad_norm)


# ---------------------------------------------------------------------------------------------
# Stopping: Ctrl-C and non-finite losses, detected without stalling the GPU


NO_BAD_STEP = 2**62


class StopWatch:
    """Watches for Ctrl-C and for a non-finite loss.

    The loss check stays on the device (the first bad step is kept in a tensor) and is read at
    logging and saving time. Ctrl-C sets a host flag; in a DDP job the ranks must stop at the same
    step, so the flag is all-reduced every step and read one step later, while the GPU already
    runs the next step.
    """

    def __init__(self, ctx: dist.DistContext):
        self.ctx = ctx
        self.interrupted = False
        self.first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=ctx.device)
        self._pending: torch.Tensor | None = None
        self._previous_handler = None
        self._first_signal_at = 0.0

    @contextlib.contextmanager
    def catching_sigint(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, save a checkpoint, stop. A second one (2 s later) aborts.

        The 2 s grace ignores the copy of the signal torchrun forwards to its workers.
        """
        def handler(signum, frame):
            now = time.monotonic()
            if self.interrupted and now - self._first_signal_at > 2.0:
                raise KeyboardInterrupt
            if not self.interrupted:
                self.interrupted, self._first_signal_at = True, now

        try:
            self._previous_handler = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: Ctrl-C keeps its default behaviour
            self._previous_handler = None
        try:
            yield
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGINT, self._previous_handler)

    def watch_loss(self, step: int, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss)
        self.first_bad_step = torch.minimum(self.first_bad_step,
                                            torch.where(bad, step, NO_BAD_STEP))

    def bad_step(self) -> int | None:
        """The first step whose loss was not finite on any rank (host sync: call at log/save time)."""
        negated = -self.first_bad_step.clone()
        dist.all_reduce_max(negated, self.ctx)
        first = -int(negated.item())
        return None if first == NO_BAD_STEP else first

    def stop_requested(self) -> bool:
        """Whether every rank should stop after this step (one step late in a DDP job)."""
        if not self.ctx.is_distributed:
            return self.interrupted
        flag = torch.full((1,), float(self.interrupted), device=self.ctx.device)
        dist.all_reduce_max(flag, self.ctx)
        previous, self._pending = self._pending, flag
        # Host sync on the previous step's flag only: this step's kernels are already queued.
        return previous is not None and bool(previous.item() > 0)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalSet:
    examples: list[Example]
    store: Any


def load_eval_set(cfg: TrainConfig, model_folder: Path, ctx: dist.DistContext, report: Reporter) -> EvalSet:
    read, stats = read_examples([cfg.predict_path])
    report.say(f"{cfg.predict_path}: {stats.summary()}")
    examples = [ex for ex in read if ex.answers or (ex.is_impossible and cfg.version_2_with_negative)]
    if len(examples) < len(read):
        report.say(f"{cfg.predict_path}: {len(read) - len(examples):,} questions without answers not evaluated"
                   + ("" if cfg.version_2_with_negative
                      else " (unanswerable ones count with --version_2_with_negative)"))
    if cfg.max_eval_samples is not None:
        examples = examples[:cfg.max_eval_samples]
    if not examples:
        raise MRCError(f"{cfg.predict_path}: no questions with answers to evaluate on")
    return EvalSet(examples, build_store_on_all_ranks(examples, model_folder, cfg, labels=False, ctx=ctx))


def score(examples: list[Example], answers: dict[str, str]) -> dict[str, float]:
    """Official KorQuAD v1.0 EM/F1 (an unanswerable question scores 1 when the answer is "")."""
    from mrc.metrics import evaluate

    return evaluate(examples, answers).summary()


def evaluate_model(model: nn.Module, eval_set: EvalSet, cfg: TrainConfig, ctx: dist.DistContext,
                   label: str) -> dict[str, float] | None:
    """Distributed prediction over the eval store (each window once), decoded and scored on rank 0.

    Writes predictions_<label>.json and nbest_predictions_<label>.json; returns the scores on
    rank 0, None elsewhere.
    """
    from mrc.decode import write_predictions
    from mrc.inference import predict_store

    predictions = predict_store(model, eval_set.store, ctx, batch_size=cfg.per_gpu_eval_batch_size,
                                autocast_dtype=cfg.autocast_dtype, n_best_size=cfg.n_best_size,
                                max_answer_length=cfg.max_answer_length,
                                null_score_diff_threshold=(cfg.null_score_diff_threshold
                                                           if cfg.version_2_with_negative else None))
    if not ctx.is_main:
        return None
    out = Path(cfg.output_dir)
    write_predictions(predictions, out / f"predictions_{label}.json", out / f"nbest_predictions_{label}.json")
    return score(eval_set.examples, {p.example_id: p.text for p in predictions})


class EvalResults:
    """eval_results.json: {label: {exact_match, f1, ...}, ..., "best": label}, rewritten after every eval."""

    def __init__(self, path: Path, *, keep_existing: bool):
        self.path = path
        self.results: dict[str, dict[str, Any]] = {}
        self.fresh: set[str] = set()  # labels scored by this process (on this eval set)
        if keep_existing and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.results = {k: v for k, v in loaded.items() if k != "best" and isinstance(v, dict)}
            except json.JSONDecodeError:
                self.results = {}

    def add(self, label: str, scores: dict[str, Any]) -> None:
        self.results[label] = scores
        self.fresh.add(label)
        atomic_write_text(self.path, json.dumps({**self.results, "best": self.best()}, indent=2) + "\n")

    def best(self) -> str | None:
        scored = {k: v for k, v in self.results.items() if "f1" in v}
        return max(scored, key=lambda k: scored[k]["f1"]) if scored else None


# ---------------------------------------------------------------------------------------------
# Starting, saving, resuming


def check_output_dir(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from (None = start fresh); refuses to train into a used folder.

    With --resume, a folder holding only what a run writes before its first checkpoint
    (a run stopped early) starts fresh.
    """
    out = Path(cfg.output_dir)
    if cfg.resume:
        found = latest_checkpoint(out)
        if found is not None:
            return found
    early_run_files = {"training_args.json", "metrics.jsonl"} if cfg.resume else set()
    used = out.is_dir() and any(p.name not in early_run_files for p in out.iterdir())
    if cfg.do_train and used and not cfg.overwrite_output_dir:
        where = "holds no complete checkpoint to resume from" if cfg.resume else "is not empty"
        raise MRCError(f"--output_dir {out} {where}; pass --overwrite_output_dir to train into it anyway, "
                       f"{'' if cfg.resume else '--resume to continue its latest checkpoint, '}"
                       f"or choose another --output_dir")
    return None


def decide_start(cfg: TrainConfig, ctx: dist.DistContext) -> Path | None:
    """Rank 0 inspects output_dir and every rank gets the same answer (or the same error)."""
    answer: tuple[str | None, str | None] = (None, None)
    if ctx.is_main:
        try:
            found = check_output_dir(cfg)
            answer = (str(found) if found else None, None)
        except MRCError as e:
            answer = (None, str(e))
    resume_from, error = dist.broadcast_from_main(answer, ctx)
    if error:
        raise MRCError(error)
    return Path(resume_from) if resume_from else None


def diff_args(saved_path: Path, cfg: TrainConfig) -> list[str]:
    """Settings that change the training trajectory and differ from the checkpoint's training_args.json."""
    ignore = {"resume", "overwrite_output_dir", "do_eval", "evaluate_during_training", "eval_all_checkpoints",
              "per_gpu_eval_batch_size", "max_eval_samples", "predict_file", "logging_steps", "save_steps",
              "n_best_size", "max_answer_length", "null_score_diff_threshold", "verbose_logging", "local_rank",
              "threads", "dist_timeout", "do_lower_case", "overwrite_cache", "model_name_or_path", "cache_dir", "data_dir", "train_file"}
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    now = to_dict(cfg)
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now if k in saved and k not in ignore and saved[k] != now[k]]


@dataclass
class Trainer:
    """The objects a step updates and a checkpoint saves."""

    model: nn.Module                 # DDP-wrapped when the world is larger than one
    model_cfg: Any                   # mrc.model.ModelConfig
    tokenizer_folder: Path
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

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


def save_checkpoint(trainer: Trainer, cfg: TrainConfig, progress: TrainProgress, ctx: dist.DistContext,
                    folder: Path) -> None:
    """Write an HF model folder plus the training state (rank 0 writes; every rank must call)."""
    rng_states = dist.gather_to_main(capture_rng(), ctx)
    if ctx.is_main:
        writer = training_state_writer(optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                                       scaler=trainer.scaler, progress=progress, rng_states=rng_states,
                                       write_args=lambda path: save_config(cfg, path))
        save_model(trainer.plain_model, trainer.model_cfg, folder, trainer.tokenizer_folder, extra_writer=writer)
    dist.barrier(ctx)


def save_final_model(trainer: Trainer, cfg: TrainConfig, ctx: dist.DistContext) -> None:
    """The trained model's HF files directly in output_dir (beside the checkpoints), file by file atomically."""
    if not ctx.is_main:
        return
    out = Path(cfg.output_dir)
    staging = out / ".final-model"
    save_model(trainer.plain_model, trainer.model_cfg, staging, trainer.tokenizer_folder,
               extra_writer=lambda tmp: save_config(cfg, tmp / "training_args.json"))
    for f in staging.iterdir():
        f.replace(out / f.name)
    staging.rmdir()


def build_trainer(cfg: TrainConfig, model_folder: Path, schedule: Schedule, ctx: dist.DistContext,
                  report: Reporter) -> Trainer:
    model, model_cfg = load_model(model_folder, report=report.say if ctx.is_main else None)
    model = dist.wrap_model(model.to(ctx.device).train(), ctx)
    optimizer = build_optimizer(dist.unwrap_model(model), learning_rate=cfg.learning_rate,
                                weight_decay=cfg.weight_decay, adam_epsilon=cfg.adam_epsilon, device=ctx.device)
    scheduler = linear_warmup_decay(optimizer, cfg.warmup_steps, schedule.total_steps)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.fp16)
    return Trainer(model, model_cfg, model_folder, optimizer, scheduler, scaler)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class IntervalStats:
    """Running sums between two log lines (a device tensor, plus host token counts)."""

    loss: torch.Tensor
    steps: int = 0
    real_tokens: int = 0
    started: float = 0.0

    @classmethod
    def start(cls, device: torch.device) -> IntervalStats:
        return cls(torch.zeros((), device=device), 0, 0, time.perf_counter())

    def add(self, loss: torch.Tensor, real_tokens: int) -> None:
        self.loss += loss
        self.steps += 1
        self.real_tokens += real_tokens

    def tokens_per_s(self) -> float:
        return self.real_tokens / max(time.perf_counter() - self.started, 1e-9)


def log_entry(trainer: Trainer, interval: IntervalStats, last: StepResult, step: int, epoch_progress: float,
              ctx: dist.DistContext) -> dict[str, Any]:
    """The metrics.jsonl entry of an interval (host syncs: logging time only)."""
    # The mean over ranks of the per-step StepResult.loss is the global-batch mean loss.
    loss = dist.all_reduce_sum(interval.loss.clone(), ctx) / (ctx.world_size * max(1, interval.steps))
    return {
        "step": step,
        "epoch": round(epoch_progress, 4),
        "loss": float(loss.item()),
        "lr": trainer.scheduler.get_last_lr()[0],
        "grad_norm": float(last.grad_norm.item()),
        "loss_scale": float(trainer.scaler.get_scale()) if trainer.scaler.is_enabled() else 1.0,
        "skipped_steps": trainer.skipped_steps(step),
        "tokens_per_s": round(interval.tokens_per_s(), 1),
    }


def remaining_batches(schedule: Schedule, progress: TrainProgress) -> Iterator[tuple[TrainProgress, np.ndarray]]:
    """Each global batch still to train, with the progress reached once it is trained."""
    step = progress.step
    for epoch in range(progress.epoch, len(schedule.epochs)):
        batches = schedule.epochs[epoch]
        for index in range(progress.batches_done if epoch == progress.epoch else 0, len(batches)):
            step += 1
            # Against the full epoch: a run cut short by --max_steps resumes inside it, not after it.
            done = (TrainProgress(step, epoch + 1, 0) if index + 1 == schedule.epoch_sizes[epoch]
                    else TrainProgress(step, epoch, index + 1))
            yield done, batches[index]


@dataclass
class Loop:
    """What the training loop reads besides the step itself."""

    trainer: Trainer
    data: TrainData
    schedule: Schedule
    cfg: TrainConfig
    ctx: dist.DistContext
    report: Reporter
    eval_set: EvalSet | None
    results: EvalResults | None

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    def epoch_progress(self, progress: TrainProgress) -> float:
        """Epochs done, fractional (of full epochs, also when --max_steps cuts the last one)."""
        if progress.batches_done == 0:
            return float(progress.epoch)
        return progress.epoch + progress.batches_done / self.schedule.epoch_sizes[progress.epoch]

    def run(self, progress: TrainProgress) -> int:
        """Train from `progress` to the end of the schedule; returns the final step."""
        cfg, ctx, trainer = self.cfg, self.ctx, self.trainer
        watch = StopWatch(ctx)
        interval = IntervalStats.start(ctx.device)
        last_saved = progress.step
        with watch.catching_sigint(), self.report.progress_bar(self.schedule.total_steps, progress.step):
            for progress, batch in remaining_batches(self.schedule, progress):
                micro = [(collate_to_device(self.data.store, rows, ctx.device), weight)
                         for rows, weight in rank_micro_batches(batch, ctx, cfg.gradient_accumulation_steps)]
                last = train_step(trainer.model, micro, trainer.optimizer, trainer.scheduler, trainer.scaler,
                                  cfg.autocast_dtype, cfg.max_grad_norm)
                step = progress.step
                watch.watch_loss(step, last.loss)
                interval.add(last.loss, int(self.data.lengths[batch].sum()))
                self.report.advance(step, epoch=f"{self.epoch_progress(progress):.2f}",
                                    tokens_per_s=f"{interval.tokens_per_s():,.0f}")
                if cfg.logging_steps > 0 and step % cfg.logging_steps == 0:
                    stop_if_not_finite(watch, self.out)
                    self.log(interval, last, progress)
                    interval = IntervalStats.start(ctx.device)
                if cfg.save_steps > 0 and step % cfg.save_steps == 0:
                    stop_if_not_finite(watch, self.out)
                    save_checkpoint(trainer, cfg, progress, ctx, checkpoint_dir(self.out, step))
                    last_saved = step
                if watch.stop_requested():
                    stop_if_not_finite(watch, self.out)
                    if last_saved != step:
                        save_checkpoint(trainer, cfg, progress, ctx, checkpoint_dir(self.out, step))
                    self.report.say(f"interrupted: saved {checkpoint_dir(self.out, step)}; continue with the same "
                                    "command plus --resume")
                    raise KeyboardInterrupt
        stop_if_not_finite(watch, self.out)
        return progress.step

    def log(self, interval: IntervalStats, last: StepResult, progress: TrainProgress) -> None:
        """A metrics.jsonl line (and an evaluation with --evaluate_during_training)."""
        entry = log_entry(self.trainer, interval, last, progress.step, self.epoch_progress(progress), self.ctx)
        self.report.advance(progress.step, loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")
        self.report.log_line(entry, self.schedule.total_steps)
        if self.cfg.evaluate_during_training:
            entry.update(run_eval(self.trainer.model, self.eval_set, self.cfg, self.ctx, str(progress.step),
                                  self.results, self.report))
        self.report.record(entry)


def stop_if_not_finite(watch: StopWatch, out: Path) -> None:
    bad = watch.bad_step()
    if bad is not None:
        kept = latest_checkpoint(out)
        raise MRCError(f"the training loss became NaN or infinite at step {bad}; stopped without saving. "
                       f"Last good checkpoint: {kept or 'none'}. Lower --learning_rate, keep --max_grad_norm > 0, "
                       "or use --bf16 instead of --fp16, then rerun with --resume")


def run_eval(model: nn.Module, eval_set: EvalSet, cfg: TrainConfig, ctx: dist.DistContext, label: str,
             results: EvalResults | None, report: Reporter) -> dict[str, float]:
    """Evaluate, record in eval_results.json, print; returns {eval_<metric>: value} (rank 0)."""
    scores = evaluate_model(model, eval_set, cfg, ctx, label)
    if scores is None:
        return {}
    if results is not None:
        results.add(label, scores)
    report.say(f"eval {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    return {f"eval_{k}": v for k, v in scores.items()}


def already_evaluated(results: EvalResults | None, ctx: dist.DistContext) -> set[str]:
    """Labels this run already scored, on every rank (evaluation holds collectives: all ranks must agree).

    Scores read from an earlier run's eval_results.json do not count: its eval set may differ.
    """
    return dist.broadcast_from_main(set(results.fresh) if results is not None else set(), ctx)


def evaluate_checkpoints(cfg: TrainConfig, eval_set: EvalSet, ctx: dist.DistContext, results: EvalResults,
                         report: Reporter, final: tuple[str, nn.Module] | None) -> None:
    """--eval_all_checkpoints: every checkpoint-<step> (and the final model), a table, the best by F1."""
    done = already_evaluated(results, ctx)
    evaluated: dict[str, str] = {}
    for step, folder in list_checkpoints(Path(cfg.output_dir)):
        if final is not None and str(step) == final[0]:
            continue
        if str(step) not in done:
            model, _ = load_model(folder, report=None)
            run_eval(model.to(ctx.device), eval_set, cfg, ctx, str(step), results, report)
        evaluated[str(step)] = str(folder)
    if final is not None:
        if final[0] not in done:
            run_eval(final[1], eval_set, cfg, ctx, final[0], results, report)
        evaluated[final[0]] = cfg.output_dir
    if not ctx.is_main:
        return
    table = Table(title="checkpoints", title_justify="left")
    for name in ("step", "folder", "exact_match", "f1"):
        table.add_column(name, justify="left" if name == "folder" else "right")
    for label, folder in sorted(evaluated.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else math.inf):
        scores = results.results.get(label, {})
        table.add_row(label, folder, f"{scores.get('exact_match', float('nan')):.2f}",
                      f"{scores.get('f1', float('nan')):.2f}")
    report.console.print(table)
    scored = [label for label in evaluated if "f1" in results.results.get(label, {})]
    if scored:
        best = max(scored, key=lambda label: results.results[label]["f1"])
        report.say(f"best by F1: step {best}, {evaluated[best]} (F1 {results.results[best]['f1']:.2f}, "
                   f"EM {results.results[best]['exact_match']:.2f})")


# What gloo and NCCL say when another rank died or stopped answering.
PEER_FAILURE_MARKERS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "timed out",
                        "Timed out", "NCCL communicator was aborted", "DistNetworkError")


def is_peer_failure(error: BaseException, ctx: dist.DistContext) -> bool:
    if not ctx.is_distributed:
        return False
    return isinstance(error, torch.distributed.DistError) or any(m in str(error) for m in PEER_FAILURE_MARKERS)


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train and/or evaluate as `cfg` says; returns the final scores (rank 0; {} elsewhere)."""
    ctx = dist.init_distributed(no_cuda=cfg.no_cuda, timeout_s=cfg.dist_timeout)
    try:
        return run_in_context(cfg, ctx)
    except RuntimeError as e:
        if not is_peer_failure(e, ctx):
            raise
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MRCError(f"rank {ctx.rank}: lost contact with the other ranks ({first_line}); another rank failed "
                       f"or stopped answering for --dist_timeout {cfg.dist_timeout} s, see its error above") from None
    finally:
        dist.destroy(ctx)


def run_in_context(cfg: TrainConfig, ctx: dist.DistContext) -> dict[str, Any]:
    if cfg.bf16 and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MRCError("--bf16 needs an Ampere or newer GPU; use --fp16 on this one")
    resume_from = decide_start(cfg, ctx) if cfg.do_train else None
    out = Path(cfg.output_dir)
    report = Reporter(ctx, out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.do_train:
            report.restart_metrics(read_progress(resume_from).step if resume_from else 0)
        print_config(cfg, title="training config")
        if cfg.do_train:  # an evaluation-only run must not replace the args the model was trained with
            save_config(cfg, out / "training_args.json")
    report.say(f"{ctx.world_size} process(es) on {ctx.device.type}" + (
        f"; global batch = {cfg.per_gpu_train_batch_size} per micro-batch x {cfg.gradient_accumulation_steps} "
        f"accumulation x {ctx.world_size} process(es) = {cfg.global_batch(ctx.world_size)} windows per step"
        if cfg.do_train else ""))
    if ctx.device.type == "cuda" and not ctx.is_distributed and torch.cuda.device_count() > 1:
        report.say(f"{torch.cuda.device_count()} GPUs visible but one is used; launch with "
                   f"torchrun --nproc_per_node {torch.cuda.device_count()} train.py ... to use all")
    seed_everything(cfg.seed)
    model_folder = resolve_model_folder(cfg.model_name_or_path)
    eval_set = (load_eval_set(cfg, model_folder, ctx, report)
                if cfg.do_eval or cfg.evaluate_during_training else None)
    # A fresh training run starts a fresh eval_results.json; resuming or evaluating adds to it.
    results = (EvalResults(out / "eval_results.json", keep_existing=resume_from is not None or not cfg.do_train)
               if ctx.is_main and eval_set is not None else None)
    final_scores: dict[str, Any] = {}
    if cfg.do_train:
        data = load_train_data(cfg, model_folder, ctx, report)
        schedule = plan_schedule(data, cfg, ctx, report)
        trainer = build_trainer(cfg, resume_from or model_folder, schedule, ctx, report)
        progress = TrainProgress()
        if resume_from is not None:
            progress = resume(trainer, resume_from, cfg, schedule, ctx, report)
        report.say(f"training {schedule.total_steps:,} steps ({len(schedule.epochs)} epoch(s)), "
                   f"warmup {cfg.warmup_steps}")
        with warnings.catch_warnings():
            # An fp16 overflow on the very first step makes the scheduler step before the (skipped)
            # optimizer step; torch warns about that order, which is the intended one here.
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)")
            final_step = Loop(trainer, data, schedule, cfg, ctx, report, eval_set, results).run(progress)
        save_final_model(trainer, cfg, ctx)
        report.say(f"trained {final_step:,} steps; model saved to {out}")
        if cfg.do_eval:
            if cfg.eval_all_checkpoints:
                evaluate_checkpoints(cfg, eval_set, ctx, results, report, (str(final_step), trainer.model))
            elif str(final_step) not in already_evaluated(results, ctx):
                run_eval(trainer.model, eval_set, cfg, ctx, str(final_step), results, report)
            final_scores = results.results.get(str(final_step), {}) if results else {}
    elif cfg.do_eval:
        model, _ = load_model(model_folder, report=report.say if ctx.is_main else None)
        if cfg.eval_all_checkpoints:
            evaluate_checkpoints(cfg, eval_set, ctx, results, report, ("eval", model.to(ctx.device)))
        else:
            run_eval(model.to(ctx.device), eval_set, cfg, ctx, "eval", results, report)
        final_scores = results.results.get("eval", {}) if results else {}
    return final_scores


def resume(trainer: Trainer, folder: Path, cfg: TrainConfig, schedule: Schedule, ctx: dist.DistContext,
           report: Reporter) -> TrainProgress:
    """Restore optimizer, schedule, scaler, RNG and data position from a checkpoint folder."""
    changed = diff_args(folder / "training_args.json", cfg)
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
