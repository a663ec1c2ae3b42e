"""Readers: KorQuAD / SQuAD v1.1 and v2.0 JSON, KLUE MRC JSON, JSON Lines (+ AIHub, KorQuAD 2.x) -> `Example`.

Every problem in a file is reported as an `MRCError` naming the file and the JSON path
(`data[3].paragraphs[1].qas[0].answers[0]`) or the JSON Lines line number, and what to change.
A misaligned `answer_start` is moved to the nearest occurrence of the answer text; a question
whose answer text is nowhere in its context is skipped and counted in `ReadStats`. The AIHub MRC
shapes and KorQuAD 2.x are read by `mrc.data_aihub`; `read_examples` detects every format per file.
JSON text goes through `mrc.text.parse_json`: every unpaired surrogate in it becomes U+FFFD (counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from mrc.data_aihub import AIHUB_FORMATS, nested_format, read_aihub
from mrc.errors import MRCError
from mrc.examples import (NOT_IN_CONTEXT, Answer, Example, Loc, ReadStats, get_field, paragraph_questions,
                          place_answer, question_id, short)
from mrc.text import JSONTextError, parse_json

FORMATS = ("auto", "squad", "klue", "jsonl") + AIHUB_FORMATS
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_examples(paths: str | Path | Sequence[str | Path], *, data_format: str = "auto") -> tuple[list[Example], ReadStats]:
    """Read every file (format auto-detected unless forced) into Examples; ids must be unique across files."""
    if data_format not in FORMATS:
        raise MRCError(f"unknown data format {data_format!r}; choose one of {', '.join(FORMATS)}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise MRCError("no data files given; pass at least one KorQuAD/SQuAD/KLUE/AIHub JSON or JSON Lines file")
    stats = ReadStats()
    examples: list[Example] = []
    seen: dict[str, Loc] = {}  # id -> where it was first read
    for path in paths:
        path = Path(path)
        stats.files += 1
        for ex, where in _read_file(path, data_format, stats):
            if ex.id in seen:
                raise MRCError(f"{where}: id {ex.id!r} was already used at {seen[ex.id]}; "
                               f"question ids must be unique across all input files")
            seen[ex.id] = where
            examples.append(ex)
    return examples, stats


def _parse_json(path: Path, text: str, stats: ReadStats) -> Any:
    root, replaced = parse_json(text, str(path))
    stats.replaced += replaced
    return root


def _detect_format(path: Path, text: str, stats: ReadStats) -> tuple[str, Any]:
    """(format, parsed root) for nested JSON (SQuAD/KorQuAD/KLUE or an AIHub shape), or ('jsonl', None)."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl", None
    try:
        root, replaced = parse_json(text, str(path))
    except JSONTextError as e:
        if e.reason == "Extra data":
            return "jsonl", None  # several top-level values: one JSON object per line
        raise
    if isinstance(root, dict) and ("data" in root or "dataset" in root):
        stats.replaced += replaced  # counted here only when this parse is the one kept
        return nested_format(root), root
    if isinstance(root, dict) and "question" in root:
        return "jsonl", None
    raise MRCError(f"{path}: cannot tell the format: expected an object with a 'data' list "
                   f"(KorQuAD / SQuAD / KLUE MRC / AIHub), an AIHub 'dataset' object, or one JSON object per "
                   f"line (JSON Lines); pass --data_format {'|'.join(FORMATS[1:])} to force one")


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise MRCError(f"{path}: is a folder, not a data file; pass the JSON or JSON Lines files inside it")
    if path.exists() and not path.is_file():
        raise MRCError(f"{path}: not a regular file (a device, a socket or a pipe); pass a data file")
    if not path.is_file():
        raise MRCError(f"{path}: file not found; check the path")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise MRCError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise MRCError(f"{path}: cannot be read: {e.strerror or e}") from None


def _read_file(path: Path, data_format: str, stats: ReadStats) -> Iterator[tuple[Example, Loc]]:
    text = _read_text(path)
    fmt, root = _detect_format(path, text, stats) if data_format == "auto" else (data_format, None)
    if fmt == "jsonl":
        yield from _read_jsonl(path, text, stats)
        return
    if root is None:
        root = _parse_json(path, text, stats)
    if fmt in AIHUB_FORMATS:
        yield from read_aihub(path, root, fmt, stats)
        return
    forced_id_key = {"squad": "id", "klue": "guid"}.get(data_format)  # auto: either one
    yield from _read_nested(path, root, stats, id_key=forced_id_key)


