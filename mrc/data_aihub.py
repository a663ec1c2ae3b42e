"""Readers of the AIHub MRC sets and KorQuAD 2.x, as their files come, -> the one `Example` type.

Formats (names for `--data_format`; `auto` tells them apart with `nested_format`):
- `aihub`: `data[].paragraphs[].qas[]` with AIHub's fields: the SQuAD-like files of 기계독해 /
  일반상식 / 도서자료 (`answers` a list, `classtype`), the `doc_*` envelope of 뉴스 기사 and 행정 문서
  (`answers` one object, integer `question_id`, `qa_type`), and the singular `answer` object of
  금융·법률 and 표 정보 files. With `is_impossible` true the answer given is the plausible one.
- `korquad2`: KorQuAD 2.0 / 2.1, `data[]` items that are their own paragraph (`context` is HTML,
  `answer.answer_start` indexes it).
- `aihub_tech`: 기술과학 문서, one document per file under `dataset.context_info[]`, each question
  in two phrasings (`question-1`, `question-2`) read as two questions sharing the answer.

What is not extractive is skipped and counted by reason (`ReadStats.skipped_by`): yes/no answers,
multiple choice, table answers given as cell lists, and answers not in the context after the
usual repair (`mrc.examples.place_answer`). Ids become strings; `qa_type` / `classtype` become the
question type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from mrc.examples import (MULTIPLE_CHOICE, NOT_IN_CONTEXT, TABLE_CELLS, YES_NO, Answer, Example, Loc, ReadStats,
                          get_field, paragraph_questions, place_answer, question_id, short)

AIHUB_FORMATS = ("aihub", "korquad2", "aihub_tech")
YES_NO_TEXTS = frozenset({"yes", "no", "예", "아니오", "아니요", "네"})
# Fields only AIHub files have, at the top level, on a document, or on a question.
AIHUB_ROOT_KEYS = frozenset({"creator", "Dataset"})
AIHUB_DOC_KEYS = frozenset({"doc_id", "doc_title", "agency"})
AIHUB_QA_KEYS = frozenset({"question_id", "qa_type", "classtype", "answer"})


def nested_format(root: dict) -> str:
    """Which reader a parsed `{"data": [...]}` or `{"dataset": ...}` file needs: squad (KorQuAD /
    SQuAD / KLUE), aihub, korquad2 or aihub_tech; decided from the first question's neighbourhood."""
    if "data" not in root:
        return "aihub_tech"
    data = root["data"]
    if not isinstance(data, list):
        return "squad"  # its reader names the problem
    aihub = bool(AIHUB_ROOT_KEYS & root.keys())
    for item in data:
        if not isinstance(item, dict):
            break
        if "paragraphs" not in item and "context" in item and "qas" in item:
            return "korquad2"
        aihub = aihub or bool(AIHUB_DOC_KEYS & item.keys())
        qa = _first_question(item)
        if qa is not None:
            answers = qa.get("answers")
            one_object = isinstance(answers, dict) and not isinstance(answers.get("text"), list)
            return "aihub" if aihub or one_object or AIHUB_QA_KEYS & qa.keys() else "squad"
    return "aihub" if aihub else "squad"


def _first_question(item: dict) -> dict | None:
    paragraphs = item.get("paragraphs")
    for para in paragraphs if isinstance(paragraphs, list) else ():
        qas = para.get("qas") if isinstance(para, dict) else None
        if isinstance(qas, list) and qas and isinstance(qas[0], dict):
            return qas[0]
    return None


def read_aihub(path: Path, root: Any, fmt: str, stats: ReadStats) -> Iterator[tuple[Example, Loc]]:
    """Every kept question of one parsed file of format `fmt` (one of AIHUB_FORMATS), with where it is."""
    top = Loc(path)
    if not isinstance(root, dict):
        raise top.error("the top level must be an object with a 'data' list (AIHub MRC, KorQuAD 2.x) "
                        "or a 'dataset' object (AIHub 기술과학)")
    if fmt == "aihub_tech":
        yield from _read_tech(path, root, top, stats)
        return
    for di, doc in enumerate(get_field(root, "data", list, top)):
        dloc = top / "data" / di
        if not isinstance(doc, dict):
            raise dloc.error("each document must be an object with 'paragraphs' (KorQuAD 2.x: 'context' and 'qas')")
        title = _title(doc, dloc)
        # KorQuAD 2.x documents are their own paragraph; AIHub documents hold a list of them.
        paragraphs = ([(dloc / "paragraphs" / pi, p) for pi, p in enumerate(get_field(doc, "paragraphs", list, dloc))]
                      if "paragraphs" in doc or "context" not in doc else [(dloc, doc)])
        for context, qloc, qa in paragraph_questions(paragraphs, question="an id, 'question' and 'answers' or 'answer'"):
            qid = question_id(qa, qloc, ("question_id", "id", "guid"))
            question = get_field(qa, "question", str, qloc)
            ex = _read_question(qa, qid, question, context, title, str(path), fmt, qloc, stats)
            if ex is not None:
                yield ex, qloc


