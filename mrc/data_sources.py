"""Several data files read as one training set: `PATH[:WEIGHT]` specs, ids that collide across
files namespaced by file, and the per-source table (questions, skips by reason, windows).

AIHub ids restart in every file, so for training an id found in several files becomes
`<file stem>/<id>` in each of them (counted); prediction and evaluation read files with
`mrc.data.read_examples`, where ids keep their meaning and a collision stays an error.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.table import Table

from mrc.data import read_examples
from mrc.errors import MRCError
from mrc.examples import Example, ReadStats


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


@dataclass
class SourceStats:
    """One data file's row of the per-source table (also saved in training_args.json)."""

    file: str
    weight: float
    formats: str                      # the readers' format names, e.g. "aihub" or "squad"
    questions: int                    # questions in the file
    kept: int                         # read into examples (not skipped)
    repaired: int                     # answer_start moved to where the answer text is
    skipped_by: dict[str, int]        # reason -> questions dropped
    unanswerable: int                 # kept questions with no answer (is_impossible)
    unlabelled: int                   # kept questions without answers at all
    namespaced: int = 0               # ids also found in another file, renamed <file stem>/<id>
    used: int = 0                     # questions trained on (or inspected)
    windows: int = 0                  # windows of the used questions
    windows_without_answer: int = 0   # of those, labelled [CLS]
    epoch_windows: int | None = None  # windows epoch 1 draws from this file (weight, then --neg_ratio)
    epoch_kept_without_answer: int | None = None  # of those, [CLS] windows kept by --neg_ratio

    @classmethod
    def of(cls, train_file: TrainFile, examples: list[Example], stats: ReadStats) -> SourceStats:
        return cls(file=str(train_file.path), weight=train_file.weight,
                   formats=",".join(sorted({ex.source_format for ex in examples})) or "-",
                   questions=stats.questions, kept=stats.kept, repaired=stats.repaired,
                   skipped_by=dict(stats.skipped_by), unanswerable=stats.unanswerable, unlabelled=stats.unlabelled)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SourceRead:
    """The examples of each file (ids namespaced where they collide) and each file's stats."""

    examples: list[list[Example]]
    stats: list[ReadStats]
    sources: list[SourceStats] = field(default_factory=list)


def read_sources(files: list[TrainFile], *, data_format: str = "auto") -> SourceRead:
    """Read each file on its own; an id found in several files becomes `<file stem>/<id>` in each."""
    seen_paths: dict[Path, int] = {}
    for i, f in enumerate(files):
        resolved = f.path.resolve()
        if resolved in seen_paths:
            raise MRCError(f"{f.path}: given twice in --train_file (also entry {seen_paths[resolved] + 1}); give a "
                           "file once, with a weight such as :2, to repeat it")
        seen_paths[resolved] = i
    per_file, stats = [], []
    for f in files:
        examples, read = read_examples([f.path], data_format=data_format)
        per_file.append(examples)
        stats.append(read)
    per_file, namespaced = namespace_colliding_ids(per_file, [f.path for f in files])
    sources = [SourceStats.of(f, ex, st) for f, ex, st in zip(files, per_file, stats)]
    for source, n in zip(sources, namespaced):
        source.namespaced = n
    return SourceRead(per_file, stats, sources)


def namespace_colliding_ids(per_file: list[list[Example]], paths: list[Path]) -> tuple[list[list[Example]], list[int]]:
    """Every id found in more than one file becomes `<label>/<id>` in each; the count renamed per file.

    The label is the file's stem, or `stem@N` (N its position) where several files share a stem.
    """
    files_of: dict[str, set[int]] = {}
    for i, examples in enumerate(per_file):
        for ex in examples:
            files_of.setdefault(ex.id, set()).add(i)
    colliding = {qid for qid, where in files_of.items() if len(where) > 1}
    if not colliding:
        return per_file, [0] * len(per_file)
    stems = [p.stem for p in paths]
    labels = [s if stems.count(s) == 1 else f"{s}@{i + 1}" for i, s in enumerate(stems)]
    renamed, counts = [], []
    for label, examples in zip(labels, per_file):
        out = [replace(ex, id=f"{label}/{ex.id}") if ex.id in colliding else ex for ex in examples]
        renamed.append(out)
        counts.append(sum(ex.id in colliding for ex in examples))
    clashes = [qid for qid, n in Counter(ex.id for examples in renamed for ex in examples).items() if n > 1]
    if clashes:
        clash = clashes[0]
        raise MRCError(f"question id {clash!r} is still not unique after prefixing colliding ids with the file "
                       "name; rename the question ids of one of the files")
    return renamed, counts


