"""HF model folders in and out: one explicit table between HF weight names and ours.

Read: `config.json` + `model.safetensors`, a sharded `model.safetensors.index.json`,
`pytorch_model.bin` (through `torch.load(weights_only=True)`: no code runs from the file) or a
sharded `pytorch_model.bin.index.json`. An ELECTRA discriminator checkpoint (ElectraForPreTraining)
or a bare encoder gives the encoder and a freshly initialised QA head.
Write: an HF-compatible folder that `transformers.AutoModelForQuestionAnswering` loads as is.
Loading for a `--max_seq_length` beyond the checkpoint's positions extends the learned position
table first (`mrc.positions`); the folder saved afterwards is an ordinary one of the new length.
"""

from __future__ import annotations

import dataclasses
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
from mrc.positions import check_window_fits, extend_table
from mrc.tokenizer import load_tokenizer

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
TRAINING_ARGS = "training_args.json"   # the run's resolved flags, saved by train.py
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


# ---------------------------------------------------------------------------------------------
# Reading


def read_model_config(folder: Path) -> ModelConfig:
    """ModelConfig from `folder/config.json`."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise MRCError(f"{folder} has no config.json; a model folder needs config.json and the weights "
                       f"({' or '.join(WEIGHT_FILES)})")
    return ModelConfig.from_hf(read_json_object(path), where=str(path))


def read_training_args(folder: Path) -> dict:
    """The flat flags a training run saved beside the model (`training_args.json`), or {} without them.

    predict.py and the Reader take the window and decode settings the user does not give from here.
    """
    path = Path(folder) / TRAINING_ARGS
    return read_json_object(path) if path.is_file() else {}


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors or PyTorch file -> {name: tensor} on CPU."""
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader failure means the same thing to the user: a bad file
        raise MRCError(f"{path}: cannot read the weights ({type(e).__name__}: {e}); "
                       "download the file again") from None


def read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    """Every shard named by an HF `*.index.json` weight map, merged."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MRCError(f"{index_path}: not an HF shard index with a weight_map ({e})") from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise MRCError(f"{index_path} names shard {shard}, which is missing from {index_path.parent}")
        state.update(read_weight_file(shard_path))
    return state


def read_hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The HF state dict of `folder` and the file it came from (safetensors preferred)."""
    for name in WEIGHT_FILES:
        path = Path(folder) / name
        if path.is_file():
            return (read_sharded(path) if name.endswith(".index.json") else read_weight_file(path)), path
    others = sorted(p.name for p in Path(folder).glob("*") if p.suffix in (".h5", ".msgpack", ".ckpt"))
    hint = f" It holds {', '.join(others)}, which are TensorFlow/Flax weights; convert them to PyTorch." if others else ""
    raise MRCError(f"{folder} has no weights: looked for {', '.join(WEIGHT_FILES)}.{hint}")


def encoder_prefix(hf_state: dict[str, torch.Tensor], cfg: ModelConfig, source: Path) -> str:
    """"electra." / "bert." for task and pre-training checkpoints, "" for a bare encoder."""
    if any(k.startswith(cfg.model_type + ".") for k in hf_state):
        return cfg.model_type + "."
    if "embeddings.word_embeddings.weight" in hf_state:
        return ""
    raise MRCError(f"{source}: no {cfg.model_type}.* encoder weights found (config.json says model_type "
                   f"{cfg.model_type!r}); is this the right folder?")


