"""HF model folders in and out: one explicit table between HF weight names and ours.

Read: `config.json` + `model.safetensors`, a sharded `model.safetensors.index.json`,
`pytorch_model.bin` (through `torch.load(weights_only=True)`: no code runs from the file) or a
sharded `pytorch_model.bin.index.json`. An ELECTRA discriminator checkpoint (ElectraForPreTraining)
or a bare encoder gives the encoder and a freshly initialised QA head.
Write: an HF-compatible folder that `transformers.AutoModelForQuestionAnswering` loads as is.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from mrc.errors import MRCError
from mrc.io import atomic_dir, finish_replace_files, read_json_object
from mrc.model import ElectraForQA, ModelConfig

# Our parameter name -> the HF names it is made of, in order (concatenated along dim 0 on load,
# split back on save). `{p}` is the encoder prefix ("electra." or "bert."), `{i}` the layer index.
# This is the only place that knows HF's naming.
EMBEDDING_KEYS: dict[str, tuple[str, ...]] = {
    "embeddings.word.weight": ("{p}embeddings.word_embeddings.weight",),
    "embeddings.position.weight": ("{p}embeddings.position_embeddings.weight",),
    "embeddings.token_type.weight": ("{p}embeddings.token_type_embeddings.weight",),
    "embeddings.norm.weight": ("{p}embeddings.LayerNorm.weight",),
    "embeddings.norm.bias": ("{p}embeddings.LayerNorm.bias",),
}
PROJECTION_KEYS: dict[str, tuple[str, ...]] = {  # only when embedding_size != hidden_size
    "embeddings_project.weight": ("{p}embeddings_project.weight",),
    "embeddings_project.bias": ("{p}embeddings_project.bias",),
}
LAYER_KEYS: dict[str, tuple[str, ...]] = {
    "layers.{i}.qkv.weight": ("{p}encoder.layer.{i}.attention.self.query.weight",
                              "{p}encoder.layer.{i}.attention.self.key.weight",
                              "{p}encoder.layer.{i}.attention.self.value.weight"),
    "layers.{i}.qkv.bias": ("{p}encoder.layer.{i}.attention.self.query.bias",
                            "{p}encoder.layer.{i}.attention.self.key.bias",
                            "{p}encoder.layer.{i}.attention.self.value.bias"),
    "layers.{i}.attn_out.weight": ("{p}encoder.layer.{i}.attention.output.dense.weight",),
    "layers.{i}.attn_out.bias": ("{p}encoder.layer.{i}.attention.output.dense.bias",),
    "layers.{i}.attn_norm.weight": ("{p}encoder.layer.{i}.attention.output.LayerNorm.weight",),
    "layers.{i}.attn_norm.bias": ("{p}encoder.layer.{i}.attention.output.LayerNorm.bias",),
    "layers.{i}.ffn_in.weight": ("{p}encoder.layer.{i}.intermediate.dense.weight",),
    "layers.{i}.ffn_in.bias": ("{p}encoder.layer.{i}.intermediate.dense.bias",),
    "layers.{i}.ffn_out.weight": ("{p}encoder.layer.{i}.output.dense.weight",),
    "layers.{i}.ffn_out.bias": ("{p}encoder.layer.{i}.output.dense.bias",),
    "layers.{i}.ffn_norm.weight": ("{p}encoder.layer.{i}.output.LayerNorm.weight",),
    "layers.{i}.ffn_norm.bias": ("{p}encoder.layer.{i}.output.LayerNorm.bias",),
}
HEAD_KEYS: dict[str, tuple[str, ...]] = {  # no prefix: the head sits beside the encoder
    "qa_outputs.weight": ("qa_outputs.weight",),
    "qa_outputs.bias": ("qa_outputs.bias",),
}
# Non-parameter buffers older transformers versions saved; they carry no weights.
IGNORED_HF_KEYS = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")

ARCHITECTURES = {"electra": "ElectraForQuestionAnswering", "bert": "BertForQuestionAnswering"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")


def key_table(cfg: ModelConfig, prefix: str) -> dict[str, tuple[str, ...]]:
    """Every parameter of ElectraForQA(cfg) -> its HF names, with `prefix` ("electra.", "bert." or "")."""
    table: dict[str, tuple[str, ...]] = {}
    groups = [EMBEDDING_KEYS] + ([PROJECTION_KEYS] if cfg.embedding_size != cfg.hidden_size else [])
    for group in groups:
        table.update({ours: tuple(h.format(p=prefix) for h in hf) for ours, hf in group.items()})
    for i in range(cfg.num_hidden_layers):
        table.update({ours.format(i=i): tuple(h.format(p=prefix, i=i) for h in hf) for ours, hf in LAYER_KEYS.items()})
    table.update(HEAD_KEYS)
    return table


# ---------------------------------------------------------------------------------------------
# Finding the folder


def resolve_model_folder(folder: str | Path) -> Path:
    """`folder` as a Path when it is a model folder on disk; an MRCError saying what to pass otherwise.

    Hub ids are turned into folders before loading, by `mrc.hub.resolve_model`.
    """
    path = Path(folder).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise MRCError(f"{folder} is a file; pass the folder that holds config.json and the weights")
    raise MRCError(f"{folder}: no such folder. Pass a folder holding config.json and model.safetensors or "
                   "pytorch_model.bin (plus vocab.txt and tokenizer_config.json); a hub id is resolved to its "
                   "folder with mrc.hub.resolve_model first")


def check_shapes(model: ElectraForQA, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise MRCError(f"{source}: weight for {name} has shape {list(tensor.shape)} but config.json implies "
                           f"{list(expected[name].shape)}; config.json and the weights do not match")


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr)


def load_model(folder: str | Path, *,
               report: Callable[[str], None] | None = stderr_line) -> tuple[ElectraForQA, ModelConfig]:
    """Load an HF ELECTRA/BERT folder as (ElectraForQA on CPU, float32, its config).

    Weights missing from the checkpoint may only be the QA head, which then keeps the fresh
    normal(0, initializer_range) initialisation; `report` gets one line naming missing and
    unexpected weights (pass None to stay silent, e.g. on non-main ranks). A final model whose
    replacement a crash interrupted (`mrc.io.replace_files`) is completed first.
    """
    path = resolve_model_folder(folder)
    finish_replace_files(path)
    cfg = read_model_config(path)
    hf_state, source = read_hf_weights(path)
    state, missing, unexpected = hf_to_ours(hf_state, cfg, source)
    model = ElectraForQA(cfg)
    check_shapes(model, state, source)
    model.load_state_dict(state, strict=False)
    if (missing or unexpected) and report is not None:
        report(f"{source}: loaded the encoder; missing, so freshly initialised: {list_names(missing) or 'none'}; "
               f"unexpected, so ignored: {list_names(unexpected) or 'none'}")
    return model, cfg


# ---------------------------------------------------------------------------------------------
# Writing


def ours_to_hf(model: ElectraForQA, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under HF names ("electra." / "bert." prefix), fused QKV split back in three."""
    table = key_table(cfg, cfg.model_type + ".")
    hf_state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        hf_names = table[name]
        for hf_name, part in zip(hf_names, tensor.chunk(len(hf_names))):
            hf_state[hf_name] = part.detach().to("cpu").contiguous().clone()
    return hf_state


