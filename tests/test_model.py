"""ElectraForQA against transformers' ElectraForQuestionAnswering / BertForQuestionAnswering.

Random weights are created and saved by transformers in its own formats, loaded by
mrc.checkpoint, and run on real KorQuAD dev windows in padded batches. transformers runs its
eager attention (the textbook formula), so the reference shares no kernel choice with us.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mrc.checkpoint import key_table, load_model
from mrc.errors import MRCError
from mrc.loss import qa_loss
from mrc.model import ElectraForQA, ModelConfig

transformers = pytest.importorskip("transformers")

def koelectra_2_layers(koelectra_folder: Path) -> dict:
    hf = json.loads((koelectra_folder / "config.json").read_text())
    return {**hf, "num_hidden_layers": 2}


def small_electra(koelectra_folder: Path) -> dict:
    """ELECTRA-small's shape: narrow embedding projected to the hidden width."""
    return {**koelectra_2_layers(koelectra_folder), "embedding_size": 128, "hidden_size": 256,
            "num_attention_heads": 4, "intermediate_size": 1024}


def small_bert(koelectra_folder: Path) -> dict:
    hf = koelectra_2_layers(koelectra_folder)
    del hf["embedding_size"]
    return {**hf, "model_type": "bert", "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}


CONFIGS = {"koelectra-base-2l": koelectra_2_layers, "small-electra": small_electra, "bert": small_bert}


def hf_qa_model(hf_config: dict, seed: int = 0):
    """A transformers QA model with every parameter random (biases and LayerNorms included, so a
    misplaced bias or a swapped query/key/value would show), eager attention, dropout off."""
    config_cls = transformers.BertConfig if hf_config["model_type"] == "bert" else transformers.ElectraConfig
    config = config_cls(**{k: v for k, v in hf_config.items() if k != "model_type"})
    config._attn_implementation = "eager"
    model_cls = (transformers.BertForQuestionAnswering if hf_config["model_type"] == "bert"
                 else transformers.ElectraForQuestionAnswering)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return model


def save_hf(model, folder: Path, fmt: str) -> Path:
    """Save as transformers does: safetensors via save_pretrained, or the legacy pytorch_model.bin
    (a torch.save'd state dict, the format of the KoELECTRA files on the hub)."""
    if fmt == "safetensors":
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def korquad_batch(korquad_dev: Path, koelectra_folder: Path) -> dict[str, torch.Tensor]:
    """Real dev windows built by mrc.features and padded by mrc.batching.collate: one full-length
    window holding its answer and three shorter ones of different lengths (each padded)."""
    from mrc.batching import collate
    from mrc.data import read_examples
    from mrc.features import build_store
    from mrc.store import WindowConfig

    examples, _ = read_examples(korquad_dev)
    store = build_store(examples[:30], koelectra_folder, WindowConfig(max_seq_length=96, doc_stride=48,
                                                                        max_query_length=24),
                        labels=True, use_cache=False)
    lengths = store.sequence_lengths()
    answered = np.flatnonzero((store.windows.start_position > 0) & (lengths == lengths.max()))
    _, first_of_length = np.unique(lengths, return_index=True)  # one window per distinct length, shortest first
    chosen = [int(answered[0]), *first_of_length[:3].tolist()]
    assert len(set(lengths[chosen].tolist())) == 4, "the batch must mix four different lengths"
    return collate(store, chosen, with_labels=True)


def model_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]