def list_names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def hf_to_ours(hf_state: dict[str, torch.Tensor], cfg: ModelConfig, source: Path
               ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map an HF state dict through the key table: (our state dict, missing HF names, unexpected HF names).

    Missing encoder weights are an error (training on a random encoder would look like a run that
    merely scores badly); a missing QA head is expected for pre-training checkpoints.
    """
    table = key_table(cfg, encoder_prefix(hf_state, cfg, source))
    ours: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for name, hf_names in table.items():
        absent = [h for h in hf_names if h not in hf_state]
        if absent:
            missing.extend(absent)
            continue
        ours[name] = torch.cat([hf_state[h] for h in hf_names]) if len(hf_names) > 1 else hf_state[hf_names[0]]
    used = {h for hf_names in table.values() for h in hf_names}
    unexpected = sorted(k for k in hf_state if k not in used and not IGNORED_HF_KEYS.search(k))
    head = {h for hf_names in HEAD_KEYS.values() for h in hf_names}
    encoder_missing = [m for m in missing if m not in head]
    if encoder_missing:
        raise MRCError(f"{source}: encoder weights missing for config.json's shape "
                       f"({cfg.num_hidden_layers} layers): {list_names(encoder_missing)}; "
                       "check that config.json belongs to these weights")
    return ours, missing, unexpected


def check_shapes(model: ElectraForQA, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise MRCError(f"{source}: weight for {name} has shape {list(tensor.shape)} but config.json implies "
                           f"{list(expected[name].shape)}; config.json and the weights do not match")


def extend_state_positions(state: dict[str, torch.Tensor], cfg: ModelConfig, length: int, method: str,
                           source: Path) -> ModelConfig:
    """Grow `state`'s position table (in place) to `length` rows by `method`; the config that fits it."""
    name = "embeddings.position.weight"
    table = state[name]                                                          # [P, E]
    if table.shape[0] != cfg.max_position_embeddings:
        raise MRCError(f"{source}: weight for {name} has {table.shape[0]} rows but config.json says "
                       f"max_position_embeddings {cfg.max_position_embeddings}; config.json and the weights "
                       "do not match")
    state[name] = extend_table(table, length, method)                            # [length, E]
    return dataclasses.replace(cfg, max_position_embeddings=length)


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr)


def check_vocab_fits(folder: Path, cfg: ModelConfig) -> None:
    """The folder's tokenizer may not produce ids the embedding table lacks (an IndexError in forward later)."""
    if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()):
        return  # the tokenizer comes from elsewhere; nothing to compare here
    tokens = load_tokenizer(folder).get_vocab_size(with_added_tokens=True)
    if tokens > cfg.vocab_size:
        raise MRCError(f"{folder / 'config.json'}: vocab_size {cfg.vocab_size:,} is smaller than the tokenizer's "
                       f"{tokens:,} tokens; the config and vocab.txt / tokenizer.json belong to different models")


def load_model(folder: str | Path, *, report: Callable[[str], None] | None = stderr_line,
               max_seq_length: int | None = None, extend_positions: str | None = None
               ) -> tuple[ElectraForQA, ModelConfig]:
    """Load an HF ELECTRA/BERT folder as (ElectraForQA on CPU, float32, its config).

    Weights missing from the checkpoint may only be the QA head, which then keeps the fresh
    normal(0, initializer_range) initialisation; `report` gets one line naming missing and
    unexpected weights (pass None to stay silent, e.g. on non-main ranks). A final model whose
    replacement a crash interrupted (`mrc.io.replace_files`) is completed first.

    With `max_seq_length` longer than the folder's max_position_embeddings, `extend_positions`
    (copy or interpolate, `mrc.positions`) grows the learned position table to `max_seq_length`
    rows and the returned config says so; without it that is an MRCError naming the flag.
    """
    path = resolve_model_folder(folder)
    finish_replace_files(path)
    cfg = read_model_config(path)
    check_vocab_fits(path, cfg)
    extend = max_seq_length is not None and check_window_fits(
        max_seq_length, cfg.max_position_embeddings, extend_positions, where=str(path))
    hf_state, source = read_hf_weights(path)
    state, missing, unexpected = hf_to_ours(hf_state, cfg, source)
    if extend:
        positions = cfg.max_position_embeddings
        cfg = extend_state_positions(state, cfg, max_seq_length, extend_positions, source)
        if report is not None:
            report(f"{source}: position table extended from {positions} to {max_seq_length} rows "
                   f"(--extend_positions {extend_positions})")
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
