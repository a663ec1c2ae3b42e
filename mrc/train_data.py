"""The training set: `--train_file PATH[:WEIGHT]` files read, their questions chosen, their windows built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrc import dist
from mrc.data_sources import SourceStats, TrainFile, count_windows, read_sources, source_table
from mrc.examples import Example, item_problem
from mrc.errors import MRCError
from mrc.evaluation import build_store_on_ranks
from mrc.store import WindowConfig, WindowStore
from mrc.reporting import Reporter
from mrc.schedule import Sampling, TrainData, epoch_windows


@dataclass
class TrainExamples:
    """The questions training uses, the `--train_file` entry of each, and the per-source table rows."""

    examples: list[Example]
    file_of: np.ndarray           # int32 [E] index into the --train_file list
    sources: list[SourceStats]


def read_train_examples(files: list[TrainFile], report: Reporter, *, with_unanswerable: bool,
                        max_samples: int | None, verbose: bool) -> TrainExamples:
    """Training examples of every file (the first `max_samples`), ids colliding across files namespaced."""
    read = read_sources(files)
    examples: list[Example] = []
    file_of: list[int] = []
    for i, (train_file, stats, source) in enumerate(zip(files, read.stats, read.sources)):
        report.say(f"{train_file.path}: {stats.summary()}")
        if verbose:
            for where in stats.skipped_where:
                report.say(f"  skipped {where}")
        if source.namespaced:
            report.say(f"{train_file.path}: {source.namespaced:,} question ids also used by another --train_file "
                       "file, renamed <file stem>/<id>")
        answerable = [ex for ex in read.examples[i] if item_problem(ex) is None]
        blank = len(read.examples[i]) - len(answerable)
        if blank:
            report.say(f"{train_file.path}: {blank:,} questions with an empty question or context not trained on "
                       f"(predict.py sends such items to errors.jsonl)")
        usable = [ex for ex in answerable if ex.answers or (ex.is_impossible and with_unanswerable)]
        if len(usable) < len(answerable):
            why = "unlabelled" if with_unanswerable else "unanswerable or unlabelled"
            hint = "" if with_unanswerable else " (pass --version_2_with_negative to train them toward [CLS])"
            report.say(f"{train_file.path}: {len(answerable) - len(usable):,} {why} questions not trained "
                       f"on{hint}")
        examples.extend(usable)
        file_of.extend([i] * len(usable))
    if max_samples is not None:
        examples, file_of = examples[:max_samples], file_of[:max_samples]
    if not examples:
        raise MRCError(f"no trainable questions in {', '.join(str(f.path) for f in files)}; "
                       "check the files have answers")
    file_of_array = np.asarray(file_of, dtype=np.int32)
    for f, source in enumerate(read.sources):
        source.used = int((file_of_array == f).sum())
    return TrainExamples(examples, file_of_array, read.sources)


def train_data_of(store: WindowStore, file_by_id: dict[str, int], weights: list[float]) -> TrainData:
    """What epoch sampling needs about each window of `store`: its file (`file_by_id`: example id ->
    --train_file index), that file's weight, whether it holds the answer, its length."""
    example_file = np.asarray([file_by_id[i] for i in store.example_ids], dtype=np.int32)
    windows = store.windows
    return TrainData(store=store, window_file=example_file[np.asarray(windows.example_index)], weights=weights,
                     is_negative=(np.asarray(windows.start_position) == 0) & (np.asarray(windows.end_position) == 0),
                     lengths=np.asarray(store.sequence_lengths()))


def load_train_data(files: list[TrainFile], train: TrainExamples, model_folder: Path, window: WindowConfig,
                    ctx: dist.DistContext, report: Reporter, *, cache_dir: str | None,
                    sampling: Sampling) -> TrainData:
    """The labelled window store of the examples and what epoch sampling needs to know about each window.

    Fills the window columns of `train.sources` (epoch 1 drawn as `sampling` draws it) and prints the table.
    """
    store = build_store_on_ranks(train.examples, model_folder, window, ctx, labels=True, cache_dir=cache_dir)
    data = train_data_of(store, {ex.id: f for ex, f in zip(train.examples, train.file_of)}, [f.weight for f in files])
    report.say(f"training windows: {len(store):,} from {len(train.examples):,} questions "
               f"({int(data.is_negative.sum()):,} without the answer)")
    first_epoch, _ = epoch_windows(data, sampling, 0)
    count_windows(train.sources, data.window_file, data.is_negative, first_epoch)
    report.table(source_table(train.sources, neg_ratio=sampling.neg_ratio))
    return data
