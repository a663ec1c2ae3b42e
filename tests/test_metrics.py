"""mrc.metrics gives the official KorQuAD v1.0 numbers: checked by hand and against a plain,
independent reading of the official script's rules over the real dev set."""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter

import pytest

from mrc.data import Answer, Example, read_examples
from mrc.errors import MRCError
from mrc.metrics import evaluate, exact_match_score, f1_score, load_predictions, normalize_answer


# ---- the reference: the official rules written out step by step --------------------------------

def reference_normalize(s: str) -> str:
    for ch in ["'", '"', "《", "》", "<", ">", "〈", "〉", "(", ")", "‘", "’"]:
        s = re.sub(re.escape(ch), " ", s)
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    return " ".join(s.split())


def reference_f1(prediction: str, truth: str) -> float:
    pred_chars = [c for tok in reference_normalize(prediction).split() for c in tok]
    truth_chars = [c for tok in reference_normalize(truth).split() for c in tok]
    same = sum((Counter(pred_chars) & Counter(truth_chars)).values())
    if same == 0:
        return 0
    p, r = same / len(pred_chars), same / len(truth_chars)
    return 2 * p * r / (p + r)


def reference_evaluate(dataset: list, predictions: dict) -> dict:
    em = f1 = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [a["text"] for a in qa["answers"]]
                pred = predictions[qa["id"]]
                em += max(reference_normalize(pred) == reference_normalize(t) for t in truths)
                f1 += max(reference_f1(pred, t) for t in truths)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


def perturb(answer: str, context: str, rng: random.Random) -> str:
    """A plausible model output near the answer: exact, wrapped, cut, extended, recased, or wrong."""
    at = context.find(answer)
    choice = rng.randrange(10)
    if choice == 0:
        return answer
    if choice == 1:
        return f"《{answer}》" if rng.random() < 0.5 else f"'{answer}'의"
    if choice == 2:
        return answer[: max(1, len(answer) // 2)]
    if choice == 3:
        return context[max(0, at - rng.randrange(6)): at + len(answer) + rng.randrange(12)]
    if choice == 4:
        return answer.upper() + rng.choice([".", ",", "!", " ", "  (주)", "·"])
    if choice == 5:
        return ""
    if choice == 6:
        start = rng.randrange(max(1, len(context) - 20))
        return context[start:start + rng.randrange(1, 20)]
    if choice == 7:
        return " ".join(answer)
    if choice == 8:
        return answer.replace(" ", "")
    return f"({answer}) 〈{answer[::-1]}〉"


# ---- hand-checked cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("《한국》의 (수도)", "한국 의 수도"),
    ("'서울'", "서울"),
    ("U.S.A  Army", "usa army"),
    ("서울·부산", "서울·부산"),            # the middle dot is no ASCII punctuation: kept
    ("「서울」", "「서울」"),              # corner brackets are not in the official list
    ("‘1945년’ 8월\t15일", "1945년 8월 15일"),
    ("...", ""),
])
def test_normalization_matches_hand_computed_strings(text, expected):
    assert normalize_answer(text) == expected


def test_f1_counts_characters_without_whitespace():
    assert f1_score("서울특별시", "서울") == pytest.approx(2 * 0.4 * 1.0 / 1.4)
    assert f1_score("aab", "ab") == pytest.approx(0.8)            # the second "a" has no partner
    assert f1_score("서 울", "서울") == 1.0
    assert f1_score("부산", "서울") == 0.0
    assert f1_score("", "서울") == 0.0


def test_exact_match_ignores_quotes_brackets_case_and_punctuation():
    assert exact_match_score("'세종대왕'", "세종대왕")
    assert exact_match_score("(KOREA)!", "korea")
    assert not exact_match_score("세종대왕의", "세종대왕")


def example(qid: str, answers: list[str], impossible: bool = False) -> Example:
    return Example(id=qid, question="?", context=" ".join(answers),
                   answers=tuple(Answer(a, 0) for a in answers), is_impossible=impossible)


