"""Error analysis: the seed's CSV rows and columns, token lengths as the seed counted them, and
breakdowns that add up."""

from __future__ import annotations

import csv
import json
import random

import pytest

from mrc.analysis import (CSV_COLUMNS, analyze_result, breakdowns, bucket_labels, error_rows, measure_lengths,
                          question_word, write_error_csv)
from mrc.data import read_examples
from mrc.metrics import evaluate


@pytest.mark.parametrize("question, word", [
    ("훈민정음은 누가 만들었나?", "누구"),
    ("누구의 작품인가?", "누구"),
    ("언제 어디서 태어났는가?", "언제"),          # the first question word decides
    ("그는 어디에서 태어났는가?", "어디"),
    ("몇 년에 완공되었나?", "몇"),
    ("어떻게 전해졌나?", "어떻게"),              # not 어떤
    ("어떤 상을 받았나?", "어떤"),
    ("무슨 상을 받았나?", "무엇"),
    ("어느 나라의 왕인가?", "어느"),
    ("왜 떠났나?", "왜"),
    ("이 건물의 이름은?", "other"),
])
def test_question_word(question, word):
    assert question_word(question) == word


def test_bucket_labels_cover_every_length():
    assert bucket_labels((1, 2, 4, 8, 16)) == ["1", "2", "3-4", "5-8", "9-16", "17+"]


@pytest.fixture(scope="module")
def scored(korquad_train_subset):
    examples, _ = read_examples(korquad_train_subset)
    rng = random.Random(0)
    predictions = {}
    for ex in examples[:-3]:                     # the last three are missing
        answer = ex.answers[0].text
        predictions[ex.id] = rng.choice([answer, answer + "의 일부", answer[:1], ex.context[:8], "무관한 답"])
    return evaluate(examples, predictions), predictions


def test_error_rows_are_the_seed_selection_with_its_columns(scored):
    result, predictions = scored
    rows = error_rows(result, measure_lengths(result.scores, None), 0.85)
    expected = [s for s in result.scores if s.prediction is not None and s.exact_match == 0 and s.f1 < 0.85]
    assert len(rows) == len(expected) > 0
    for row, s in zip(rows, expected):
        assert tuple(row) == CSV_COLUMNS
        assert row["question"] == s.example.question and row["prediction"] == predictions[s.example.id]
        assert row["answer"] == s.example.answers[0].text
        assert 0.0 <= row["f1 score"] < 0.85
        assert row["context length"] == len(s.example.context)


def test_token_lengths_equal_the_seeds_hf_tokenizer_counts(scored, koelectra_folder):
    transformers = pytest.importorskip("transformers")
    result, _ = scored
    seed_tokenizer = transformers.AutoTokenizer.from_pretrained(str(koelectra_folder), do_lower_case=False,
                                                                use_fast=True)
    rows = error_rows(result, measure_lengths(result.scores, koelectra_folder), 0.85)
    for row in rows[:20]:
        assert row["context length"] == len(seed_tokenizer.tokenize(row["context"]))
        assert row["question length"] == len(seed_tokenizer.tokenize(row["question"]))
        assert row["answer length"] == len(seed_tokenizer.tokenize(row["answer"]))


def test_csv_reads_back_like_the_seeds_pandas_file(scored, tmp_path):
    result, _ = scored
    rows = error_rows(result, measure_lengths(result.scores, None), 0.85)
    write_error_csv(rows, tmp_path / "error_analysis.csv")
    raw = (tmp_path / "error_analysis.csv").read_bytes()
    assert raw.startswith("\ufeff".encode("utf-8"))
    with open(tmp_path / "error_analysis.csv", encoding="utf-8-sig", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["", *CSV_COLUMNS]
    assert len(table) == len(rows) + 1
    for i, (line, row) in enumerate(zip(table[1:], rows)):
        assert line[0] == str(i)
        assert line[1:] == [str(row[c]) for c in CSV_COLUMNS]      # commas and quotes in contexts survive


def test_breakdowns_add_up_to_the_totals(scored):
    result, _ = scored
    lengths = measure_lengths(result.scores, None)
    errors = len(error_rows(result, lengths, 0.85))
    tables = breakdowns(result, lengths, 0.85)
    for table in tables[:3]:
        assert sum(r.questions for r in table.rows) == result.total
        assert sum(r.errors for r in table.rows) == errors
        weighted_f1 = sum(r.f1 * r.questions for r in table.rows) / result.total
        assert weighted_f1 == pytest.approx(result.f1)
    split = {r.label: r for r in tables[3].rows}
    partial = sum(1 for s in result.scores if s.prediction is not None and s.exact_match == 0 and 0 < s.f1 < 0.85)
    assert split["partial overlap (F1 > 0)"].questions == partial
    assert split["complete miss (F1 = 0)"].questions == errors - partial


def test_analyze_result_writes_the_csv_beside_the_predictions(scored, korquad_train_subset, tmp_path):
    _, predictions = scored
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(predictions, ensure_ascii=False), encoding="utf-8")
    rows = analyze_result(korquad_train_subset, path, 0.5, None)
    assert (tmp_path / "error_analysis.csv").is_file()
    assert rows and all(r["f1 score"] < 0.5 for r in rows)
