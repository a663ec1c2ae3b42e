"""Readers: real KorQuAD / KLUE files, JSON Lines shapes, answer repair, and the errors users meet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrc.data import Answer, read_examples
from mrc.errors import MRCError


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def _squad(qas, context="서울은 한국의 수도이다. 서울의 인구는 많다.", version=True):
    root = {"data": [{"title": "서울", "paragraphs": [{"context": context, "qas": qas}]}]}
    if version:
        root["version"] = "v2.0"
    return root


def test_korquad_dev_reads_every_question_with_aligned_answers(korquad_dev):
    examples, stats = read_examples(korquad_dev)
    raw = json.loads(korquad_dev.read_text(encoding="utf-8"))
    raw_ids = [qa["id"] for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert [ex.id for ex in examples] == raw_ids
    assert (stats.questions, stats.kept, stats.skipped, stats.unanswerable) == (5774, 5774, 0, 0)
    assert all(ex.context[a.start:a.end] == a.text for ex in examples for a in ex.answers)
    assert all(ex.answers and ex.is_labelled and ex.source == str(korquad_dev) for ex in examples)
    assert "5,774 questions" in stats.summary()


def test_train_file_without_version_key_reads(korquad_train_subset):
    examples, stats = read_examples(korquad_train_subset)
    assert "version" not in json.loads(korquad_train_subset.read_text(encoding="utf-8"))
    assert stats.kept == len(examples) == 142
    assert examples[0].title


def test_klue_guid_several_answers_and_unanswerable(klue_train, klue_dev):
    examples, stats = read_examples([klue_train, klue_dev])
    raw_qas = [qa for f in (klue_train, klue_dev) for a in json.loads(f.read_text(encoding="utf-8"))["data"]
               for p in a["paragraphs"] for qa in p["qas"]]
    assert [ex.id for ex in examples] == [qa["guid"] for qa in raw_qas]
    assert stats.unanswerable == sum(qa["is_impossible"] for qa in raw_qas) == 45 + 28
    impossible = [ex for ex in examples if ex.is_impossible]
    assert all(not ex.answers and ex.is_labelled for ex in impossible)
    assert any(ex.plausible_answers for ex in impossible)
    assert any(len(ex.answers) > 1 for ex in examples)
    assert {ex.question_type for ex in examples} >= {"1", "2"}
    assert stats.files == 2


def test_jsonl_both_answer_shapes_and_unlabelled(tmp_path):
    ctx = "세종대왕은 훈민정음을 창제하였다."
    lines = [
        {"id": "a", "question": "누가 창제?", "context": ctx, "answers": [{"text": "세종대왕", "answer_start": 0}]},
        {"id": "b", "question": "무엇을?", "context": ctx, "answers": {"text": ["훈민정음"], "answer_start": [6]}},
        {"id": "c", "question": "언제?", "context": ctx},
        {"id": "d", "question": "어디서?", "context": ctx, "answers": {"text": [], "answer_start": []}},
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n", encoding="utf-8")
    examples, stats = read_examples(path)
    assert [ex.answers for ex in examples[:2]] == [(Answer("세종대왕", 0),), (Answer("훈민정음", 6),)]
    assert not examples[2].answers and not examples[2].is_labelled
    assert examples[3].is_impossible and examples[3].is_labelled
    assert (stats.unlabelled, stats.unanswerable) == (1, 1)


def test_auto_detects_jsonl_under_json_suffix_and_format_can_be_forced(tmp_path):
    line = {"guid": "g1", "question": "q", "context": "abc", "answers": [{"text": "b", "answer_start": 1}]}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(line) + "\n" + json.dumps(dict(line, guid="g2")) + "\n", encoding="utf-8")
    assert [ex.id for ex in read_examples(path)[0]] == ["g1", "g2"]
    assert len(read_examples(path, data_format="jsonl")[0]) == 2
    with pytest.raises(MRCError, match="not valid JSON"):
        read_examples(path, data_format="squad")


def test_forced_klue_format_needs_guid(tmp_path):
    path = _write(tmp_path / "k.json", _squad([{"id": "x", "question": "q", "answers": []}]))
    with pytest.raises(MRCError, match=r"qas\[0\]: missing 'guid'"):
        read_examples(path, data_format="klue")


def test_misaligned_answer_start_moves_to_nearest_occurrence(tmp_path):
    ctx = "서울은 한국의 수도이다. 서울의 인구는 많다."
    second = ctx.index("서울", 1)
    qas = [{"id": "near-second", "question": "q", "answers": [{"text": "서울", "answer_start": second + 3}]},
           {"id": "near-first", "question": "q", "answers": [{"text": "서울", "answer_start": 2}]},
           {"id": "ok", "question": "q", "answers": [{"text": "한국", "answer_start": ctx.index("한국")}]}]
    examples, stats = read_examples(_write(tmp_path / "d.json", _squad(qas, ctx)))
    assert [ex.answers[0].start for ex in examples] == [second, 0, ctx.index("한국")]
    assert stats.repaired == 2 and stats.skipped == 0


def test_answer_not_in_context_skips_the_question_and_says_where(tmp_path):
    qas = [{"id": "bad", "question": "q", "answers": [{"text": "부산", "answer_start": 0}]},
           {"id": "good", "question": "q", "answers": [{"text": "서울", "answer_start": 0}]}]
    path = _write(tmp_path / "d.json", _squad(qas, version=False))
    examples, stats = read_examples(path)
    assert [ex.id for ex in examples] == ["good"]
    assert (stats.questions, stats.kept, stats.skipped) == (2, 1, 1)
    assert "data[0].paragraphs[0].qas[0].answers[0]" in stats.skipped_where[0]
    assert "1 skipped" in stats.summary()


def test_duplicate_ids_are_an_error_across_files(tmp_path):
    qa = {"id": "same", "question": "q", "answers": [{"text": "서울", "answer_start": 0}]}
    first = _write(tmp_path / "a.json", _squad([qa]))
    second = _write(tmp_path / "b.json", _squad([qa]))
    with pytest.raises(MRCError, match=r"b\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: id 'same' was already used at .*a\.json"):
        read_examples([first, second])


@pytest.mark.parametrize("qa, where, what", [
    ({"id": "x", "question": "q", "answers": [{"text": "서울", "answer_start": "0"}]},
     r"qas\[0\]\.answers\[0\]\.answer_start", "must be an integer"),
    ({"id": "x", "question": "q", "answers": [{"text": "서울", "answer_start": True}]},
     r"qas\[0\]\.answers\[0\]\.answer_start", "must be an integer, got bool"),
    ({"id": "x", "question": "q", "answers": [{"answer_start": 0}]}, r"qas\[0\]\.answers\[0\]", "missing 'text'"),
    ({"id": "x", "answers": []}, r"qas\[0\]", "missing 'question'"),
    ({"question": "q", "answers": []}, r"qas\[0\]", "missing 'id' or 'guid'"),
    ({"id": "x", "question": "q", "answers": [{"text": "", "answer_start": 0}]}, r"qas\[0\]\.answers\[0\]\.text", "is empty"),
    ({"id": "x", "question": "q", "is_impossible": True, "answers": [{"text": "서울", "answer_start": 0}]},
     r"qas\[0\]\.is_impossible", "answers' is not empty"),
    ({"id": "x", "question": "q", "answers": {"text": ["서울"], "answer_start": []}}, r"qas\[0\]\.answers", "must pair up"),
])
def test_malformed_question_names_file_and_json_path(tmp_path, qa, where, what):
    path = _write(tmp_path / "bad.json", _squad([{"id": "ok", "question": "q", "answers": []}, qa]))
    where = where.replace(r"qas\[0\]", r"qas\[1\]")
    with pytest.raises(MRCError, match=rf"bad\.json: data\[0\]\.paragraphs\[0\]\.{where}: .*{what}"):
        read_examples(path)


def test_malformed_files_name_the_problem(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n{"title": }]}', encoding="utf-8")
    with pytest.raises(MRCError, match=r"broken\.json: not valid JSON at line 2 column"):
        read_examples(broken)
    with pytest.raises(MRCError, match=r"cannot tell the format.*--data_format"):
        read_examples(_write(tmp_path / "list.json", [1, 2]))
    with pytest.raises(MRCError, match=r"missing\.json: file not found"):
        read_examples(tmp_path / "missing.json")
    with pytest.raises(MRCError, match=r"data\[0\]: missing 'paragraphs'"):
        read_examples(_write(tmp_path / "nopara.json", {"data": [{"title": "t"}]}))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"id": "a", "question": "q", "context": "c"}\n{"id": "b", "question": \n', encoding="utf-8")
    with pytest.raises(MRCError, match=r"bad\.jsonl:2: not valid JSON"):
        read_examples(jsonl)
    jsonl.write_text('{"id": "a", "question": "q", "context": 5}\n', encoding="utf-8")
    with pytest.raises(MRCError, match=r"bad\.jsonl:1: context: must be a string"):
        read_examples(jsonl)
    with pytest.raises(MRCError, match="unknown data format"):
        read_examples(jsonl, data_format="csv")
