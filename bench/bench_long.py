"""CPU benchmark of long windows: time and peak memory per token as T grows, ours against transformers.

    .venv/bin/python bench/bench_long.py [--lengths 512 1024 2048 4096 --layers 1 --repeats 3]

One sequence of T tokens (batch 1, the last T/8 padded, so the padding mask is on the path),
KoELECTRA-base widths (H 768, 12 heads, vocab 35,000; `--hidden 128` for a tiny model), `--layers`
layers, a position table of T rows (what `--extend_positions` builds). Same weights on every side,
dropout 0 unless said:
  ours            mrc.model.ElectraForQA
  transformers    ElectraForQuestionAnswering with the same config (its default attention)
  ours, p=0.1     ours in training with attention dropout 0.1: the CPU has no fused kernel for
                  dropout, so scaled_dot_product_attention falls back to its math path ([B, N, T, T])
Modes: forward (eval, no grad) and forward+backward (train mode, loss, backward; the word embedding
frozen on both sides, since its dense gradient is a 107 MiB temporary whatever T is).

Every (side, T, mode) runs in its own process: time = best of `--repeats` after a warm-up; memory
= the steps' peak resident memory above the resting state after the warm-up (Linux VmHWM reset
through /proc/self/clear_refs; glibc told to return large blocks to the system at once, so a
freed activation leaves the resident set). The SDPA kernel that ran is read from torch.profiler.
Printed per token (µs/token, KiB/token), with the growth of each from the first T (1.0 = linear
in T overall) and transformers / ours.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrc.checkpoint import hf_to_ours  # noqa: E402  (after the path setup, for a checkout without install)
from mrc.loss import qa_loss  # noqa: E402
from mrc.model import ElectraForQA, ModelConfig  # noqa: E402

SIDES = ("ours", "transformers", "ours, p=0.1")
MODES = ("forward", "forward+backward")
KERNEL_OPS = ("_scaled_dot_product", "_efficient_attention", "_flash_attention")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def build(side: str, length: int, layers: int, hidden: int):
    """(model, forward function) for one side, same weights on both; heads of 64, FFN 4 x hidden."""
    import transformers  # test/bench-only dependency

    dropout = 0.1 if side == "ours, p=0.1" else 0.0
    cfg = ModelConfig(num_hidden_layers=layers, max_position_embeddings=length, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=dropout, hidden_size=hidden, embedding_size=hidden,
                      num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    hf_cfg = transformers.ElectraConfig(**{k: v for k, v in cfg.to_hf().items() if k != "model_type"})
    torch.manual_seed(0)
    hf = transformers.ElectraForQuestionAnswering(hf_cfg)
    if side == "transformers":
        def forward(b):
            out = hf(input_ids=b["ids"], token_type_ids=b["types"], attention_mask=b["mask"])
            return out.start_logits, out.end_logits
        return hf, forward, hf.config._attn_implementation
    ours = ElectraForQA(cfg)
    ours.load_state_dict(hf_to_ours(hf.state_dict(), cfg, Path("<transformers model>"))[0])
    del hf
    return ours, lambda b: ours(b["ids"], b["types"], b["mask"]), "scaled_dot_product_attention"


def child(side: str, length: int, mode: str, layers: int, repeats: int, hidden: int) -> dict:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    model, forward, attention = build(side, length, layers, hidden)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 35000, (1, length), generator=g)
    mask = torch.ones_like(ids)
    mask[:, length - length // 8:] = 0
    types = torch.zeros_like(ids)
    types[:, 64:] = 1
    batch = {"ids": ids * mask, "types": types * mask, "mask": mask}
    labels = torch.tensor([length // 2]), torch.tensor([length // 2 + 3])

    def step():
        if mode == "forward":
            with torch.no_grad():
                forward(batch)
            return
        start, end = forward(batch)
        qa_loss(start, end, *labels, mask).backward()
        model.zero_grad(set_to_none=False)  # gradients stay allocated: the resting state of training

    # The word embedding's gradient is a dense [35000, 768] temporary per step whatever T is (107 MiB);
    # frozen on both sides, so the memory figures are the encoder's, which is what grows with T.
    for name, p in model.named_parameters():
        if "word" in name:
            p.requires_grad_(False)
    model.train(mode != "forward")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()  # warm-up, which allocates the gradients; the profile names the attention kernels
    kernels = sorted({e.key for e in prof.key_averages() if any(k in e.key for k in KERNEL_OPS)})
    del prof
    gc.collect()
    resting = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    peak = rss_kib("VmHWM") - resting
    return {"seconds": min(times), "peak_kib": peak, "attention": attention, "kernels": kernels}


def run_child(side: str, length: int, mode: str, layers: int, repeats: int, hidden: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("BENCH_THREADS", "1")}
    out = subprocess.run([sys.executable, __file__, "--child", side, str(length), mode, "--layers", str(layers),
                          "--repeats", str(repeats), "--hidden", str(hidden)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} T={length} {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=768, help="width (768: base; 128 gives a tiny model)")
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "T", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, length, mode = args.child
        print(json.dumps(child(side, int(length), mode, args.layers, args.repeats, args.hidden)))
        return
    print(f"torch {torch.__version__}, {os.environ.get('BENCH_THREADS', '1')} thread(s), batch 1, "
          f"hidden {args.hidden}, "
          f"{args.layers} layer(s), last T/8 padded, best of {args.repeats}")
    results: dict[tuple[str, str, int], dict] = {}
    for mode in MODES:
        for length in args.lengths:
            for side in args.sides:  # interleaved, so load changes on a shared machine hit every side alike
                results[side, mode, length] = r = run_child(side, length, mode, args.layers, args.repeats, args.hidden)
                print(f"  {mode:<17} T={length:<5} {side:<13} {1e3 * r['seconds']:9.1f} ms "
                      f"{r['peak_kib'] / 1024:9.1f} MiB  {r['attention']}: {', '.join(r['kernels'])}", flush=True)
    first = args.lengths[0]
    for mode in MODES:
        print(f"\n{mode}: per token, growth from T={first} (1.0 = linear in T), transformers / ours")
        print(f"{'T':>6} | " + " | ".join(f"{s + ' us/tok':>21} {'x':>5} {'KiB/tok':>8} {'x':>5}" for s in args.sides)
              + " | tf/ours time  mem")
        for length in args.lengths:
            cells, per = [], {}
            for side in args.sides:
                r, r0 = results[side, mode, length], results[side, mode, first]
                us, kib = 1e6 * r["seconds"] / length, r["peak_kib"] / length
                us0, kib0 = 1e6 * r0["seconds"] / first, r0["peak_kib"] / first
                per[side] = (us, kib)
                cells.append(f"{us:>21.1f} {us / us0:>5.2f} {kib:>8.1f} {kib / max(kib0, 1e-9):>5.2f}")
            ratio = ""
            if "ours" in per and "transformers" in per:
                ratio = (f" | {per['transformers'][0] / per['ours'][0]:>9.2f}x "
                         f"{per['transformers'][1] / max(per['ours'][1], 1e-9):>5.2f}x")
            print(f"{length:>6} | " + " | ".join(cells) + ratio)


if __name__ == "__main__":
    main()
