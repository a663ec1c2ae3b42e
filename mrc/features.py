"""Building windows ("features"): the pure builder and the on-disk cache of built stores.

Each paragraph is tokenized once, with char offsets; the window layout is `mrc.store`'s. Windows
start every `doc_stride` tokens (BERT / legacy `run_squad.py` meaning: a step, not an overlap)
until one reaches the end of the paragraph. `build_arrays` is one pure path for train and eval
(`labels=True/False`). Stores are cached under a hash of (input, tokenizer files, window
settings, WINDOW_SEMANTICS_VERSION), built in a temp folder and renamed into place, so a crashed
build is never used; its temp folder is deleted by the next build in that cache. A finished store
whose files were damaged later (sizes and SHA-256 in meta.json, checked on open) is said on stderr,
deleted and built again.

`python -m mrc.features DATA... --model FOLDER [--dump FILE.jsonl]` prints what the windows hold
(`mrc.inspect_windows`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mrc.data import Example, read_examples
from mrc.errors import MRCError
from mrc.io import ensure_dir, fs_errors, remove_dead_temps, temp_prefix
from mrc.store import (SPECIAL_PER_WINDOW, STORE_FORMAT, WINDOW_FIELDS, DamagedStore, WindowConfig, WindowStore,
                       file_digest)
from mrc.tokenizer import BatchEncoder, tokenizer_fingerprint

CACHE_ENV = "MRC_CACHE"
DEFAULT_CACHE_DIR = Path(".cache") / "mrc"
TOKENIZE_CHUNK = 1024  # paragraphs per tokenizer call (bounds the memory of its Encoding objects)
# The meaning of the windows built from a given input with a given tokenizer and WindowConfig.
# Bump it whenever `build_arrays` would return something else for the same input (a reader, the
# tokenizer wrapper or the window rules changed); the cache key holds it, so old stores stop
# matching. tests/test_features.py fails when the output changes and this number does not.
WINDOW_SEMANTICS_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Building


def build_store(data: str | Path | Sequence[str | Path] | Sequence[Example], model_folder: str | Path,
                config: WindowConfig | None = None, *, labels: bool, cache_dir: str | Path | None = None,
                use_cache: bool = True, data_format: str = "auto") -> WindowStore:
    """Windows of `data` (files, or Examples already read) tokenized with the model folder's tokenizer.

    With `use_cache` the store lives in `cache_dir` (default `$MRC_CACHE`, else `./.cache/mrc`)
    under a key hashing the input, the tokenizer files, `config`, `labels` and this code; a
    second build with the same key memory-maps the first one. Without it, the store stays in RAM.
    `labels=True` fills start/end positions from each example's first answer.
    """
    config = config or WindowConfig()
    if isinstance(data, (list, tuple)) and not data:
        raise MRCError("no questions to build windows from: the input holds no (kept) questions")
    examples = list(data) if _is_examples(data) else None
    paths = None if examples is not None else ([data] if isinstance(data, (str, Path)) else list(data))
    folder = None
    if use_cache:
        key = _cache_key(paths, examples, model_folder, config, labels, data_format)
        root = resolve_cache_dir(cache_dir)
        folder = root / f"windows-{key[:32]}"
        if root.is_dir():
            remove_dead_temps(root, ".windows-*.tmp")
        if (folder / "meta.json").is_file():
            try:
                return WindowStore.open(folder)
            except DamagedStore as e:
                print(f"warning: cached window store damaged, building it again: {e}", file=sys.stderr)
                _remove_store(folder)
    stats = None
    if examples is None:
        examples, stats = read_examples(paths, data_format=data_format)
    arrays, meta = build_arrays(examples, BatchEncoder.for_folder(model_folder), config, labels=labels)
    meta["read_stats"] = stats.to_dict() if stats else None
    if folder is None:
        return WindowStore(arrays, meta)
    _write_store_once(arrays, meta, folder)
    return WindowStore.open(folder, verify=False)  # _write_store_once hashed the files it wrote


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """The cache folder: the argument, else $MRC_CACHE, else `.cache/mrc` under the current directory."""
    return Path(cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR))


def _is_examples(data: Any) -> bool:
    return isinstance(data, (list, tuple)) and bool(data) and isinstance(data[0], Example)


def _cache_key(paths: list | None, examples: list[Example] | None, model_folder: str | Path, config: WindowConfig,
               labels: bool, data_format: str) -> str:
    h = hashlib.sha256()
    settings = {"config": dataclasses.asdict(config), "labels": labels, "format": data_format,
                "semantics": WINDOW_SEMANTICS_VERSION, "store_format": STORE_FORMAT, "tokenizer": tokenizer_fingerprint(model_folder)}
    h.update(json.dumps(settings, sort_keys=True).encode())
    if paths is not None:
        for p in paths:
            p = Path(p)
            if not p.is_file():
                raise MRCError(f"{p}: file not found; check the path")
            h.update(b"\0file\0")
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    else:
        _hash_examples(h, examples)
    return h.hexdigest()


def _hash_examples(h, examples: Sequence[Example]) -> None:
    """Everything a store depends on (length-prefixed, so no two inputs hash the same stream);
    a paragraph shared by consecutive questions is hashed once."""
    def part(text: str) -> str:
        return f"{len(text)}:{text}"

    previous_context = None
    for ex in examples:
        if ex.context != previous_context:
            h.update(f"C{part(ex.context)}".encode("utf-8"))
            previous_context = ex.context
        answers = "".join(f"{a.start},{part(a.text)}" for a in ex.answers)
        h.update(f"Q{part(ex.id)}{part(ex.question)}{ex.is_impossible:d}{len(ex.answers)}:{answers}".encode("utf-8"))


def _remove_store(folder: Path) -> None:
    """Take a damaged store out of the way in one rename (a reader sees it whole or not at all), then delete it."""
    aside = folder.with_name(f"{temp_prefix(folder.name)}damaged.tmp")
    with fs_errors(folder):
        os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _write_store_once(arrays: dict[str, np.ndarray], meta: dict[str, Any], folder: Path) -> None:
    """Write into a temp folder, then rename it to `folder`; if another process got there first, keep theirs.

    Unlike mrc.io.atomic_dir this never replaces a finished store, which another rank may have open.
    meta.json records each array file's size and SHA-256 (`WindowStore.open` checks them).
    """
    ensure_dir(folder.parent)
    with fs_errors(folder.parent):
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(folder.name), suffix=".tmp", dir=folder.parent))
    try:
        with fs_errors(folder.parent):
            files = {}
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
                files[name] = file_digest(tmp / f"{name}.npy")
            meta = dict(meta, arrays=sorted(arrays), store_format=STORE_FORMAT, files=files)
            (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise MRCError(f"{folder} exists but is not a finished window store; delete it and run again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_arrays(examples: Sequence[Example], encoder: BatchEncoder, config: WindowConfig, *,
                 labels: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The pure feature builder: Examples -> store arrays and metadata (one path for train and eval)."""
    if not examples:
        raise MRCError("no questions to build windows from: the input files hold no (kept) questions")
    vocab_size = encoder.tokenizer.get_vocab_size(with_added_tokens=True)
    id_dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    example_paragraph, paragraph_texts = _group_paragraphs(examples)
    context_ids, context_offsets, paragraph_base = _tokenize_paragraphs(encoder, paragraph_texts, id_dtype)
    question_ids, question_base = _tokenize_questions(encoder, [ex.question for ex in examples],
                                                      config.max_query_length, id_dtype)
    para_len = np.diff(paragraph_base)[example_paragraph]  # [E] N per example
    query_len = np.diff(question_base).astype(np.int64)  # [E] Q
    table = _window_geometry(para_len, query_len, config)
    table["paragraph_index"] = example_paragraph[table["example_index"]]
    table["query_length"] = query_len[table["example_index"]]
    table["max_context_start"], table["max_context_end"] = _max_context(table, para_len, query_len, config)
    if labels:
        answer_tokens = _answer_token_spans(examples, example_paragraph, paragraph_base, context_offsets)
        table["start_position"], table["end_position"] = _window_labels(table, answer_tokens)
    else:
        table["start_position"] = np.full(len(table["example_index"]), -1)
        table["end_position"] = np.full(len(table["example_index"]), -1)
    text_bytes = [t.encode("utf-8") for t in paragraph_texts]
    arrays = {name: np.asarray(table[name], dtype=np.int32) for name in WINDOW_FIELDS}
    arrays.update(
        example_paragraph=example_paragraph.astype(np.int32),
        paragraph_token_base=paragraph_base,
        context_ids=context_ids,
        context_offsets=context_offsets,
        question_token_base=question_base,
        question_ids=question_ids,
        paragraph_text_bytes=np.frombuffer(b"".join(text_bytes), dtype=np.uint8),
        paragraph_text_base=np.concatenate([[0], np.cumsum([len(b) for b in text_bytes])]).astype(np.int64),
    )
    meta = {"config": dataclasses.asdict(config), "has_labels": labels, "example_ids": [ex.id for ex in examples],
            "specials": dataclasses.asdict(encoder.specials), "vocab_size": vocab_size}
    return arrays, meta


