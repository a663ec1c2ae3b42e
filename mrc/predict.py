"""Batch prediction over JSON files, and a one-question debug mode.

`run(cfg)` reads every input first (an unreadable file stops the run before the model loads and
before anything is written), refuses to replace existing outputs without `--overwrite`, then for
each input builds the window store, runs the windows across the ranks of the job and streams
`<name>.predictions.json` and `<name>.nbest.json` out on rank 0 (`mrc.evaluation`), one chunk
of examples at a time, so neither logits nor n-best lists of a huge input are ever all in
memory. Items that cannot be predicted (empty question or context, nothing left after
tokenization, an answer the reader could not place) go to `errors.jsonl`; the rest are predicted.

Window and decode settings not given as flags come from the model folder's training_args.json
(what the model was trained with), else the defaults; the printed config says which.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from mrc import dist
from mrc.checkpoint import TRAINING_ARGS, read_model_config, read_training_args
from mrc.config import field, overlay_saved, print_config, section
from mrc.data import Example, ReadStats, read_examples
from mrc.examples import item_problem
from mrc.decode import NO_ANSWER_SPAN, DecodeConfig, Prediction
from mrc.errors import MRCError
from mrc.evaluation import Inference, build_store_on_ranks, load_for_inference, predict_to_files, store_predictions
from mrc.hub import resolve_model
from mrc.store import TOKENLESS_QUESTION, WindowConfig, questions_without_tokens
from mrc.io import atomic_path, check_folder_path, refuse_input_as_output
from mrc.metrics import EvalResult, evaluate
from mrc.positions import too_long_for_positions
from mrc.precision import PrecisionConfig
from mrc.prediction_files import PredictionFiles, write_predictions
from mrc.reporting import Reporter
from mrc.text import clean_text

DEVICES = ("auto", "cpu", "cuda")
INPUT_SUFFIXES = (".json", ".jsonl", ".ndjson")
ERRORS_FILE = "errors.jsonl"


@dataclass
class PredictConfig:
    """What `predict.py` predicts, with which settings, and where the answers go."""

    model: Path = field(help="model: a folder train.py saved (config.json, weights, tokenizer files) or the hub "
                        "id of a fine-tuned QA model (downloaded into the HF cache on first use)")
    input: list[Path] = field(default_factory=list, help="input files: KorQuAD/SQuAD or KLUE MRC JSON, or JSON "
                              "Lines; answers are optional")
    output: Path | None = field(None, "output folder for <name>.predictions.json, <name>.nbest.json, errors.jsonl")
    question: str | None = field(None, "debug mode: predict this one question (needs --context; no files written)")
    context: str | None = field(None, "debug mode: the passage --question is asked about")
    batch_size: int = field(32, "windows per forward pass (sorted by length, so padding stays small)")
    window: WindowConfig = section(WindowConfig)
    decode: DecodeConfig = section(DecodeConfig)
    precision: PrecisionConfig = section(PrecisionConfig)
    int8: bool = field(False, "CPU only: dynamic int8 quantization of the encoder's Linear layers (faster, "
                       "slightly different answers)")
    device: str = field("auto", "where the model runs: auto (cuda when present), cpu or cuda", choices=DEVICES)
    save_logits: bool = field(False, "also write every window's start/end logits to <name>.logits.npz (ensembling)")
    overwrite: bool = field(False, "replace existing output files")
    eval: bool = field(False, "print EM/F1 (official KorQuAD v1.0 metric) for inputs that carry answers")
    revision: str | None = field(None, "branch, tag or commit of a hub --model (default main)")
    cache_dir: Path | None = field(None, "where models downloaded from the hub are stored (default $HF_HUB_CACHE, "
                                   "else $HF_HOME/hub, else ~/.cache/huggingface/hub)")
    features_cache_dir: Path | None = field(None, "window store cache folder (default: $MRC_CACHE, else "
                                            "./.cache/mrc; shared with train.py)")

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.input = [Path(p) for p in self.input]
        self.output = Path(self.output) if self.output is not None else None
        self.cache_dir = Path(self.cache_dir) if self.cache_dir else None
        self.features_cache_dir = Path(self.features_cache_dir) if self.features_cache_dir is not None else None
        if (self.question is None) != (self.context is None):
            raise MRCError("debug mode needs both --question and --context")
        if self.debug:
            if self.input:
                raise MRCError("give either --input files or --question/--context (debug mode), not both")
            if self.save_logits or self.eval:
                raise MRCError("--save_logits and --eval apply to --input files, not to debug mode; drop them")
        else:
            if not self.input:
                raise MRCError("nothing to predict: pass --input FILE [FILE ...] and --output DIR, or "
                               "--question and --context")
            if self.output is None:
                raise MRCError("--output DIR is needed with --input (the folder receives the prediction files)")
            input_names(self.input)
        if self.batch_size < 1:
            raise MRCError(f"--batch_size must be at least 1, got {self.batch_size}")
        if self.int8 and self.precision.autocast_dtype is not None:
            raise MRCError("--int8 runs the quantized model in float32; drop --fp16/--bf16")
        if self.int8 and self.device == "cuda":
            raise MRCError("--int8 is a CPU mode; on a GPU use --fp16 or --bf16 instead")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise MRCError("--device cuda but no CUDA device is visible; use --device cpu (or auto)")

    @property
    def debug(self) -> bool:
        return self.question is not None

    @property
    def no_cuda(self) -> bool:
        return self.device == "cpu" or self.int8

    def inference(self) -> Inference:
        return Inference(batch_size=self.batch_size, precision=self.precision, decode=self.decode)


def settings_from_model(cfg: PredictConfig, given: frozenset[str]) -> tuple[PredictConfig, dict[str, str]]:
    """Window and decode settings the flags do not give, from the model folder's training_args.json
    (a model train.py extended to longer windows predicts at the length it was trained at)."""
    return overlay_saved(cfg, ("window", "decode"), read_training_args(cfg.model), given, TRAINING_ARGS)


def check_positions(cfg: PredictConfig, sources: dict[str, str] | None) -> None:
    """Windows no longer than the model's position table (config.json), refused before any input is read
    (after the check that outputs are free, which needs no model)."""
    positions = read_model_config(cfg.model).max_position_embeddings
    if cfg.window.max_seq_length > positions:
        source = (sources or {}).get("max_seq_length", "flag")
        said = {"flag": "", "default": " (the default)"}.get(source, f" (from {source})")
        raise too_long_for_positions(f"--max_seq_length {cfg.window.max_seq_length}{said}", positions, cfg.model,
                                     f"predict with --max_seq_length {positions} or less, or fine-tune a longer model "
                                     f"with train.py --extend_positions")


# ---------------------------------------------------------------------------------------------
# Outputs


def input_name(path: Path) -> str:
    """`dev.json` -> `dev`: the prefix of the input's output files."""
    return path.stem if path.suffix.lower() in INPUT_SUFFIXES else path.name


