"""predict.py / mrc/predict.py: batch prediction, robustness, overwrite guard, torchrun, debug, --eval, --int8."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mrc.checkpoint import load_model
from mrc.config import from_flat
from mrc.data import read_examples
from mrc.errors import MRCError
from mrc.precision import quantize_int8
from mrc.predict import PredictConfig, run
from conftest import cli_module  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parent.parent
SMALL_WINDOWS = ["--max_seq_length", "128", "--doc_stride", "48", "--max_query_length", "32"]


def load_cli():
    return cli_module("predict")


cli = load_cli()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


CONTEXT = "바그너는 라이프치히 대학에서 음악을 공부했다. 그는 1813년에 태어났고 1883년에 베네치아에서 죽었다."


@pytest.fixture(scope="module")
def mixed_items(tmp_path_factory) -> Path:
    """Good items, items that cannot be predicted, and one very long context."""
    long_context = " ".join([CONTEXT] * 150)     # thousands of tokens: many windows
    return write_jsonl(tmp_path_factory.mktemp("items") / "items.jsonl", [
        {"id": "good", "question": "바그너는 어디서 공부했나?", "context": CONTEXT},
        {"id": "no-context", "question": "무엇을 공부했나?", "context": ""},
        {"id": "no-question", "question": "   ", "context": CONTEXT},
        {"id": "long", "question": "바그너는 언제 죽었나?", "context": long_context},
        {"id": "misplaced", "question": "누가?", "context": CONTEXT,
         "answers": [{"text": "모차르트", "answer_start": 0}]},
        {"id": "invisible-context", "question": "무엇?", "context": "\u200b\u200b"},   # no tokens at all
        {"id": "invisible-question", "question": "\u200b\u0001", "context": CONTEXT},
    ])


@pytest.fixture(scope="module")
def batch_run(tiny_model, korquad_train_subset, mixed_items, tmp_path_factory):
    """One CLI run over a KorQuAD file and the mixed JSON Lines file: (output folder, printed text)."""
    out = tmp_path_factory.mktemp("batch") / "out"
    capture = pytest.MonkeyPatch()
    printed = io.StringIO()
    capture.setattr(sys, "stderr", printed)
    try:
        cli.main(["--model", str(tiny_model), "--input", str(korquad_train_subset), str(mixed_items),
                  "--output", str(out), "--features_cache_dir", str(out.parent / "cache")])
    finally:
        capture.undo()
    return out, printed.getvalue()


def test_every_good_item_is_predicted_and_bad_ones_go_to_errors_jsonl(batch_run, korquad_train_subset, mixed_items):
    out, printed = batch_run
    korquad_ids = {ex.id for ex in read_examples([korquad_train_subset])[0]}
    korquad = read_json(out / f"{korquad_train_subset.stem}.predictions.json")
    assert set(korquad) == korquad_ids
    nbest = read_json(out / f"{korquad_train_subset.stem}.nbest.json")
    assert set(nbest) == korquad_ids
    assert all(nbest[qid][0]["text"] == korquad[qid] for qid in korquad_ids)

    items = read_json(out / "items.predictions.json")
    assert set(items) == {"good", "long"}
    assert items["long"] and items["long"] in " ".join([CONTEXT] * 150)

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = {e["id"]: e["reason"] for e in errors}
    assert reasons["no-context"] == "empty context" and reasons["no-question"] == "empty question"
    assert "no context tokens" in reasons["invisible-context"]
    assert "no question tokens" in reasons["invisible-question"]
    assert any(e["id"] is None and "모차르트" in e["reason"] for e in errors)     # dropped by the reader
    assert {e["file"] for e in errors} == {str(mixed_items)}
    n = len(korquad_ids)
    assert f"read {n + 7:,}, predicted {n + 2:,}, errors 5" in printed


def test_existing_outputs_are_kept_without_overwrite_and_checked_before_loading_the_model(
        tiny_model, mixed_items, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "items.predictions.json").write_text("keep", encoding="utf-8")
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(SystemExit) as stop:
        cli.main(["--model", str(not_a_model), "--input", str(mixed_items), "--output", str(out)])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "items.predictions.json" in message and "--overwrite" in message   # not a model-loading error
    assert (out / "items.predictions.json").read_text(encoding="utf-8") == "keep"

    cli.main(["--model", str(tiny_model), "--input", str(mixed_items), "--output", str(out), "--overwrite",
              *SMALL_WINDOWS])
    assert set(read_json(out / "items.predictions.json")) == {"good", "long"}


def test_an_unreadable_input_stops_the_run_before_anything_is_written(tiny_model, mixed_items, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n  {"title": "x", "paragraphs": [\n    {"context": 3}]}]}', encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        cli.main(["--model", str(tiny_model), "--input", str(mixed_items), str(bad), "--output", str(out)])
    message = capsys.readouterr().err
    assert str(bad) in message and "data[0].paragraphs[0].context" in message
    assert not out.exists() or not any(out.iterdir())


def test_a_run_that_fails_midway_leaves_the_previous_outputs_whole(tiny_model, korquad_train_subset, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "out"
    cfg = PredictConfig(model=tiny_model, input=[korquad_train_subset], output=out, batch_size=16)
    run(cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import mrc.evaluation as evaluation
    real = evaluation.iter_predictions

    def crash_after_first_chunk(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(evaluation, "iter_predictions", crash_after_first_chunk)
    with pytest.raises(RuntimeError):
        run(PredictConfig(model=tiny_model, input=[korquad_train_subset], output=out, batch_size=16, overwrite=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before     # no partial file, no temp file left


def test_two_torchrun_processes_write_the_same_files_as_one(tiny_model, korquad_train_subset, tmp_path):
    settings = ["--model", str(tiny_model), "--input", str(korquad_train_subset), "--batch_size", "8",
                *SMALL_WINDOWS, "--features_cache_dir", str(tmp_path / "cache")]
    cli.main([*settings, "--output", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "predict.py"), *settings, "--output", str(tmp_path / "two"), "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in (f"{korquad_train_subset.stem}.predictions.json", f"{korquad_train_subset.stem}.nbest.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_predictions_from_a_saved_checkpoint_equal_those_train_py_evaluation_wrote(tiny_model, korquad_train_subset,
                                                                                   tmp_path, capsys):
    trained = tmp_path / "trained"
    settings = [*SMALL_WINDOWS, "--features_cache_dir", str(tmp_path / "cache")]
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "--model_name_or_path", str(tiny_model),
                           "--output_dir", str(trained), "--train_file", str(korquad_train_subset),
                           "--predict_file", str(korquad_train_subset), "--do_train", "--do_eval", "--max_steps", "3",
                           "--learning_rate", "1e-3", "--per_gpu_train_batch_size", "8",
                           "--per_gpu_eval_batch_size", "8", "--save_steps", "0", "--logging_steps", "0", *settings],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # No window flags: predict.py takes the model's own (training_args.json), not the 512/128/64 defaults.
    cli.main(["--model", str(trained), "--input", str(korquad_train_subset), "--output", str(tmp_path / "out"),
              "--batch_size", "8", "--features_cache_dir", str(tmp_path / "cache"), "--doc_stride", "48"])
    printed = capsys.readouterr().err
    assert re.search(r"max_seq_length[\s│]+128[\s│]+training_args.json", printed)
    assert re.search(r"doc_stride[\s│]+48[\s│]+flag", printed)
    assert re.search(r"n_best_size[\s│]+20[\s│]+training_args.json", printed)
    name = korquad_train_subset.stem
    assert read_json(tmp_path / "out" / f"{name}.predictions.json") == read_json(trained / "predictions_3.json")
    assert read_json(tmp_path / "out" / f"{name}.nbest.json") == read_json(trained / "nbest_predictions_3.json")


def test_debug_mode_prints_the_answer_its_score_and_the_nbest(tiny_model, capsys):
    prediction = run(from_flat(PredictConfig, dict(model=tiny_model, question="바그너는 어디서 공부했나?",
                                                   context=CONTEXT, n_best_size=3))).answer
    printed = capsys.readouterr().out
    assert prediction.text and prediction.text in CONTEXT
    assert f"answer: {prediction.text}" in printed
    assert f"score: {prediction.score:.4f}" in printed
    assert len(prediction.nbest) == 3
    assert all(entry["text"].split()[0] in printed for entry in prediction.nbest)


def test_eval_prints_official_em_and_f1(tiny_model, tmp_path, capsys):
    questions = [f"{word}은 무엇인가?" for word in ("바그너", "라이프치히", "베네치아", "음악")]
    unlabelled = write_jsonl(tmp_path / "q.jsonl", [{"id": str(i), "question": q, "context": CONTEXT}
                                                    for i, q in enumerate(questions)])
    run(PredictConfig(model=tiny_model, input=[unlabelled], output=tmp_path / "a"))
    answers = read_json(tmp_path / "a" / "q.predictions.json")
    # Half the gold answers are what the model says, half are a span it did not choose.
    other = next(w for w in ("바그너는", "1813년에") if all(a != w for a in answers.values()))
    rows = [{"id": str(i), "question": q, "context": CONTEXT,
             "answers": [{"text": answers[str(i)] if i % 2 == 0 else other,
                          "answer_start": CONTEXT.index(answers[str(i)] if i % 2 == 0 else other)}]}
            for i, q in enumerate(questions)]
    labelled = write_jsonl(tmp_path / "labelled.jsonl", rows)
    capsys.readouterr()
    results = run(PredictConfig(model=tiny_model, input=[labelled], output=tmp_path / "b", eval=True)).files
    assert results[0].scores.exact_match == pytest.approx(50.0)
    assert "50.00" in capsys.readouterr().err


def test_int8_quantizes_the_encoder_linears_and_keeps_logits_close(tiny_model):
    model, _ = load_model(tiny_model, report=None)
    model.eval()
    ids = torch.randint(5, 35000, (2, 40))
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    with torch.inference_mode():
        fp32_start, _ = model(ids, types, mask)
        quantized = quantize_int8(model)
        int8_start, _ = quantized(ids, types, mask)
    assert not any(type(m) is nn.Linear for name, m in quantized.named_modules() if name.startswith("layers"))
    assert type(quantized.qa_outputs) is nn.Linear
    assert torch.corrcoef(torch.stack([fp32_start.flatten(), int8_start.flatten()]))[0, 1] > 0.95


def test_int8_run_predicts_every_question(tiny_model, korquad_train_subset, tmp_path):
    run(PredictConfig(model=tiny_model, input=[korquad_train_subset], output=tmp_path, int8=True, device="cpu"))
    ids = {ex.id for ex in read_examples([korquad_train_subset])[0]}
    assert set(read_json(tmp_path / f"{korquad_train_subset.stem}.predictions.json")) == ids


@pytest.mark.parametrize("flags, says", [
    (dict(fp16=True, bf16=True), "--fp16 and --bf16"),
    (dict(int8=True, bf16=True), "--int8"),
    (dict(question="q"), "--question and --context"),
    (dict(output=None), "--output"),
    (dict(input=[Path("a/dev.json"), Path("b/dev.json")]), "rename one"),
    (dict(batch_size=0), "--batch_size"),
])
def test_conflicting_or_missing_flags_say_what_to_change(flags, says, tmp_path):
    settings = dict(model=tmp_path, input=[tmp_path / "x.json"], output=tmp_path / "out") | flags
    with pytest.raises(MRCError, match=says.replace("-", r"\-")):
        from_flat(PredictConfig, settings)


def test_a_missing_model_folder_is_named_with_the_flag(tmp_path, mixed_items):
    with pytest.raises(MRCError, match=r"--model .*missing: no such folder"):
        run(PredictConfig(model=tmp_path / "missing", input=[mixed_items], output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
