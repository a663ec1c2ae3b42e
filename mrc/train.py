"""Fine-tuning for extractive QA: the hand-written training loop behind `train.py`.

One code path for `python train.py` (CPU or one GPU) and `torchrun --nproc_per_node N train.py`
(DDP from the torchrun environment, gloo on CPU, nccl on GPU). The flags are those of the seed's
`run_korquad.py` (HF legacy `run_squad.py`) plus a few new ones; see docs/train.md. What each step
trains on is planned up front by `mrc.schedule`; checkpoints and resume are `mrc.train_state`;
evaluation is `mrc.evaluation`. This module is the config, the step, and the loop.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrc import dist, tensorboard
from mrc.batching import collate
from mrc.checkpoint import load_model, read_model_config
from mrc.config import field, print_config, section, to_dict
from mrc.data_sources import TrainFile, parse_train_file
from mrc.decode import DecodeConfig
from mrc.errors import MRCError
from mrc.io import ensure_dir
from mrc.evaluation import EvalResults, Evaluator, Inference, load_eval_set
from mrc.hub import resolve_model, snapshot_commit
from mrc.store import WindowConfig
from mrc.loss import qa_loss
from mrc.model_card import run_card_info, write_card
from mrc.optim import build_optimizer, linear_warmup_decay
from mrc.positions import EXTEND_METHODS, check_window_fits
from mrc.precision import PrecisionConfig
from mrc.reporting import Reporter
from mrc.report import write_report_of_run
from mrc.retention import CheckpointConfig, check_with_schedule, keep_checkpoints, load_best_weights
from mrc.schedule import Progress, Sampling, Schedule, TrainData, plan_schedule, rank_micro_batches
from mrc.train_data import load_train_data, read_train_examples
from mrc.train_state import (Trainer, checkpoint_dir, decide_start, is_training_checkpoint, latest_checkpoint,
                             read_progress, refresh_checkpoint_cards, resume, save_checkpoint, save_final_model)

MODEL_TYPES = ("electra", "bert")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; the flags of train.py are built from these fields."""

    # -- what to train, on what, where the results go (the seed's flags) --
    model_name_or_path: str = field(help="model to fine-tune: a folder (config.json, weights, vocab.txt) or a "
                                    "Hugging Face Hub id such as monologg/koelectra-base-v3-discriminator "
                                    "(downloaded into the HF cache on first use)")
    output_dir: str = field(help="folder for checkpoints, the final model, predictions and metrics.jsonl")
    model_type: str | None = field(None, "accepted for run_korquad.py commands; the architecture comes from the "
                                   "model's config.json (electra or bert)")
    data_dir: str | None = field(None, "folder --train_file and --predict_file are relative to")
    train_file: list[str] = field(default_factory=list, help="training file(s): KorQuAD/SQuAD/KLUE JSON or JSON "
                                  "Lines; PATH:WEIGHT uses a file WEIGHT times per epoch (e.g. klue.json:0.5)")
    predict_file: str | None = field(None, "evaluation file (KorQuAD/SQuAD/KLUE JSON or JSON Lines, with answers)")
    cache_dir: str | None = field(None, "where models downloaded from the hub are stored, as in run_squad.py "
                                  "(default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)")
    revision: str | None = field(None, "branch, tag or commit of a hub --model_name_or_path (default main); the "
                                 "resolved commit is printed and saved in training_args.json as model_commit")
    features_cache_dir: str | None = field(None, "window store cache folder (default $MRC_CACHE, else ./.cache/mrc)")
    window: WindowConfig = section(WindowConfig)
    extend_positions: str | None = field(None, "when --max_seq_length is longer than the model's "
                                         "max_position_embeddings: grow the learned position table to it by copy "
                                         "(tile the rows, Longformer) or interpolate (resample them linearly); "
                                         "docs/model.md", choices=EXTEND_METHODS)
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
    decode: DecodeConfig = section(DecodeConfig)
    verbose_logging: bool = field(False, "print every skipped question and the per-file window counts")
    logging_steps: int = field(500, "log (and with --evaluate_during_training evaluate) every N steps; 0 = never")
    save_steps: int = field(500, "write output_dir/checkpoint-<step> every N optimizer steps; 0 = never")
    checkpoints: CheckpointConfig = section(CheckpointConfig)
    eval_all_checkpoints: bool = field(False, "with --do_eval: evaluate every checkpoint-<step> and name the best")
    overwrite_output_dir: bool = field(False, "train into an output_dir that already holds files")
    seed: int = field(42, "seed of initialisation, dropout and data order")
    local_rank: int = field(-1, "set by torch.distributed.launch; ignored (ranks come from the torchrun environment)",
                            flags=("--local-rank",))
    threads: int = field(1, "accepted for run_korquad.py commands (its feature-conversion processes); "
                         "tokenization here is batched inside `tokenizers`")
    precision: PrecisionConfig = section(PrecisionConfig)
    fp16_opt_level: str = field("O1", "accepted for run_korquad.py commands (apex); torch.amp has no levels")
    do_lower_case: bool = field(False, "accepted for run_korquad.py commands; casing comes from the model "
                                "folder's tokenizer_config.json (KoELECTRA v3 is cased)")
    overwrite_cache: bool = field(False, "accepted for run_korquad.py commands; the window cache is keyed by the "
                                  "input, tokenizer and settings, so a stale cache is never reused")
    # -- new in this trainer --
    neg_ratio: float = field(1.0, "fraction of the windows without the answer kept each epoch (seeded); 1 = all")
    group_by_length: bool = field(True, "batch windows of similar length together (less padding)")
    resume: bool = field(False, "continue from the latest complete checkpoint in output_dir, exactly")
    resume_from_checkpoint: str | None = field(None, "continue exactly from this checkpoint-<step> folder of a run "
                                               "(its optimizer, schedule, RNG and data position)")
    max_train_samples: int | None = field(None, "use only the first N training questions")
    max_eval_samples: int | None = field(None, "evaluate only the first N questions of --predict_file")
    no_cuda: bool = field(False, "run on CPU even when a GPU is visible")
    dist_timeout: int = field(1800, "seconds a rank waits for the others in a collective before the job fails")
    report_to: str = field("none", "also write the logged scalars for TensorBoard under output_dir/runs/ "
                           "(needs pip install -e '.[tensorboard]')", choices=tensorboard.REPORT_TO)

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
        for name in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size", "gradient_accumulation_steps",
                     "threads", "dist_timeout"):
            if getattr(self, name) < 1:
                raise MRCError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "max_grad_norm", "num_train_epochs"):
            if not math.isfinite(getattr(self, name)):
                raise MRCError(f"--{name} must be a finite number, got {getattr(self, name)}")
        if not 0 < self.learning_rate <= 1:  # above 1 AdamW's first step already overflows float32 weights
            raise MRCError(f"--learning_rate must be in (0, 1] (fine-tuning uses about 1e-5 to 1e-4), "
                           f"got {self.learning_rate}")
        if self.weight_decay < 0 or not self.adam_epsilon > 0 or self.max_grad_norm < 0:
            raise MRCError("--weight_decay and --max_grad_norm must be >= 0 and --adam_epsilon > 0")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise MRCError(f"--num_train_epochs must be positive (got {self.num_train_epochs}), or set --max_steps")
        if self.warmup_steps < 0:
            raise MRCError(f"--warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.neg_ratio <= 1.0:
            raise MRCError(f"--neg_ratio must be in [0, 1] (1 keeps every window), got {self.neg_ratio}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise MRCError(f"--{name} must be at least 1 when given, got {getattr(self, name)}")
        if self.evaluate_during_training and self.logging_steps <= 0:
            raise MRCError("--evaluate_during_training evaluates every --logging_steps; set --logging_steps > 0")
        if self.eval_all_checkpoints and not self.do_eval:
            raise MRCError("--eval_all_checkpoints runs in the final evaluation; add --do_eval")
        check_with_schedule(self.checkpoints, evaluate_during_training=self.evaluate_during_training,
                            logging_steps=self.logging_steps, save_steps=self.save_steps)
        if self.resume_from_checkpoint and (self.resume or not self.do_train):
            raise MRCError("--resume_from_checkpoint continues a training run: use it with --do_train and without "
                           "--resume (which picks the latest checkpoint of --output_dir)")
        self.train_files  # parses every PATH:WEIGHT now, so a bad weight fails before any work
        if not self.output_dir.strip():
            raise MRCError("--output_dir is empty; give a folder path")
        if Path(self.model_name_or_path).is_dir() and \
                Path(self.output_dir).resolve() == Path(self.model_name_or_path).resolve():
            raise MRCError(f"--output_dir {self.output_dir} is the --model_name_or_path folder; the final model "
                           f"would replace the one it starts from: choose another --output_dir")

    @property
    def train_files(self) -> list[TrainFile]:
        return [parse_train_file(spec, self.data_dir) for spec in self.train_file]

    @property
    def predict_path(self) -> Path | None:
        return Path(self.data_dir or "") / self.predict_file if self.predict_file else None

    def global_batch(self, world_size: int) -> int:
        """Windows per optimizer step: micro-batch x accumulation x world size."""
        return self.per_gpu_train_batch_size * self.gradient_accumulation_steps * world_size

    def sampling(self, world_size: int) -> Sampling:
        return Sampling(seed=self.seed, neg_ratio=self.neg_ratio, global_batch=self.global_batch(world_size),
                        world_size=world_size, group_by_length=self.group_by_length)

    def inference(self) -> Inference:
        return Inference(batch_size=self.per_gpu_eval_batch_size, precision=self.precision, decode=self.decode)


# ---------------------------------------------------------------------------------------------
# The train step


@dataclass
class StepResult:
    """Device tensors of one optimizer step (read on the host only at logging intervals)."""

    loss: torch.Tensor        # sum of micro-batch mean losses x weights; its mean over ranks = global-batch mean
    grad_norm: torch.Tensor   # before clipping; inf/nan on an fp16 overflow step (then skipped)


def train_step(model: nn.Module, micro_batches: list[tuple[dict[str, torch.Tensor], float]],
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               scaler: torch.amp.GradScaler, autocast_dtype: torch.dtype | None, max_grad_norm: float,
               ctx: dist.DistContext) -> StepResult:
    """One optimizer step over this rank's micro-batches of a global batch (no host sync)."""
    loss_sum = torch.zeros((), device=ctx.device)
    last = len(micro_batches) - 1
    for i, (batch, weight) in enumerate(micro_batches):
        with dist.micro_step(model, ctx, sync=i == last):  # gradients all-reduce once, on the last micro-step
            with torch.autocast(ctx.device.type, dtype=autocast_dtype or torch.bfloat16,
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


def collate_to_device(store, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    batch = collate(store, rows, with_labels=True)
    del batch["window_index"]  # decoding needs it, training does not
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


def load_for_training(cfg: TrainConfig, model_folder: Path, ctx: dist.DistContext, report: Reporter):
    """The model of `model_folder`, its position table grown to --max_seq_length under --extend_positions."""
    return load_model(model_folder, report=report.say if ctx.is_main else None,
                      max_seq_length=cfg.window.max_seq_length, extend_positions=cfg.extend_positions)


def build_trainer(cfg: TrainConfig, model_folder: Path, schedule: Schedule, ctx: dist.DistContext,
                  report: Reporter, model_commit: str | None = None) -> Trainer:
    model, model_cfg = load_for_training(cfg, model_folder, ctx, report)
    model = dist.wrap_model(model.to(ctx.device).train(), ctx)
    optimizer = build_optimizer(dist.unwrap_model(model), learning_rate=cfg.learning_rate,
                                weight_decay=cfg.weight_decay, adam_epsilon=cfg.adam_epsilon, device=ctx.device)
    scheduler = linear_warmup_decay(optimizer, cfg.warmup_steps, schedule.total_steps)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision.fp16)
    return Trainer(model, model_cfg, model_folder, optimizer, scheduler, scaler,
                   training_args={**to_dict(cfg), "model_commit": model_commit})


def seed_everything(seed: int) -> None:
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


def stop_if_not_finite(watch: dist.StopWatch, out: Path) -> None:
    bad = watch.bad_step()
    if bad is not None:
        kept = latest_checkpoint(out)
        raise MRCError(f"the training loss became NaN or infinite at step {bad}; stopped without saving. "
                       f"Last good checkpoint: {kept or 'none'}. Lower --learning_rate, keep --max_grad_norm > 0, "
                       "or use --bf16 instead of --fp16, then rerun with --resume")


def train_loop(trainer: Trainer, data: TrainData, schedule: Schedule, progress: Progress, cfg: TrainConfig,
               ctx: dist.DistContext, report: Reporter, evaluator: Evaluator | None) -> int:
    """Train from `progress` to the end of the schedule; returns the final step."""
    out = Path(cfg.output_dir)
    watch = dist.StopWatch(ctx)
    interval = IntervalStats.start(ctx.device)
    last_saved = progress.step
    with watch.catching_sigint(), report.progress_bar(schedule.total_steps, progress.step):
        for progress, batch in schedule.remaining(progress):
            micro = [(collate_to_device(data.store, rows, ctx.device), weight) for rows, weight
                     in rank_micro_batches(batch, ctx.rank, ctx.world_size, cfg.gradient_accumulation_steps)]
            last = train_step(trainer.model, micro, trainer.optimizer, trainer.scheduler, trainer.scaler,
                              cfg.precision.autocast_dtype, cfg.max_grad_norm, ctx)
            step = progress.step
            watch.watch_loss(step, last.loss)
            interval.add(last.loss, int(data.lengths[batch].sum()))
            report.advance(step, epoch=f"{schedule.epoch_progress(progress):.2f}",
                           tokens_per_s=f"{interval.tokens_per_s():,.0f}")
            if cfg.logging_steps > 0 and step % cfg.logging_steps == 0:
                stop_if_not_finite(watch, out)
                entry = log_entry(trainer, interval, last, step, schedule.epoch_progress(progress), ctx)
                report.advance(step, loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")
                report.log_line(entry, schedule.total_steps)
                if evaluator is not None:
                    entry.update(evaluator.run(trainer.model, str(step)))
                report.record(entry)
                interval = IntervalStats.start(ctx.device)
            if cfg.save_steps > 0 and step % cfg.save_steps == 0:
                stop_if_not_finite(watch, out)
                save_checkpoint(trainer, progress, ctx, checkpoint_dir(out, step),
                                model_only=cfg.checkpoints.save_only_model)
                keep_checkpoints(out, cfg.checkpoints, eval_scores(evaluator), ctx, report)
                last_saved = step
            if watch.stop_requested():
                stop_if_not_finite(watch, out)
                if last_saved != step:
                    save_checkpoint(trainer, progress, ctx, checkpoint_dir(out, step))
                report.say(f"interrupted: saved {checkpoint_dir(out, step)}; continue with the same "
                           "command plus --resume")
                raise KeyboardInterrupt
    stop_if_not_finite(watch, out)
    return progress.step


def eval_scores(evaluator: Evaluator | None) -> dict[str, dict[str, Any]]:
    """eval_results.json as rank 0 holds it ({} elsewhere, or without evaluation)."""
    return evaluator.results.results if evaluator is not None and evaluator.results is not None else {}


# ---------------------------------------------------------------------------------------------
# The run


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train and/or evaluate as `cfg` says; returns the final scores (rank 0; {} elsewhere)."""
    tensorboard.require(cfg.report_to)
    ctx = dist.init_distributed(no_cuda=cfg.no_cuda, timeout_s=cfg.dist_timeout)
    try:
        return run_in_context(cfg, ctx)
    finally:
        dist.destroy(ctx)


def run_in_context(cfg: TrainConfig, ctx: dist.DistContext) -> dict[str, Any]:
    cfg.precision.check_device(ctx.device)
    out = Path(cfg.output_dir)
    checkpoint = Path(cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    resume_from = (decide_start(out, ctx, resume=cfg.resume, overwrite=cfg.overwrite_output_dir, checkpoint=checkpoint)
                   if cfg.do_train else None)
    report = Reporter(ctx, out / "metrics.jsonl")
    if ctx.is_main:
        print_config(cfg, title="training config")
    report.say(f"{ctx.world_size} process(es) on {ctx.device.type}" + (
        f"; global batch = {cfg.per_gpu_train_batch_size} per micro-batch x {cfg.gradient_accumulation_steps} "
        f"accumulation x {ctx.world_size} process(es) = {cfg.global_batch(ctx.world_size)} windows per step"
        if cfg.do_train else ""))
    if ctx.device.type == "cuda" and not ctx.is_distributed and torch.cuda.device_count() > 1:
        report.say(f"{torch.cuda.device_count()} GPUs visible but one is used; launch with "
                   f"torchrun --nproc_per_node {torch.cuda.device_count()} train.py ... to use all")
    seed_everything(cfg.seed)
    model_folder = resolve_model(cfg.model_name_or_path, cfg.revision, cfg.cache_dir, ctx, say=report.say)
    if cfg.do_train and resume_from is None and is_training_checkpoint(model_folder):
        report.say(f"[yellow]{model_folder} is a training checkpoint (step {read_progress(model_folder).step:,}): "
                   "this starts a new run from its weights at step 0, with a fresh optimizer and schedule. To "
                   f"continue that run instead, pass --resume_from_checkpoint {model_folder}[/]")
    start_folder = resume_from or model_folder  # a resumed checkpoint already has the extended table
    check_window_fits(cfg.window.max_seq_length, read_model_config(start_folder).max_position_embeddings,
                      cfg.extend_positions, where=str(start_folder))
    train_examples = (read_train_examples(cfg.train_files, report, with_unanswerable=cfg.decode.version_2_with_negative,
                                          max_samples=cfg.max_train_samples, verbose=cfg.verbose_logging)
                      if cfg.do_train else None)
    evaluator = None
    if cfg.do_eval or cfg.evaluate_during_training:
        eval_set = load_eval_set(cfg.predict_path, model_folder, cfg.window, ctx, report,
                                 with_unanswerable=cfg.decode.version_2_with_negative,
                                 max_samples=cfg.max_eval_samples, cache_dir=cfg.features_cache_dir)
        # A fresh training run starts a fresh eval_results.json; resuming or evaluating adds to it.
        results = (EvalResults(out / "eval_results.json", keep_existing=resume_from is not None or not cfg.do_train)
                   if ctx.is_main else None)
        evaluator = Evaluator(eval_set, cfg.inference(), out, ctx, report, results)
    if not cfg.do_train:
        model, _ = load_for_training(cfg, model_folder, ctx, report)
        model = model.to(ctx.device)
        if cfg.eval_all_checkpoints:
            evaluator.all_checkpoints(("eval", model))
        else:
            evaluator.run(model, "eval")
        return evaluator.scores("eval")
    data = load_train_data(cfg.train_files, train_examples, model_folder, cfg.window, ctx, report,
                           cache_dir=cfg.features_cache_dir, sampling=cfg.sampling(ctx.world_size))
    schedule = plan_schedule(data, cfg.sampling(ctx.world_size), num_train_epochs=cfg.num_train_epochs,
                             max_steps=cfg.max_steps)
    for epoch, counts in enumerate(schedule.counts):
        if cfg.neg_ratio < 1.0 or cfg.verbose_logging or epoch == 0:
            report.say(f"epoch {epoch + 1}: {counts.windows:,} windows ({counts.with_answer:,} with the answer, "
                       f"{counts.kept_without_answer:,} of {counts.without_answer:,} without it kept at "
                       f"--neg_ratio {cfg.neg_ratio:g}) in {counts.steps:,} steps")
    trainer = build_trainer(cfg, resume_from or model_folder, schedule, ctx, report, snapshot_commit(model_folder))
    trainer.training_args["train_sources"] = [source.to_dict() for source in train_examples.sources]
    trainer.card = (run_card_info(cfg, trainer.training_args, model_folder, eval_scores(evaluator), ctx.world_size)
                    if ctx.is_main else None)
    if ctx.is_main:  # only now does the run write into output_dir: a failed start leaves it as it was
        ensure_dir(out)
        resumed_step = read_progress(resume_from).step if resume_from else 0
        report.restart_metrics(resumed_step)
        if cfg.report_to == "tensorboard":
            report.sinks.append(tensorboard.TensorBoardLog(out, resumed_step))
        trainer.write_args(out / "training_args.json")
    progress = resume(trainer, resume_from, schedule, ctx, report) if resume_from is not None else Progress()
    report.say(f"training {schedule.total_steps:,} steps ({len(schedule.epochs)} epoch(s)), warmup {cfg.warmup_steps}")
    with warnings.catch_warnings():
        # An fp16 overflow on the very first step makes the scheduler step before the (skipped)
        # optimizer step; torch warns about that order, which is the intended one here.
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)")
        final_step = train_loop(trainer, data, schedule, progress, cfg, ctx, report,
                                evaluator if cfg.evaluate_during_training else None)
    label, role = str(final_step), f"the final model (step {final_step})"
    if cfg.checkpoints.load_best_model_at_end:
        label, role = load_best_weights(trainer.plain_model, out, eval_scores(evaluator), final_step, ctx, report)
    save_final_model(trainer, out, ctx, label=label, role=role)
    report.say(f"trained {final_step:,} steps; model saved to {out}")
    scores: dict[str, Any] = {}
    if cfg.do_eval:
        if cfg.eval_all_checkpoints:
            evaluator.all_checkpoints((label, trainer.model))
        elif label not in evaluator.already_evaluated():
            evaluator.run(trainer.model, label)
        scores = evaluator.scores(label)
    if ctx.is_main:
        write_card(out, trainer.card, label=label, role=role, folder_name=str(out))  # now with the final scores
        if cfg.eval_all_checkpoints:
            refresh_checkpoint_cards(out, trainer.card)
        report.close_sinks()
        write_report_of_run(out, report.say)
    return scores
