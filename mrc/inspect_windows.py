"""`python -m mrc.features DATA[:WEIGHT]... --model FOLDER`: build (or reuse) the window store and show what it holds.

Prints the per-source table train.py prints (questions, skips by reason, windows, epoch 1's draw
at `--neg_ratio`), the counts of questions (and how many fit one window), windows, tokens, the
padding saved and the store's size against padded int64 tensors; `--dump FILE.jsonl` writes every
window's ids (an existing FILE only with `--overwrite`, an input never). As in training, ids that
collide across files become `<file stem>/<id>`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mrc.batching import collate
from mrc.config import add_dataclass_args, field, from_args
from mrc.data import FORMATS
from mrc.data_sources import (SourceRead, SourceStats, TrainFile, count_windows, parse_train_file, read_sources,
                              source_table)
from mrc.errors import MRCError, cli_entry
from mrc.features import CACHE_ENV, build_store
from mrc.io import atomic_path, check_file_path, refuse_input_as_output
from mrc.schedule import Sampling, epoch_windows
from mrc.store import WindowConfig, WindowStore
from mrc.train_data import train_data_of


@dataclass
class InspectConfig:
    model: str = field(help="model folder with vocab.txt + tokenizer_config.json (or tokenizer.json)")
    dump: str | None = field(None, help="write one JSON line per window to this file")
    overwrite: bool = field(False, help="with --dump: replace the file when it exists")
    features_cache_dir: str | None = field(None, help=f"window store cache folder (default: ${CACHE_ENV} or "
                                           "./.cache/mrc)")
    no_cache: bool = field(False, help="build in memory only; neither read nor write the cache")
    data_format: str = field("auto", help="input format; auto detects it per file", choices=FORMATS)
    neg_ratio: float = field(1.0, "as train.py's: the fraction of windows without the answer epoch 1 keeps")
    seed: int = field(42, "as train.py's: the seed of epoch 1's draw (file weights, --neg_ratio)")

    def __post_init__(self):
        if self.dump is not None:
            check_file_path(self.dump, "--dump", overwrite=self.overwrite)
        if not Path(self.model).is_dir():
            raise MRCError(f"--model {self.model}: folder not found; pass the model folder holding vocab.txt")
        if not 0.0 <= self.neg_ratio <= 1.0:
            raise MRCError(f"--neg_ratio must be in [0, 1] (1 keeps every window), got {self.neg_ratio}")


def inspect_counts(store: WindowStore) -> dict[str, int]:
    """Questions (and how many of them sit in one window, their whole paragraph read at once), windows,
    windows without the answer, tokens and padding saved versus max_seq_length."""
    lengths = store.sequence_lengths().astype(np.int64)
    padded = len(store) * store.config.max_seq_length
    per_question = np.bincount(np.asarray(store.windows.example_index), minlength=store.num_examples)  # [E]
    counts = {"questions": store.num_examples, "questions_in_one_window": int((per_question == 1).sum()),
              "paragraphs": store.num_paragraphs, "windows": len(store),
              "tokens": int(lengths.sum()), "padding_to_max_seq_length": int(padded - lengths.sum())}
    if store.has_labels:
        counts["windows_without_answer"] = int((np.asarray(store.windows.start_position) == 0).sum())
    counts["store_bytes"] = store.nbytes()
    counts["padded_int64_bytes"] = padded * 8 * 3  # input_ids, token_type_ids, attention_mask
    return counts


def dump_windows(store: WindowStore, path: Path, chunk: int = 512, *, overwrite: bool = False) -> None:
    """One JSON object per window, in window order; labels only when the store has them."""
    lengths = store.sequence_lengths()
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for lo in range(0, len(store), chunk):
            idx = np.arange(lo, min(lo + chunk, len(store)))
            batch = collate(store, idx, with_labels=store.has_labels)
            ids, types = batch["input_ids"].numpy(), batch["token_type_ids"].numpy()
            for row, w in enumerate(idx):
                n = int(lengths[w])
                rec = {"window_index": int(w), "example_id": store.example_ids[store.windows.example_index[w]],
                       "input_ids": ids[row, :n].tolist(), "token_type_ids": types[row, :n].tolist()}
                if store.has_labels:
                    rec["start_position"] = int(store.windows.start_position[w])
                    rec["end_position"] = int(store.windows.end_position[w])
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def source_rows(files: list[TrainFile], read: SourceRead, store: WindowStore, cfg: InspectConfig) -> list[SourceStats]:
    """The per-source table's rows: read counts, windows, and epoch 1 as train.py would draw it."""
    for f, source in enumerate(read.sources):
        source.used = len(read.examples[f])
    data = train_data_of(store, {ex.id: f for f, examples in enumerate(read.examples) for ex in examples},
                         [f.weight for f in files])
    if not store.has_labels:
        count_windows(read.sources, data.window_file, None, None)
        return read.sources
    first_epoch, _ = epoch_windows(data, Sampling(seed=cfg.seed, neg_ratio=cfg.neg_ratio, global_batch=1,
                                                  world_size=1, group_by_length=False), 0)
    count_windows(read.sources, data.window_file, data.is_negative, first_epoch)
    return read.sources


