"""Longer windows than a checkpoint was trained for: extending its learned position table.

BERT and ELECTRA learn one embedding row per position (KoELECTRA, KLUE-BERT: 512), so a window
longer than the table has no embedding for its tail. Two well-tried ways to grow the table before
fine-tuning at the new length:

- `copy` tiles the learned rows: new row i = old row (i mod P). Longformer (Beltagy et al. 2020,
  section 5) initialised its 4,096 positions by copying RoBERTa's 512 over and over, and found
  this better than random rows: attention patterns learned over relative offsets keep working
  inside each copy, and the first P rows are exactly the checkpoint's.
- `interpolate` resamples the table linearly onto the new length (first and last rows kept): what
  ViT does to fine-tune at a higher resolution (Dosovitskiy et al. 2021, "Fine-tuning and higher
  resolution"), and for rotary positions Chen et al. 2023, "Position Interpolation". Every
  position stays inside the range the model saw, at the cost of nearby rows moving closer.

Either way the result is an ordinary checkpoint with a larger `max_position_embeddings`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mrc.errors import MRCError

EXTEND_METHODS = ("copy", "interpolate")


def too_long_for_positions(what: str, max_positions: int, where: str | Path, remedy: str) -> MRCError:
    """The one message for windows longer than a model's position table; `remedy` says what to change."""
    return MRCError(f"{what} is longer than the {max_positions} positions of {where} (max_position_embeddings in "
                    f"its config.json); {remedy}")


def check_window_fits(max_seq_length: int, max_positions: int, method: str | None, where: str) -> bool:
    """Whether the table must grow for `--max_seq_length`; an MRCError when it must and cannot.

    `where` names the model folder in the message; `method` is `--extend_positions` (None when not
    given). Returns True exactly when `max_seq_length > max_positions` and a method was given.
    """
    if method is not None and method not in EXTEND_METHODS:
        raise MRCError(f"--extend_positions {method!r} is not one of {', '.join(EXTEND_METHODS)}")
    if max_seq_length <= max_positions:
        return False
    if method is None:
        raise too_long_for_positions(f"--max_seq_length {max_seq_length}", max_positions, where,
                                     f"lower --max_seq_length to {max_positions}, or add --extend_positions copy (or "
                                     f"interpolate) to grow the position table to {max_seq_length} before fine-tuning "
                                     f"(docs/model.md)")
    return True


def extend_table(table: torch.Tensor, length: int, method: str) -> torch.Tensor:
    """A [P, E] learned position table -> [length, E] by `method` (see the module doc); length >= P."""
    positions, width = table.shape
    if length < positions:
        raise ValueError(f"cannot extend a {positions}-row table to {length} rows")
    if method == "copy":
        repeats = -(-length // positions)  # ceil
        return table.repeat(repeats, 1)[:length].clone()                          # [length, E]
    if method == "interpolate":
        if positions == 1:
            return table.expand(length, width).clone()
        # [1, E, P] -> [1, E, length]; align_corners keeps rows 0 and P-1 at the two ends.
        resampled = F.interpolate(table.t()[None].float(), size=length, mode="linear", align_corners=True)
        return resampled[0].t().to(table.dtype).contiguous()                     # [length, E]
    raise MRCError(f"--extend_positions {method!r} is not one of {', '.join(EXTEND_METHODS)}")
