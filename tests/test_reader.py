"""mrc/reader.py (mrc.Reader) and mrc.evaluate: equal to predict.py's files, items in and out, the docs walk-through."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

import mrc
from mrc.analysis import evaluate_result
from mrc.data import read_examples
from mrc.decode import DecodeConfig
from mrc.predict import PredictConfig, run
from mrc.store import WindowConfig

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parent.parent
SMALL_WINDOWS = {"max_seq_length": 128, "doc_stride": 48, "max_query_length": 32}
CONTEXT = "바그너는 라이프치히 대학에서 음악을 공부했다. 그는 1813년에 태어났고 1883년에 베네치아에서 죽었다."
QUESTIONS = ["바그너는 어디서 공부했나?", "바그너는 언제 태어났나?", "바그너는 어디서 죽었나?", "무엇을 공부했나?"]


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def model_with_args(tiny_model: Path, folder: Path, training_args: dict) -> Path:
    shutil.copytree(tiny_model, folder)
    (folder / "training_args.json").write_text(json.dumps(training_args), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def plain_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with small windows in its training_args.json (Reader and predict.py read them)."""
    return model_with_args(tiny_model, tmp_path_factory.mktemp("plain") / "model", SMALL_WINDOWS)


@pytest.fixture(scope="module")
def korquad_dev_subset(korquad_dev, tmp_path_factory) -> Path:
    """The first 40 questions of the KorQuAD dev set, as a KorQuAD file."""
    data = read_json(korquad_dev)
    article = data["data"][0]
    kept, left = [], 40
    for paragraph in article["paragraphs"]:
        if left <= 0:
            break
        kept.append({**paragraph, "qas": paragraph["qas"][:left]})
        left -= len(kept[-1]["qas"])
    path = tmp_path_factory.mktemp("dev") / "dev40.json"
    path.write_text(json.dumps({"version": data.get("version", "KorQuAD_v1.0"),
                                "data": [{**article, "paragraphs": kept}]}, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def negative_model(tiny_model, klue_dev, tmp_path_factory) -> Path:
    """The tiny model as if trained with --version_2_with_negative, its null threshold at the median
    null-minus-best-span difference on the KLUE sample, so about half the answers are empty."""
    folder = model_with_args(tiny_model, tmp_path_factory.mktemp("v2") / "model",
                             {**SMALL_WINDOWS, "version_2_with_negative": True})
    reader = mrc.Reader.from_pretrained(folder, quiet=True)
    diffs = sorted(null_minus_best_span(entries) for entries in reader.predict_file(klue_dev).nbest.values())
    threshold = diffs[len(diffs) // 2]
    (folder / "training_args.json").write_text(json.dumps({**SMALL_WINDOWS, "version_2_with_negative": True,
                                                           "null_score_diff_threshold": threshold}))
    return folder


def null_minus_best_span(entries: list[mrc.Answer]) -> float:
    null = next(a.score for a in entries if a.start == -1)
    return null - max(a.score for a in entries if a.start != -1)


@pytest.fixture(scope="module")
def reader(plain_model) -> mrc.Reader:
    return mrc.Reader.from_pretrained(plain_model, quiet=True)


# ---------------------------------------------------------------------------------------------
# Equality with predict.py


def nbest_as_file(entries: list[mrc.Answer]) -> list[dict]:
    return [{"text": a.text, "probability": a.probability, "start_logit": a.start_logit, "end_logit": a.end_logit}
            for a in entries]


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("data", ["korquad_dev_subset", "klue_dev"])
def test_reader_answers_scores_and_nbest_equal_predict_py_files(data, int8, request, plain_model, negative_model,
                                                                  tmp_path):
    data_file = request.getfixturevalue(data)
    folder = negative_model if data == "klue_dev" else plain_model
    out = tmp_path / "out"
    run(PredictConfig(model=folder, input=[data_file], output=out, int8=int8,
                      features_cache_dir=tmp_path / "cache"), given=frozenset())
    written = read_json(out / f"{data_file.stem}.predictions.json")
    written_nbest = read_json(out / f"{data_file.stem}.nbest.json")
    reader = mrc.Reader.from_pretrained(folder, int8=int8, quiet=True)

    predictions = reader.predict_file(data_file)
    assert list(predictions.items()) == list(written.items())            # same answers, same order
    assert {k: nbest_as_file(v) for k, v in predictions.nbest.items()} == written_nbest
    assert predictions.errors == [] and (out / "errors.jsonl").read_text() == ""

    # The same questions as a list of items: the same answers, and their scores are the n-best's.
    examples, _ = read_examples([data_file])
    items = [{"id": ex.id, "question": ex.question, "context": ex.context} for ex in examples]
    answers = reader(items)
    nbests = reader(items, top_k=reader.settings.decode.n_best_size)
    assert [a.text for a in answers] == list(written.values())
    assert [nbest_as_file(n) for n in nbests] == list(written_nbest.values())
    for answer, nbest, ex in zip(answers, nbests, examples):
        entry = next(e for e in nbest if (e.start, e.end) == (answer.start, answer.end))
        assert (answer.probability, answer.score, answer.text) == (entry.probability, entry.score, entry.text)
        assert ex.context[answer.start:answer.end] == answer.text if answer.start >= 0 else answer.text == ""
    if data == "klue_dev":     # the threshold sits at the median: both kinds of answer occur
        assert 0 < sum(a.text == "" for a in answers) < len(answers)


def test_an_unanswerable_aware_model_answers_empty_with_the_null_score_exactly_when_the_null_wins(
        negative_model, klue_dev):
    reader = mrc.Reader.from_pretrained(negative_model, quiet=True)
    threshold = reader.settings.decode.null_score_diff_threshold
    examples, _ = read_examples([klue_dev])
    items = [(ex.question, ex.context) for ex in examples]
    for answer, nbest in zip(reader(items), reader(items, top_k=20)):
        null = next(a for a in nbest if a.start == -1)
        if null_minus_best_span(nbest) > threshold:
            assert (answer.text, answer.start, answer.end, answer.score) == ("", -1, -1, null.score)
            assert answer.probability == null.probability
        else:
            assert answer.text != "" and answer.score == max(a.score for a in nbest if a.start != -1)


# ---------------------------------------------------------------------------------------------
# Questions in, answers out


def test_one_question_gives_a_span_of_its_context_and_top_k_the_n_best(reader):
    for question in QUESTIONS:
        answer = reader(question, CONTEXT)
        assert isinstance(answer, mrc.Answer) and CONTEXT[answer.start:answer.end] == answer.text != ""
        for k in (1, 3, 7):
            nbest = reader(question, CONTEXT, top_k=k)
            assert len(nbest) == k and [a.text for a in nbest][:1] == [answer.text]
            assert [a.score for a in nbest] == sorted((a.score for a in nbest), reverse=True)
            assert sum(a.probability for a in nbest) == pytest.approx(1.0)
            assert all(CONTEXT[a.start:a.end] == a.text for a in nbest)


def test_items_come_back_in_input_order_whatever_their_form_and_batch_size(reader):
    long_context = " ".join([CONTEXT] * 60)      # ~2,000 tokens: many 128-token windows
    contexts = [CONTEXT, long_context, CONTEXT[:40], long_context]
    pairs = [(q, c) for q in QUESTIONS for c in contexts]
    one_by_one = [reader(q, c) for q, c in pairs]
    for batch_size in (1, 5, 64):
        as_dicts = reader([{"question": q, "context": c, "id": str(i)} for i, (q, c) in enumerate(pairs)],
                          batch_size=batch_size)
        backwards = reader(pairs[::-1], batch_size=batch_size)
        assert [a.text for a in as_dicts] == [a.text for a in one_by_one] == [a.text for a in backwards[::-1]]
        assert [a.score for a in as_dicts] == pytest.approx([a.score for a in one_by_one], abs=1e-5)
        assert all(c[a.start:a.end] == a.text for a, (_, c) in zip(as_dicts, pairs))
    assert any(a.start >= len(CONTEXT) for a in one_by_one[1::2])     # answers found past the first window


BAD_ITEMS = {
    "empty question": (("   ", CONTEXT), "empty question"),
    "empty context": (("무엇?", ""), "empty context"),
    "not a dict or pair": (42, "expected a dict with 'question' and 'context'"),
    "three-tuple": (("a", "b", "c"), "expected a dict with 'question' and 'context'"),
    "missing context": ({"id": "m", "question": "무엇?"}, "'context' must be a string, got NoneType"),
    "number question": ({"question": 7, "context": CONTEXT}, "'question' must be a string, got int"),
    "tokenless question": (("\u200b\u0001", CONTEXT), "no question tokens left after tokenization"),
    "tokenless context": (("무엇?", "\u200b\u200b"), "no answer span: no context tokens left"),
}


@pytest.mark.parametrize("bad", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
def test_a_bad_item_raises_naming_it_or_comes_back_as_an_error_entry(reader, bad):
    item, says = bad
    good = [(QUESTIONS[0], CONTEXT), (QUESTIONS[1], CONTEXT)]
    with pytest.raises(mrc.MRCError, match=r"item 1\b.*" + re.escape(says)):
        reader([good[0], item, good[1]])
    collected = reader([good[0], item, good[1]], errors="collect")
    assert isinstance(collected[1], mrc.AnswerError) and collected[1].index == 1 and says in collected[1].reason
    assert [a.text for a in (collected[0], collected[2])] == [a.text for a in reader(good)]
    assert collected[1].id == (item.get("id") if isinstance(item, dict) else None)


@pytest.mark.parametrize("call, says", [
    (lambda r: r(QUESTIONS[0], CONTEXT, top_k=0), "top_k must be a positive integer"),
    (lambda r: r([(QUESTIONS[0], CONTEXT)], batch_size=0), "batch_size must be a positive integer"),
    (lambda r: r([(QUESTIONS[0], CONTEXT)], errors="ignore"), "errors='ignore'"),
    (lambda r: r(QUESTIONS[0]), "the context must be a string"),
    (lambda r: r({"question": QUESTIONS[0], "context": CONTEXT}), "pass a list of dicts"),
    (lambda r: r([(QUESTIONS[0], CONTEXT)], CONTEXT), "pass no second argument"),
    (lambda r: r(42), "items must be a list of dicts or (question, context) pairs, got int"),
])
def test_wrong_arguments_say_what_to_change(reader, call, says):
    with pytest.raises(mrc.MRCError, match=re.escape(says)):
        call(reader)


@pytest.mark.parametrize("kwargs, says", [
    ({"dtype": "float64"}, "dtype='float64'"),
    ({"dtype": [torch.float16]}, "pass None (float32), torch.float16 or torch.bfloat16"),
    ({"int8": True, "dtype": torch.float16}, "drop dtype"),
    ({"device": "tpu"}, "device='tpu'"),
    pytest.param({"device": "cuda"}, "no CUDA device is visible",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
])
def test_wrong_load_options_say_what_to_change(plain_model, kwargs, says):
    with pytest.raises(mrc.MRCError, match=re.escape(says)):
        mrc.Reader.from_pretrained(plain_model, quiet=True, **kwargs)


def test_a_missing_folder_or_a_revision_of_a_folder_says_what_to_pass(plain_model, tmp_path):
    with pytest.raises(mrc.MRCError, match="no-such-model: no such folder, and not a hub id"):
        mrc.Reader.from_pretrained(tmp_path / "no-such-model")
    with pytest.raises(mrc.MRCError, match="--revision v1 applies to hub ids"):
        mrc.Reader.from_pretrained(plain_model, revision="v1")


@pytest.mark.parametrize("training_args, window, says", [
    ({"max_seq_length": 1024}, None, "max_seq_length 1024 (training_args.json) is longer than the 512 positions"),
    ({}, WindowConfig(max_seq_length=600), "max_seq_length 600 (given) is longer than the 512 positions"),
])
def test_windows_longer_than_the_position_table_are_refused_before_loading(tiny_model, tmp_path, training_args,
                                                                          window, says):
    folder = model_with_args(tiny_model, tmp_path / "model", training_args)
    with pytest.raises(mrc.MRCError, match=re.escape(says) + ".*max_seq_length=512"):
        mrc.Reader.from_pretrained(folder, window=window, quiet=True)


def test_settings_come_from_training_args_json_unless_given(plain_model, negative_model):
    reader = mrc.Reader.from_pretrained(plain_model, quiet=True)
    assert reader.settings.window == WindowConfig(**SMALL_WINDOWS)
    assert reader.sources["max_seq_length"] == "training_args.json" and reader.sources["n_best_size"] == "default"
    given = mrc.Reader.from_pretrained(negative_model, window=WindowConfig(max_seq_length=256), decode=DecodeConfig(),
                                       quiet=True)
    assert given.settings.window.max_seq_length == 256 and not given.settings.decode.version_2_with_negative
    assert given.sources["max_seq_length"] == "given"


def test_a_file_with_bad_items_raises_or_leaves_them_out_as_predict_py_does(reader, tmp_path):
    rows = [{"id": "good", "question": QUESTIONS[0], "context": CONTEXT},
            {"id": "blank", "question": " ", "context": CONTEXT},
            {"id": "misplaced", "question": "누가?", "context": CONTEXT,
             "answers": [{"text": "모차르트", "answer_start": 0}]},
            {"id": "tokenless", "question": "\u200b", "context": CONTEXT}]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(mrc.MRCError, match=re.escape(str(path)) + ".*모차르트"):
        reader.predict_file(path)
    collected = reader.predict_file(path, errors="collect")
    assert list(collected) == ["good"] and collected["good"] == reader(QUESTIONS[0], CONTEXT).text
    assert [e.id for e in collected.errors] == [None, "blank", "tokenless"]
    run(PredictConfig(model=reader.folder, input=[path], output=tmp_path / "out",
                      features_cache_dir=tmp_path / "cache"), given=frozenset())
    assert read_json(tmp_path / "out" / "items.predictions.json") == dict(collected)
    assert len((tmp_path / "out" / "errors.jsonl").read_text().splitlines()) == len(collected.errors)


# ---------------------------------------------------------------------------------------------
# Threads, inference mode, no global state


def test_concurrent_calls_from_threads_give_the_sequential_answers(reader):
    pairs = [(q, " ".join([CONTEXT] * n)) for n in (1, 9) for q in QUESTIONS]
    expected = reader(pairs, top_k=3)
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = reader(pairs[i % len(pairs):] + pairs[:i % len(pairs)], top_k=3, batch_size=4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in results.items():
        shift = i % len(pairs)
        rotated = expected[shift:] + expected[:shift]
        assert [[a.text for a in n] for n in got] == [[a.text for a in n] for n in rotated]
    assert len(results) == 6


def test_calls_work_under_inference_mode_and_change_no_global_state(reader):
    expected = reader(QUESTIONS[0], CONTEXT)
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    with torch.inference_mode():
        assert reader(QUESTIONS[0], CONTEXT) == expected
    with torch.no_grad():
        assert reader(QUESTIONS[0], CONTEXT) == expected
    assert (torch.get_num_threads(), torch.is_grad_enabled(), reader.model.training) == (threads, grad, False)


# ---------------------------------------------------------------------------------------------
# mrc.evaluate


def test_evaluate_takes_a_dict_or_a_file_and_matches_the_seeds_evaluate_result(reader, korquad_dev_subset, tmp_path):
    predictions = reader.predict_file(korquad_dev_subset)
    examples, _ = read_examples([korquad_dev_subset])
    truth = {ex.id: ex.answers[0].text for ex in examples}
    for answers in (dict(predictions), truth, {**truth, examples[0].id: "아무거나"}):
        path = tmp_path / "p.json"
        path.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
        scores = mrc.evaluate(korquad_dev_subset, answers)
        assert scores == mrc.evaluate(korquad_dev_subset, path)
        assert {k: scores[k] for k in ("exact_match", "f1")} == evaluate_result(korquad_dev_subset, path)
        assert scores["total"] == len(examples) and scores["missing"] == 0
    assert mrc.evaluate(korquad_dev_subset, truth)["exact_match"] == 100.0
    with pytest.raises(mrc.MRCError, match="not an answer string"):
        mrc.evaluate(korquad_dev_subset, {examples[0].id: ["a list"]})


# ---------------------------------------------------------------------------------------------
# docs/api.md


def test_the_docs_walk_through_runs(plain_model, korquad_dev_subset, capsys):
    """Every ```python block of docs/api.md, in order, in one namespace, on the tiny model."""
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    code = "\n".join(blocks).replace('"runs/koelectra-korquad"', repr(str(plain_model)))
    code = code.replace('"data/korquad/KorQuAD_v1.0_dev.json"', repr(str(korquad_dev_subset)))
    assert "runs/" not in code and "data/korquad" not in code
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    assert isinstance(namespace["reader"], mrc.Reader)
    assert set(namespace["scores"]) == {"exact_match", "f1", "total", "missing"}
    assert "item 1: empty question" in capsys.readouterr().out