def count_windows(sources: list[SourceStats], window_file: np.ndarray, is_negative: np.ndarray | None,
                  epoch_windows: np.ndarray | None) -> None:
    """Fill each source's window counts: all its windows, the [CLS] ones, and epoch 1's draw of them."""
    n = len(sources)
    windows = np.bincount(window_file, minlength=n)
    negative = np.bincount(window_file[is_negative], minlength=n) if is_negative is not None else np.zeros(n, int)
    for f, source in enumerate(sources):
        source.windows, source.windows_without_answer = int(windows[f]), int(negative[f])
    if epoch_windows is None or is_negative is None:
        return
    drawn = np.bincount(window_file[epoch_windows], minlength=n)
    drawn_negative = np.bincount(window_file[epoch_windows[is_negative[epoch_windows]]], minlength=n)
    for f, source in enumerate(sources):
        source.epoch_windows, source.epoch_kept_without_answer = int(drawn[f]), int(drawn_negative[f])


def source_table(sources: list[SourceStats], *, neg_ratio: float | None, used: str = "trained") -> Table:
    """The per-source table train.py and `python -m mrc.features` print: a column per file (and the total)."""
    columns = sources + ([_total(sources)] if len(sources) > 1 else [])
    names = [Path(s.file).name for s in sources]
    table = Table(title="data sources", title_justify="left")
    table.add_column("", style="cyan", no_wrap=True)
    for s, name in zip(columns, names + ["total"]):  # fold, not cut: a log file is 80 columns wide
        table.add_column(name if names.count(name) == 1 else s.file, justify="right", overflow="fold")
    epoch = neg_ratio is not None and all(s.epoch_windows is not None for s in sources)
    reasons = sorted({r for s in sources for r in s.skipped_by},
                     key=lambda r: -sum(s.skipped_by.get(r, 0) for s in sources))
    rows: list[tuple[str, Callable[[SourceStats], Any]]] = [
        ("format", lambda s: s.formats), ("weight", lambda s: f"{s.weight:g}" if s.weight else ""),
        ("questions", lambda s: s.questions), ("kept", lambda s: s.kept), ("repaired", lambda s: s.repaired),
        ("skipped", lambda s: s.skipped),
        *[(f"  {reason}", lambda s, r=reason: s.skipped_by.get(r, 0)) for reason in reasons],
        ("unanswerable", lambda s: s.unanswerable), ("unlabelled", lambda s: s.unlabelled),
        ("ids namespaced", lambda s: s.namespaced), (used, lambda s: s.used), ("windows", lambda s: s.windows),
        ("  without answer", lambda s: s.windows_without_answer)]
    if epoch:
        rows += [("epoch 1 windows", lambda s: s.epoch_windows),
                 ("  without answer", lambda s: s.epoch_kept_without_answer)]
        table.caption = (f"epoch 1: each file's windows drawn by its weight, then --neg_ratio {neg_ratio:g} "
                         "of those without the answer")
        table.caption_justify = "left"
    for label, value in rows:
        table.add_row(label, *[f"{v:,}" if isinstance(v, int) else str(v) for v in map(value, columns)])
    return table


def _total(sources: list[SourceStats]) -> SourceStats:
    skipped: dict[str, int] = {}
    for s in sources:
        for reason, n in s.skipped_by.items():
            skipped[reason] = skipped.get(reason, 0) + n
    epoch = all(s.epoch_windows is not None for s in sources)
    return SourceStats(
        file="total", weight=0, formats="", skipped_by=skipped,
        **{k: sum(getattr(s, k) for s in sources) for k in (
            "questions", "kept", "repaired", "unanswerable", "unlabelled", "namespaced", "used", "windows",
            "windows_without_answer")},
        epoch_windows=sum(s.epoch_windows for s in sources) if epoch else None,
        epoch_kept_without_answer=sum(s.epoch_kept_without_answer for s in sources) if epoch else None)
