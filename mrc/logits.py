"""Window logits on disk (`.npz`) for ensembling and analysis, readable without pickle.

A file holds every window of one prediction run, in window-store order, trimmed to each window's
own sequence length (no padding is stored), plus what re-decoding needs without the window
store: the window geometry, each position's character span in its paragraph, the paragraph
texts and the example ids. A loaded file (`WindowLogits`) can stand in for the store in
`mrc.decode.decode`, so averaged logits of several models decode to answer text directly.
docs/model.md lists the arrays.

Writing streams chunk by chunk (`WindowLogitsWriter`), so a large input never holds all its
logits in memory; the `.npz` appears under its final name only when complete.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from mrc.config import field, parse_config, print_config, section
from mrc.decode import DecodeConfig, decode
from mrc.errors import MRCError, cli_entry
from mrc.store import ParagraphTexts
from mrc.io import atomic_path, check_folder_path, fs_errors, refuse_input_as_output
from mrc.prediction_files import PredictionFiles, write_predictions

FORMAT_VERSION = 1
# Per-window int32 columns copied from the store's WindowTable.
GEOMETRY_FIELDS = ("example_index", "paragraph_index", "query_length", "context_length",
                   "max_context_start", "max_context_end", "token_start")
# Arrays aligned with the flat logits: one value per sequence position of every window.
POSITION_ARRAYS = ("start", "end", "char_start", "char_end")
REQUIRED_ARRAYS = ("format_version", "offsets", "window_index", *GEOMETRY_FIELDS, *POSITION_ARRAYS,
                   "example_ids", "example_paragraph", "paragraph_text_bytes", "paragraph_text_base")
LOGIT_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
    """The WindowTable columns decoding reads, one row per window of the file (int32 [N])."""

    example_index: np.ndarray
    paragraph_index: np.ndarray
    query_length: np.ndarray
    context_length: np.ndarray
    max_context_start: np.ndarray
    max_context_end: np.ndarray
    token_start: np.ndarray


@dataclasses.dataclass(frozen=True)
class WindowLogits:
    """A loaded logits file. Row r is window r of the file (= store window `window_index[r]`).

    A `mrc.store.DecodableWindows`, like the store itself: `mrc.decode.decode` decodes it directly.
    """

    start: np.ndarray              # float [S] all windows' start logits, concatenated
    end: np.ndarray                # float [S]
    offsets: np.ndarray            # int64 [N+1]: window r is [offsets[r], offsets[r+1])
    window_index: np.ndarray       # int64 [N] window index in the store the run used
    windows: WindowGeometry
    char_start: np.ndarray         # int32 [S] char span of each position's token; -1 outside the context
    char_end: np.ndarray           # int32 [S]
    example_ids: list[str]         # [E]
    example_paragraph: np.ndarray  # int32 [E]
    paragraph_text_bytes: np.ndarray  # uint8: UTF-8 of all paragraphs
    paragraph_text_base: np.ndarray   # int64 [P+1]

    def __len__(self) -> int:
        return len(self.window_index)

    def sequence_lengths(self) -> np.ndarray:
        return np.diff(self.offsets).astype(np.int32)

    def padded(self, fill: float = float("-inf")) -> tuple[np.ndarray, np.ndarray]:
        """float32 [N, T] start and end logits, T the longest window, `fill` past each window's end."""
        lengths = self.sequence_lengths()
        width = int(lengths.max()) if len(lengths) else 0
        inside = np.arange(width)[None, :] < lengths[:, None]  # [N, T]
        start = np.full((len(lengths), width), fill, dtype=np.float32)
        end = np.full((len(lengths), width), fill, dtype=np.float32)
        start[inside] = self.start  # row-major boolean assignment walks windows in order
        end[inside] = self.end
        return start, end

    def paragraph_texts(self, i: int) -> str:
        return self.all_paragraph_texts[i]

    @functools.cached_property
    def all_paragraph_texts(self) -> ParagraphTexts:
        return ParagraphTexts(self.paragraph_text_bytes, self.paragraph_text_base)

    def window_char_spans(self, w, start_pos, end_pos) -> tuple[np.ndarray, np.ndarray]:
        """Sequence positions of rows `w` -> `[char_start, char_end)`; -1 outside the context."""
        w = np.asarray(w, dtype=np.int64)
        start_pos = np.asarray(start_pos, dtype=np.int64)
        end_pos = np.asarray(end_pos, dtype=np.int64)
        length = self.offsets[w + 1] - self.offsets[w]
        ok_start = (start_pos >= 0) & (start_pos < length)
        ok_end = (end_pos >= 0) & (end_pos < length)
        char_start = np.where(ok_start, self.char_start[self.offsets[w] + np.where(ok_start, start_pos, 0)], -1)
        char_end = np.where(ok_end, self.char_end[self.offsets[w] + np.where(ok_end, end_pos, 0)], -1)
        return char_start, char_end


def _reserve(path: Path) -> None:
    """Allocate a sparse memory-mapped file's blocks now: on a full disk that is an OSError here, where
    writing through the map later would kill the process with SIGBUS."""
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a file system that cannot: go on
                raise


