"""ELECTRA / BERT encoder with an extractive-QA head, in plain PyTorch.

`nn` code only: the loss lives in `mrc/loss.py`, HF weight names and file formats in
`mrc/checkpoint.py`. The module layout differs from HF's on purpose (query/key/value are one
`Linear`); `mrc.checkpoint` owns the one table that maps the two.

Shapes: B batch, T sequence, E embedding width, H hidden width, N heads, D head width (H / N),
I feed-forward width.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrc.config import field
from mrc.errors import MRCError

SUPPORTED_MODEL_TYPES = ("electra", "bert")
# What transformers assumes for a field a config.json leaves out (ElectraConfig / BertConfig
# defaults); reading a sparse file must give the model transformers would build from it.
HF_SHAPE_DEFAULTS = {
    "electra": {"vocab_size": 30522, "embedding_size": 128, "hidden_size": 256, "num_attention_heads": 4,
                "intermediate_size": 1024},
    "bert": {"vocab_size": 30522, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder shape and regularisation, read from (and written back to) an HF `config.json`.

    The field defaults are KoELECTRA-base-v3's shape, for models built in code (the demo);
    `from_hf` fills fields a config.json leaves out with transformers' defaults instead.
    """

    model_type: str = field("electra", "electra or bert (bert = the same encoder without embedding_size)")
    vocab_size: int = field(35000, "number of WordPiece tokens (rows of the word embedding)")
    hidden_size: int = field(768, "width H of every encoder layer")
    embedding_size: int = field(768, "width E of the embeddings; projected to H when different (ELECTRA small)")
    num_hidden_layers: int = field(12, "number of encoder layers")
    num_attention_heads: int = field(12, "attention heads per layer; must divide hidden_size")
    intermediate_size: int = field(3072, "feed-forward width I")
    hidden_act: str = field("gelu", "feed-forward activation; only exact (erf) gelu is supported")
    hidden_dropout_prob: float = field(0.1, "dropout on embeddings and after each residual branch")
    attention_probs_dropout_prob: float = field(0.1, "dropout on attention probabilities")
    max_position_embeddings: int = field(512, "longest sequence the position embedding covers")
    type_vocab_size: int = field(2, "number of token types (segment ids)")
    initializer_range: float = field(0.02, "std of the normal initialisation of weights and the fresh QA head")
    layer_norm_eps: float = field(1e-12, "LayerNorm epsilon")
    pad_token_id: int = field(0, "id of [PAD]; its embedding row starts at zero and gets no gradient")

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise MRCError(f"model_type {self.model_type!r} is not supported; use one of {SUPPORTED_MODEL_TYPES}")
        if self.hidden_act != "gelu":
            raise MRCError(f"hidden_act {self.hidden_act!r} is not supported; this encoder implements exact "
                           "(erf) 'gelu', the activation of ELECTRA and BERT checkpoints")
        for name in ("vocab_size", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) <= 0:
                raise MRCError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise MRCError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                           f"{self.num_attention_heads}; change one of them")
        if self.model_type == "bert" and self.embedding_size != self.hidden_size:
            raise MRCError(f"a bert model has embedding_size == hidden_size, got {self.embedding_size} and "
                           f"{self.hidden_size}; use model_type electra for a projected embedding")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise MRCError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise MRCError(f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")

    @property
    def head_size(self) -> int:
        """Width D of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
        """Build from the dict of an HF `config.json`; `where` names the file in error messages.

        Keys this encoder does not use are ignored; keys that would change its computation
        (relative positions, decoder mode) are refused, since silently ignoring them would load
        a different model than the checkpoint describes.
        """
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise MRCError(f"{where}: model_type {model_type!r} is not supported; this trainer runs "
                           f"{' and '.join(SUPPORTED_MODEL_TYPES)} encoders (e.g. KoELECTRA, KLUE BERT)")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise MRCError(f"{where}: position_embedding_type {hf['position_embedding_type']!r} is not supported; "
                           "only absolute position embeddings are implemented")
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise MRCError(f"{where}: is_decoder/add_cross_attention are set; only bidirectional encoders are supported")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {**HF_SHAPE_DEFAULTS[model_type], **{k: v for k, v in hf.items() if k in names and v is not None}}
        if model_type == "bert":
            values["embedding_size"] = values["hidden_size"]
        try:
            return cls(**values)
        except MRCError as e:
            raise MRCError(f"{where}: {e}") from None
        except TypeError as e:
            raise MRCError(f"{where}: a field has the wrong type ({e})") from None

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` fields of this encoder (bert configs carry no embedding_size)."""
        out = dataclasses.asdict(self)
        if self.model_type == "bert":
            del out["embedding_size"]
        return out


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.embedding_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.embedding_size)
        self.norm = nn.LayerNorm(cfg.embedding_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # [T]
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)  # [B, T, E]
        return self.dropout(self.norm(x))


class EncoderLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_size = cfg.head_size
        self.attn_dropout = cfg.attention_probs_dropout_prob
        self.qkv = nn.Linear(H, 3 * H)  # rows: query, key, value (HF's three matrices stacked)
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(H, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, H)
        self.ffn_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def attention(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Self-attention of [B, T, H] -> [B, T, H], before the output projection. A method of its own
        so that the fused [B, T, 3H] projection is freed before the feed-forward's [B, T, I] exists
        (without autograd, a quarter less peak memory per token at any T)."""
        B, T, H = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_size)  # [B, T, 3, N, D]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, N, T, D]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)  # [B, N, T, D]
        return a.transpose(1, 2).reshape(B, T, H)  # [B, T, H]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn_out(self.attention(x, key_mask))))
        h = self.ffn_out(F.gelu(self.ffn_in(x)))  # [B, T, I] -> [B, T, H]; exact erf GELU
        return self.ffn_norm(x + self.dropout(h))


def key_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """[B, T] 1/0 mask -> [B, 1, 1, T] bool "may attend to this key", or None when nothing is padded.

    None lets scaled_dot_product_attention take its fastest kernel, which refuses masks. Finding
    out is free on the CPU but a host sync on an accelerator, which would stall the training
    step's queue; there the mask is always passed (length-grouped batches are nearly always
    padded anyway, and the masked kernels handle it).
    """
    if attention_mask.device.type == "cpu" and bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class ElectraForQA(nn.Module):
    """ELECTRA (or BERT) encoder + one Linear(H, 2) giving start and end logits per token."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        # ELECTRA small keeps a narrow embedding and projects it; base/large and BERT do not.
        self.embeddings_project = (nn.Linear(cfg.embedding_size, cfg.hidden_size)
                                   if cfg.embedding_size != cfg.hidden_size else None)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)
        self.apply(self.init_weights)

    def init_weights(self, module: nn.Module) -> None:
        """HF's initialisation: weights ~ normal(0, initializer_range), zero biases, LayerNorm 1/0,
        a zero [PAD] embedding. Used for models trained from scratch and for a fresh QA head."""
        std = self.cfg.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 [B, T] inputs -> (start_logits, end_logits), float32 [B, T] under any autocast."""
        T = input_ids.shape[1]
        if T > self.cfg.max_position_embeddings:
            raise MRCError(f"sequence length {T} exceeds max_position_embeddings "
                           f"{self.cfg.max_position_embeddings} of the model; lower --max_seq_length, or fine-tune "
                           "at that length with train.py --extend_positions copy|interpolate")
        x = self.embeddings(input_ids, token_type_ids)  # [B, T, E]
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # [B, T, H]
        key_mask = key_padding_mask(attention_mask)  # [B, 1, 1, T] or None
        for layer in self.layers:
            x = layer(x, key_mask)  # [B, T, H]
        logits = self.qa_outputs(x).float()  # [B, T, 2]; float32 so callers never see half logits
        start_logits, end_logits = logits.unbind(-1)  # each [B, T]
        return start_logits.contiguous(), end_logits.contiguous()


# Scales of `init_for_reading`, chosen on `mrc.demo` (docs/demo.md): sinusoids of amplitude 0.1
# against word and token-type embeddings of std 0.02; head 0's shared query/key rows of norm 2.
POSITION_SCALE = 0.1
LOCAL_HEAD_SCALE = 2.0


def init_for_reading(model: ElectraForQA, seed: int) -> None:
    """Two changes to HF's random initialisation, so that a model trained from scratch for minutes
    learns to read the sentence around a candidate answer, not only to guess its type.

    Trained for minutes from HF's initialisation, the demo model answers by type (the only person,
    the only population in the paragraph) but picks among several years of one paragraph at chance:
    that needs attention to the rest of a year's sentence, i.e. to nearby positions.
    - The position embeddings start as the transformer's sinusoids (`POSITION_SCALE`), so nearby
      positions have similar embeddings and outweigh the random word embeddings at first.
    - In the first layer, head 0's query and key projections start equal (one random orthonormal
      projection, `LOCAL_HEAD_SCALE`): the head attends to tokens with similar embeddings, which
      at the start means the neighbouring positions. It begins as a local-attention head.
    Measured on the demo (docs/demo.md, seeds 13-16). Everything stays trainable, the architecture
    is unchanged and the checkpoint is an ordinary ELECTRA. `seed` draws the head's projection.

    It sits beside `init_weights` because it is an initialisation of this module layout (the
    fused qkv rows, the position table); only the demo's from-scratch model uses it.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        table = model.embeddings.position.weight                                    # [P, E]
        positions, width = table.shape
        angle = torch.arange(positions)[:, None] / 10000 ** (torch.arange(0, width, 2) / width)   # [P, ceil(E/2)]
        table[:, 0::2] = POSITION_SCALE * torch.sin(angle)
        table[:, 1::2] = POSITION_SCALE * torch.cos(angle[:, :width // 2])
        qkv = model.layers[0].qkv.weight                                            # [3H, H]: query, key, value rows
        hidden = qkv.shape[1]
        head = hidden // model.cfg.num_attention_heads
        projection = torch.linalg.qr(torch.randn(hidden, head, generator=generator))[0].T   # [head, H] orthonormal
        qkv[:head] = LOCAL_HEAD_SCALE * projection
        qkv[hidden:hidden + head] = LOCAL_HEAD_SCALE * projection
