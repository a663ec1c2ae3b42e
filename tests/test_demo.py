"""The built-in demo end to end at its small size: real trainer, predictor and evaluator."""

from __future__ import annotations

import csv
import json

import pytest

from mrc.demo.run import MARKER, main, prepare_out_dir
from mrc.data import read_examples
from mrc.errors import MRCError
from mrc.metrics import evaluate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    return main(["--size", "small", "--out", str(out)])


def _question_ids(path):
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return {qa["id"] for article in data for p in article["paragraphs"] for qa in p["qas"]}


def test_demo_writes_every_artefact(demo):
    out = demo.out
    for rel in ("data/train.json", "data/dev.json", "data/sample.json", "tokenizer/vocab.txt",
                "model_init/model.safetensors", "model/model.safetensors", "model/config.json",
                "model/vocab.txt", "model/eval_results.json", "predictions/sample.predictions.json",
                "predictions/sample.nbest.json", "eval/error_analysis.csv", "eval/sample.predictions.eval.json"):
        assert (out / rel).is_file(), rel
    assert set(demo.files.values()) <= {p for p in out.rglob("*") if p.is_file()}
    assert [s.name for s in demo.stages] == ["synthetic data, vocab, untrained model", "train", "predict",
                                             "eval --analyze"]


def _contexts(path):
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return {qa["id"]: p["context"] for article in data for p in article["paragraphs"] for qa in p["qas"]}


def test_training_scored_its_own_held_out_predictions(demo):
    """The EM/F1 the demo reports are the official metric of the dev predictions train.py wrote."""
    results = json.loads((demo.out / "model" / "eval_results.json").read_text())
    step = str(max(int(label) for label in results if label.isdigit()))   # the final model's evaluation
    predictions_file = demo.out / "model" / f"predictions_{step}.json"
    predictions = json.loads(predictions_file.read_text(encoding="utf-8"))
    contexts = _contexts(demo.out / "data" / "dev.json")
    assert set(predictions) == set(contexts)
    assert all(text in contexts[qid] for qid, text in predictions.items())   # extracted, never invented
    rescored = evaluate(read_examples(demo.out / "data" / "dev.json")[0], predictions).summary()
    assert rescored["exact_match"] == pytest.approx(demo.dev_scores["exact_match"])
    assert rescored["f1"] == pytest.approx(demo.dev_scores["f1"])
    assert results[step]["f1"] == pytest.approx(demo.dev_scores["f1"])


def test_every_sample_question_was_predicted_and_scored(demo):
    expected = _question_ids(demo.out / "data" / "sample.json")
    predictions = json.loads((demo.out / "predictions" / "sample.predictions.json").read_text(encoding="utf-8"))
    assert set(predictions) == expected
    contexts = _contexts(demo.out / "data" / "sample.json")
    assert all(text in contexts[qid] for qid, text in predictions.items())
    scored = json.loads((demo.out / "eval" / "sample.predictions.eval.json").read_text())
    assert scored["total"] == len(expected) and scored["missing"] == 0
    assert scored["exact_match"] == pytest.approx(demo.sample_scores["exact_match"])
    with open(demo.out / "eval" / "error_analysis.csv", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert {"context", "question", "answer", "prediction"} <= set(header)


def test_rerun_replaces_a_demo_folder_but_never_another_folder(tmp_path):
    out = tmp_path / "demo_out"
    prepare_out_dir(out)
    (out / "stale.txt").write_text("from an earlier run")
    prepare_out_dir(out)
    assert (out / MARKER).is_file() and not (out / "stale.txt").exists()

    precious = tmp_path / "my_results"
    precious.mkdir()
    (precious / "keep.txt").write_text("not the demo's")
    with pytest.raises(MRCError, match="not written by the demo"):
        prepare_out_dir(precious)
    assert (precious / "keep.txt").read_text() == "not the demo's"
