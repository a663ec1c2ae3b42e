"""Predicting a window store into files, and scoring: the one path train-time eval and predict.py share.

`predict_to_files` runs a store's windows across the ranks of the job (`mrc.inference`), and rank
0 streams the decoded answers into `{id: answer}` and n-best files. Training adds an evaluation
set (`EvalSet`), the `eval_results.json` table of every evaluated step, and `--eval_all_checkpoints`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rich.table import Table
import torch
from torch import nn

from mrc import dist
from mrc.checkpoint import load_model
from mrc.data import Example, read_examples
from mrc.decode import DecodeConfig, Prediction
from mrc.errors import MRCError
from mrc.features import build_store
from mrc.store import WindowConfig
from mrc.inference import iter_predictions
from mrc.io import atomic_write_text
from mrc.metrics import evaluate
from mrc.precision import PrecisionConfig, quantize_int8
from mrc.prediction_files import PredictionFiles, write_predictions
from mrc.reporting import Reporter
from mrc.train_state import model_checkpoints


@dataclass(frozen=True)
class Inference:
    """How a store's windows run through the model and become answers."""

    batch_size: int
    precision: PrecisionConfig
    decode: DecodeConfig


def load_for_inference(folder: Path, *, int8: bool, device: torch.device,
                       say: Callable[[str], None] | None) -> nn.Module:
    """A model folder ready to answer: eval mode, dynamic int8 when asked (CPU), on `device`."""
    model, _ = load_model(folder, report=say)
    model.eval()
    if int8:
        model = quantize_int8(model)
    return model.to(device)


def build_store_on_ranks(examples: list[Example], model_folder: Path, window: WindowConfig, ctx: dist.DistContext,
                         *, labels: bool, cache_dir: str | Path | None, use_cache: bool = True):
    """The window store of `examples`; rank 0 builds it into the cache first, the others then open it."""
    return dist.main_first(ctx, lambda: build_store(examples, model_folder, window, labels=labels,
                                                    cache_dir=cache_dir, use_cache=use_cache))


def store_predictions(model: nn.Module, store, ctx: dist.DistContext, how: Inference, *,
                      logits_path: Path | None = None) -> Iterator[Prediction]:
    """Every example's Prediction in store order on rank 0 (nothing on the other ranks).

    Every rank must exhaust the iterator: each chunk of windows ends in a collective.
    """
    for chunk in iter_predictions(model, store, ctx, batch_size=how.batch_size,
                                  autocast_dtype=how.precision.autocast_dtype, decoding=how.decode,
                                  logits_path=logits_path):
        yield from chunk


def predict_to_files(model: nn.Module, store, ctx: dist.DistContext, how: Inference, files: PredictionFiles, *,
                     overwrite: bool, logits_path: Path | None = None,
                     keep: Callable[[Iterable[Prediction]], Iterable[Prediction]] = lambda ps: ps
                     ) -> dict[str, str] | None:
    """Predict the whole store; rank 0 writes the predictions that `keep` lets through.

    Returns id -> answer on rank 0, None on the other ranks (every rank must call this).
    """
    predictions = store_predictions(model, store, ctx, how, logits_path=logits_path)
    if not ctx.is_main:
        for _ in predictions:   # this rank's share of every chunk; rank 0 writes
            pass
        return None
    return write_predictions(keep(predictions), files, overwrite=overwrite)


def score(examples: list[Example], answers: dict[str, str]) -> dict[str, float]:
    """Official KorQuAD v1.0 EM/F1 (an unanswerable question scores 1 when the answer is "")."""
    return evaluate(examples, answers).summary()


# -- evaluation during and after training


@dataclass
class EvalSet:
    examples: list[Example]
    store: Any


