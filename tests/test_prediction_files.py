"""mrc/prediction_files.py: the one writer of predictions.json and the n-best file."""

from __future__ import annotations

import json

import pytest

from mrc.decode import Prediction
from mrc.errors import MRCError
from mrc.prediction_files import PredictionFiles, write_predictions


def prediction(example_id: str, text: str, entries: int) -> Prediction:
    nbest = [{"text": text if i == 0 else f"{text}{i}", "probability": 1.0 / entries, "start_logit": 0.5 * i,
              "end_logit": -0.25 * i, "char_start": i, "char_end": i + 2} for i in range(entries)]
    return Prediction(example_id, text, 0, 2, 1.0, nbest)


def test_files_are_the_seed_formats_and_the_text_of_json_dumps(tmp_path):
    preds = [prediction("a", "서울", 2), prediction("b\"quote", "", 0), prediction("c", "1883년", 3)]
    files = PredictionFiles(tmp_path / "predictions.json", tmp_path / "nbest_predictions.json")
    answers = write_predictions(iter(preds), files, overwrite=False)
    expected_answers = {"a": "서울", "b\"quote": "", "c": "1883년"}
    assert answers == expected_answers
    expected_nbest = {p.example_id: [{k: e[k] for k in ("text", "probability", "start_logit", "end_logit")}
                                     for e in p.nbest] for p in preds}
    # Streamed member by member, yet byte for byte what json.dumps of the whole object gives.
    assert files.predictions.read_text(encoding="utf-8") == json.dumps(expected_answers, ensure_ascii=False,
                                                                       indent=2) + "\n"
    assert files.nbest.read_text(encoding="utf-8") == json.dumps(expected_nbest, ensure_ascii=False, indent=2) + "\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["nbest_predictions.json", "predictions.json"]


def test_no_predictions_give_empty_objects(tmp_path):
    files = PredictionFiles(tmp_path / "p.json", tmp_path / "n.json")
    assert write_predictions((), files, overwrite=False) == {}
    assert json.loads(files.predictions.read_text()) == {} and json.loads(files.nbest.read_text()) == {}


def test_existing_files_are_kept_unless_overwrite_and_a_crash_leaves_no_partial_file(tmp_path):
    files = PredictionFiles(tmp_path / "p.json", tmp_path / "n.json")
    files.predictions.write_text("old", encoding="utf-8")
    with pytest.raises(MRCError, match="already exists"):
        write_predictions([prediction("a", "x", 1)], files, overwrite=False)
    assert files.predictions.read_text() == "old" and not files.nbest.exists()

    def crashing():
        yield prediction("a", "x", 1)
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        write_predictions(crashing(), files, overwrite=True)
    assert files.predictions.read_text() == "old" and not files.nbest.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.json"]   # no temp file left behind
