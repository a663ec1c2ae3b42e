"""Scoring a predictions file (eval.py) and the error analysis behind `--analyze`.

The seed's analysis, kept as it was: questions with EM 0 and F1 below a threshold (F1 on the
0..1 scale) go to `error_analysis.csv` (utf-8-sig, a leading unnamed index column as pandas
writes it) with the columns context, question, answer (the first ground truth), prediction,
f1 score, context length, question length, answer length; lengths count the tokens of the
model's tokenizer (no [CLS]/[SEP]). Questions without a prediction are not rows (eval reports
them). New: breakdowns of EM/F1 and errors by answer length, context length, question word,
and partial overlap vs complete miss.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import sys
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mrc.config import field, overlay_saved, print_config, section
from mrc.data import FORMATS, read_examples
from mrc.decode import DecodeConfig
from mrc.errors import MRCError
from mrc.hub import resolve_model
from mrc.store import WindowConfig
from mrc.io import atomic_write_text, check_folder_path, check_file_path, read_json_object, refuse_input_as_output
from mrc.metrics import EvalResult, ExampleScore, evaluate, load_predictions
from mrc.tokenizer import load_tokenizer

CSV_COLUMNS = ("context", "question", "answer", "prediction", "f1 score", "context length",
               "question length", "answer length")

# Question word -> the spellings that count as it. 누가 is 누구 + subject marker; 무슨 and 뭐
# ask "what" too. A question takes the word that appears first in it.
QUESTION_WORDS = (("누구", ("누구", "누가")), ("언제", ("언제",)), ("어디", ("어디",)),
                  ("무엇", ("무엇", "무슨", "뭐")), ("몇", ("몇",)), ("어떤", ("어떤",)),
                  ("어느", ("어느",)), ("왜", ("왜",)), ("어떻게", ("어떻게",)))

# Upper bucket edges per length unit: a value v falls in the first bucket whose edge is >= v.
ANSWER_EDGES = {"tokens": (1, 2, 4, 8, 16), "characters": (2, 5, 10, 20)}
CONTEXT_EDGES = {"tokens": (128, 256, 384, 512, 1024), "characters": (250, 500, 1000, 2000)}


@dataclass
class EvalConfig:
    """eval.py: score a predictions file with the official KorQuAD v1.0 metric."""

    dataset: str = field(help="the labelled data: KorQuAD/SQuAD/KLUE JSON or JSON Lines", positional=True)
    predictions: str = field(help="predictions.json: {question id: answer text}", positional=True)
    analyze: bool = field(False, help="write error_analysis.csv and print error breakdowns")
    f1_threshold: float = field(0.85, help="with --analyze: a question with EM 0 and F1 (0..1) below this "
                                           "is an error row")
    model: str | None = field(None, help="with --analyze: model folder or hub id whose tokenizer measures lengths "
                                         "in tokens (without it lengths are in characters); its training_args.json "
                                         "gives the window and decode settings the flags below do not")
    revision: str | None = field(None, help="branch, tag or commit of a hub --model (default main)")
    cache_dir: str | None = field(None, help="where models downloaded from the hub are stored (default "
                                             "$HF_HUB_CACHE, else $HF_HOME/hub)")
    out: str | None = field(None, help="folder for the result JSON and error_analysis.csv when not the "
                                       "predictions' folder")
    data_format: str = field("auto", help="format of DATASET", choices=FORMATS)
    overwrite: bool = field(False, help="replace an existing <predictions>.eval.json and error_analysis.csv")
    window: WindowConfig = section(WindowConfig)
    decode: DecodeConfig = section(DecodeConfig)

    def __post_init__(self):
        for name in ("dataset", "predictions", "model", "out"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise MRCError(f"{name if name in ('dataset', 'predictions') else '--' + name} is empty; give a path")
        if not 0.0 <= self.f1_threshold <= 1.0:
            raise MRCError(f"--f1_threshold {self.f1_threshold}: F1 here is on the 0..1 scale; pass e.g. 0.85")


@dataclass(frozen=True)
class Lengths:
    """Per scored question, in `unit` ("tokens" or "characters")."""

    unit: str
    context: list[int]
    question: list[int]
    answer: list[int]       # of the first ground truth (0 when there is none)


@dataclass(frozen=True)
class BucketRow:
    label: str
    questions: int
    exact_match: float      # percent
    f1: float               # percent
    errors: int             # error-analysis rows in the bucket


@dataclass(frozen=True)
class Breakdown:
    title: str
    rows: list[BucketRow]


def first_answer(score: ExampleScore) -> str:
    answers = score.example.answers
    return answers[0].text if answers else ""


def measure_lengths(scores: list[ExampleScore], model_folder: str | Path | None) -> Lengths:
    """Lengths of context, question and first answer: tokens of the model's tokenizer, else characters."""
    contexts = [s.example.context for s in scores]
    questions = [s.example.question for s in scores]
    answers = [first_answer(s) for s in scores]
    if model_folder is None:
        return Lengths("characters", [len(t) for t in contexts], [len(t) for t in questions], [len(t) for t in answers])
    tokenizer = load_tokenizer(model_folder)

    def count(texts: list[str]) -> list[int]:
        unique = list(dict.fromkeys(texts))     # KorQuAD asks ~6 questions per paragraph
        sizes = {t: len(enc.ids) for t, enc in zip(unique, tokenizer.encode_batch(unique, add_special_tokens=False))}
        return [sizes[t] for t in texts]

    return Lengths("tokens", count(contexts), count(questions), count(answers))


