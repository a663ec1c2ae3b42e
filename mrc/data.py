"""Readers: KorQuAD / SQuAD v1.1 and v2.0 JSON, KLUE MRC JSON and JSON Lines -> one `Example` type.

Every problem in a file is reported as an `MRCError` naming the file and the JSON path
(`data[3].paragraphs[1].qas[0].answers[0]`) or the JSON Lines line number, and what to change.
A misaligned `answer_start` is moved to the nearest occurrence of the answer text; a question
whose answer text is nowhere in its context is skipped and counted in `ReadStats`. JSON text goes
through `mrc.text.parse_json`: every unpaired surrogate in it becomes U+FFFD (counted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from mrc.errors import MRCError
from mrc.text import JSONTextError, parse_json

FORMATS = ("auto", "squad", "klue", "jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # char offset in context; context[start:start+len(text)] == text

    @property
    def end(self) -> int:
        """Char offset one past the answer's last character."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]  # empty when unanswerable or unlabelled
    is_impossible: bool = False
    title: str = ""
    source: str = ""  # file the example came from
    plausible_answers: tuple[Answer, ...] = ()  # SQuAD v2 / KLUE: the distractor span of an unanswerable question
    question_type: str = ""  # KLUE: 1 paraphrase, 2 multi-sentence, 3 unanswerable (kept as text)

    @property
    def is_labelled(self) -> bool:
        """True when the file said what the answer is (an answer, or that there is none)."""
        return bool(self.answers) or self.is_impossible


@dataclass
class ReadStats:
    """What a read did, for the one-line summary every CLI prints."""

    files: int = 0
    questions: int = 0  # questions seen in the files
    repaired: int = 0  # answer_start moved to where the answer text really is
    skipped: int = 0  # answer text not found in its context: question dropped
    unanswerable: int = 0  # kept questions marked is_impossible (or with an empty answer list)
    unlabelled: int = 0  # kept questions without an `answers` field (usable for prediction only)
    replaced: int = 0  # unpaired surrogates (not valid Unicode) replaced by U+FFFD, offsets kept
    skipped_where: list[str] = field(default_factory=list)  # "file: path: reason" per skipped question

    @property
    def kept(self) -> int:
        return self.questions - self.skipped

    def summary(self) -> str:
        """One line, e.g. `read 5,774 questions from 1 file: 5,774 kept, 0 repaired, 0 skipped, ...`."""
        files = f"{self.files:,} file" + ("s" if self.files != 1 else "")
        return (f"read {self.questions:,} questions from {files}: {self.kept:,} kept, {self.repaired:,} repaired, "
                f"{self.skipped:,} skipped (answer not in context), {self.unanswerable:,} unanswerable, "
                f"{self.unlabelled:,} unlabelled"
                + (f", {self.replaced:,} invalid characters (unpaired surrogates) replaced by U+FFFD"
                   if self.replaced else ""))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReadStats:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def item_problem(example: Example) -> str | None:
    """Why no model can answer this item (predict sends it to errors.jsonl, training leaves it out), or None."""
    if not example.question.strip():
        return "empty question"
    if not example.context.strip():
        return "empty context"
    return None