def load_eval_set(path: Path, model_folder: Path, window: WindowConfig, ctx: dist.DistContext, report: Reporter, *,
                  with_unanswerable: bool, max_samples: int | None, cache_dir: str | None) -> EvalSet:
    """The labelled questions of `path` (the first `max_samples`) and their window store."""
    read, stats = read_examples([path])
    report.say(f"{path}: {stats.summary()}")
    examples = [ex for ex in read if ex.answers or (ex.is_impossible and with_unanswerable)]
    if len(examples) < len(read):
        report.say(f"{path}: {len(read) - len(examples):,} questions without answers not evaluated"
                   + ("" if with_unanswerable else " (unanswerable ones count with --version_2_with_negative)"))
    if max_samples is not None:
        examples = examples[:max_samples]
    if not examples:
        raise MRCError(f"{path}: no questions with answers to evaluate on")
    return EvalSet(examples, build_store_on_ranks(examples, model_folder, window, ctx, labels=False,
                                                  cache_dir=cache_dir))


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


@dataclass
class Evaluator:
    """Evaluates models of a training run on its eval set; rank 0 writes files and results."""

    eval_set: EvalSet
    how: Inference
    out: Path                   # output_dir: predictions_<label>.json, nbest_predictions_<label>.json
    ctx: dist.DistContext
    report: Reporter
    results: EvalResults | None  # rank 0 only

    def run(self, model: nn.Module, label: str) -> dict[str, float]:
        """Evaluate, record in eval_results.json, print; returns {eval_<metric>: value} (rank 0)."""
        files = PredictionFiles(self.out / f"predictions_{label}.json", self.out / f"nbest_predictions_{label}.json")
        answers = predict_to_files(model, self.eval_set.store, self.ctx, self.how, files, overwrite=True)
        if answers is None:
            return {}
        scores = score(self.eval_set.examples, answers)
        self.results.add(label, scores)
        self.report.say(f"eval {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
        return {f"eval_{k}": v for k, v in scores.items()}

    def already_evaluated(self) -> set[str]:
        """Labels this run already scored, on every rank (evaluation holds collectives: all ranks must agree).

        Scores read from an earlier run's eval_results.json do not count: its eval set may differ.
        """
        return dist.broadcast_from_main(set(self.results.fresh) if self.results is not None else set(), self.ctx)

    def scores(self, label: str) -> dict[str, Any]:
        return self.results.results.get(label, {}) if self.results is not None else {}

    def all_checkpoints(self, final: tuple[str, nn.Module] | None) -> None:
        """--eval_all_checkpoints: every checkpoint-<step> (and the final model), a table, the best by F1."""
        done = self.already_evaluated()
        evaluated: dict[str, str] = {}
        same_as_final = ""  # the checkpoint whose weights the final model holds (same step)
        for step, folder in model_checkpoints(self.out):
            if final is not None and str(step) == final[0]:
                same_as_final = f" (= {folder.name})"
                continue
            if str(step) not in done:
                model, _ = load_model(folder, report=None)
                self.run(model.to(self.ctx.device), str(step))
            evaluated[str(step)] = str(folder)
        if final is not None:
            if final[0] not in done:
                self.run(final[1], final[0])
            evaluated[final[0]] = f"{self.out}{same_as_final}"
        if self.ctx.is_main:
            self._print_table(evaluated)

    def _print_table(self, evaluated: dict[str, str]) -> None:
        table = Table(title="checkpoints", title_justify="left")
        for name in ("step", "folder", "exact_match", "f1"):
            table.add_column(name, justify="left" if name == "folder" else "right")
        for label, folder in sorted(evaluated.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else math.inf):
            scores = self.scores(label)
            table.add_row(label, folder, f"{scores.get('exact_match', float('nan')):.2f}",
                          f"{scores.get('f1', float('nan')):.2f}")
        self.report.table(table)
        scored = [label for label in evaluated if "f1" in self.scores(label)]
        if scored:
            best = max(scored, key=lambda label: self.scores(label)["f1"])
            self.report.say(f"best by F1: step {best}, {evaluated[best]} (F1 {self.scores(best)['f1']:.2f}, "
                            f"EM {self.scores(best)['exact_match']:.2f})")