def _print_counts(store: WindowStore, counts: dict[str, int]) -> None:
    console = Console()
    table = Table(title="windows", title_justify="left")
    table.add_column("", style="cyan")
    table.add_column("count", justify="right")
    table.add_column("")
    padded = counts["tokens"] + counts["padding_to_max_seq_length"]
    notes = {
        "questions_in_one_window": f"{counts['questions_in_one_window'] / max(counts['questions'], 1):.1%} of "
                                   f"questions: the whole paragraph fits one --max_seq_length window",
        "padding_to_max_seq_length": f"saved: {counts['padding_to_max_seq_length'] / max(padded, 1):.1%} of "
                                     f"{padded:,} positions padded to --max_seq_length",
        "windows_without_answer": f"{counts.get('windows_without_answer', 0) / max(counts['windows'], 1):.1%} of windows",
        "store_bytes": f"1/{counts['padded_int64_bytes'] / max(counts['store_bytes'], 1):.0f} of the padded int64 tensors",
    }
    for name, value in counts.items():
        table.add_row(name.replace("_", " "), f"{value:,}", notes.get(name, ""))
    console.print(table)
    console.print(f"store: {store.folder or 'in memory (--no_cache)'}")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mrc.features", description=
                                     "Build (or reuse) the window store of data files and print what it holds.")
    parser.add_argument("data", nargs="+", help="KorQuAD/SQuAD/KLUE/AIHub JSON or JSON Lines files, each "
                        "optionally PATH:WEIGHT as in train.py's --train_file")
    add_dataclass_args(parser, InspectConfig)
    add_dataclass_args(parser.add_argument_group("windows"), WindowConfig)
    args = parser.parse_args(argv)
    cfg, wcfg = from_args(InspectConfig, args), from_args(WindowConfig, args)
    files = [parse_train_file(spec, None) for spec in args.data]
    if cfg.dump is not None:
        refuse_input_as_output([Path(cfg.dump)], [f.path for f in files])
    read = read_sources(files, data_format=cfg.data_format)
    examples = [ex for per_file in read.examples for ex in per_file]
    for train_file, stats in zip(files, read.stats):
        print(f"{train_file.path}: {stats.summary()}")
    # Built from the Examples (not the paths) so the cache key is the one train.py and predict.py use.
    store = build_store(examples, cfg.model, wcfg, labels=any(ex.is_labelled for ex in examples),
                        cache_dir=cfg.features_cache_dir, use_cache=not cfg.no_cache)
    sources = source_rows(files, read, store, cfg)
    Console().print(source_table(sources, neg_ratio=cfg.neg_ratio if store.has_labels else None, used="used"))
    _print_counts(store, inspect_counts(store))
    if cfg.dump:
        dump_windows(store, Path(cfg.dump), overwrite=cfg.overwrite)
        print(f"wrote {len(store):,} windows to {cfg.dump}")
