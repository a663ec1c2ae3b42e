"""The window store: what a set of windows ("features") holds, and how it is read back.

Window `w` of an example is `[CLS] q_0..q_{Q-1} [SEP] c_0..c_{L-1} [SEP]`: the question truncated
to `max_query_length` tokens, then `L <= max_seq_length - Q - 3` paragraph tokens starting at
`token_start[w]`. The store keeps only unpadded token ids (uint16 when the vocab fits), their char
offsets, the question ids and a small window table; `mrc.batching.collate` assembles padded
batches from it, `mrc.decode` reads answers out of it. `mrc.features` builds stores; a store
folder is memory-mapped by `WindowStore.open`, which first checks every array file against the
byte size and SHA-256 that `meta.json` records (`DamagedStore` when one differs).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mrc.config import field
from mrc.data import ReadStats
from mrc.errors import MRCError
from mrc.tokenizer import SpecialTokens

# Bump when the store layout or the meaning of a stored value changes (old caches stop matching).
STORE_FORMAT = 2  # 2: meta.json records each array file's size and SHA-256
WINDOW_FIELDS = ("example_index", "paragraph_index", "token_start", "context_length", "query_length",
                 "max_context_start", "max_context_end", "start_position", "end_position")
SPECIAL_PER_WINDOW = 3  # [CLS], [SEP] after the question, [SEP] after the context
TOKENLESS_QUESTION = "no question tokens left after tokenization"


class DamagedStore(MRCError):
    """A finished store folder whose files are no longer what was written (truncated, edited, lost)."""


def file_digest(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, as meta.json records each array file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def read_store_meta(folder: Path, *, verify: bool = True) -> dict[str, Any]:
    """meta.json of a finished store, its array files checked against the recorded sizes and checksums
    (`verify=False`: sizes only, for a store this process has just written and hashed)."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta["files"]
        if meta.get("store_format") != STORE_FORMAT:
            raise DamagedStore(f"{folder}: store format {meta.get('store_format')} is not {STORE_FORMAT}")
        arrays = list(meta["arrays"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedStore(f"{folder}: meta.json is unreadable ({type(e).__name__})") from None
    for name in arrays:
        path = folder / f"{name}.npy"
        want = files.get(name) if isinstance(files, dict) else None
        if not path.is_file() or want is None:
            raise DamagedStore(f"{folder}: {path.name} is missing")
        size = path.stat().st_size
        if size != want.get("bytes"):
            raise DamagedStore(f"{folder}: {path.name} has {size:,} bytes, {want.get('bytes')} were written")
        if verify and file_digest(path)["sha256"] != want.get("sha256"):
            raise DamagedStore(f"{folder}: {path.name} does not match the checksum written with it")
    return meta


@dataclass(frozen=True)
class WindowConfig:
    max_seq_length: int = field(512, help="tokens per window including [CLS] and two [SEP] (seed: 512)")
    doc_stride: int = field(128, help="paragraph tokens between the starts of consecutive windows (a step, as in run_squad.py)")
    max_query_length: int = field(64, help="question tokens kept; longer questions are cut at the end")

    def __post_init__(self):
        if self.max_query_length < 1:
            raise MRCError(f"--max_query_length must be at least 1, got {self.max_query_length}")
        room = self.max_seq_length - self.max_query_length - SPECIAL_PER_WINDOW
        if room < 1:
            raise MRCError(f"--max_seq_length {self.max_seq_length} leaves no room for context after a "
                           f"{self.max_query_length}-token question and 3 special tokens; raise --max_seq_length "
                           f"or lower --max_query_length")
        if not 1 <= self.doc_stride <= room:
            raise MRCError(f"--doc_stride must be between 1 and {room} (max_seq_length - max_query_length - 3) "
                           f"so that windows leave no paragraph token out, got {self.doc_stride}")


@dataclass
class WindowTable:
    """One row per window; the windows of an example are consecutive and in paragraph order."""

    example_index: np.ndarray  # int32 [N] index into store.example_ids
    paragraph_index: np.ndarray  # int32 [N]
    token_start: np.ndarray  # int32 [N] paragraph token index of context token 0
    context_length: np.ndarray  # int32 [N] L
    query_length: np.ndarray  # int32 [N] Q
    max_context_start: np.ndarray  # int32 [N] context-relative [lo, hi): tokens whose max-context window is this one
    max_context_end: np.ndarray  # int32 [N]
    start_position: np.ndarray  # int32 [N] sequence position; 0 (CLS) when the answer is not wholly inside; -1 unlabelled
    end_position: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.example_index)


class ParagraphTexts:
    """All paragraph texts of a store as one str, decoded once from the stored UTF-8.

    `joined[base[i] : base[i + 1]]` is paragraph i, so char offset c of paragraph i is
    `joined[base[i] + c]`: a decoder slices every answer text from one string, with no
    per-paragraph decoding or lookups.
    """

    def __init__(self, text_bytes: np.ndarray, byte_base: np.ndarray):
        text_bytes = np.asarray(text_bytes, dtype=np.uint8)
        self.joined = text_bytes.tobytes().decode("utf-8")
        # A char begins at every byte that is not a UTF-8 continuation byte (0b10xxxxxx).
        chars_before = np.concatenate([[0], np.cumsum((text_bytes & 0xC0) != 0x80, dtype=np.int64)])
        self.base = chars_before[np.asarray(byte_base, dtype=np.int64)]   # int64 [P+1]

    def __getitem__(self, i: int) -> str:
        return self.joined[self.base[i]:self.base[i + 1]]


class WindowStore:
    """Windows plus what collating and decoding need, as numpy arrays (memory-mapped when cached)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], folder: Path | None = None):
        self.folder = folder
        self.meta = meta
        self.windows = WindowTable(**{name: arrays[name] for name in WINDOW_FIELDS})
        self.config = WindowConfig(**meta["config"])
        self.has_labels: bool = meta["has_labels"]
        self.example_ids: list[str] = meta["example_ids"]
        self.specials = SpecialTokens(**meta["specials"])
        self.read_stats = ReadStats.from_dict(meta["read_stats"]) if meta.get("read_stats") else None
        self.example_paragraph = arrays["example_paragraph"]  # int32 [E]
        self.paragraph_token_base = arrays["paragraph_token_base"]  # int64 [P+1] CSR into context_ids
        self.context_ids = arrays["context_ids"]  # uint16 | int32 [total]
        self.context_offsets = arrays["context_offsets"]  # int32 [total, 2] char start, end in the paragraph
        self.question_token_base = arrays["question_token_base"]  # int64 [E+1] CSR into question_ids
        self.question_ids = arrays["question_ids"]  # uint16 | int32, already truncated
        self._text_bytes = arrays["paragraph_text_bytes"]  # uint8 [bytes] UTF-8 of all paragraphs
        self._text_base = arrays["paragraph_text_base"]  # int64 [P+1]
        self._arrays = arrays
        self._lengths = (self.windows.query_length + self.windows.context_length + SPECIAL_PER_WINDOW).astype(np.int32)

    @classmethod
    def open(cls, folder: str | Path, *, verify: bool = True) -> WindowStore:
        """Memory-map a store folder written by `build_store`; `DamagedStore` when its files changed
        (`verify=False` skips the checksums: the caller has just written them)."""
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise MRCError(f"{folder}: not a window store (no meta.json); rebuild it with build_store or "
                           f"python -m mrc.features")
        meta = read_store_meta(folder, verify=verify)
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
            return cls(arrays, meta, folder)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DamagedStore(f"{folder}: cannot be read back ({type(e).__name__}: {e})") from None

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def num_examples(self) -> int:
        return len(self.example_ids)

    @property
    def num_paragraphs(self) -> int:
        return len(self._text_base) - 1

    @property
    def pad_id(self) -> int:
        return self.specials.pad_id

    def sequence_lengths(self) -> np.ndarray:
        """int32 [N]: Q + L + 3 per window."""
        return self._lengths

    def nbytes(self) -> int:
        """Bytes of every stored array (the on-disk size of the store, less small metadata)."""
        return int(sum(a.nbytes for a in self._arrays.values()))

    def paragraph_texts(self, i: int) -> str:
        """The text of paragraph `i` (char offsets in `context_offsets` index into it)."""
        return self.all_paragraph_texts[i]

    @functools.cached_property
    def all_paragraph_texts(self) -> ParagraphTexts:
        """Every paragraph text in one string, decoded on first use (what the decoder slices)."""
        return ParagraphTexts(self._text_bytes, self._text_base)

    def window_char_spans(self, w, start_pos, end_pos) -> tuple[np.ndarray, np.ndarray]:
        """Sequence positions of windows `w` -> `[char_start, char_end)` in their paragraph text.

        Vectorised over equal-shaped arrays. A start or end outside the window's context gives -1.
        """
        w = np.asarray(w, dtype=np.int64)
        start_pos = np.asarray(start_pos, dtype=np.int64)
        end_pos = np.asarray(end_pos, dtype=np.int64)
        t = self.windows
        first = t.query_length[w].astype(np.int64) + 2  # sequence position of context token 0
        length = t.context_length[w].astype(np.int64)
        base = self.paragraph_token_base[t.paragraph_index[w]] + t.token_start[w]
        ok_start = (start_pos >= first) & (start_pos < first + length)
        ok_end = (end_pos >= first) & (end_pos < first + length)
        start_tok = np.where(ok_start, base + start_pos - first, 0)
        end_tok = np.where(ok_end, base + end_pos - first, 0)
        char_start = np.where(ok_start, self.context_offsets[start_tok, 0], -1)
        char_end = np.where(ok_end, self.context_offsets[end_tok, 1], -1)
        return char_start, char_end


def questions_without_tokens(store: WindowStore) -> np.ndarray:
    """Example indices whose question has no tokens left (only characters the tokenizer drops)."""
    return np.flatnonzero(np.diff(np.asarray(store.question_token_base)) == 0)


@runtime_checkable
class DecodableWindows(Protocol):
    """What `mrc.decode.decode` reads from a set of windows: a `WindowStore`, or the windows of a
    saved logits file (`mrc.logits.WindowLogits`), which decodes without the store.

    `windows` needs the columns example_index, paragraph_index, query_length, context_length,
    max_context_start and max_context_end (int32 [N]).
    """

    windows: Any
    example_ids: list[str]

    @property
    def all_paragraph_texts(self) -> ParagraphTexts: ...

    def window_char_spans(self, w, start_pos, end_pos) -> tuple[np.ndarray, np.ndarray]: ...

    def sequence_lengths(self) -> np.ndarray: ...