def read_examples(paths: str | Path | Sequence[str | Path], *, data_format: str = "auto") -> tuple[list[Example], ReadStats]:
    """Read every file (format auto-detected unless forced) into Examples; ids must be unique across files."""
    if data_format not in FORMATS:
        raise MRCError(f"unknown data format {data_format!r}; choose one of {', '.join(FORMATS)}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise MRCError("no data files given; pass at least one KorQuAD/SQuAD/KLUE JSON or JSON Lines file")
    stats = ReadStats()
    examples: list[Example] = []
    seen: dict[str, _Loc] = {}  # id -> where it was first read
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
    """('squad', parsed root) for nested SQuAD/KorQuAD/KLUE JSON, or ('jsonl', None)."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl", None
    try:
        root, replaced = parse_json(text, str(path))
    except JSONTextError as e:
        if e.reason == "Extra data":
            return "jsonl", None  # several top-level values: one JSON object per line
        raise
    if isinstance(root, dict) and "data" in root:
        stats.replaced += replaced  # counted here only when this parse is the one kept
        return "squad", root
    if isinstance(root, dict) and "question" in root:
        return "jsonl", None
    raise MRCError(f"{path}: cannot tell the format: expected an object with a 'data' list "
                   f"(KorQuAD / SQuAD / KLUE MRC) or one JSON object per line (JSON Lines); "
                   f"pass --data_format squad|klue|jsonl to force one")


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


def _read_file(path: Path, data_format: str, stats: ReadStats) -> Iterator[tuple[Example, _Loc]]:
    text = _read_text(path)
    fmt, root = _detect_format(path, text, stats) if data_format == "auto" else (data_format, None)
    if fmt == "jsonl":
        yield from _read_jsonl(path, text, stats)
        return
    if root is None:
        root = _parse_json(path, text, stats)
    forced_id_key = {"squad": "id", "klue": "guid"}.get(data_format)  # auto: either one
    yield from _read_nested(path, root, stats, id_key=forced_id_key)


class _Loc:
    """Where a value sits: `file: data[3].paragraphs[1]` or `file:12: answers[0]`, for error messages.

    The path text is built only when a message needs it: reading a large file creates a few
    locations per question and formats none.
    """

    __slots__ = ("file", "parent", "key", "line")

    def __init__(self, file: Path, key: str | int | None = None, parent: _Loc | None = None, line: int | None = None):
        self.file, self.key, self.parent, self.line = file, key, parent, line

    def __truediv__(self, key: str | int) -> _Loc:
        return _Loc(self.file, key, self, self.line)

    @property
    def path(self) -> str:
        keys = []
        loc = self
        while loc is not None and loc.key is not None:
            keys.append(loc.key)
            loc = loc.parent
        text = ""
        for key in reversed(keys):
            text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
        return text

    def __str__(self) -> str:
        head = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        path = self.path
        return f"{head}: {path}" if path else head

    def error(self, what: str) -> MRCError:
        return MRCError(f"{self}: {what}")


def _get(obj: dict, key: str, kind: type | tuple[type, ...], loc: _Loc, *, required: bool = True, default: Any = None) -> Any:
    """obj[key] checked against `kind`; a missing required key or a wrong type names the path."""
    if key not in obj or obj[key] is None:
        if required and key in obj:
            raise (loc / key).error("is null; every entry here needs a value")
        if required:
            raise loc.error(f"missing {key!r}; every entry here needs one")
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # JSON true is no number
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise (loc / key).error(f"must be {_article(names)}, got {type(value).__name__} {_short(value)}")
    return value


def _article(names: str) -> str:
    return {"list": "a list", "dict": "an object", "str": "a string", "int": "an integer",
            "bool": "true or false"}.get(names, names)


def _short(value: Any) -> str:
    try:
        s = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):  # nested too deeply to print
        return f"(a deeply nested {type(value).__name__})"
    return s if len(s) <= 40 else s[:37] + "..."


def _read_nested(path: Path, root: Any, stats: ReadStats, id_key: str | None) -> Iterator[tuple[Example, _Loc]]:
    """KorQuAD / SQuAD v1.1 / v2.0 / KLUE: data[].paragraphs[].qas[]; `version` is optional."""
    top = _Loc(path)
    source = str(path)
    if not isinstance(root, dict):
        raise top.error("the top level must be an object with a 'data' list (KorQuAD / SQuAD / KLUE MRC format)")
    for ai, article in enumerate(_get(root, "data", list, top)):
        aloc = top / "data" / ai
        if not isinstance(article, dict):
            raise aloc.error("each article must be an object with 'paragraphs'")
        title = str(_get(article, "title", (str, int), aloc, required=False, default=""))
        for pi, para in enumerate(_get(article, "paragraphs", list, aloc)):
            ploc = aloc / "paragraphs" / pi
            if not isinstance(para, dict):
                raise ploc.error("each paragraph must be an object with 'context' and 'qas'")
            context = _get(para, "context", str, ploc)
            qas_loc = ploc / "qas"
            for qi, qa in enumerate(_get(para, "qas", list, ploc)):
                qloc = qas_loc / qi
                if not isinstance(qa, dict):
                    raise qloc.error("each question must be an object with 'id', 'question' and 'answers'")
                ex = _parse_question(qa, context, title, source, qloc, stats, id_key)
                if ex is not None:
                    yield ex, qloc


def _read_jsonl(path: Path, text: str, stats: ReadStats) -> Iterator[tuple[Example, _Loc]]:
    """One object per line: {"id" (or "guid"), "question", "context", "answers"?, "title"?, "is_impossible"?}."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        loc = _Loc(path, line=lineno)
        try:
            obj, replaced = parse_json(line, f"{path}:{lineno}", line_of_file=True)
        except JSONTextError as e:
            raise MRCError(f"{e}; JSON Lines needs one complete object per line") from None
        stats.replaced += replaced
        if not isinstance(obj, dict):
            raise loc.error("each line must be an object with 'id', 'question' and 'context'")
        context = _get(obj, "context", str, loc)
        title = str(_get(obj, "title", (str, int), loc, required=False, default=""))
        ex = _parse_question(obj, context, title, str(path), loc, stats, id_key=None)
        if ex is not None:
            yield ex, loc


def _parse_question(qa: dict, context: str, title: str, source: str, loc: _Loc, stats: ReadStats,
                    id_key: str | None) -> Example | None:
    """One question -> Example, or None when its answer cannot be found in the context (counted)."""
    stats.questions += 1
    qid = _question_id(qa, loc, id_key)
    question = _get(qa, "question", str, loc)
    has_answers = qa.get("answers") is not None
    raw_answers = _answer_list(qa["answers"], loc / "answers") if has_answers else []
    is_impossible = _get(qa, "is_impossible", bool, loc, required=False, default=has_answers and not raw_answers)
    if is_impossible and raw_answers:
        raise (loc / "is_impossible").error("is true but 'answers' is not empty; move those spans to "
                                            "'plausible_answers' or set is_impossible to false")
    answers = []
    for i, (text, start) in enumerate(raw_answers):
        placed = _place_answer(text, start, context)
        if placed is None:
            stats.skipped += 1
            stats.skipped_where.append(f"{loc / 'answers' / i}: answer {_short(text)} does not occur in the context")
            return None
        stats.repaired += placed != start
        answers.append(Answer(text, placed))
    plausible = ()
    if qa.get("plausible_answers"):
        plausible = tuple(Answer(t, s) for t, s in _answer_list(qa["plausible_answers"], loc / "plausible_answers"))
    stats.unanswerable += bool(is_impossible)
    stats.unlabelled += not has_answers and not is_impossible
    qtype = qa.get("question_type")
    return Example(id=qid, question=question, context=context, answers=tuple(answers), is_impossible=bool(is_impossible),
                   title=title, source=source, plausible_answers=plausible,
                   question_type="" if qtype is None else str(qtype))


def _question_id(qa: dict, loc: _Loc, id_key: str | None) -> str:
    keys = (id_key,) if id_key else ("id", "guid")
    for key in keys:
        if qa.get(key) is not None:
            return str(_get(qa, key, (str, int), loc))
    raise loc.error(f"missing {' or '.join(repr(k) for k in keys)}; every question needs a unique id")


def _answer_list(raw: Any, loc: _Loc) -> list[tuple[str, int]]:
    """(text, answer_start) pairs from [{text, answer_start}] or {"text": [...], "answer_start": [...]}."""
    if isinstance(raw, dict):
        texts = _get(raw, "text", list, loc)
        starts = _get(raw, "answer_start", list, loc)
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
        text = _get(ans, "text", str, aloc)
        if not text:
            raise (aloc / "text").error("is empty; give the answer span's text or mark the question is_impossible")
        pairs.append((text, _get(ans, "answer_start", int, aloc)))
    return pairs


def _place_answer(text: str, start: int, context: str) -> int | None:
    """`start` if the text is there, else the nearest occurrence of the text (earlier on ties), else None."""
    if context[start:start + len(text)] == text and start >= 0:
        return start
    best = None
    pos = context.find(text)
    while pos != -1:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best
