"""HF folders in and out: formats, discriminator checkpoints, hub ids, errors, atomic saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mrc.checkpoint import WEIGHT_FILES, load_model, save_model
from mrc.errors import MRCError

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64)


def tiny_hf(cls_name: str = "ElectraForQuestionAnswering", seed: int = 0, **overrides):
    fields = {**TINY, **overrides}
    config_cls = transformers.BertConfig if cls_name.startswith("Bert") else transformers.ElectraConfig
    if cls_name.startswith("Bert"):
        fields.pop("embedding_size")
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config_cls(**fields)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # nonzero biases, non-unit LayerNorms
    return model


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (3, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 9:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids * mask, types * mask, mask


def hf_logits(model, ids, types, mask) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
    return torch.stack([out.start_logits, out.end_logits])


def our_logits(model, ids, types, mask) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack(model.eval()(ids, types, mask))


@pytest.fixture
def tokenizer_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "가", "##나"]) + "\n")
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}\n')
    return folder


@pytest.mark.parametrize("cls_name", ["ElectraForQuestionAnswering", "BertForQuestionAnswering"])
def test_saved_folder_loads_in_transformers_with_identical_logits(tmp_path, tokenizer_folder, cls_name):
    hf = tiny_hf(cls_name)
    hf.save_pretrained(tmp_path / "hf")
    ours, cfg = load_model(tmp_path / "hf", report=None)
    save_model(ours, cfg, tmp_path / "out", tokenizer_folder)

    reloaded = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "out").eval()
    assert type(reloaded).__name__ == cls_name
    x = inputs()
    torch.testing.assert_close(hf_logits(reloaded, *x), our_logits(ours, *x), atol=0, rtol=0)
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert saved == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [cls_name]


def test_our_save_and_load_round_trip_exactly(tmp_path):
    hf = tiny_hf()
    hf.save_pretrained(tmp_path / "hf")
    ours, cfg = load_model(tmp_path / "hf", report=None)
    save_model(ours, cfg, tmp_path / "ours")
    again, cfg2 = load_model(tmp_path / "ours", report=None)
    assert cfg2 == cfg
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_discriminator_checkpoint_gives_encoder_and_fresh_head_with_one_report_line(tmp_path, capsys):
    disc = tiny_hf("ElectraForPreTraining", initializer_range=0.3)
    disc.save_pretrained(tmp_path / "disc")
    capsys.readouterr()  # drop transformers' own progress output
    ours, cfg = load_model(tmp_path / "disc")

    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert "missing, so freshly initialised: qa_outputs.weight, qa_outputs.bias" in line
    assert "discriminator_predictions.dense.weight" in line and "discriminator_predictions.dense_prediction.bias" in line

    ids, types, mask = inputs()
    with torch.no_grad():
        hidden = disc.electra(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        ours_hidden = hidden @ ours.qa_outputs.weight.T + ours.qa_outputs.bias  # our head on HF's encoder
    torch.testing.assert_close(our_logits(ours, ids, types, mask), ours_hidden.permute(2, 0, 1), atol=1e-5, rtol=0)
    head = ours.qa_outputs
    assert head.bias.abs().max() == 0
    assert 0.2 < head.weight.std().item() < 0.4, "fresh head must be normal(0, initializer_range=0.3)"


def test_bare_encoder_checkpoint_loads_with_a_fresh_head(tmp_path):
    encoder = tiny_hf("ElectraModel")
    encoder.save_pretrained(tmp_path / "enc")
    lines: list[str] = []
    ours, _ = load_model(tmp_path / "enc", report=lines.append)
    torch.testing.assert_close(ours.embeddings.word.weight, encoder.embeddings.word_embeddings.weight)
    assert len(lines) == 1 and "qa_outputs.weight" in lines[0] and "unexpected, so ignored: none" in lines[0]


def test_legacy_bin_with_position_ids_buffer_loads_silently(tmp_path):
    hf = tiny_hf()
    folder = tmp_path / "bin"
    folder.mkdir()
    hf.config.save_pretrained(folder)
    state = {**hf.state_dict(), "electra.embeddings.position_ids": torch.arange(64)[None]}
    torch.save(state, folder / "pytorch_model.bin")
    lines: list[str] = []
    ours, _ = load_model(folder, report=lines.append)
    assert lines == [], "a complete checkpoint must load without a warning"
    torch.testing.assert_close(our_logits(ours, *inputs()), hf_logits(hf, *inputs()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoints_load(tmp_path, fmt):
    hf = tiny_hf()
    folder = tmp_path / fmt
    if fmt == "safetensors":
        hf.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").is_file()
    else:  # the layout transformers 4.x wrote for large .bin checkpoints
        folder.mkdir()
        hf.config.save_pretrained(folder)
        state = hf.state_dict()
        names = list(state)
        shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
                  "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
        for shard, keys in shards.items():
            torch.save({k: state[k] for k in keys}, folder / shard)
        weight_map = {k: shard for shard, keys in shards.items() for k in keys}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ours, _ = load_model(folder, report=None)
    torch.testing.assert_close(our_logits(ours, *inputs()), hf_logits(hf, *inputs()), atol=1e-5, rtol=0)


def test_folder_without_weights_lists_the_files_looked_for(tmp_path):
    tiny_hf().config.save_pretrained(tmp_path)
    with pytest.raises(MRCError) as info:
        load_model(tmp_path)
    assert all(name in str(info.value) for name in WEIGHT_FILES)


def test_missing_folder_and_missing_config_are_clear_errors(tmp_path):
    with pytest.raises(MRCError, match="no such folder"):
        load_model(tmp_path / "nowhere" / "deeper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MRCError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_config_that_does_not_match_the_weights_is_a_clear_error(tmp_path):
    tiny_hf().save_pretrained(tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(MRCError, match="encoder weights missing.*encoder.layer.2"):
        load_model(tmp_path / "hf")
    config_path.write_text(json.dumps({**config, "vocab_size": 99}))
    with pytest.raises(MRCError, match=r"shape \[120, 16\] but config.json implies \[99, 16\]"):
        load_model(tmp_path / "hf")


def test_corrupt_weight_file_is_a_clear_error(tmp_path):
    tiny_hf().config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(MRCError, match="pytorch_model.bin: cannot read the weights"):
        load_model(tmp_path)


def test_failed_save_leaves_the_previous_folder_intact(tmp_path, tokenizer_folder):
    tiny_hf().save_pretrained(tmp_path / "hf")
    ours, cfg = load_model(tmp_path / "hf", report=None)
    save_model(ours, cfg, tmp_path / "ckpt", tokenizer_folder,
               extra_writer=lambda d: (d / "training_args.json").write_text("{}"))
    assert (tmp_path / "ckpt" / "training_args.json").is_file()
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    def crash(_: Path) -> None:
        raise OSError("disk full")

    with torch.no_grad():
        ours.qa_outputs.weight.add_(1.0)
    with pytest.raises(MRCError, match="disk full"):
        save_model(ours, cfg, tmp_path / "ckpt", tokenizer_folder, extra_writer=crash)
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "hf", "tok"]


def test_tokenizer_folder_without_tokenizer_files_is_refused(tmp_path):
    tiny_hf().save_pretrained(tmp_path / "hf")
    ours, cfg = load_model(tmp_path / "hf", report=None)
    (tmp_path / "notok").mkdir()
    with pytest.raises(MRCError, match="neither vocab.txt nor tokenizer.json"):
        save_model(ours, cfg, tmp_path / "out", tmp_path / "notok")
    assert not (tmp_path / "out").exists()


def test_a_name_that_is_no_folder_says_hub_ids_are_resolved_first(tmp_path, monkeypatch):
    """load_model reads folders; a hub id goes through mrc.hub.resolve_model (tests/test_hub.py)."""
    monkeypatch.chdir(tmp_path)
    for name in ("models/koelectra-base-v3-discriminator", "someone/model"):
        with pytest.raises(MRCError, match="no such folder.*mrc.hub.resolve_model"):
            load_model(name)