def input_names(paths: list[Path]) -> list[str]:
    """Output prefixes of the inputs; two inputs may not write the same files."""
    names = [input_name(p) for p in paths]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise MRCError(f"--input {paths[names.index(name)]} and {paths[i]} would both write {name}.*.json; "
                           f"rename one of them")
    return names


@dataclass(frozen=True)
class InputPlan:
    """One input file and the files it produces."""

    path: Path
    files: PredictionFiles
    logits: Path | None


def plan_outputs(cfg: PredictConfig) -> list[InputPlan]:
    return [InputPlan(path=p, files=PredictionFiles(cfg.output / f"{name}.predictions.json",
                                                    cfg.output / f"{name}.nbest.json"),
                      logits=cfg.output / f"{name}.logits.npz" if cfg.save_logits else None)
            for p, name in zip(cfg.input, input_names(cfg.input))]


def check_outputs_free(plans: list[InputPlan], errors_path: Path, overwrite: bool) -> None:
    """Refuse before any work: an output that is an input (always), an output folder that cannot be one,
    an existing output without --overwrite, an existing output that is a folder."""
    paths = [errors_path] + [p for plan in plans for p in (*plan.files.paths, plan.logits) if p]
    refuse_input_as_output(paths, [plan.path for plan in plans])
    check_folder_path(errors_path.parent, "--output")
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise MRCError(f"output paths are folders, not files: {', '.join(folders)}; move them or choose another "
                       f"--output")
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise MRCError(f"output files already exist: {', '.join(existing)}; pass --overwrite to replace them "
                       f"or choose another --output")


# ---------------------------------------------------------------------------------------------
# Items that cannot be predicted


@dataclass(frozen=True)
class ItemError:
    """One line of errors.jsonl."""

    id: str | None          # None when the reader dropped the item before it had an Example
    file: str
    reason: str

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "file": self.file, "reason": self.reason}, ensure_ascii=False)


def split_predictable(examples: list[Example], path: Path) -> tuple[list[Example], list[ItemError]]:
    good, bad = [], []
    for ex in examples:
        problem = item_problem(ex)
        if problem is None:
            good.append(ex)
        else:
            bad.append(ItemError(ex.id, str(path), problem))
    return good, bad


def reader_drops(stats: ReadStats, path: Path) -> list[ItemError]:
    """Questions the reader skipped (answer text not in the context): counted as errors, not lost silently."""
    return [ItemError(None, str(path), where) for where in stats.skipped_where]