def is_error(score: ExampleScore, f1_threshold: float) -> bool:
    """The seed's rule: a predicted question with EM 0 and F1 below the threshold."""
    return score.prediction is not None and score.exact_match == 0 and score.f1 < f1_threshold


def error_rows(result: EvalResult, lengths: Lengths, f1_threshold: float) -> list[dict]:
    """The seed's error_analysis rows, in dataset order."""
    rows = []
    for i, score in enumerate(result.scores):
        if is_error(score, f1_threshold):
            rows.append(dict(zip(CSV_COLUMNS, (
                score.example.context, score.example.question, first_answer(score), score.prediction,
                score.f1, lengths.context[i], lengths.question[i], lengths.answer[i]))))
    return rows


def write_error_csv(rows: list[dict], path: Path, *, overwrite: bool = True) -> None:
    """error_analysis.csv as the seed's pandas `to_csv(encoding="utf-8-sig")` wrote it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("", *CSV_COLUMNS))
    for index, row in enumerate(rows):
        writer.writerow((index, *(row[c] for c in CSV_COLUMNS)))
    atomic_write_text(path, "\ufeff" + buffer.getvalue(), overwrite=overwrite)


def question_word(question: str) -> str:
    """The question word appearing first in `question`, or "other"."""
    found = [(question.find(s), word) for word, spellings in QUESTION_WORDS for s in spellings if s in question]
    return min(found)[1] if found else "other"


def bucket_labels(edges: tuple[int, ...]) -> list[str]:
    """Labels for values <= edges[0], (edges[0], edges[1]], ..., > edges[-1]."""
    labels, low = [], 1
    for edge in edges:
        labels.append(str(edge) if low == edge else f"{low}-{edge}")
        low = edge + 1
    return labels + [f"{low}+"]


def _bucket_rows(labels: list[str], keys: list[str], scores: list[ExampleScore], f1_threshold: float,
                 keep_empty: bool = False) -> list[BucketRow]:
    rows = []
    for label in labels:
        members = [s for s, k in zip(scores, keys) if k == label]
        if members or keep_empty:
            size = max(len(members), 1)
            rows.append(BucketRow(label, len(members), 100.0 * sum(s.exact_match for s in members) / size,
                                  100.0 * sum(s.f1 for s in members) / size,
                                  sum(is_error(s, f1_threshold) for s in members)))
    return rows


def _length_breakdown(title: str, values: list[int], edges: tuple[int, ...], scores: list[ExampleScore],
                      f1_threshold: float) -> Breakdown:
    labels = bucket_labels(edges)
    keys = ["0" if v == 0 else labels[bisect.bisect_left(edges, v)] for v in values]
    return Breakdown(title, _bucket_rows(["0", *labels], keys, scores, f1_threshold))


def breakdowns(result: EvalResult, lengths: Lengths, f1_threshold: float) -> list[Breakdown]:
    """EM, F1 and error counts by answer length, context length and question word, then the
    errors split into partial overlap (F1 > 0) and complete miss (F1 = 0)."""
    scores = result.scores
    unit = lengths.unit
    words = [question_word(s.example.question) for s in scores]
    errors = [s for s in scores if is_error(s, f1_threshold)]
    kinds = ["partial overlap (F1 > 0)" if s.f1 > 0 else "complete miss (F1 = 0)" for s in errors]
    return [
        _length_breakdown(f"by answer length ({unit})", lengths.answer, ANSWER_EDGES[unit], scores, f1_threshold),
        _length_breakdown(f"by context length ({unit})", lengths.context, CONTEXT_EDGES[unit], scores, f1_threshold),
        Breakdown("by question word", _bucket_rows([w for w, _ in QUESTION_WORDS] + ["other"], words, scores,
                                                  f1_threshold)),
        Breakdown(f"errors (EM 0, F1 < {f1_threshold})",
                  _bucket_rows(["partial overlap (F1 > 0)", "complete miss (F1 = 0)"], kinds, errors, f1_threshold,
                               keep_empty=True)),
    ]


def reach_breakdowns(result: EvalResult, lengths: Lengths, window: WindowConfig, decode: DecodeConfig,
                     f1_threshold: float) -> list[Breakdown]:
    """What the model's settings let it reach (token lengths only): answers the decoder cannot produce
    (longer than max_answer_length) and contexts that need several windows."""
    scores = result.scores
    answer_keys = ["longer than max_answer_length" if n > decode.max_answer_length else "fits" for n in lengths.answer]
    room = [window.max_seq_length - min(q, window.max_query_length) - 3 for q in lengths.question]
    context_keys = ["several windows" if n > r else "one window" for n, r in zip(lengths.context, room)]
    return [
        Breakdown(f"by answer length vs --max_answer_length {decode.max_answer_length} (tokens)",
                  _bucket_rows(["fits", "longer than max_answer_length"], answer_keys, scores, f1_threshold)),
        Breakdown(f"by windows per context at --max_seq_length {window.max_seq_length}",
                  _bucket_rows(["one window", "several windows"], context_keys, scores, f1_threshold)),
    ]


def write_breakdowns_json(cfg: EvalConfig, result: EvalResult, unit: str, tables: list[Breakdown], path: Path) -> None:
    """The breakdowns as JSON beside error_analysis.csv (what `python -m mrc.report` draws)."""
    data = {"dataset": str(cfg.dataset), "predictions": str(cfg.predictions), "exact_match": result.exact_match,
            "f1": result.f1, "f1_threshold": cfg.f1_threshold, "unit": unit,
            "breakdowns": [{"title": b.title, "rows": [asdict(r) for r in b.rows]} for b in tables]}
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n", overwrite=cfg.overwrite)


def print_result(result: EvalResult, console: Console) -> None:
    table = Table(title="KorQuAD v1.0 metric", title_justify="left")
    for name in ("exact match", "F1", "questions", "missing"):
        table.add_column(name, justify="right")
    table.add_row(f"{result.exact_match:.2f}", f"{result.f1:.2f}", f"{result.total:,}", f"{result.missing:,}")
    console.print(table)


def print_breakdown(breakdown: Breakdown, console: Console) -> None:
    table = Table(title=breakdown.title, title_justify="left")
    for name in ("", "questions", "EM", "F1", "errors"):
        table.add_column(name, justify="left" if not name else "right")
    for row in breakdown.rows:
        table.add_row(row.label, f"{row.questions:,}", f"{row.exact_match:.2f}", f"{row.f1:.2f}", f"{row.errors:,}")
    console.print(table)


def warn_about_coverage(result: EvalResult, skipped: int, console: Console) -> None:
    """Missing, unknown and unreadable questions: each changes what the numbers mean."""
    if result.missing:
        more = f", ... ({result.missing - 10:,} more)" if result.missing > 10 else ""
        console.print(f"[yellow]{result.missing:,} of {result.total:,} questions have no prediction and score 0: "
                      f"{', '.join(result.missing_ids[:10])}{more}")
        if result.missing == result.total:
            console.print("[yellow]no prediction id matches a question of the dataset: "
                          "is it the right predictions file?")
    if result.unknown:
        console.print(f"[yellow]{result.unknown:,} predictions are for ids not in the dataset; they are ignored")
    if result.unlabelled:
        console.print(f"[yellow]{result.unlabelled:,} questions have no answers and are not scored")
    if skipped:
        console.print(f"[yellow]{skipped:,} questions could not be read (answer not in context) and are not in the "
                      f"total; the official script would count them")


def evaluate_files(dataset: str | Path, predictions: dict[str, str] | str | Path, data_format: str = "auto"
                   ) -> tuple[EvalResult, int]:
    """(result, questions skipped by the reader) for a dataset file and predictions ({id: answer} or a file)."""
    examples, stats = read_examples(dataset, data_format=data_format)
    answers = predictions if isinstance(predictions, dict) else load_predictions(predictions)
    return evaluate(examples, answers), stats.skipped


def settings_from_model(cfg: EvalConfig, given: frozenset[str]) -> tuple[EvalConfig, dict[str, str] | None]:
    """Window and decode settings the flags do not give, from --model's training_args.json."""
    saved_path = Path(cfg.model) / "training_args.json" if cfg.model else None
    if saved_path is None or not saved_path.is_file():
        return cfg, None
    return overlay_saved(cfg, ("window", "decode"), read_json_object(saved_path), given, "training_args.json")