class WindowLogitsWriter:
    """Stream the logits of all windows of `store` into `path`, chunk by chunk, in store order.

        with WindowLogitsWriter(path, store) as writer:
            writer.add(lo, start, end)   # windows [lo, lo + len(start)), float [n, T]

    Chunks must cover the store's windows exactly, in order. Logits are trimmed to each window's
    sequence length (positions past it, e.g. -inf padding, are dropped). `dtype` float16 halves
    the file. On an exception nothing is written.
    """

    def __init__(self, path: str | Path, store, *, dtype: str = "float32"):
        if dtype not in LOGIT_DTYPES:
            raise MRCError(f"logits dtype {dtype!r} is not supported; use one of {', '.join(LOGIT_DTYPES)}")
        self.path = Path(path)
        self.store = store
        self.dtype = LOGIT_DTYPES[dtype]
        lengths = np.asarray(store.sequence_lengths(), dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # [N+1]
        self.next_window = 0
        self._tmp: Path | None = None
        self._flat: dict[str, np.ndarray] = {}

    def __enter__(self) -> WindowLogitsWriter:
        total = int(self.offsets[-1])
        dtypes = {"start": self.dtype, "end": self.dtype, "char_start": np.int32, "char_end": np.int32}
        with fs_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".parts", dir=self.path.parent))
            try:
                self._flat = {name: np.lib.format.open_memmap(self._tmp / f"{name}.npy", mode="w+", dtype=dt,
                                                              shape=(total,))
                              for name, dt in dtypes.items()}
                for name in dtypes:
                    _reserve(self._tmp / f"{name}.npy")
            except BaseException:  # __exit__ will not run: the parts folder goes here
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise
        return self

    def add(self, lo: int, start: np.ndarray, end: np.ndarray) -> None:
        """Logits `[n, T]` of windows `[lo, lo + n)`; T at least the longest of those windows."""
        n = len(start)
        if lo != self.next_window:
            raise ValueError(f"logits chunk starts at window {lo}, expected {self.next_window}: "
                             "chunks must arrive in store order")
        rows = np.arange(lo, lo + n)
        lengths = np.diff(self.offsets[lo:lo + n + 1])  # [n]
        if n and start.shape[1] < lengths.max():
            raise ValueError(f"logits of width {start.shape[1]} are narrower than window length {lengths.max()}")
        width = start.shape[1]
        inside = np.arange(width)[None, :] < lengths[:, None]  # [n, T]
        a, b = int(self.offsets[lo]), int(self.offsets[lo + n])
        self._flat["start"][a:b] = np.asarray(start)[inside]
        self._flat["end"][a:b] = np.asarray(end)[inside]
        window_of = np.repeat(rows, lengths)
        position = np.arange(b - a) - np.repeat(self.offsets[lo:lo + n] - a, lengths)
        char_start, char_end = self.store.window_char_spans(window_of, position, position)
        self._flat["char_start"][a:b] = char_start
        self._flat["char_end"][a:b] = char_end
        self.next_window = lo + n

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.next_window != len(self.store):
                    raise ValueError(f"logits cover {self.next_window} of {len(self.store)} windows")
                for array in self._flat.values():
                    array.flush()
                write_npz(self.path, self._store_arrays(), self._tmp)
        finally:
            self._flat = {}
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _store_arrays(self) -> dict[str, np.ndarray]:
        store = self.store
        table = store.windows
        texts = [store.paragraph_texts(i).encode("utf-8") for i in range(store.num_paragraphs)]
        arrays = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
            "offsets": self.offsets,
            "window_index": np.arange(len(store), dtype=np.int64),
            **{name: np.asarray(getattr(table, name), dtype=np.int32) for name in GEOMETRY_FIELDS},
            "example_ids": np.array(store.example_ids, dtype=str),
            "example_paragraph": np.asarray(store.example_paragraph, dtype=np.int32),
            "paragraph_text_bytes": np.frombuffer(b"".join(texts), dtype=np.uint8),
            "paragraph_text_base": np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64),
        }
        return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray], parts: Path | None = None) -> None:
    """Write `arrays` (and the `.npy` files already in `parts`) as one `.npz`, atomically.

    Logit arrays are stored uncompressed (floats barely compress and deflating them is slow);
    everything else is deflated (offsets, char spans and texts shrink several-fold).
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
        for npy in sorted(parts.glob("*.npy")) if parts is not None else []:
            compress = zipfile.ZIP_STORED if npy.stem in ("start", "end") else zipfile.ZIP_DEFLATED
            zf.write(npy, npy.name, compress_type=compress)


def to_arrays(logits: WindowLogits) -> dict[str, np.ndarray]:
    """The `.npz` arrays of a WindowLogits (inverse of `load_window_logits`)."""
    return {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
        "offsets": logits.offsets, "window_index": logits.window_index,
        **{name: getattr(logits.windows, name) for name in GEOMETRY_FIELDS},
        "start": logits.start, "end": logits.end, "char_start": logits.char_start, "char_end": logits.char_end,
        "example_ids": np.array(logits.example_ids, dtype=str), "example_paragraph": logits.example_paragraph,
        "paragraph_text_bytes": logits.paragraph_text_bytes, "paragraph_text_base": logits.paragraph_text_base,
    }


def save_window_logits(path: str | Path, logits: WindowLogits) -> None:
    """Write a WindowLogits (e.g. an ensemble average) as a `.npz` file, atomically."""
    write_npz(Path(path), to_arrays(logits))


def load_window_logits(path: str | Path) -> WindowLogits:
    """Read a logits `.npz` (no pickle: the file cannot run code)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise MRCError(f"{path}: no such logits file; write one with predict.py --save_logits") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise MRCError(f"{path}: not a readable logits .npz ({e}); write it again with predict.py --save_logits") from None
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise MRCError(f"{path}: not a logits file of this program (missing {', '.join(missing)})")
    if int(arrays["format_version"]) != FORMAT_VERSION:
        raise MRCError(f"{path}: logits format {int(arrays['format_version'])} is not {FORMAT_VERSION}; "
                       "write it again with this version's predict.py --save_logits")
    return WindowLogits(
        start=arrays["start"], end=arrays["end"], offsets=arrays["offsets"], window_index=arrays["window_index"],
        windows=WindowGeometry(**{name: arrays[name] for name in GEOMETRY_FIELDS}),
        char_start=arrays["char_start"], char_end=arrays["char_end"], example_ids=arrays["example_ids"].tolist(),
        example_paragraph=arrays["example_paragraph"], paragraph_text_bytes=arrays["paragraph_text_bytes"],
        paragraph_text_base=arrays["paragraph_text_base"])


