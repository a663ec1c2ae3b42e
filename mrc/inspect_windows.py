"""`python -m mrc.features DATA... --model FOLDER`: build (or reuse) the window store and show what it holds.

Prints the read summary and the counts of questions (and how many fit one window), windows,
tokens, the padding saved and the store's size against padded int64 tensors; `--dump FILE.jsonl`
writes every window's ids (an existing FILE only with `--overwrite`, an input never).
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
from mrc.data import FORMATS, read_examples
from mrc.errors import MRCError, cli_entry
from mrc.features import CACHE_ENV, build_store
from mrc.io import atomic_path, check_file_path, refuse_input_as_output
from mrc.store import WindowConfig, WindowStore


@dataclass
class InspectConfig:
    model: str = field(help="model folder with vocab.txt + tokenizer_config.json (or tokenizer.json)")
    dump: str | None = field(None, help="write one JSON line per window to this file")
    overwrite: bool = field(False, help="with --dump: replace the file when it exists")
    features_cache_dir: str | None = field(None, help=f"window store cache folder (default: ${CACHE_ENV} or "
                                           "./.cache/mrc)")
    no_cache: bool = field(False, help="build in memory only; neither read nor write the cache")
    data_format: str = field("auto", help="input format; auto detects it per file", choices=FORMATS)

    def __post_init__(self):
        if self.dump is not None:
            check_file_path(self.dump, "--dump", overwrite=self.overwrite)
        if not Path(self.model).is_dir():
            raise MRCError(f"--model {self.model}: folder not found; pass the model folder holding vocab.txt")


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


def _print_counts(store: WindowStore, counts: dict[str, int]) -> None:
    console = Console()
    if store.read_stats:
        console.print(store.read_stats.summary())
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
    parser.add_argument("data", nargs="+", help="KorQuAD/SQuAD/KLUE JSON or JSON Lines files")
    add_dataclass_args(parser, InspectConfig)
    add_dataclass_args(parser.add_argument_group("windows"), WindowConfig)
    args = parser.parse_args(argv)
    cfg, wcfg = from_args(InspectConfig, args), from_args(WindowConfig, args)
    if cfg.dump is not None:
        refuse_input_as_output([Path(cfg.dump)], [Path(p) for p in args.data])
    examples, stats = read_examples(args.data, data_format=cfg.data_format)
    # Built from the Examples (not the paths) so the cache key is the one train.py and predict.py use.
    store = build_store(examples, cfg.model, wcfg, labels=any(ex.is_labelled for ex in examples),
                        cache_dir=cfg.features_cache_dir, use_cache=not cfg.no_cache)
    store.read_stats = stats
    _print_counts(store, inspect_counts(store))
    if cfg.dump:
        dump_windows(store, Path(cfg.dump), overwrite=cfg.overwrite)
        print(f"wrote {len(store):,} windows to {cfg.dump}")