def _read_nested(path: Path, root: Any, stats: ReadStats, id_key: str | None) -> Iterator[tuple[Example, Loc]]:
    """KorQuAD / SQuAD v1.1 / v2.0 / KLUE: data[].paragraphs[].qas[]; `version` is optional."""
    top = Loc(path)
    source = str(path)
    if not isinstance(root, dict):
        raise top.error("the top level must be an object with a 'data' list (KorQuAD / SQuAD / KLUE MRC format)")
    for ai, article in enumerate(get_field(root, "data", list, top)):
        aloc = top / "data" / ai
        if not isinstance(article, dict):
            raise aloc.error("each article must be an object with 'paragraphs'")
        title = str(get_field(article, "title", (str, int), aloc, required=False, default=""))
        paragraphs = enumerate(get_field(article, "paragraphs", list, aloc))
        for context, qloc, qa in paragraph_questions((aloc / "paragraphs" / pi, p) for pi, p in paragraphs):
            ex = _parse_question(qa, context, title, source, qloc, stats, id_key)
            if ex is not None:
                yield ex, qloc


def _read_jsonl(path: Path, text: str, stats: ReadStats) -> Iterator[tuple[Example, Loc]]:
    """One object per line: {"id" (or "guid"), "question", "context", "answers"?, "title"?, "is_impossible"?}."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        loc = Loc(path, line=lineno)
        try:
            obj, replaced = parse_json(line, f"{path}:{lineno}", line_of_file=True)
        except JSONTextError as e:
            raise MRCError(f"{e}; JSON Lines needs one complete object per line") from None
        stats.replaced += replaced
        if not isinstance(obj, dict):
            raise loc.error("each line must be an object with 'id', 'question' and 'context'")
        context = get_field(obj, "context", str, loc)
        title = str(get_field(obj, "title", (str, int), loc, required=False, default=""))
        ex = _parse_question(obj, context, title, str(path), loc, stats, id_key=None, source_format="jsonl")
        if ex is not None:
            yield ex, loc


def _parse_question(qa: dict, context: str, title: str, source: str, loc: Loc, stats: ReadStats,
                    id_key: str | None, source_format: str | None = None) -> Example | None:
    """One question -> Example, or None when its answer cannot be found in the context (counted)."""
    stats.questions += 1
    qid = question_id(qa, loc, (id_key,) if id_key else ("id", "guid"))
    source_format = source_format or ("squad" if qa.get("id") is not None and id_key != "guid" else "klue")
    question = get_field(qa, "question", str, loc)
    has_answers = qa.get("answers") is not None
    raw_answers = _answer_list(qa["answers"], loc / "answers") if has_answers else []
    is_impossible = get_field(qa, "is_impossible", bool, loc, required=False, default=has_answers and not raw_answers)
    if is_impossible and raw_answers:
        raise (loc / "is_impossible").error("is true but 'answers' is not empty; move those spans to "
                                            "'plausible_answers' or set is_impossible to false (AIHub files "
                                            "keep the plausible answer there: pass --data_format aihub)")
    answers = []
    for i, (text, start) in enumerate(raw_answers):
        placed = place_answer(text, start, context)
        if placed is None:
            stats.skip(NOT_IN_CONTEXT, f"{loc / 'answers' / i}: answer {short(text)} does not occur in the context")
            return None
        stats.repaired += placed != start
        answers.append(Answer(text, placed))
    plausible = ()
    if qa.get("plausible_answers"):
        plausible = tuple(Answer(t, s) for t, s in _answer_list(qa["plausible_answers"], loc / "plausible_answers"))
    stats.unanswerable += bool(is_impossible)
    stats.unlabelled += not has_answers and not is_impossible
    qtype = qa.get("question_type", qa.get("classtype"))  # KLUE's, or AIHub's in its SQuAD-like files
    return Example(id=qid, question=question, context=context, answers=tuple(answers),
                   is_impossible=bool(is_impossible), title=title, source=source, plausible_answers=plausible,
                   question_type="" if qtype is None else str(qtype), source_format=source_format)


def _answer_list(raw: Any, loc: Loc) -> list[tuple[str, int]]:
    """(text, answer_start) pairs from [{text, answer_start}] or {"text": [...], "answer_start": [...]}."""
    if isinstance(raw, dict):
        texts = get_field(raw, "text", list, loc)
        starts = get_field(raw, "answer_start", list, loc)
        if len(texts) != len(starts):
            raise loc.error(f"'text' has {len(texts)} entries but 'answer_start' has {len(starts)}; they must pair up")
        raw = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    if not isinstance(raw, list):
        raise loc.error(f"must be a list of {{'text', 'answer_start'}} objects, got {type(raw).__name__}")
    pairs = []
    for i, ans in enumerate(raw):
        aloc = loc / i
        if not isinstance(ans, dict):
            raise aloc.error("each answer must be an object with 'text' and 'answer_start'")
        text = get_field(ans, "text", str, aloc)
        if not text:
            raise (aloc / "text").error("is empty; give the answer span's text or mark the question is_impossible")
        pairs.append((text, get_field(ans, "answer_start", int, aloc)))
    return pairs