def average_window_logits(files: Sequence[WindowLogits], names: Sequence[str] | None = None) -> WindowLogits:
    """The mean start/end logits of several runs over the same windows (an ensemble), float32.

    The runs must share windows: same examples, same window geometry (same tokenizer and window
    settings); `names` label the files in the error otherwise.
    """
    if not files:
        raise ValueError("no logits files to average")
    names = list(names) if names is not None else [f"file {i}" for i in range(len(files))]
    first = files[0]
    for other, name in zip(files[1:], names[1:]):
        same = (other.example_ids == first.example_ids and np.array_equal(other.offsets, first.offsets)
                and all(np.array_equal(getattr(other.windows, f), getattr(first.windows, f)) for f in GEOMETRY_FIELDS))
        if not same:
            raise MRCError(f"{name} and {names[0]} hold different windows (other examples, tokenizer or "
                           "--max_seq_length/--doc_stride/--max_query_length); ensemble runs over the same "
                           "input with the same window settings")
    start = np.mean([f.start.astype(np.float32) for f in files], axis=0)
    end = np.mean([f.end.astype(np.float32) for f in files], axis=0)
    return dataclasses.replace(first, start=start, end=end)


# ---------------------------------------------------------------------------------------------
# CLI: python -m mrc.logits --logits a.logits.npz b.logits.npz --output DIR


@dataclasses.dataclass
class EnsembleConfig:
    logits: list[str] = field(help="two or more .logits.npz files from predict.py --save_logits on the same input",
                              default_factory=list)
    output: str = field("ensemble", help="folder for ensemble.logits.npz, predictions.json, nbest_predictions.json")
    decode: DecodeConfig = section(DecodeConfig)
    overwrite: bool = field(False, help="replace existing output files")

    def __post_init__(self) -> None:
        if len(self.logits) < 2:
            raise MRCError(f"--logits needs at least two files to ensemble, got {len(self.logits)}")


def run_ensemble(cfg: EnsembleConfig) -> Path:
    """Average the files' logits, decode them, write the averaged logits and the predictions."""
    check_folder_path(cfg.output, "--output")
    out = Path(cfg.output)
    files = PredictionFiles(out / "predictions.json", out / "nbest_predictions.json")
    targets = [out / "ensemble.logits.npz", *files.paths]
    refuse_input_as_output(targets, [Path(p) for p in cfg.logits])
    existing = [str(p) for p in targets if p.exists()]
    if existing and not cfg.overwrite:
        raise MRCError(f"{', '.join(existing)} already exist; pass --overwrite or choose another --output")
    avg = average_window_logits([load_window_logits(p) for p in cfg.logits], cfg.logits)
    start, end = avg.padded()
    predictions = decode(start, end, avg, np.arange(len(avg)), n_best_size=cfg.decode.n_best_size,
                         max_answer_length=cfg.decode.max_answer_length,
                         null_score_diff_threshold=cfg.decode.null_threshold)
    save_window_logits(targets[0], avg)
    write_predictions(predictions, files, overwrite=True)
    return out


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(EnsembleConfig, argv, prog="python -m mrc.logits",
                       description="Ensemble window logits saved by predict.py --save_logits: "
                                   "average them, decode, write predictions.")
    print_config(cfg, "ensemble")
    out = run_ensemble(cfg)
    print(f"wrote {out / 'predictions.json'}, {out / 'nbest_predictions.json'} and {out / 'ensemble.logits.npz'} "
          f"from {len(cfg.logits)} models", file=sys.stderr)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
