"""Extractive-QA loss: mean of the start and end cross-entropies over real (unpadded) tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_padding(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """float32 [B, T] logits with padded positions set to the most negative finite float32.

    Finite, not -inf: a row that is all padding stays NaN-free, and float32 (whatever the input
    dtype) keeps the fill far from fp16's overflow point (-65504) that a -1e9 constant would hit.
    """
    logits = logits.float()  # [B, T]
    return logits.masked_fill(attention_mask == 0, torch.finfo(torch.float32).min)


def qa_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
            end_positions: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar loss: (CE(start) + CE(end)) / 2, each averaged over the batch.

    start_logits, end_logits: [B, T] (any float dtype); start_positions, end_positions: int64 [B],
    sequence positions of the answer (0 = CLS for "no answer in this window"); attention_mask:
    [B, T] with 1 on real tokens. Padding positions take no probability mass and get zero gradient.
    Labels are not clamped: a label outside [0, T) is a data bug and cross_entropy raises on it.
    """
    start_loss = F.cross_entropy(mask_padding(start_logits, attention_mask), start_positions)
    end_loss = F.cross_entropy(mask_padding(end_logits, attention_mask), end_positions)
    return (start_loss + end_loss) / 2