def reference_loss(start: torch.Tensor, end: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss written out row by row: cross-entropy over each window's own tokens only."""
    lengths = batch["attention_mask"].sum(1).tolist()
    losses = []
    for row, n in enumerate(lengths):
        s = torch.nn.functional.cross_entropy(start[row, :n][None], batch["start_positions"][row, None])
        e = torch.nn.functional.cross_entropy(end[row, :n][None], batch["end_positions"][row, None])
        losses.append((s + e) / 2)
    return torch.stack(losses).mean()


@pytest.fixture(scope="module", params=list(CONFIGS))
def hf_pair(request, koelectra_folder: Path, tmp_path_factory) -> tuple:
    """(transformers model, its safetensors folder, its pytorch_model.bin folder) for one config."""
    hf_config = CONFIGS[request.param](koelectra_folder)
    model = hf_qa_model(hf_config)
    root = tmp_path_factory.mktemp(request.param)
    return model, save_hf(model, root / "st", "safetensors"), save_hf(model, root / "bin", "bin")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_logits_match_transformers_on_padded_korquad_windows(hf_pair, fmt, korquad_batch):
    hf, st_folder, bin_folder = hf_pair
    ours, _ = load_model(st_folder if fmt == "safetensors" else bin_folder, report=None)
    ours.eval()
    ids, types, mask = model_inputs(korquad_batch)
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        start, end = ours(ids, types, mask)
    assert start.dtype == end.dtype == torch.float32 and start.shape == ids.shape
    real = mask.bool()
    torch.testing.assert_close(start[real], ref.start_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(end[real], ref.end_logits[real], atol=1e-5, rtol=0)
    assert ref.start_logits[real].std() > 0.1, "logits must vary, else the comparison proves little"


def test_loss_and_every_gradient_match_transformers(hf_pair, korquad_batch):
    hf, st_folder, _ = hf_pair
    ours, cfg = load_model(st_folder, report=None)
    ours.eval()  # dropout off; gradients still flow
    ids, types, mask = model_inputs(korquad_batch)
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    ref_loss = reference_loss(ref.start_logits, ref.end_logits, korquad_batch)
    ref_loss.backward()
    loss = qa_loss(*ours(ids, types, mask), korquad_batch["start_positions"], korquad_batch["end_positions"], mask)
    loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=0)

    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    table = key_table(cfg, cfg.model_type + ".")
    for name, p in ours.named_parameters():
        expected = torch.cat([hf_grads[h] for h in table[name]])  # fused QKV: HF's three grads stacked
        torch.testing.assert_close(p.grad, expected, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    hf.zero_grad(set_to_none=True)


def test_every_parameter_is_in_the_key_table(koelectra_folder):
    """A parameter missing from the table would silently keep its random init when loading."""
    for make in CONFIGS.values():
        cfg = ModelConfig.from_hf(make(koelectra_folder))
        table = key_table(cfg, cfg.model_type + ".")
        assert set(table) == {n for n, _ in ElectraForQA(cfg).named_parameters()}


def test_bf16_autocast_on_cpu_returns_float32_close_to_fp32(hf_pair, korquad_batch):
    _, st_folder, _ = hf_pair
    ours, _ = load_model(st_folder, report=None)
    ours.eval()
    ids, types, mask = model_inputs(korquad_batch)
    with torch.no_grad():
        ref_start, _ = ours(ids, types, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            start, end = ours(ids, types, mask)
    assert start.dtype == end.dtype == torch.float32
    real = mask.bool()
    err = (start[real] - ref_start[real]).abs().max()
    assert err < 0.05 * ref_start[real].abs().max(), f"bf16 logits drift {err:.3g} from fp32"
    loss = qa_loss(start, end, korquad_batch["start_positions"], korquad_batch["end_positions"], mask)
    assert torch.isfinite(loss)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_autocast_on_gpu_matches_transformers_fp32(hf_pair, korquad_batch, dtype):
    hf, st_folder, _ = hf_pair
    ours, _ = load_model(st_folder, report=None)
    ours, hf = ours.cuda().eval(), copy.deepcopy(hf).cuda()  # a copy: the fixture's model stays on the CPU
    batch = {k: v.cuda() for k, v in korquad_batch.items()}
    ids, types, mask = model_inputs(batch)
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    with torch.autocast("cuda", dtype=dtype):
        start, end = ours(ids, types, mask)
        loss = qa_loss(start, end, batch["start_positions"], batch["end_positions"], mask)
    loss.backward()
    assert start.dtype == torch.float32 and torch.isfinite(loss)
    real = mask.bool()
    err = (start[real] - ref.start_logits[real]).abs().max()
    assert err < 0.05 * ref.start_logits[real].abs().max(), f"{dtype} logits drift {err:.3g} from fp32"
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters())
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        alone, _ = ours(ids[:1], types[:1], mask[:1])  # unpadded: no mask, SDPA's flash kernel
    assert (alone[0] - ref.start_logits[0]).abs().max() < 0.05 * ref.start_logits[0].abs().max()


def test_padding_does_not_change_the_logits_of_real_tokens(korquad_batch):
    """A window gives the same logits alone as inside a padded batch (the mask really masks)."""
    torch.manual_seed(0)
    model = ElectraForQA(ModelConfig(num_hidden_layers=2, hidden_size=64, embedding_size=32,
                                     num_attention_heads=4, intermediate_size=128)).eval()
    ids, types, mask = model_inputs(korquad_batch)
    n = int(mask[-1].sum())  # a padded window (shorter than the batch)
    with torch.no_grad():
        batched, _ = model(ids, types, mask)
        alone, _ = model(ids[-1:, :n], types[-1:, :n], mask[-1:, :n])
    torch.testing.assert_close(batched[-1, :n], alone[0], atol=1e-5, rtol=0)


def test_fresh_model_is_initialised_like_hf():
    """A model trained from scratch (the demo) needs HF's init: small normal weights, unit LayerNorm."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_hidden_layers=1, initializer_range=0.02)
    model = ElectraForQA(cfg)
    layer = model.layers[0]
    assert abs(layer.qkv.weight.std().item() - 0.02) < 0.002
    assert layer.qkv.bias.abs().max() == 0 and layer.attn_norm.weight.eq(1).all()
    assert model.embeddings.word.weight[cfg.pad_token_id].abs().max() == 0
    assert abs(model.qa_outputs.weight.std().item() - 0.02) < 0.005


def test_sequence_longer_than_position_table_is_a_clear_error():
    model = ElectraForQA(ModelConfig(num_hidden_layers=1, hidden_size=32, embedding_size=32, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16))
    ids = torch.ones(1, 17, dtype=torch.long)
    with pytest.raises(MRCError, match="max_seq_length"):
        model(ids, torch.zeros_like(ids), torch.ones_like(ids))


def test_config_round_trips_through_hf_json(koelectra_folder):
    hf = json.loads((koelectra_folder / "config.json").read_text())
    cfg = ModelConfig.from_hf(hf)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.layer_norm_eps) == (768, 12, 35000, 1e-12)
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    bert = ModelConfig.from_hf(small_bert(koelectra_folder))
    assert bert.embedding_size == bert.hidden_size and "embedding_size" not in bert.to_hf()


@pytest.mark.parametrize("change, message", [
    ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
    ({"num_attention_heads": 7}, "not a multiple of num_attention_heads"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
])
def test_unsupported_configs_name_the_file_and_field(koelectra_folder, change, message):
    hf = {**json.loads((koelectra_folder / "config.json").read_text()), **change}
    with pytest.raises(MRCError, match=message) as info:
        ModelConfig.from_hf(hf, where="models/x/config.json")
    assert "models/x/config.json" in str(info.value)


@pytest.mark.parametrize("model_type", ["electra", "bert"])
def test_fields_missing_from_config_json_take_transformers_defaults(model_type):
    """A sparse config.json must build the model transformers would build from it."""
    reference = (transformers.ElectraConfig() if model_type == "electra" else transformers.BertConfig()).to_dict()
    cfg = ModelConfig.from_hf({"model_type": model_type})
    for name, value in cfg.to_hf().items():
        assert value == reference[name], name
    assert cfg.embedding_size == reference.get("embedding_size", reference["hidden_size"])
