"""qa_loss: mean of start/end cross-entropy over real tokens, finite under fp16."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrc.loss import qa_loss


def padded_batch(lengths=(12, 7, 3), width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    mask = torch.zeros(B, width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    start = torch.randn(B, width, generator=g) * 3
    end = torch.randn(B, width, generator=g) * 3
    start_pos = torch.tensor([min(5, n - 1) for n in lengths])
    end_pos = torch.tensor([n - 1 for n in lengths])
    return start, end, start_pos, end_pos, mask


def test_loss_is_mean_of_start_and_end_cross_entropy_over_each_windows_tokens():
    start, end, sp, ep, mask = padded_batch()
    per_row = []
    for row, n in enumerate(mask.sum(1).tolist()):
        s = -F.log_softmax(start[row, :n], 0)[sp[row]]
        e = -F.log_softmax(end[row, :n], 0)[ep[row]]
        per_row.append((s + e) / 2)
    torch.testing.assert_close(qa_loss(start, end, sp, ep, mask), torch.stack(per_row).mean())


def test_padding_gets_no_probability_and_no_gradient():
    start, end, sp, ep, mask = padded_batch()
    start.requires_grad_(True)
    loss = qa_loss(start, end, sp, ep, mask)
    loss.backward()
    assert start.grad[mask == 0].abs().max() == 0
    assert start.grad[mask == 1].abs().max() > 0
    wild = start.detach().clone()
    wild[mask == 0] = 1e4  # huge padded logits would dominate an unmasked softmax
    torch.testing.assert_close(qa_loss(wild, end, sp, ep, mask), loss.detach())


def test_fp16_logits_give_a_finite_loss_and_gradient():
    start, end, sp, ep, mask = padded_batch()
    start16 = start.half().requires_grad_(True)
    loss = qa_loss(start16, end.half(), sp, ep, mask)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(start16.grad).all() and start16.grad.dtype == torch.float16
    torch.testing.assert_close(loss, qa_loss(start.half().float(), end.half().float(), sp, ep, mask))


def test_uniform_logits_give_log_of_window_length():
    """A model that knows nothing pays log(number of real tokens) per window: padding is not counted."""
    lengths = (10, 4)
    mask = torch.zeros(2, 8 * 2, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    zeros = torch.zeros(2, 16)
    loss = qa_loss(zeros, zeros, torch.tensor([0, 0]), torch.tensor([3, 2]), mask)
    assert math.isclose(loss.item(), (math.log(10) + math.log(4)) / 2, rel_tol=1e-6)


def test_label_outside_the_sequence_is_an_error_not_a_silent_clamp():
    start, end, sp, ep, mask = padded_batch()
    with pytest.raises(IndexError):
        qa_loss(start, end, torch.tensor([0, 0, 99]), ep, mask)
