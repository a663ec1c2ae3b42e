"""CPU benchmark: our ElectraForQA against transformers' ElectraForQuestionAnswering, same weights.

Fixed shape (batch 8 x 512 tokens, no padding), KoELECTRA-base widths, 2 layers (the per-layer
cost is what differs; 12 layers only take longer). Two figures, each the median of several
repeats after a warm-up, ours and transformers' interleaved so load changes on a shared machine
hit both alike:
  forward     inference forward (eval, no grad)
  train step  forward + loss + backward + AdamW step (train mode, dropout on)
Ratio = transformers time / our time (>= 1.0: we are at least as fast), of the medians and of the
best repeats (steadier when other work shares the machine).

    .venv/bin/python bench/bench_model.py [--batch 8 --seq 512 --layers 2 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from mrc.checkpoint import hf_to_ours
from mrc.loss import qa_loss
from mrc.model import ElectraForQA, ModelConfig


def build_models(layers: int) -> tuple[ElectraForQA, torch.nn.Module, ModelConfig]:
    """Our model and transformers' with identical weights (KoELECTRA-base widths)."""
    import transformers

    cfg = ModelConfig(num_hidden_layers=layers)  # defaults are KoELECTRA-base-v3's widths
    hf_cfg = transformers.ElectraConfig(**{k: v for k, v in cfg.to_hf().items() if k != "model_type"})
    torch.manual_seed(0)
    hf = transformers.ElectraForQuestionAnswering(hf_cfg)  # default attention: sdpa, its fastest on CPU
    ours = ElectraForQA(cfg)
    state, _, _ = hf_to_ours(hf.state_dict(), cfg, Path("<transformers model>"))
    ours.load_state_dict(state)
    return ours, hf, cfg


def make_batch(cfg: ModelConfig, batch: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, cfg.vocab_size, (batch, seq), generator=g)
    types = torch.zeros_like(ids)
    types[:, seq // 8:] = 1  # a 64-token question, then the context
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids),
            "start_positions": torch.randint(0, seq, (batch,), generator=g),
            "end_positions": torch.randint(0, seq, (batch,), generator=g)}


def our_forward(model, b):
    with torch.no_grad():
        model(b["input_ids"], b["token_type_ids"], b["attention_mask"])


def hf_forward(model, b):
    with torch.no_grad():
        model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])


def our_train_step(model, opt, b):
    start, end = model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
    qa_loss(start, end, b["start_positions"], b["end_positions"], b["attention_mask"]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def hf_train_step(model, opt, b):
    out = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"],
                start_positions=b["start_positions"], end_positions=b["end_positions"])
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_times(ours_fn, hf_fn, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        ours_fn()
        hf_fn()
    ours_t, hf_t = [], []
    for _ in range(repeats):
        ours_t.append(seconds(ours_fn))
        hf_t.append(seconds(hf_fn))
    return ours_t, hf_t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    ours, hf, cfg = build_models(args.layers)
    b = make_batch(cfg, args.batch, args.seq)
    print(f"torch {torch.__version__}, {threads} threads; batch {args.batch} x {args.seq}, "
          f"hidden {cfg.hidden_size}, {args.layers} layers; median of {args.repeats} after {args.warmup} warm-up")

    ours.eval(), hf.eval()
    fwd = interleaved_times(lambda: our_forward(ours, b), lambda: hf_forward(hf, b), args.warmup, args.repeats)
    ours.train(), hf.train()
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=5e-5)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=5e-5)
    step = interleaved_times(lambda: our_train_step(ours, ours_opt, b), lambda: hf_train_step(hf, hf_opt, b),
                               args.warmup, args.repeats)

    # The best-of ratio is the steadier figure when other work shares the CPU.
    print("\n| CPU, same run | ours median (ms) | transformers median (ms) | ratio of medians | ratio of best |")
    print("|---|---:|---:|---:|---:|")
    for name, (mine, theirs) in (("forward", fwd), ("forward + backward + AdamW step", step)):
        ours_ms, hf_ms = statistics.median(mine) * 1e3, statistics.median(theirs) * 1e3
        print(f"| {name} | {ours_ms:.0f} | {hf_ms:.0f} | {hf_ms / ours_ms:.2f} | {min(theirs) / min(mine):.2f} |")


if __name__ == "__main__":
    main()
