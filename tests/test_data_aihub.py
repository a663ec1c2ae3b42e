"""AIHub MRC shapes and KorQuAD 2.x: hand-written files in each shape (never real AIHub data).

Each shape is a small file written into tmp_path with Korean text, integer ids, unanswerable
questions with their plausible answer, an HTML context, yes/no, multiple-choice and table-cell
answers; the reader must give exactly the examples listed beside it, and a training run over
a weighted mix of every shape must run to the end on the tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mrc.data import read_examples
from mrc.data_aihub import nested_format
from mrc.data_sources import TrainFile, read_sources
from mrc.dist import DistContext
from mrc.errors import MRCError
from mrc.examples import MULTIPLE_CHOICE, NOT_IN_CONTEXT, TABLE_CELLS, YES_NO
from mrc.inspect_windows import main as inspect_main
from mrc.reporting import Reporter
from mrc.train_data import read_train_examples
from conftest import cli_module  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

SEJONG = "세종대왕은 1443년에 훈민정음을 창제하였다. 집현전 학자들이 이 일을 도왔으며, 훈민정음은 1446년에 반포되었다."
NEWS = "서울시는 3일 한강공원에 자전거 도로 12킬로미터를 새로 만든다고 밝혔다. 공사는 다음 달 시작되어 연말에 끝날 예정이다."
ADMIN = "2024년 주민등록 인구는 5,122만 명으로 전년보다 11만 명 줄었다. 65세 이상 인구 비율은 19.2%였다."
LAW = "임대차 계약은 2년간 유효하며, 임차인은 계약 갱신을 한 번 요구할 수 있다. 보증금은 계약이 끝난 뒤 1개월 안에 돌려주어야 한다."
TABLE = "<table><tr><th>지역</th><th>인구</th></tr><tr><td>서울</td><td>940만</td></tr><tr><td>부산</td><td>330만</td></tr></table>"
HTML = ("<html><body><h1>한글</h1><p>한글은 1443년 세종이 창제한 문자이다.</p>"
        "<table><tr><td>창제</td><td>1443년</td></tr></table></body></html>")
TECH = "리튬 이온 전지는 양극과 음극 사이를 리튬 이온이 오가며 충전과 방전을 한다. 전해질로는 주로 유기 용매가 쓰인다."


def at(context: str, text: str, nth: int = 0) -> int:
    """Offset of the nth occurrence of `text` in `context`."""
    pos = -1
    for _ in range(nth + 1):
        pos = context.index(text, pos + 1)
    return pos


# Each shape: (file name, root, expected format, expected examples, expected skips by reason, repaired).
# An expected example is (id, question type, ((answer text, start), ...), is_impossible, plausible texts).

def minds_lab():
    root = {"creator": "MINDs Lab.", "version": "1", "data": [
        {"title": "세종대왕", "paragraphs": [{"context": SEJONG, "qas": [
            {"question": "세종대왕이 훈민정음을 창제한 해는?", "id": "m6_415182-1", "classtype": "work_when",
             "answers": [{"text": "1443년", "answer_start": at(SEJONG, "1443년")}]},
            {"question": "훈민정음 창제를 도운 사람들은?", "id": "m6_415182-2", "classtype": "work_who",
             "is_impossible": False, "answers": [{"text": "집현전 학자들", "answer_start": at(SEJONG, "집현전") + 4}]},
            {"question": "훈민정음을 처음 인쇄한 곳은?", "id": "m6_415182-3", "classtype": "work_where",
             "is_impossible": True, "answers": [{"text": "집현전", "answer_start": at(SEJONG, "집현전")}]}]}]},
        {"title": "도서", "agency": "국립중앙도서관", "paragraphs": [{"context": SEJONG, "qas": [
            {"question": "훈민정음이 반포된 해는?", "id": "b1", "answers": [{"text": "1446년", "answer_start": 0}]},
            {"question": "세종의 아버지는?", "id": "b2", "answers": [{"text": "태종", "answer_start": 0}]}]}]}]}
    expected = [("m6_415182-1", "work_when", (("1443년", at(SEJONG, "1443년")),), False, ()),
                ("m6_415182-2", "work_who", (("집현전 학자들", at(SEJONG, "집현전")),), False, ()),
                ("m6_415182-3", "work_where", (), True, ("집현전",)),
                ("b1", "", (("1446년", at(SEJONG, "1446년")),), False, ())]
    return "ko_wiki_v1_squad.json", root, "aihub", expected, {NOT_IN_CONTEXT: 1}, 2


def news():
    def qa(qid, question, qa_type, text, start, impossible=False, options=()):
        return {"question_id": qid, "question": question, "qa_type": qa_type, "is_impossible": impossible,
                "answers": {"text": text, "answer_start": start, "clue_text": NEWS[:20], "clue_start": 0,
                            "options": list(options)}}
    root = {"Dataset": {"identifier": "NIA_MRC_news", "name": "뉴스 기사 기계독해 데이터", "version": "1.0"}, "data": [
        {"doc_id": "2202552", "doc_title": "한강공원 자전거 도로 확충", "doc_source": "한국일보",
         "doc_published": 20200403, "doc_class": {"code": "society", "name": "사회"}, "created": "2020-09-01",
         "paragraphs": [{"context": NEWS, "context_id": 579695, "qas": [
             qa(4559297, "서울시가 새로 만드는 자전거 도로의 길이는?", 1, "12킬로미터", at(NEWS, "12킬로미터")),
             qa(4559298, "공사가 끝나는 시기는?", 2, "연말", at(NEWS, "연말")),
             qa(4559299, "자전거 도로 공사의 예산은 얼마인가?", 3, "12킬로미터", at(NEWS, "12킬로미터"), impossible=True),
             qa(4559300, "공사는 올해 끝나는가?", 1, "예", -1)]}]},
        {"doc_id": 77, "doc_title": "2024 인구 통계", "doc_source": "행정안전부", "doc_published": "2024",
         "doc_class": {"code": "admin"}, "paragraphs": [{"context": ADMIN, "context_id": 1, "table_title": "인구 현황",
                                                          "qas": [
             qa(101, "2024년 주민등록 인구는?", 1, "5,122만 명", at(ADMIN, "5,122만 명")),
             qa(102, "인구는 전년보다 늘었는가, 줄었는가?", 2, "감소", -1, options=("증가", "감소")),
             qa(103, "노인 인구 비율은?", 1, "19.2%", at(ADMIN, "19.2%") + 3)]}]}]}
    expected = [("4559297", "1", (("12킬로미터", at(NEWS, "12킬로미터")),), False, ()),
                ("4559298", "2", (("연말", at(NEWS, "연말")),), False, ()),
                ("4559299", "3", (), True, ("12킬로미터",)),
                ("101", "1", (("5,122만 명", at(ADMIN, "5,122만 명")),), False, ()),
                ("103", "1", (("19.2%", at(ADMIN, "19.2%")),), False, ())]
    return "news_mrc.json", root, "aihub", expected, {YES_NO: 1, MULTIPLE_CHOICE: 1}, 1


def finance_law_and_tables():
    root = {"Dataset": {"name": "금융·법률 문서 기계독해"}, "data": [
        {"doc_id": "L-1", "doc_title": "주택임대차보호법 해설", "paragraphs": [{"context": LAW, "context_id": 9, "qas": [
            {"question_id": 7001, "question": "임대차 계약의 유효 기간은?", "qa_type": 1,
             "answer": {"text": "2년간", "answer_start": at(LAW, "2년간"), "clue_text": "임대차 계약은 2년간"}},
            {"question_id": 7002, "question": "보증금은 언제까지 돌려주어야 하나?", "qa_type": 1,
             "answer": {"text": "계약이 끝난 뒤 1개월 안에", "answer_start": at(LAW, "계약이 끝난")}},
            {"question_id": 7003, "question": "갱신 요구는 몇 번? (1) 한 번 (2) 두 번", "qa_type": 2,
             "answer": {"text": "(1) 한 번", "options": ["(1) 한 번", "(2) 두 번"]}},
            {"question_id": 7004, "question": "월세는 얼마인가?", "qa_type": 3, "is_impossible": True,
             "answer": {"text": "보증금", "answer_start": at(LAW, "보증금")}}]}]},
        {"doc_id": "T-1", "doc_title": "지역별 인구", "paragraphs": [{"context": TABLE, "context_id": 10, "qas": [
            {"question_id": "T1", "question": "서울의 인구는?",
             "answer": {"text": "940만", "answer_start": at(TABLE, "940만"), "cell_text": ["940만"]}},
            {"question_id": "T2", "question": "서울과 부산의 인구는?",
             "answer": {"text": ["940만", "330만"], "cell_text": ["940만", "330만"]}},
            {"question_id": "T3", "question": "인구가 330만인 지역은?", "answer": {"text": ["부산"]}}]}]}]}
    expected = [("7001", "1", (("2년간", at(LAW, "2년간")),), False, ()),
                ("7002", "1", (("계약이 끝난 뒤 1개월 안에", at(LAW, "계약이 끝난")),), False, ()),
                ("7004", "3", (), True, ("보증금",)),
                ("T1", "", (("940만", at(TABLE, "940만")),), False, ()),
                ("T3", "", (("부산", at(TABLE, "부산")),), False, ())]
    return "law_and_tables.json", root, "aihub", expected, {MULTIPLE_CHOICE: 1, TABLE_CELLS: 1}, 0


def korquad2():
    root = {"version": "KorQuAD_2.1", "data": [
        {"title": "한글", "url": "https://ko.wikipedia.org/wiki/한글", "context": HTML,
         "raw_html": "<!DOCTYPE html>" + HTML, "qas": [
             {"question": "한글을 창제한 사람은?", "id": "36615-0-0",
              "answer": {"text": "세종", "answer_start": at(HTML, "세종"), "html_answer_start": at(HTML, "세종") + 15,
                         "html_answer_text": "세종"}},
             {"question": "표에 적힌 창제 연도는?", "id": "36615-1-0",
              "answer": {"text": "1443년", "answer_start": at(HTML, "1443년", 1), "html_answer_start": 0,
                         "html_answer_text": "<td>1443년</td>"}}]}]}
    expected = [("36615-0-0", "", (("세종", at(HTML, "세종")),), False, ()),
                ("36615-1-0", "", (("1443년", at(HTML, "1443년", 1)),), False, ())]
    return "korquad2.1_train_00.json", root, "korquad2", expected, {}, 0


def tech():
    root = {"dataset_info": {"name": "기술과학 문서 기계독해", "version": "1.0"}, "dataset": {
        "doc_id": "TS-0001", "doc_title": {"kor": "리튬 이온 전지의 원리", "eng": "Lithium-ion batteries"},
        "doc_source": "과학기술 보고서", "context_info": [{"context_id": "TS-0001-1", "context": TECH, "qas": [
            {"question_id": 501, "question-1": "양극과 음극 사이를 오가는 것은?", "question-2": "충전할 때 무엇이 이동하나?",
             "answer": "리튬 이온", "answer_start": at(TECH, "리튬 이온", 1),
             "answer_end": at(TECH, "리튬 이온", 1) + 5, "clue": [{"clue_text": "리튬 이온이 오가며"}]},
            {"question_id": 502, "question-1": "전해질로 주로 쓰이는 것은?", "answer": "유기 용매"},
            {"question_id": 503, "question-1": "이 전지의 전압은?", "answer": "3.7볼트"}]}]}}
    expected = [("501-1", "", (("리튬 이온", at(TECH, "리튬 이온", 1)),), False, ()),
                ("501-2", "", (("리튬 이온", at(TECH, "리튬 이온", 1)),), False, ()),
                ("502-1", "", (("유기 용매", at(TECH, "유기 용매")),), False, ())]
    return "TS_0001.json", root, "aihub_tech", expected, {NOT_IN_CONTEXT: 1}, 0


SHAPES = {"minds_lab": minds_lab, "news_and_admin": news, "finance_law_tables": finance_law_and_tables,
          "korquad2": korquad2, "tech": tech}


def write(folder: Path, name: str, root) -> Path:
    path = folder / name
    path.write_text(json.dumps(root, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def as_tuples(examples):
    return [(ex.id, ex.question_type, tuple((a.text, a.start) for a in ex.answers), ex.is_impossible,
             tuple(a.text for a in ex.plausible_answers)) for ex in examples]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_reads_the_expected_examples(shape, tmp_path):
    name, root, fmt, expected, skipped_by, repaired = SHAPES[shape]()
    path = write(tmp_path, name, root)
    examples, stats = read_examples(path)
    assert as_tuples(examples) == expected
    assert all(ex.source_format == fmt and ex.source == str(path) and ex.title for ex in examples)
    assert all(ex.context[a.start:a.end] == a.text for ex in examples for a in ex.answers + ex.plausible_answers)
    assert stats.skipped_by == skipped_by and stats.skipped == sum(skipped_by.values())
    assert stats.repaired == repaired
    assert stats.questions == len(expected) + stats.skipped and stats.unanswerable == sum(e[3] for e in expected)
    assert (as_tuples(read_examples(path, data_format=fmt)[0]), nested_format(root)) == (expected, fmt)
    for reason, n in skipped_by.items():
        assert f"{n} {reason}" in stats.summary()


def test_squad_like_aihub_file_without_markers_reads_as_squad_with_the_same_answers(tmp_path):
    """Shape 1 without `creator` or AIHub fields is plain SQuAD, and gives the same answerable examples."""
    _, root, _, expected, _, _ = minds_lab()
    del root["creator"], root["data"][1]["agency"]
    for qa in root["data"][0]["paragraphs"][0]["qas"]:
        del qa["classtype"]
    root["data"][0]["paragraphs"][0]["qas"].pop(2)  # SQuAD refuses is_impossible with answers
    examples, stats = read_examples(write(tmp_path, "plain.json", root))
    assert {ex.source_format for ex in examples} == {"squad"}
    assert [(ex.id, tuple((a.text, a.start) for a in ex.answers)) for ex in examples] == [
        (e[0], e[2]) for e in expected if not e[3]]
    assert stats.skipped_by == {NOT_IN_CONTEXT: 1}


@pytest.mark.parametrize("shape, edit, where, what", [
    ("news_and_admin", lambda r: r["data"][0]["paragraphs"][0]["qas"][0]["answers"].update(text=5),
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\.text", "must be a string or a list, got int"),
    ("news_and_admin", lambda r: r["data"][0]["paragraphs"][0]["qas"][1].pop("question_id"),
     r"data\[0\]\.paragraphs\[0\]\.qas\[1\]", "missing 'question_id' or 'id' or 'guid'"),
    ("news_and_admin", lambda r: r["data"][0]["paragraphs"][0]["qas"][0]["answers"].update(answer_start="열둘"),
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\.answer_start", "must be an integer"),
    ("news_and_admin", lambda r: r["data"][0]["paragraphs"][0]["qas"][0]["answers"].update(text=""),
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers", "has no answer text"),
    ("news_and_admin", lambda r: r["data"][1]["paragraphs"][0].pop("context"), r"data\[1\]\.paragraphs\[0\]",
     "missing 'context'"),
    ("finance_law_tables", lambda r: r["data"][1]["paragraphs"][0]["qas"][1]["answer"].update(text=["940만", 3]),
     r"data\[1\]\.paragraphs\[0\]\.qas\[1\]\.answer\.text\[1\]", "must be a string, got int"),
    ("finance_law_tables", lambda r: r["data"][0]["paragraphs"][0]["qas"][0].update(answer="2년간"),
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answer", "must be an answer object"),
    ("korquad2", lambda r: r["data"][0]["qas"][0].update(question=None), r"data\[0\]\.qas\[0\]\.question", "is null"),
    ("tech", lambda r: r["dataset"]["context_info"][0]["qas"][1].pop("question-1"),
     r"dataset\.context_info\[0\]\.qas\[1\]", "missing 'question-1'"),
    ("tech", lambda r: r["dataset"].pop("context_info"), r"dataset", "missing 'context_info'"),
    ("minds_lab", lambda r: r["data"][0]["paragraphs"][0]["qas"][0].update(is_impossible="no"),
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.is_impossible", "must be true or false"),
])
def test_malformed_aihub_files_name_file_and_json_path(shape, edit, where, what, tmp_path):
    name, root, *_ = SHAPES[shape]()
    edit(root)
    with pytest.raises(MRCError, match=rf"{name.replace('.', '[.]')}: {where}: .*{what}"):
        read_examples(write(tmp_path, name, root))


@pytest.mark.parametrize("answer, reason", [
    ({"text": "아니오", "answer_start": -1}, YES_NO),
    ({"text": "yes"}, YES_NO),
    ({"text": "예", "answer_start": 0}, YES_NO),  # "예" is inside "예정이다": a yes/no answer is never searched for
    ({"text": "두 번", "options": ["한 번", "두 번"]}, MULTIPLE_CHOICE),
    ({"text": ["12", "킬로미터"]}, TABLE_CELLS),
    ({"text": "열두 킬로미터", "cell_text": ["열두 킬로미터"]}, TABLE_CELLS),
    ({"text": "부산시", "answer_start": 3}, NOT_IN_CONTEXT),
    ({"text": "예정", "answer_start": at(NEWS, "예정")}, None),  # a span, whatever it says
    ({"text": "12킬로미터", "options": ["12킬로미터", "20킬로미터"]}, None),  # a choice that is also a span
    ({"text": ["연말"], "cell_text": ["연말"]}, None),
])
def test_non_extractive_answers_are_skipped_by_reason(answer, reason, tmp_path):
    root = {"Dataset": {}, "data": [{"doc_id": 1, "doc_title": "t", "paragraphs": [{"context": NEWS, "qas": [
        {"question_id": 1, "question": "질문", "is_impossible": False, "answers": answer}]}]}]}
    examples, stats = read_examples(write(tmp_path, "one.json", root))
    assert stats.skipped_by == ({reason: 1} if reason else {})
    assert len(examples) == (0 if reason else 1)
    if reason:
        assert "qas[0]" in stats.skipped_where[0] and reason in stats.skipped_where[0]
    else:
        answer = examples[0].answers[0]
        assert answer.start == at(NEWS, answer.text)  # the given offset, or the first occurrence when none


def test_colliding_ids_are_namespaced_for_training_and_refused_for_prediction(tmp_path):
    name, root, *_ = news()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    first = write(tmp_path / "a", name, root)
    second = write(tmp_path, "admin_mrc.json", root)
    korquad = write(tmp_path, "korquad2.json", korquad2()[1])
    read = read_sources([TrainFile(first, 1.0), TrainFile(second, 0.5), TrainFile(korquad, 1.0)])
    ids = [[ex.id for ex in examples] for examples in read.examples]
    assert ids[0] == [f"news_mrc/{i}" for i in ("4559297", "4559298", "4559299", "101", "103")]
    assert ids[1] == [f"admin_mrc/{i}" for i in ("4559297", "4559298", "4559299", "101", "103")]
    assert ids[2] == ["36615-0-0", "36615-1-0"]  # unique ids keep their meaning
    assert [s.namespaced for s in read.sources] == [5, 5, 0]
    with pytest.raises(MRCError, match="id '4559297' was already used"):
        read_examples([first, second])  # prediction / evaluation: ids mean what the file says
    with pytest.raises(MRCError, match="given twice in --train_file"):
        read_sources([TrainFile(first), TrainFile(tmp_path / "a" / ".." / "a" / name)])
    same_stem = write(tmp_path / "b", name, root)
    read = read_sources([TrainFile(first), TrainFile(same_stem)])
    assert read.examples[1][0].id == "news_mrc@2/4559297" and read.examples[0][0].id == "news_mrc@1/4559297"


@pytest.fixture(scope="module")
def all_shapes(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("shapes")
    return [write(folder, name, root) for name, root, *_ in (make() for make in SHAPES.values())]


def test_training_on_a_weighted_mix_of_every_shape_runs_to_the_end(all_shapes, tiny_model, korquad_dev, tmp_path,
                                                                   capsys, one_thread):
    cli = cli_module("train")
    weights = ["1", "0.5", "2", "1.5", "1"]
    out = tmp_path / "run"
    cli.main(["--model_name_or_path", str(tiny_model), "--output_dir", str(out), "--do_train", "--do_eval",
              "--train_file", *[f"{p}:{w}" for p, w in zip(all_shapes, weights)], "--predict_file", str(korquad_dev),
              "--max_eval_samples", "8", "--version_2_with_negative", "--max_seq_length", "96", "--doc_stride", "32",
              "--max_query_length", "24", "--per_gpu_train_batch_size", "4", "--max_steps", "3",
              "--logging_steps", "1", "--save_steps", "0", "--neg_ratio", "0.5", "--features_cache_dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert "data sources" in err and "trained 3 steps" in err and "Traceback" not in err
    sources = json.loads((out / "training_args.json").read_text(encoding="utf-8"))["train_sources"]
    assert [s["file"] for s in sources] == [str(p) for p in all_shapes]
    assert [s["weight"] for s in sources] == [float(w) for w in weights]
    assert [s["formats"] for s in sources] == ["aihub", "aihub", "aihub", "korquad2", "aihub_tech"]
    for source, make in zip(sources, SHAPES.values()):
        _, _, _, expected, skipped_by, repaired = make()
        assert (source["kept"], source["used"], source["skipped_by"], source["repaired"]) == (
            len(expected), len(expected), skipped_by, repaired)
        assert source["unanswerable"] == sum(e[3] for e in expected)
        assert source["windows"] >= len(expected)
    assert sum(s["epoch_windows"] for s in sources) > 0
    assert (out / "model.safetensors").is_file() and "3" in json.loads((out / "eval_results.json").read_text())


def test_features_cli_prints_the_per_source_table(all_shapes, koelectra_folder, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps a table to the console's width
    inspect_main([*[str(p) for p in all_shapes[:3]], f"{all_shapes[4]}:2", "--model", str(koelectra_folder),
                  "--no_cache", "--max_seq_length", "96", "--doc_stride", "32", "--max_query_length", "24",
                  "--neg_ratio", "0"])
    printed = capsys.readouterr().out
    assert "data sources" in printed
    for name in ("ko_wiki_v1_squad.json", "news_mrc.json", "law_and_tables.json", "TS_0001.json"):
        assert name in printed
    for row in ("yes/no answer", "multiple choice", "table cells", "answer not in context", "epoch 1 windows"):
        assert row in printed


def test_training_reads_colliding_files_namespaced_and_says_how_many(tmp_path, capsys):
    name, root, *_ = news()
    first, second = write(tmp_path, "TL_span_extraction.json", root), write(tmp_path, "행정문서1.json", root)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    train = read_train_examples([TrainFile(first), TrainFile(second, 0.5)], Reporter(ctx), with_unanswerable=False,
                                max_samples=None, verbose=True)
    err = capsys.readouterr().err
    assert "5 question ids also used by another --train_file file" in err
    assert "1 unanswerable or unlabelled questions not trained on" in err and "skipped" in err
    assert [ex.id for ex in train.examples] == [f"{stem}/{i}" for stem in ("TL_span_extraction", "행정문서1")
                                                for i in ("4559297", "4559298", "101", "103")]
    assert train.file_of.tolist() == [0] * 4 + [1] * 4
    assert [(s.namespaced, s.used, s.unanswerable) for s in train.sources] == [(5, 4, 1), (5, 4, 1)]


@pytest.mark.parametrize("fixture, fmt", [("korquad_dev", "squad"), ("korquad_train_subset", "squad"),
                                          ("klue_train", "klue"), ("klue_dev", "klue")])
def test_real_korquad_and_klue_files_are_not_taken_for_aihub(fixture, fmt, request):
    path = request.getfixturevalue(fixture)
    assert nested_format(json.loads(path.read_text(encoding="utf-8"))) == "squad"
    assert {ex.source_format for ex in read_examples(path)[0]} == {fmt}