def test_missing_predictions_score_zero_and_are_listed_unknown_ids_are_counted():
    examples = [example("a", ["서울"]), example("b", ["부산"]), example("c", ["대구"])]
    result = evaluate(examples, {"a": "서울", "c": "대구광역시", "zzz": "x"})
    assert result.total == 3 and result.missing == 1 and result.missing_ids == ["b"]
    assert result.unknown == 1
    assert result.exact_match == pytest.approx(100 / 3)
    assert result.f1 == pytest.approx(100 * (1 + 2 * (2 / 5) / (1 + 2 / 5)) / 3)
    assert result.summary() == {"exact_match": result.exact_match, "f1": result.f1, "total": 3, "missing": 1}


def test_best_ground_truth_counts_and_unanswerable_wants_empty():
    examples = [example("a", ["서울", "서울특별시"]), example("b", [], impossible=True),
                example("c", [], impossible=True)]
    result = evaluate(examples, {"a": "서울특별시", "b": "", "c": "부산"})
    assert [s.exact_match for s in result.scores] == [1.0, 1.0, 0.0]
    assert [s.f1 for s in result.scores] == [1.0, 1.0, 0.0]


def test_non_string_prediction_is_an_error_naming_the_id():
    with pytest.raises(MRCError, match="'b'.*list.*n-best"):
        evaluate([example("a", ["서울"])], {"a": "서울", "b": [{"text": "x"}]})


def test_bad_predictions_files_are_errors_saying_what_is_wrong(tmp_path):
    with pytest.raises(MRCError, match="not found"):
        load_predictions(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{\"a\": ", encoding="utf-8")
    with pytest.raises(MRCError, match="not valid JSON at line 1"):
        load_predictions(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(MRCError, match="expected a JSON object"):
        load_predictions(tmp_path / "list.json")


# ---- the official numbers on real data ------------------------------------------------------------

def test_dev_set_scores_equal_the_official_rules_on_perturbed_predictions(korquad_dev):
    dataset = json.loads(korquad_dev.read_text(encoding="utf-8"))["data"]
    examples, stats = read_examples(korquad_dev)
    assert stats.skipped == 0
    rng = random.Random(0)
    predictions = {ex.id: perturb(ex.answers[0].text, ex.context, rng)
                   for ex in examples if rng.random() > 0.02}      # about 2% missing
    ours = evaluate(examples, predictions)
    reference = reference_evaluate(dataset, predictions)
    assert abs(ours.exact_match - reference["exact_match"]) < 1e-9
    assert abs(ours.f1 - reference["f1"]) < 1e-9
    assert ours.total == 5774 and ours.missing == 5774 - len(predictions)
    assert 10 < ours.exact_match < 90 and ours.f1 > ours.exact_match     # the perturbations bite


def test_multiple_ground_truths_of_klue_equal_the_official_rules(klue_dev):
    dataset = json.loads(klue_dev.read_text(encoding="utf-8"))["data"]
    examples, _ = read_examples(klue_dev)
    answerable = [ex for ex in examples if ex.answers]
    assert any(len(ex.answers) > 1 for ex in answerable)
    rng = random.Random(1)
    predictions = {ex.id: perturb(rng.choice(ex.answers).text, ex.context, rng) for ex in answerable}
    ours = evaluate(answerable, predictions)
    kept = {ex.id for ex in answerable}
    # KLUE names the id `guid`; the official loop reads `id`.
    only_answerable = [{"paragraphs": [{"qas": [{**qa, "id": qa["guid"]} for qa in p["qas"] if qa["guid"] in kept]}
                                       for p in article["paragraphs"]]} for article in dataset]
    reference = reference_evaluate(only_answerable, predictions)
    assert abs(ours.exact_match - reference["exact_match"]) < 1e-9
    assert abs(ours.f1 - reference["f1"]) < 1e-9
