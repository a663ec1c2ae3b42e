"""AdamW with the usual BERT parameter groups and the linear warmup / linear decay schedule.

The seed (HF `run_squad.py`) excludes biases and LayerNorm weights from weight decay and runs
`get_linear_schedule_with_warmup`; these two functions reproduce exactly that.
"""

from __future__ import annotations

import torch
from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with `weight_decay`, biases and LayerNorm parameters without.

    LayerNorm is found by module type rather than by name, so renaming a layer cannot silently
    start decaying its gain.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, nn.LayerNorm) or name == "bias":
                no_decay.add(id(param))
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, *, learning_rate: float, weight_decay: float, adam_epsilon: float,
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW over `decay_groups`; the fused CUDA kernel on GPU.

    Fused AdamW also takes the GradScaler's inf check on the device, so `scaler.step` does not
    stop the CPU to read it.
    """
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=learning_rate, eps=adam_epsilon,
                             fused=device.type == "cuda")


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup_steps: int,
                        total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr x step/warmup for the first `warmup_steps`, then linearly down to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