def tokenless_questions(store, path: Path) -> list[ItemError]:
    """Questions with no tokens left after tokenization (only characters the tokenizer drops)."""
    return [ItemError(store.example_ids[e], str(path), TOKENLESS_QUESTION) for e in questions_without_tokens(store)]


def answerable(predictions: Iterable[Prediction], path: Path, skip: set[str],
               errors: list[ItemError]) -> Iterator[Prediction]:
    """The predictions worth writing: not already known errors (`skip`), and with an answer span."""
    for p in predictions:
        if p.example_id in skip:
            continue
        if not p.nbest:
            errors.append(ItemError(p.example_id, str(path), NO_ANSWER_SPAN))
            continue
        yield p


def write_errors(path: Path, errors: list[ItemError], overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("".join(e.to_json() + "\n" for e in errors), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Model




# ---------------------------------------------------------------------------------------------
# Batch mode


@dataclass
class FileResult:
    path: Path
    read: int
    predicted: int
    errors: list[ItemError]
    scores: EvalResult | None = None      # with --eval, when the file carries answers


def predict_file(plan: InputPlan, examples: list[Example], stats: ReadStats, model: nn.Module,
                 cfg: PredictConfig, ctx: dist.DistContext, report: Reporter) -> FileResult:
    """Predict one input; rank 0 streams its output files (every rank must call this)."""
    predictable, errors = split_predictable(examples, plan.path)
    errors = reader_drops(stats, plan.path) + errors
    answers: dict[str, str] | None = {}
    if predictable:
        store = build_store_on_ranks(predictable, cfg.model, cfg.window, ctx, labels=False,
                                     cache_dir=cfg.features_cache_dir)
        unasked = tokenless_questions(store, plan.path)
        errors += unasked
        skip = {e.id for e in unasked}
        answers = predict_to_files(model, store, ctx, cfg.inference(), plan.files, overwrite=cfg.overwrite,
                                   logits_path=plan.logits,
                                   keep=lambda predictions: answerable(predictions, plan.path, skip, errors))
    elif ctx.is_main:  # nothing predictable: the input still gets its (empty) files
        write_predictions((), plan.files, overwrite=cfg.overwrite)
    result = FileResult(plan.path, read=stats.questions, predicted=len(answers or {}), errors=errors)
    if cfg.eval and ctx.is_main:
        result.scores = score_answers(examples, answers, plan.path, report)
    return result


def score_answers(examples: list[Example], answers: dict[str, str], path: Path, report: Reporter) -> EvalResult | None:
    """Official KorQuAD v1.0 EM/F1 (`mrc.metrics.EvalResult`) over the file's labelled questions.

    Items in errors.jsonl have no answer and score 0, as in the official script. None when the
    file carries no answers.
    """
    if not any(ex.is_labelled for ex in examples):
        report.say(f"[yellow]--eval: {path} carries no answers; nothing to score[/]")
        return None
    return evaluate(examples, answers)


def print_counts(results: list[FileResult], report: Reporter) -> None:
    table = Table(title="predictions", title_justify="left")
    for name in ("file", "read", "predicted", "errors"):
        table.add_column(name, justify="left" if name == "file" else "right")
    with_scores = any(r.scores for r in results)
    if with_scores:
        table.add_column("EM", justify="right")
        table.add_column("F1", justify="right")
    for r in results:
        row = [str(r.path), f"{r.read:,}", f"{r.predicted:,}", f"{len(r.errors):,}"]
        if with_scores:
            row += [f"{r.scores.exact_match:.2f}", f"{r.scores.f1:.2f}"] if r.scores else ["-", "-"]
        table.add_row(*row)
    report.table(table)
    read = sum(r.read for r in results)
    predicted = sum(r.predicted for r in results)
    errors = sum(len(r.errors) for r in results)
    report.say(f"read {read:,}, predicted {predicted:,}, errors {errors:,}")


def read_inputs(paths: list[Path], report: Reporter) -> list[tuple[list[Example], ReadStats]]:
    """Every input read and checked, its read summary printed; ids unique across all of them."""
    inputs = []
    first_file: dict[str, Path] = {}
    for path in paths:
        examples, stats = read_examples([path])
        for ex in examples:
            if first_file.setdefault(ex.id, path) != path:
                raise MRCError(f"{path}: id {ex.id!r} is also in {first_file[ex.id]}; question ids must be unique "
                               f"across all input files (predictions of both would share one key)")
        report.say(f"{path}: {stats.summary()}")
        inputs.append((examples, stats))
    return inputs


def run_files(cfg: PredictConfig, ctx: dist.DistContext, report: Reporter,
              sources: dict[str, str] | None = None) -> list[FileResult]:
    plans = plan_outputs(cfg)
    errors_path = cfg.output / ERRORS_FILE
    check_outputs_free(plans, errors_path, cfg.overwrite)
    check_positions(cfg, sources)
    inputs = read_inputs(cfg.input, report)  # before any model work and before any output
    model = load_for_inference(cfg.model, int8=cfg.int8, device=ctx.device, say=report.say if ctx.is_main else None)
    results = [predict_file(plan, examples, stats, model, cfg, ctx, report)
               for plan, (examples, stats) in zip(plans, inputs)]
    if ctx.is_main:
        all_errors = [e for r in results for e in r.errors]
        write_errors(errors_path, all_errors, cfg.overwrite)
        print_counts(results, report)
        if all_errors:
            report.say(f"unpredicted items and why: {errors_path}")
    return results


# ---------------------------------------------------------------------------------------------
# Debug mode


def run_debug(cfg: PredictConfig, ctx: dist.DistContext, report: Reporter,
              sources: dict[str, str] | None = None) -> Prediction | None:
    """One question: print the answer, its score and the n-best; returns the Prediction (rank 0)."""
    example = Example(id="question", question=cfg.question, context=cfg.context, answers=())
    problem = item_problem(example)
    if problem is not None:
        raise MRCError(f"cannot predict: {problem}; give a non-empty --question and --context")
    check_positions(cfg, sources)
    model = load_for_inference(cfg.model, int8=cfg.int8, device=ctx.device, say=report.say if ctx.is_main else None)
    store = build_store_on_ranks([example], cfg.model, cfg.window, ctx, labels=False, cache_dir=cfg.features_cache_dir,
                                 use_cache=False)
    if questions_without_tokens(store).size:  # the one question has no tokens
        raise MRCError("cannot predict: no question tokens left after tokenization; --question holds only "
                       "characters the tokenizer drops")
    predictions = list(store_predictions(model, store, ctx, cfg.inference()))
    if not ctx.is_main:
        return None
    if not predictions[0].nbest:
        raise MRCError("cannot predict: no context tokens left after tokenization; --context holds only "
                       "characters the tokenizer drops")
    print_debug(predictions[0])
    return predictions[0]


def print_debug(prediction: Prediction) -> None:
    out = Console()
    out.print(f"[bold]answer:[/] {prediction.text or '(no answer)'}")
    out.print(f"[bold]score:[/] {prediction.score:.4f}  (start logit + end logit)")
    table = Table(title="n-best", title_justify="left")
    for name in ("#", "text", "probability", "start_logit", "end_logit", "chars"):
        table.add_column(name, justify="left" if name == "text" else "right")
    for rank, entry in enumerate(prediction.nbest, start=1):
        table.add_row(str(rank), entry["text"], f"{entry['probability']:.4f}", f"{entry['start_logit']:.3f}",
                      f"{entry['end_logit']:.3f}", f"{entry['char_start']}-{entry['char_end']}")
    out.print(table)


@dataclass
class PredictRun:
    """What `run` did: one FileResult per input (batch mode), or the one answer (debug mode, rank 0)."""

    files: list[FileResult]
    answer: Prediction | None = None


def run(cfg: PredictConfig, given: frozenset[str] | None = None) -> PredictRun:
    """Batch mode or debug mode, as `cfg` says.

    `given`: the flags the command line set; every other window and decode setting is taken from
    the model folder's training_args.json when it has one. None (a config built in Python) keeps
    every setting of `cfg` as it is.
    """
    replaced = 0
    if cfg.debug:  # bytes that are not UTF-8 on the command line arrive as surrogate escapes
        (question, in_question), (context, in_context) = clean_text(cfg.question), clean_text(cfg.context)
        cfg, replaced = dataclasses.replace(cfg, question=question, context=context), in_question + in_context
    ctx = dist.init_distributed(no_cuda=cfg.no_cuda)
    report = Reporter(ctx)
    try:
        # One folder for the model and the tokenizer alike; a hub id is downloaded once (rank 0).
        cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model, cfg.revision, cfg.cache_dir, ctx, flag="--model",
                                                           say=report.say))
        sources = None
        if given is not None:
            cfg, sources = settings_from_model(cfg, given)
        if ctx.is_main:
            print_config(cfg, title="predict", sources=sources)
        report.say(f"device {ctx.device}, {ctx.world_size} process(es)")
        if replaced:
            report.say(f"[yellow]{replaced} characters of --question/--context are not valid UTF-8; each is "
                       f"read as U+FFFD[/]")
        if cfg.debug:
            return PredictRun([], run_debug(cfg, ctx, report, sources))
        return PredictRun(run_files(cfg, ctx, report, sources))
    finally:
        dist.destroy(ctx)
