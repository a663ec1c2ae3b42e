"""The official KorQuAD v1.0 exact match and character-level F1.

Same numbers as the official `evaluate-v1.0.py` on any predictions file: the answer is
normalised (the quote and bracket characters ' " 《 》 < > 〈 〉 ( ) ‘ ’ become spaces, the text
is lower-cased, ASCII punctuation is removed, whitespace runs fold to one space); EM compares the
normalised strings; F1 compares the multisets of characters of the normalised strings with their
whitespace removed. Each question takes its best score over its ground truths; the totals are
summed in dataset order and scaled by 100 / questions, as the official script does.

Beyond the official script (which would fail on them):
- a question marked unanswerable (SQuAD v2, KLUE) has the one ground truth "", and scores 1 on
  both metrics exactly when the prediction normalises to "" (the SQuAD v2 rule);
- a question without answers that is not marked unanswerable cannot be scored: it is left out
  of the total and counted as `unlabelled`.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mrc.data import Example
from mrc.errors import MRCError
from mrc.text import parse_json

# The official script replaces these with spaces before anything else.
_TO_SPACE = str.maketrans({ch: " " for ch in "'\"《》<>〈〉()‘’"})
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """The official normalisation (the replacements commute with lower-casing, so one pass each)."""
    return " ".join(text.translate(_TO_SPACE).lower().translate(_PUNCTUATION).split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Character-level F1 of the normalised strings, whitespace removed."""
    pred_chars = normalize_answer(prediction).replace(" ", "")
    truth_chars = normalize_answer(ground_truth).replace(" ", "")
    same = sum((Counter(pred_chars) & Counter(truth_chars)).values())
    if same == 0:
        return 0.0
    precision = 1.0 * same / len(pred_chars)
    recall = 1.0 * same / len(truth_chars)
    return (2 * precision * recall) / (precision + recall)


def unanswerable_score(prediction: str) -> float:
    """EM and F1 of a prediction for an unanswerable question: 1 when it normalises to ""."""
    return 1.0 if normalize_answer(prediction) == "" else 0.0


@dataclass(frozen=True)
class ExampleScore:
    """One scored question; `prediction` is None when the predictions file has no entry for it."""

    example: Example
    prediction: str | None
    exact_match: float      # 0 or 1
    f1: float               # in [0, 1]


@dataclass
class EvalResult:
    """Totals in percent, as the official script prints them, and the per-question scores."""

    exact_match: float
    f1: float
    total: int
    missing: int
    missing_ids: list[str] = field(default_factory=list)
    unknown: int = 0            # prediction ids that are no question of the dataset (ignored)
    unlabelled: int = 0         # questions without answers (not marked unanswerable): not scored
    scores: list[ExampleScore] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON eval.py prints and writes."""
        return {"exact_match": self.exact_match, "f1": self.f1, "total": self.total, "missing": self.missing}


def score_prediction(example: Example, prediction: str) -> tuple[float, float]:
    """(EM, F1) of one prediction: the best over the example's ground truths."""
    if not example.answers:
        score = unanswerable_score(prediction)
        return score, score
    truths = [a.text for a in example.answers]
    em = max(exact_match_score(prediction, t) for t in truths)
    f1 = max(f1_score(prediction, t) for t in truths)
    return float(em), f1


def evaluate(examples: list[Example], predictions: dict[str, str]) -> EvalResult:
    """Score `predictions` ({question id: answer text}) against the labelled `examples`.

    A question without a prediction scores 0 and is listed in `missing_ids`; predictions for
    ids that are not in `examples` are ignored and counted in `unknown`.
    """
    check_predictions(predictions)
    scored = [ex for ex in examples if ex.is_labelled]
    if not scored:
        raise MRCError("the dataset has no answers to compare with (no question has an `answers` list); "
                       "evaluate against a labelled dev file")
    em_sum = f1_sum = 0.0
    scores, missing_ids = [], []
    for ex in scored:
        if ex.id not in predictions:
            missing_ids.append(ex.id)
            scores.append(ExampleScore(ex, None, 0.0, 0.0))
            continue
        em, f1 = score_prediction(ex, predictions[ex.id])
        em_sum += em
        f1_sum += f1
        scores.append(ExampleScore(ex, predictions[ex.id], em, f1))
    ids = {ex.id for ex in examples}
    return EvalResult(
        exact_match=100.0 * em_sum / len(scored),
        f1=100.0 * f1_sum / len(scored),
        total=len(scored),
        missing=len(missing_ids),
        missing_ids=missing_ids,
        unknown=sum(1 for key in predictions if key not in ids),
        unlabelled=len(examples) - len(scored),
        scores=scores,
    )


def check_predictions(predictions: object, source: str = "predictions") -> None:
    """An MRCError unless `predictions` is {id: answer text}; names the first bad id."""
    if not isinstance(predictions, dict):
        raise MRCError(f"{source}: expected a JSON object {{question id: answer text}}, "
                       f"got a JSON {type(predictions).__name__}")
    for key, value in predictions.items():
        if not isinstance(value, str):
            hint = " (this looks like an n-best file; pass predictions.json)" if isinstance(value, list) else ""
            raise MRCError(f"{source}: the prediction for id {key!r} is a {type(value).__name__}, "
                           f"not an answer string{hint}")


def load_predictions(path: str | Path) -> dict[str, str]:
    """A predictions file {question id: answer text}; MRCError when missing or malformed."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise MRCError(f"{path}: is a folder or a device, not a file; pass the predictions.json written by predict.py")
    if not path.is_file():
        raise MRCError(f"{path}: predictions file not found; pass the predictions.json written by predict.py")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise MRCError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise MRCError(f"{path}: cannot be read: {e.strerror or e}") from None
    predictions, _ = parse_json(text, str(path))  # unpaired surrogates -> U+FFFD, as in the data readers
    check_predictions(predictions, str(path))
    return predictions
