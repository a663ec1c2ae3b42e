"""Longer windows than the checkpoint's positions: extending the table, saving it, training at 1,024."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mrc.train as train_module
from mrc.checkpoint import load_model, save_model
from mrc.data import read_examples
from mrc.errors import MRCError
from mrc.features import build_store
from mrc.model import ElectraForQA, ModelConfig
from mrc.positions import EXTEND_METHODS, check_window_fits, extend_table
from mrc.store import WindowConfig
from conftest import cli_module  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64)


def load_cli(name: str):
    return cli_module(name)


def inputs(length: int, vocab: int = SMALL["vocab_size"], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (2, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length // 3:] = 0
    types = torch.zeros_like(ids)
    types[:, 7:] = 1
    return ids * mask, types * mask, mask


def logits(model, ids, types, mask) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack(model.eval()(ids, types, mask))


# ---------------------------------------------------------------------------------------------
# The table


@pytest.mark.parametrize("method", EXTEND_METHODS)
@pytest.mark.parametrize("positions,length", [(64, 64), (64, 65), (64, 128), (64, 200), (512, 1024), (7, 100)])
def test_extended_table_has_the_new_length_and_keeps_the_ends(method, positions, length):
    table = torch.randn(positions, 16, generator=torch.Generator().manual_seed(positions + length))
    grown = extend_table(table, length, method)
    assert grown.shape == (length, 16) and grown.dtype == table.dtype
    torch.testing.assert_close(grown[0], table[0], atol=0, rtol=0)
    if method == "copy":  # every row is the learned row of its position modulo the old length
        torch.testing.assert_close(grown, table[torch.arange(length) % positions], atol=0, rtol=0)
    else:  # the last row stays last, and every row lies between two neighbouring learned rows
        torch.testing.assert_close(grown[-1], table[-1])
        x = torch.arange(length) * (positions - 1) / max(length - 1, 1)
        lo, hi = x.floor().long(), x.ceil().long()
        lower, upper = torch.minimum(table[lo], table[hi]), torch.maximum(table[lo], table[hi])
        assert bool(((grown >= lower - 1e-6) & (grown <= upper + 1e-6)).all())


@pytest.mark.parametrize("positions,length", [(64, 128), (100, 333), (512, 2048)])
def test_interpolation_of_a_linear_table_is_the_same_line_resampled(positions, length):
    slope, offset = torch.randn(8), torch.randn(8)
    table = offset + torch.arange(positions, dtype=torch.float32)[:, None] * slope          # [P, 8]
    grown = extend_table(table, length, "interpolate")
    new_x = torch.arange(length, dtype=torch.float32)[:, None] * (positions - 1) / (length - 1)
    torch.testing.assert_close(grown, offset + new_x * slope, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("max_seq_length,positions,method,extends", [
    (512, 512, None, False), (384, 512, None, False), (512, 512, "copy", False),
    (1024, 512, "copy", True), (513, 512, "interpolate", True)])
def test_check_window_fits_says_when_the_table_must_grow(max_seq_length, positions, method, extends):
    assert check_window_fits(max_seq_length, positions, method, where="m") is extends


@pytest.mark.parametrize("max_seq_length,method,says", [
    (1024, None, "--extend_positions copy"), (513, None, "lower --max_seq_length to 512"),
    (1024, "stretch", "not one of copy, interpolate")])
def test_a_window_longer_than_the_table_is_an_error_naming_the_flag(max_seq_length, method, says):
    with pytest.raises(MRCError, match=says):
        check_window_fits(max_seq_length, 512, method, where="models/x")


# ---------------------------------------------------------------------------------------------
# Loading and saving


@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    cfg = ModelConfig(**SMALL)
    torch.manual_seed(0)
    model = ElectraForQA(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # nonzero biases, non-unit LayerNorms
    folder = tmp_path_factory.mktemp("short") / "model"
    save_model(model, cfg, folder)
    return folder


@pytest.mark.parametrize("method", EXTEND_METHODS)
def test_loading_longer_grows_the_table_and_the_config(short_model, method):
    original, cfg = load_model(short_model, report=None)
    lines = []
    grown, grown_cfg = load_model(short_model, report=lines.append, max_seq_length=200, extend_positions=method)
    assert grown_cfg.max_position_embeddings == 200 and cfg.max_position_embeddings == 64
    assert grown.embeddings.position.weight.shape == (200, SMALL["embedding_size"])
    assert lines == [f"{short_model / 'model.safetensors'}: position table extended from 64 to 200 rows "
                     f"(--extend_positions {method})"]
    table = original.embeddings.position.weight
    assert torch.equal(grown.embeddings.position.weight[0], table[0])
    if method == "copy":  # the first 64 positions, hence every sequence of up to 64 tokens, are unchanged
        assert torch.equal(grown.embeddings.position.weight[:64], table)
        torch.testing.assert_close(logits(grown, *inputs(64)), logits(original, *inputs(64)), atol=0, rtol=0)
    others = {k: v for k, v in original.state_dict().items() if k != "embeddings.position.weight"}
    assert all(torch.equal(grown.state_dict()[k], v) for k, v in others.items())
    grown(*inputs(200))  # runs at the new length


def test_loading_within_the_table_changes_nothing(short_model):
    original, _ = load_model(short_model, report=None)
    same, cfg = load_model(short_model, report=None, max_seq_length=48, extend_positions="copy")
    assert cfg.max_position_embeddings == 64
    assert all(torch.equal(same.state_dict()[k], v) for k, v in original.state_dict().items())


def test_loading_longer_without_the_flag_is_refused(short_model):
    with pytest.raises(MRCError, match="longer than the 64 positions of .*--extend_positions"):
        load_model(short_model, report=None, max_seq_length=65)


@pytest.mark.parametrize("method", EXTEND_METHODS)
@pytest.mark.parametrize("model_type", ["electra", "bert"])
def test_extended_folder_loads_in_transformers_with_identical_logits(tmp_path, method, model_type):
    transformers = pytest.importorskip("transformers")
    fields = {**SMALL, "model_type": model_type}
    if model_type == "bert":
        fields["embedding_size"] = fields["hidden_size"]
    cfg = ModelConfig(**fields)
    torch.manual_seed(3)
    save_model(ElectraForQA(cfg), cfg, tmp_path / "short")
    grown, grown_cfg = load_model(tmp_path / "short", report=None, max_seq_length=160, extend_positions=method)
    save_model(grown, grown_cfg, tmp_path / "long")
    assert json.loads((tmp_path / "long" / "config.json").read_text())["max_position_embeddings"] == 160
    assert load_file(str(tmp_path / "long" / "model.safetensors"))[
        f"{model_type}.embeddings.position_embeddings.weight"].shape[0] == 160
    reference = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "long").eval()
    ids, types, mask = inputs(160)
    with torch.no_grad():
        out = reference(input_ids=ids, token_type_ids=types, attention_mask=mask)
    torch.testing.assert_close(torch.stack([out.start_logits, out.end_logits]), logits(grown, ids, types, mask),
                               atol=0, rtol=0)
    reloaded, reloaded_cfg = load_model(tmp_path / "long", report=None)  # and we read back what we wrote
    assert reloaded_cfg == grown_cfg
    assert torch.equal(logits(reloaded, ids, types, mask), logits(grown, ids, types, mask))


# ---------------------------------------------------------------------------------------------
# Training at 1,024 from a 512-position model


@pytest.fixture(scope="module")
def long_file(tmp_path_factory, korquad_train_subset) -> Path:
    """The first article's paragraphs joined into one context (answer offsets moved with them): a
    paragraph of about 900 tokens, so windows at 1,024 use positions well past 512."""
    article = json.loads(korquad_train_subset.read_text(encoding="utf-8"))["data"][0]
    context, qas = "", []
    for paragraph in article["paragraphs"]:
        base = len(context)
        for qa in paragraph["qas"]:
            qas.append({**qa, "answers": [{**a, "answer_start": a["answer_start"] + base} for a in qa["answers"]]})
        context += paragraph["context"] + " "
    path = tmp_path_factory.mktemp("long") / "long.json"
    path.write_text(json.dumps({"version": "1", "data": [{"title": article["title"],
                                "paragraphs": [{"context": context.strip(), "qas": qas[:8]}]}]}, ensure_ascii=False),
                    encoding="utf-8")
    return path


def train_args(model: Path, out: Path, data: Path, cache: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--output_dir", str(out), "--train_file", str(data), "--do_train",
            "--max_seq_length", "1024", "--doc_stride", "256", "--max_query_length", "32", "--seed", "5",
            "--per_gpu_train_batch_size", "2", "--learning_rate", "1e-3", "--max_steps", "6", "--logging_steps", "2",
            "--save_steps", "2", "--features_cache_dir", str(cache), *extra]


class DieAfterSave(Exception):
    pass


def test_training_at_1024_from_512_positions_runs_and_resumes_exactly(tiny_model, long_file, tmp_path, monkeypatch,
                                                                      one_thread, capsys):
    cache = tmp_path / "cache"
    examples, _ = read_examples([long_file])
    window = WindowConfig(max_seq_length=1024, doc_stride=256, max_query_length=32)
    assert build_store(examples, tiny_model, window, labels=True, cache_dir=cache).sequence_lengths().max() > 800
    cli = load_cli("train")

    refused = tmp_path / "refused"
    with pytest.raises(SystemExit) as stop:  # without the flag: the error names it, and nothing is written
        cli.main(train_args(tiny_model, refused, long_file, cache))
    assert stop.value.code == 2 and "--extend_positions copy" in capsys.readouterr().err
    assert not refused.exists()

    straight = tmp_path / "straight"
    cli.main(train_args(tiny_model, straight, long_file, cache, "--extend_positions", "copy"))
    saved = json.loads((straight / "config.json").read_text())
    assert saved["max_position_embeddings"] == 1024
    assert json.loads((straight / "training_args.json").read_text())["extend_positions"] == "copy"
    final = load_file(str(straight / "model.safetensors"))
    assert final["electra.embeddings.position_embeddings.weight"].shape[0] == 1024

    resumed = tmp_path / "resumed"
    save = train_module.save_checkpoint

    def save_then_die(trainer, progress, ctx, folder, **kwargs):
        save(trainer, progress, ctx, folder, **kwargs)
        raise DieAfterSave

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(DieAfterSave):
        train_module.run(cli.parse_args(train_args(tiny_model, resumed, long_file, cache,
                                                   "--extend_positions", "copy")))
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    assert (resumed / "checkpoint-2").is_dir() and not (resumed / "model.safetensors").exists()
    cli.main(train_args(tiny_model, resumed, long_file, cache, "--extend_positions", "copy", "--resume"))
    again = load_file(str(resumed / "model.safetensors"))
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
    losses = [[json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
              for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 3 and np.isfinite(losses[0]).all()


# ---------------------------------------------------------------------------------------------
# predict.py takes the length from the folder


@pytest.mark.parametrize("flags,says", [(["--max_seq_length", "128"], "--max_seq_length 128 is longer"),
                                         ([], "--max_seq_length 512 (the default) is longer")])
def test_predict_refuses_windows_longer_than_the_folder_before_reading_inputs(short_model, tmp_path, capsys, flags,
                                                                               says):
    missing = tmp_path / "not_read.jsonl"
    with pytest.raises(SystemExit) as stop:
        load_cli("predict").main(["--model", str(short_model), "--input", str(missing), "--output",
                                  str(tmp_path / "o"), "--max_query_length", "16", "--doc_stride", "32", *flags])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"{says} than the 64 positions" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_predict_takes_the_extended_length_from_the_trained_folder(short_model, tmp_path):
    from mrc.predict import PredictConfig, check_positions, settings_from_model
    grown, grown_cfg = load_model(short_model, report=None, max_seq_length=200, extend_positions="interpolate")
    folder = tmp_path / "long"
    save_model(grown, grown_cfg, folder, extra_writer=lambda tmp: (tmp / "training_args.json").write_text(
        json.dumps({"max_seq_length": 200, "doc_stride": 64, "max_query_length": 16})))
    resolved, sources = settings_from_model(PredictConfig(model=folder, question="q", context="c"), frozenset())
    assert resolved.window.max_seq_length == 200 and sources["max_seq_length"] == "training_args.json"
    check_positions(resolved, sources)


# ---------------------------------------------------------------------------------------------
# How many questions a longer window reads whole (python -m mrc.features)


@pytest.mark.parametrize("max_seq_length,doc_stride", [(128, 32), (256, 64), (512, 128), (1024, 256)])
def test_questions_in_one_window_are_those_whose_paragraph_fits(korquad_train_subset, koelectra_folder,
                                                                 max_seq_length, doc_stride):
    from mrc.inspect_windows import inspect_counts
    examples, _ = read_examples([korquad_train_subset])
    window = WindowConfig(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=64)
    store = build_store(examples, koelectra_folder, window, labels=True, use_cache=False)
    paragraph_tokens = np.diff(store.paragraph_token_base)[store.example_paragraph]           # [E]
    question_tokens = np.diff(store.question_token_base)                                     # [E]
    fits = paragraph_tokens <= max_seq_length - question_tokens - 3
    counts = inspect_counts(store)
    assert counts["questions_in_one_window"] == int(fits.sum())
    assert counts["questions_in_one_window"] <= counts["questions"]
    assert (counts["questions_in_one_window"] == counts["questions"]) == bool(fits.all())


# ---------------------------------------------------------------------------------------------
# Attention at 2,048 stays on a kernel that never holds [B, N, T, T]


@pytest.mark.parametrize("training", [False, True])
def test_attention_at_2048_with_padding_runs_the_cpu_flash_kernel(training, one_thread):
    cfg = ModelConfig(vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=2048, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = ElectraForQA(cfg).train(training)
    ids, types, mask = inputs(2048)
    assert not bool(mask.all())  # the padding mask is on the path
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start, end = model(ids, types, mask)
        if training:
            (start.logsumexp(-1) + end.logsumexp(-1)).sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert "aten::_scaled_dot_product_attention_math" not in ops and "aten::bmm" not in ops
    if training:
        assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in ops