def run(cfg: EvalConfig, given: frozenset[str] | None = None) -> dict:
    """eval.py: tables on stdout, warnings on stderr, the result JSON written and printed last.

    `given`: the flags the command line set; the other window and decode settings come from
    --model's training_args.json when it has one (None keeps `cfg` as it is).
    """
    if cfg.model:
        cfg = dataclasses.replace(cfg, model=str(resolve_model(cfg.model, cfg.revision, cfg.cache_dir, flag="--model",
                                                               say=Console(stderr=True).print)))
    sources = None
    if given is not None:
        cfg, sources = settings_from_model(cfg, given)
    print_config(cfg, sources=sources)
    console, errors = Console(), Console(stderr=True)
    out_dir = Path(cfg.out) if cfg.out else Path(cfg.predictions).parent
    result_path = out_dir / f"{Path(cfg.predictions).stem}.eval.json"
    csv_path, json_path = out_dir / "error_analysis.csv", out_dir / "error_analysis.json"
    check_outputs(cfg, [result_path] + ([csv_path, json_path] if cfg.analyze else []))
    result, skipped = evaluate_files(cfg.dataset, cfg.predictions, cfg.data_format)
    print_result(result, console)
    warn_about_coverage(result, skipped, errors)
    if cfg.analyze:
        if cfg.model is None:
            errors.print("[yellow]no --model given: lengths are counted in characters, not tokens")
        lengths = measure_lengths(result.scores, cfg.model)
        rows = error_rows(result, lengths, cfg.f1_threshold)
        write_error_csv(rows, csv_path, overwrite=cfg.overwrite)
        reach = reach_breakdowns(result, lengths, cfg.window, cfg.decode, cfg.f1_threshold) if cfg.model else []
        tables = breakdowns(result, lengths, cfg.f1_threshold) + reach
        for breakdown in tables:
            print_breakdown(breakdown, console)
        write_breakdowns_json(cfg, result, lengths.unit, tables, json_path)
        console.print(f"{len(rows):,} error rows written to {csv_path}", soft_wrap=True)
    summary = result.summary()
    atomic_write_text(result_path, json.dumps(summary) + "\n", overwrite=cfg.overwrite)
    console.print(f"result written to {result_path}", soft_wrap=True)
    sys.stdout.flush()
    print(json.dumps(summary))
    return summary


