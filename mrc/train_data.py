"""The training set: `--train_file PATH[:WEIGHT]` files read, their questions chosen, their windows built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrc import dist
from mrc.data import Example, item_problem, read_examples
from mrc.errors import MRCError
from mrc.evaluation import build_store_on_ranks
from mrc.store import WindowConfig
from mrc.reporting import Reporter
from mrc.schedule import TrainData


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


def read_train_examples(files: list[TrainFile], report: Reporter, *, with_unanswerable: bool,
                        max_samples: int | None, verbose: bool) -> tuple[list[Example], np.ndarray]:
    """Training examples of every file (the first `max_samples`) and the file index of each."""
    examples: list[Example] = []
    file_of: list[int] = []
    first_file: dict[str, int] = {}
    for i, train_file in enumerate(files):
        read, stats = read_examples([train_file.path])
        for ex in read:
            if first_file.setdefault(ex.id, i) != i:
                raise MRCError(f"{train_file.path}: question id {ex.id!r} is also in {files[first_file[ex.id]].path}; "
                               "ids must be unique across --train_file files (give a file once, with a weight "
                               "such as :2, to repeat it)")
        report.say(f"{train_file.path}: {stats.summary()}")
        if verbose:
            for where in stats.skipped_where:
                report.say(f"  skipped {where}")
        blank = sum(item_problem(ex) is not None for ex in read)
        if blank:
            report.say(f"{train_file.path}: {blank:,} questions with an empty question or context not trained on "
                       f"(predict.py sends such items to errors.jsonl)")
        read = [ex for ex in read if item_problem(ex) is None]
        usable = [ex for ex in read if ex.answers or (ex.is_impossible and with_unanswerable)]
        if len(usable) < len(read):
            why = "unlabelled" if with_unanswerable else "unanswerable or unlabelled"
            hint = "" if with_unanswerable else " (pass --version_2_with_negative to train them toward [CLS])"
            report.say(f"{train_file.path}: {len(read) - len(usable):,} {why} questions not trained on{hint}")
        examples.extend(usable)
        file_of.extend([i] * len(usable))
    if max_samples is not None:
        examples, file_of = examples[:max_samples], file_of[:max_samples]
    if not examples:
        raise MRCError(f"no trainable questions in {', '.join(str(f.path) for f in files)}; "
                       "check the files have answers")
    return examples, np.asarray(file_of, dtype=np.int32)


def load_train_data(files: list[TrainFile], examples: list[Example], file_of: np.ndarray, model_folder: Path,
                    window: WindowConfig, ctx: dist.DistContext, report: Reporter, *,
                    cache_dir: str | None) -> TrainData:
    """The labelled window store of `examples` and what epoch sampling needs to know about each window."""
    store = build_store_on_ranks(examples, model_folder, window, ctx, labels=True, cache_dir=cache_dir)
    file_by_id = {ex.id: f for ex, f in zip(examples, file_of)}
    example_file = np.asarray([file_by_id[i] for i in store.example_ids], dtype=np.int32)
    windows = store.windows
    data = TrainData(store=store, window_file=example_file[np.asarray(windows.example_index)],
                     weights=[f.weight for f in files],
                     is_negative=(np.asarray(windows.start_position) == 0) & (np.asarray(windows.end_position) == 0),
                     lengths=np.asarray(store.sequence_lengths()))
    report.say(f"training windows: {len(store):,} from {len(examples):,} questions "
               f"({int(data.is_negative.sum()):,} without the answer)")
    return data
