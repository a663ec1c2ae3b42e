"""What every reader produces (Answer, Example, ReadStats) and the tools the readers share.

`Loc` names where a value sits in a file for error messages, `get_field` reads one typed JSON
field, `place_answer` finds an answer's text in its context (the repair of a misaligned
`answer_start`). The readers are `mrc.data` (KorQuAD / SQuAD / KLUE / JSON Lines) and
`mrc.data_aihub` (AIHub MRC sets, KorQuAD 2.x).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from mrc.errors import MRCError

# Why a question was dropped while reading (ReadStats.skipped_by keys).
NOT_IN_CONTEXT = "answer not in context"
YES_NO = "yes/no answer"
MULTIPLE_CHOICE = "multiple choice"
TABLE_CELLS = "table cells"
SKIP_REASONS = (NOT_IN_CONTEXT, YES_NO, MULTIPLE_CHOICE, TABLE_CELLS)


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
    plausible_answers: tuple[Answer, ...] = ()  # SQuAD v2 / KLUE / AIHub: an unanswerable question's distractor
    question_type: str = ""  # KLUE question_type, AIHub classtype or qa_type (kept as text)
    source_format: str = ""  # the reader's format name: squad, klue, jsonl, aihub, korquad2, aihub_tech

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
    skipped: int = 0  # questions dropped (the reasons are in skipped_by)
    unanswerable: int = 0  # kept questions marked is_impossible (or with an empty answer list)
    unlabelled: int = 0  # kept questions without an `answers` field (usable for prediction only)
    replaced: int = 0  # unpaired surrogates (not valid Unicode) replaced by U+FFFD, offsets kept
    skipped_where: list[str] = field(default_factory=list)  # "file: path: reason" per skipped question
    skipped_by: dict[str, int] = field(default_factory=dict)  # reason (SKIP_REASONS) -> questions dropped

    @property
    def kept(self) -> int:
        return self.questions - self.skipped

    def skip(self, reason: str, where: str) -> None:
        """Count one dropped question under `reason`; `where` says which and why, for --verbose_logging."""
        self.skipped += 1
        self.skipped_by[reason] = self.skipped_by.get(reason, 0) + 1
        self.skipped_where.append(where)

    def skipped_text(self) -> str:
        """`3 skipped (2 answer not in context, 1 yes/no answer)`, or `0 skipped`."""
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.skipped_by.items(), key=lambda kv: -kv[1]))
        return f"{self.skipped:,} skipped" + (f" ({reasons})" if reasons else "")

    def summary(self) -> str:
        """One line, e.g. `read 5,774 questions from 1 file: 5,774 kept, 0 repaired, 0 skipped, ...`."""
        files = f"{self.files:,} file" + ("s" if self.files != 1 else "")
        return (f"read {self.questions:,} questions from {files}: {self.kept:,} kept, {self.repaired:,} repaired, "
                f"{self.skipped_text()}, {self.unanswerable:,} unanswerable, {self.unlabelled:,} unlabelled"
                + (f", {self.replaced:,} invalid characters (unpaired surrogates) replaced by U+FFFD"
                   if self.replaced else ""))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReadStats:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Loc:
    """Where a value sits: `file: data[3].paragraphs[1]` or `file:12: answers[0]`, for error messages.

    The path text is built only when a message needs it: reading a large file creates a few
    locations per question and formats none.
    """

    __slots__ = ("file", "parent", "key", "line")

    def __init__(self, file: Path, key: str | int | None = None, parent: Loc | None = None, line: int | None = None):
        self.file, self.key, self.parent, self.line = file, key, parent, line

    def __truediv__(self, key: str | int) -> Loc:
        return Loc(self.file, key, self, self.line)

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


def get_field(obj: dict, key: str, kind: type | tuple[type, ...], loc: Loc, *, required: bool = True,
              default: Any = None) -> Any:
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
        raise (loc / key).error(f"must be {_article(names)}, got {type(value).__name__} {short(value)}")
    return value


def _article(names: str) -> str:
    """`str or list` -> `a string or a list`."""
    words = {"list": "a list", "dict": "an object", "str": "a string", "int": "an integer", "bool": "true or false"}
    return " or ".join(words.get(name, name) for name in names.split(" or "))


def short(value: Any) -> str:
    """A JSON value cut to 40 characters, for messages."""
    try:
        s = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):  # nested too deeply to print
        return f"(a deeply nested {type(value).__name__})"
    return s if len(s) <= 40 else s[:37] + "..."


def question_id(qa: dict, loc: Loc, keys: tuple[str, ...]) -> str:
    """The question's id under the first of `keys` it has (integers become strings)."""
    for key in keys:
        if qa.get(key) is not None:
            return str(get_field(qa, key, (str, int), loc))
    raise loc.error(f"missing {' or '.join(repr(k) for k in keys)}; every question needs a unique id")


def paragraph_questions(paragraphs: Iterable[tuple[Loc, Any]], *, paragraph: str = "paragraph",
                        question: str = "'id', 'question' and 'answers'") -> Iterator[tuple[str, Loc, dict]]:
    """(context, location, question object) of every question in `paragraphs` ((location, paragraph) pairs
    of `{"context", "qas": [...]}`), checking each shape; `paragraph` and `question` name them in errors."""
    for ploc, para in paragraphs:
        if not isinstance(para, dict):
            raise ploc.error(f"each {paragraph} must be an object with 'context' and 'qas'")
        context = get_field(para, "context", str, ploc)
        qas_loc = ploc / "qas"
        for qi, qa in enumerate(get_field(para, "qas", list, ploc)):
            qloc = qas_loc / qi
            if not isinstance(qa, dict):
                raise qloc.error(f"each question must be an object with {question}")
            yield context, qloc, qa


def item_problem(example: Example) -> str | None:
    """Why no model can answer this item (predict sends it to errors.jsonl, training leaves it out), or None."""
    if not example.question.strip():
        return "empty question"
    if not example.context.strip():
        return "empty context"
    return None


def place_answer(text: str, start: int, context: str) -> int | None:
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