def _read_tech(path: Path, root: dict, top: Loc, stats: ReadStats) -> Iterator[tuple[Example, Loc]]:
    """`{"dataset_info", "dataset": {"doc_title", "context_info": [{"context", "qas": [...]}]}}`; the
    question in its phrasings `question-1`, `question-2` (ids `<question_id>-1`, `-2`), `answer` a string."""
    docs = root.get("dataset")
    docs = ([(top / "dataset", docs)] if isinstance(docs, dict)
            else [(top / "dataset" / i, d) for i, d in enumerate(get_field(root, "dataset", list, top))])
    for dloc, doc in docs:
        if not isinstance(doc, dict):
            raise dloc.error("each document must be an object with 'context_info'")
        title = _title(doc, dloc)
        contexts = [(dloc / "context_info" / ci, p) for ci, p in enumerate(get_field(doc, "context_info", list, dloc))]
        for context, qloc, qa in paragraph_questions(contexts, paragraph="context_info entry",
                                                     question="'question_id', 'question-1' and 'answer'"):
            qid = question_id(qa, qloc, ("question_id", "id"))
            phrasings = [(f"{qid}-{key[-1]}", get_field(qa, key, str, qloc))
                         for key in ("question-1", "question-2") if qa.get(key) is not None]
            if not phrasings:
                if qa.get("question") is None:
                    raise qloc.error("missing 'question-1'; every question needs one")
                phrasings = [(qid, get_field(qa, "question", str, qloc))]
            answer = qa.get("answer")
            if isinstance(answer, str):  # the span's fields sit beside it on the question
                qa = dict(qa, answer={"text": answer, "answer_start": qa.get("answer_start")})
            for pid, question in phrasings:
                ex = _read_question(qa, pid, question, context, title, str(path), "aihub_tech", qloc, stats)
                if ex is not None:
                    yield ex, qloc


def _title(doc: dict, loc: Loc) -> str:
    """`title`, or AIHub's `doc_title` (a string, or {"kor": ..., "eng": ...})."""
    title = doc.get("title", doc.get("doc_title"))
    if isinstance(title, dict):
        title = title.get("kor", next(iter(title.values()), ""))
    if title is not None and not isinstance(title, (str, int)):
        raise (loc / ("title" if "title" in doc else "doc_title")).error(
            f"must be a string, got {type(title).__name__} {short(title)}")
    return "" if title is None else str(title)


def _read_question(qa: dict, qid: str, question: str, context: str, title: str, source: str, fmt: str, loc: Loc,
                   stats: ReadStats) -> Example | None:
    """One question -> Example; None when its answer is not a span of the context (counted by reason)."""
    stats.questions += 1
    key = "answers" if qa.get("answers") is not None else "answer" if qa.get("answer") is not None else None
    aloc = loc / key if key else loc
    raw = _answer_objects(qa[key], aloc) if key else []
    given = [(i, a) for i, a in raw if _has_text(a)]
    is_impossible = get_field(qa, "is_impossible", bool, loc, required=False, default=key is not None and not given)
    if key is not None and not given and not is_impossible:
        raise aloc.error("has no answer text; give the span's text or set is_impossible to true")
    spans = []
    for i, ans in given:
        span = _place(ans, context, aloc / i if len(raw) > 1 or isinstance(qa[key], list) else aloc, stats)
        if isinstance(span, str):
            if is_impossible:
                continue  # a plausible answer that is not in the context is only left out
            stats.skip(span, f"{aloc}: answer {short(ans.get('text'))}: {span}")
            return None
        spans.append(span)
    stats.unanswerable += is_impossible
    stats.unlabelled += key is None and not is_impossible
    qtype = next((qa[k] for k in ("qa_type", "classtype", "question_type") if qa.get(k) is not None), "")
    return Example(id=qid, question=question, context=context, answers=() if is_impossible else tuple(spans),
                   is_impossible=is_impossible, title=title, source=source,
                   plausible_answers=tuple(spans) if is_impossible else (), question_type=str(qtype),
                   source_format=fmt)


def _answer_objects(raw: Any, loc: Loc) -> list[tuple[int, dict]]:
    """The answer objects of `answers` / `answer`: a list of them, or one object."""
    items = list(enumerate(raw)) if isinstance(raw, list) else [(0, raw)]
    for i, ans in items:
        if not isinstance(ans, dict):
            where = loc / i if isinstance(raw, list) else loc
            raise where.error(f"must be an answer object with 'text' and 'answer_start', got {type(ans).__name__} "
                              f"{short(ans)}")
    return items


def _has_text(ans: dict) -> bool:
    text = ans.get("text")
    return bool(text.strip()) if isinstance(text, str) else bool(text)


def _place(ans: dict, context: str, loc: Loc, stats: ReadStats) -> Answer | str:
    """The answer as a span of the context (its start repaired when off), or why it is not one."""
    text = get_field(ans, "text", (str, list), loc)
    if isinstance(text, list):
        for i, cell in enumerate(text):
            if not isinstance(cell, str):
                raise (loc / "text" / i).error(f"must be a string, got {type(cell).__name__} {short(cell)}")
        if len(text) != 1:
            return TABLE_CELLS
        text = text[0]
    start = get_field(ans, "answer_start", (int, str), loc, required=False, default=-1)
    if isinstance(start, str):  # some AIHub files write the offset as text
        if not start.strip().lstrip("-").isdigit():
            raise (loc / "answer_start").error(f"must be an integer, got str {short(start)}")
        start = int(start)
    if text.strip().lower() in YES_NO_TEXTS and context[start:start + len(text)] != text:
        return YES_NO  # never searched for: "예" is also the first syllable of "예정"
    placed = place_answer(text, max(start, 0), context)  # no offset given (-1): the first occurrence
    stats.repaired += start >= 0 and placed is not None and placed != start
    if placed is not None:
        return Answer(text, placed)
    if ans.get("cell_text") and isinstance(ans["cell_text"], list):
        return TABLE_CELLS
    if ans.get("options"):
        return MULTIPLE_CHOICE
    return NOT_IN_CONTEXT