def _group_paragraphs(examples: Sequence[Example]) -> tuple[np.ndarray, list[str]]:
    """Consecutive examples with the same context share a paragraph (tokenized once)."""
    example_paragraph = np.empty(len(examples), dtype=np.int64)
    texts: list[str] = []
    for i, ex in enumerate(examples):
        if not texts or ex.context != texts[-1]:
            texts.append(ex.context)
        example_paragraph[i] = len(texts) - 1
    return example_paragraph, texts


def _tokenize_paragraphs(encoder: BatchEncoder, texts: list[str], id_dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All paragraphs -> flat ids [T], char offsets [T, 2], CSR base [P+1].

    One batch call per TOKENIZE_CHUNK texts: the tokenizer's Encoding objects are far larger than
    the arrays kept, so only one chunk of them lives at a time.
    """
    ids_parts, offset_parts, lengths = [], [], []
    for lo in range(0, len(texts), TOKENIZE_CHUNK):
        ids, offsets, chunk_lengths = encoder.encode_flat(texts[lo:lo + TOKENIZE_CHUNK])
        ids_parts.append(ids.astype(id_dtype))
        offset_parts.append(offsets)
        lengths.append(chunk_lengths)
    base = np.concatenate([[0], np.cumsum(np.concatenate(lengths), dtype=np.int64)]).astype(np.int64)
    return np.concatenate(ids_parts), np.concatenate(offset_parts), base


def _tokenize_questions(encoder: BatchEncoder, questions: list[str], max_query_length: int,
                        id_dtype) -> tuple[np.ndarray, np.ndarray]:
    """Question ids truncated to the first `max_query_length` tokens, flat [T] with CSR base [E+1]."""
    kept: list[list[int]] = []
    for lo in range(0, len(questions), 8 * TOKENIZE_CHUNK):
        kept += [ids[:max_query_length] for ids in encoder.ids(questions[lo:lo + 8 * TOKENIZE_CHUNK])]
    lengths = np.fromiter((len(k) for k in kept), dtype=np.int64, count=len(kept))
    ids = np.fromiter(itertools.chain.from_iterable(kept), dtype=id_dtype, count=int(lengths.sum()))
    return ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _window_geometry(para_len: np.ndarray, query_len: np.ndarray, config: WindowConfig) -> dict[str, np.ndarray]:
    """Windows per example, as legacy run_squad: starts 0, s, 2s, ... until a window reaches the paragraph end.

    Window k exists when k == 0 or window k-1 ended before the paragraph did:
    (k-1)*s + room < N, so an example has 1 + ceil((N - room) / s) windows when N > room.
    An empty paragraph still gets one (empty) window, so every question gets a prediction.
    """
    room = config.max_seq_length - query_len - SPECIAL_PER_WINDOW  # [E] max context tokens per window
    stride = config.doc_stride
    count = 1 + np.maximum(0, -(-(para_len - room) // stride))  # [E] ceil division
    example_index = np.repeat(np.arange(len(para_len)), count)  # [N]
    first_window = np.concatenate([[0], np.cumsum(count)[:-1]])
    k = np.arange(len(example_index)) - first_window[example_index]
    token_start = k * stride
    context_length = np.minimum(para_len[example_index] - token_start, room[example_index])
    return {"example_index": example_index, "token_start": token_start, "context_length": context_length}


def _max_context(table: dict[str, np.ndarray], para_len: np.ndarray, query_len: np.ndarray,
                 config: WindowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Context-relative [lo, hi) of the tokens whose max-context window (BERT rule) is each window.

    A single window owns all its tokens. Windows of one example depend only on (N, room), so each
    distinct geometry is solved once.
    """
    n = len(table["example_index"])
    lo = np.zeros(n, dtype=np.int64)
    hi = table["context_length"].astype(np.int64).copy()
    counts = np.bincount(table["example_index"], minlength=len(para_len))
    first_window = np.concatenate([[0], np.cumsum(counts)[:-1]])
    room = config.max_seq_length - query_len - SPECIAL_PER_WINDOW
    for e in np.flatnonzero(counts > 1):
        glo, ghi = _max_context_geometry(int(para_len[e]), int(room[e]), config.doc_stride)
        rows = slice(first_window[e], first_window[e] + counts[e])
        lo[rows], hi[rows] = glo, ghi
    return lo, hi


@lru_cache(maxsize=4096)
def _max_context_geometry(n_tokens: int, room: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) per window for a paragraph of `n_tokens` cut into windows of `room` every `stride`.

    A token's max-context window maximises min(left, right) + 0.01 * length (computed in float64
    exactly as BERT's `_check_is_max_context`), the earliest window winning ties.

    Why each window owns one interval: window starts and ends are non-decreasing, and each score
    is a tent with slopes +1/-1, so the score of an earlier window minus that of a later one is
    non-increasing in the position (the 0.01 * length terms are constants). Hence the best window
    is a non-decreasing function of the position, which is asserted below.
    """
    count = 1 + max(0, -(-(n_tokens - room) // stride))
    starts = np.arange(count) * stride  # [W]
    lengths = np.minimum(n_tokens - starts, room)  # [W]
    best = np.empty(n_tokens, dtype=np.int64)  # [N] max-context window of each token
    holders = -(-room // stride)  # most windows that can hold one token
    block = max(1, (1 << 20) // holders)  # positions per step: keeps the [block, holders] scores small
    for first_pos in range(0, n_tokens, block):
        pos = np.arange(first_pos, min(first_pos + block, n_tokens))  # [B]
        first = np.maximum(0, -(-(pos - room + 1) // stride))  # earliest window reaching pos
        cand = np.minimum(first[:, None] + np.arange(holders)[None, :], count - 1)  # [B, K] in window order
        left = pos[:, None] - starts[cand]
        right = starts[cand] + lengths[cand] - 1 - pos[:, None]
        score = np.where((left >= 0) & (right >= 0), np.minimum(left, right) + 0.01 * lengths[cand], -np.inf)
        best[pos] = cand[np.arange(len(pos)), np.argmax(score, axis=1)]  # first maximum = earliest window
    assert (np.diff(best) >= 0).all(), "max-context tokens of each window must form one interval"
    owned_lo = np.searchsorted(best, np.arange(count), side="left")  # [W] paragraph positions
    owned_hi = np.searchsorted(best, np.arange(count), side="right")
    empty = owned_lo == owned_hi
    return np.where(empty, 0, owned_lo - starts), np.where(empty, 0, owned_hi - starts)


def _answer_token_spans(examples: Sequence[Example], example_paragraph: np.ndarray, paragraph_base: np.ndarray,
                        offsets: np.ndarray) -> np.ndarray:
    """int64 [E, 2] paragraph token span (inclusive) of each example's first answer; (-1, -1) when none.

    The span is the context tokens overlapping the answer's chars. Offsets are made globally
    increasing (paragraph p's chars shifted by the lengths of the paragraphs before it) so one
    searchsorted serves all examples.
    """
    n_examples = len(examples)
    spans = np.full((n_examples, 2), -1, dtype=np.int64)
    has = np.fromiter((bool(ex.answers) and not ex.is_impossible for ex in examples), dtype=bool, count=n_examples)
    if not has.any():
        return spans
    para_chars = np.zeros(len(paragraph_base) - 1, dtype=np.int64)
    _, first_example = np.unique(example_paragraph, return_index=True)
    para_chars[example_paragraph[first_example]] = [len(examples[i].context) + 1 for i in first_example]
    char_base = np.concatenate([[0], np.cumsum(para_chars)[:-1]])  # [P]
    token_para = np.repeat(np.arange(len(para_chars)), np.diff(paragraph_base))
    g_start = offsets[:, 0] + char_base[token_para]  # [T]
    g_end = offsets[:, 1] + char_base[token_para]
    idx = np.flatnonzero(has)
    a_start = np.fromiter((examples[i].answers[0].start for i in idx), dtype=np.int64, count=len(idx))
    a_end = np.fromiter((examples[i].answers[0].end for i in idx), dtype=np.int64, count=len(idx))
    para = example_paragraph[idx]
    shift = char_base[para]
    first = np.searchsorted(g_end, a_start + shift, side="right")  # first token ending after the answer starts
    last = np.searchsorted(g_start, a_end + shift, side="left") - 1  # last token starting before it ends
    lo_tok, hi_tok = paragraph_base[para], paragraph_base[para + 1]
    found = (first <= last) & (first < hi_tok) & (last >= lo_tok)
    spans[idx[found], 0] = first[found] - lo_tok[found]
    spans[idx[found], 1] = last[found] - lo_tok[found]
    return spans


def _window_labels(table: dict[str, np.ndarray], answer_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequence positions of the answer in each window, (0, 0) = CLS when it is not wholly inside."""
    tok = answer_tokens[table["example_index"]]  # [N, 2]
    start, length, q = table["token_start"], table["context_length"], table["query_length"]
    inside = (tok[:, 0] >= 0) & (tok[:, 0] >= start) & (tok[:, 1] < start + length)
    first = q + 2  # sequence position of context token 0
    return (np.where(inside, tok[:, 0] - start + first, 0), np.where(inside, tok[:, 1] - start + first, 0))


if __name__ == "__main__":  # `python -m mrc.features`: the inspection CLI, in its own module (it imports this one)
    from mrc.inspect_windows import main

    main()