def hf_config_json(cfg: ModelConfig) -> str:
    hf = {"architectures": [ARCHITECTURES[cfg.model_type]], **cfg.to_hf()}
    return json.dumps(hf, indent=2, ensure_ascii=False) + "\n"


def copy_tokenizer_files(tokenizer_folder: Path, dest: Path) -> None:
    present = [n for n in TOKENIZER_FILES if (Path(tokenizer_folder) / n).is_file()]
    if not any(n in present for n in ("vocab.txt", "tokenizer.json")):
        raise MRCError(f"{tokenizer_folder} has neither vocab.txt nor tokenizer.json; pass the folder the "
                       "tokenizer was loaded from")
    for name in present:
        shutil.copyfile(Path(tokenizer_folder) / name, dest / name)


def save_model(model: ElectraForQA, cfg: ModelConfig, folder: str | Path, tokenizer_folder: str | Path | None = None,
               *, extra_writer: Callable[[Path], None] | None = None, overwrite: bool = True) -> None:
    """Write an HF-compatible folder: model.safetensors, config.json, tokenizer files.

    All-or-nothing: files go to a temp folder that then takes the place of `folder` (`mrc.io.atomic_dir`).
    `extra_writer(tmp_folder)` may add files (training args, optimizer state) inside that same
    atomic write. `model` is the bare ElectraForQA, not a DDP or torch.compile wrapper.
    """
    if not isinstance(model, ElectraForQA):
        raise TypeError(f"save_model needs the bare ElectraForQA, got {type(model).__name__}; "
                        "unwrap DDP / torch.compile first (mrc.dist.unwrap_model)")
    with atomic_dir(Path(folder), overwrite=overwrite) as tmp:
        save_safetensors(ours_to_hf(model, cfg), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(hf_config_json(cfg), encoding="utf-8")
        if tokenizer_folder is not None:
            copy_tokenizer_files(Path(tokenizer_folder), tmp)
        if extra_writer is not None:
            extra_writer(tmp)