def check_outputs(cfg: EvalConfig, outputs: list[Path]) -> None:
    """Before reading or writing anything: the outputs are no inputs, their folder can be one, and
    they do not exist unless --overwrite."""
    refuse_input_as_output(outputs, [Path(cfg.dataset), Path(cfg.predictions)])
    check_folder_path(outputs[0].parent, "--out")
    for path in outputs:
        check_file_path(path, overwrite=cfg.overwrite)


def evaluate_result(dataset_file: str | Path, prediction_file: str | Path) -> dict:
    """The seed's API: {"exact_match", "f1"} in percent, as the official script returns them."""
    result, _ = evaluate_files(dataset_file, prediction_file)
    return {"exact_match": result.exact_match, "f1": result.f1}


def evaluate_predictions(dataset_file: str | Path, predictions: dict[str, str] | str | Path,
                         data_format: str = "auto") -> dict:
    """`mrc.evaluate`: the official KorQuAD v1.0 EM/F1 of `predictions` ({id: answer text}, or a
    predictions file) on a labelled dataset file, as eval.py prints it: {exact_match, f1, total, missing}."""
    return evaluate_files(dataset_file, predictions, data_format)[0].summary()


def analyze_result(dataset_file: str | Path, prediction_file: str | Path, f1_threshold: float,
                   model_name_or_path: str | Path | None) -> list[dict]:
    """The seed's API: writes error_analysis.csv beside the predictions and returns its rows.

    model_name_or_path is a model folder or hub id (lengths in its tokens), or None for characters.
    """
    if model_name_or_path is not None:
        model_name_or_path = resolve_model(model_name_or_path, flag="model_name_or_path")
    result, _ = evaluate_files(dataset_file, prediction_file)
    lengths = measure_lengths(result.scores, model_name_or_path)
    rows = error_rows(result, lengths, f1_threshold)
    csv_path = Path(prediction_file).parent / "error_analysis.csv"
    refuse_input_as_output([csv_path], [Path(dataset_file), Path(prediction_file)])
    write_error_csv(rows, csv_path)  # the seed's function replaced it on every call
    return rows
