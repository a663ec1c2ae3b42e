"""Numeric precision of the model's matmuls: float32, float16 or bfloat16 autocast, or int8 (CPU) weights."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mrc.config import field
from mrc.errors import MRCError


@dataclass(frozen=True)
class PrecisionConfig:
    """Autocast settings shared by training and prediction."""

    fp16: bool = field(False, "float16 autocast (training adds a dynamic loss scale, GradScaler)")
    bf16: bool = field(False, "bfloat16 autocast (no loss scale needed); Ampere or newer GPUs")

    def __post_init__(self) -> None:
        if self.fp16 and self.bf16:
            raise MRCError("--fp16 and --bf16 exclude each other; pick one")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.float16 if self.fp16 else torch.bfloat16 if self.bf16 else None

    def check_device(self, device: torch.device) -> None:
        """Refuse a precision the device cannot run, before any model work."""
        if self.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise MRCError("--bf16 needs an Ampere or newer GPU; use --fp16 on this one")


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the encoder's Linear layers (CPU): weights int8 once, activations
    quantized per batch. The QA head stays float32: it is tiny and its logits decide the answer.

    `torch.ao.quantization.quantize_dynamic` is deprecated in favour of the separate torchao package
    but still works; we keep it rather than add a runtime dependency, and silence its notices.
    """
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:  # a future torch without it: only --int8 needs it
        raise MRCError(f"--int8 needs torch.ao.quantization, which torch {torch.__version__} no longer has; "
                       "drop --int8") from None
    spec = {name: default_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name != "qa_outputs"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        return quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8)
