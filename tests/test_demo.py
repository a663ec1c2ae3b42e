"""The built-in demo end to end at its small size: real trainer, predictor and evaluator."""

from __future__ import annotations

import csv
import json

import pytest

from mrc.demo import MARKER, main, prepare_out_dir
from mrc.errors import MRCError


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


def test_training_evaluated_the_held_out_paragraphs(demo):
    results = json.loads((demo.out / "model" / "eval_results.json").read_text())
    best = results[results["best"]]
    assert best["exact_match"] == pytest.approx(demo.dev_scores["exact_match"])
    assert 0.0 <= demo.dev_scores["exact_match"] <= demo.dev_scores["f1"] <= 100.0


def test_every_sample_question_was_predicted_and_scored(demo):
    expected = _question_ids(demo.out / "data" / "sample.json")
    predictions = json.loads((demo.out / "predictions" / "sample.predictions.json").read_text(encoding="utf-8"))
    assert set(predictions) == expected
    assert all(isinstance(text, str) for text in predictions.values())
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
