"""Numeric precision of the model's matmuls: float32, float16 autocast, or bfloat16 autocast."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
