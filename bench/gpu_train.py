"""GPU training throughput: full 12-layer KoELECTRA-base, fp16, 512 tokens, ours vs transformers.

    .venv/bin/python bench/gpu_train.py [--batches 16 32 --steps 20 --rounds 3 --peak_tflops 989]

The comparison of bench/bench_train.py (same code) on one GPU: our training loop
(`mrc.train.train_step`, length-grouped batches padded to their longest window, fp16 autocast,
GradScaler, fused AdamW) against `transformers.ElectraForQuestionAnswering` fed the seed's way
(random batches padded to 512, the legacy run_squad.py step under fp16 autocast + GradScaler),
same initial weights, same AdamW settings, real KorQuAD dev windows (max_seq_length 512,
doc_stride 128, max_query_length 64), for each batch size in --batches.

Figures: real (non-padding) tokens per second, best of --rounds alternating rounds of --steps
steps, and MFU on real tokens: the FLOPs the real tokens need, counted analytically the PaLM
way (per token of a sequence of length T: 6 N + 12 L T H, N matmul parameters, L layers, H hidden
width), over the time, over the peak. Padding computed by the seed counts as waste, not work.
Peak: 989 TFLOP/s, NVIDIA's dense FP16/BF16 tensor-core figure for H100/H200 SXM (--peak_tflops
for another GPU). Targets: ours >= 2x the seed's tokens/s and >= 40% MFU.
Needs the shared data (MRC_SHARED, as the tests). Runs in about 2-3 minutes on an H200 (< 8).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

H200_PEAK_TFLOPS = 989.0


def require_cuda() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_train.py needs a CUDA GPU: torch.cuda.is_available() is False here "
                 f"(torch {torch.__version__}). Run it on a GPU machine; bench/bench_train.py is the CPU benchmark.")


def matmul_params(cfg) -> int:
    """N: weights of every matmul (encoder linears, embedding projection, QA head)."""
    H, I, E = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_size
    per_layer = 3 * H * H + H * H + 2 * H * I
    return cfg.num_hidden_layers * per_layer + (E * H if E != H else 0) + 2 * H


def train_flops_per_real_token(cfg, lengths: np.ndarray) -> float:
    """Mean training FLOPs per real token over sequences of `lengths`: 6 N + 12 L H E[T^2]/E[T]."""
    lengths = lengths.astype(np.float64)
    attention_length = float((lengths ** 2).sum() / lengths.sum())
    return 6 * matmul_params(cfg) + 12 * cfg.num_hidden_layers * cfg.hidden_size * attention_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32], help="windows per step, both sides")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side counts")
    parser.add_argument("--peak_tflops", type=float, default=H200_PEAK_TFLOPS, help="dense fp16 peak of the GPU")
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="window store cache (default $MRC_CACHE or .cache/mrc)")
    args = parser.parse_args()
    require_cuda()

    from bench_train import compare, dev_store

    # A GradScaler skipping an fp16 overflow step makes torch warn about the schedule order; expected.
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)")

    from mrc.model import ModelConfig

    started = time.perf_counter()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    store = dev_store(args.cache_dir)
    cfg = ModelConfig()  # KoELECTRA-base-v3: 12 layers, hidden 768, vocab 35,000
    flops_per_token = train_flops_per_real_token(cfg, store.sequence_lengths())
    peak = args.peak_tflops * 1e12
    rows = []
    for batch in args.batches:
        result = compare(store, cfg.num_hidden_layers, batch, args.steps, args.rounds, device, torch.float16)
        ours, seed = result["ours"], result["seed"]
        rows.append(f"| {batch} | {ours['tokens_per_s']:,.0f} | {seed['tokens_per_s']:,.0f} | "
                    f"{ours['tokens_per_s'] / seed['tokens_per_s']:.2f}x | "
                    f"{100 * ours['tokens_per_s'] * flops_per_token / peak:.1f}% | "
                    f"{100 * seed['tokens_per_s'] * flops_per_token / peak:.1f}% | "
                    f"{100 * ours['real_fraction']:.0f}% | {100 * seed['real_fraction']:.0f}% |")
        torch.cuda.empty_cache()
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}; KoELECTRA-base (12 layers), "
          "fp16 autocast, "
          f"KorQuAD dev windows (max_seq_length 512); {args.steps} steps x {args.rounds} rounds; "
          f"MFU on real tokens at {flops_per_token / 1e9:.2f} GFLOP per real token, peak {args.peak_tflops:g} TFLOP/s")
    print()
    print("| batch | ours real tok/s | seed real tok/s | ratio | ours MFU | seed MFU | ours real/ran | seed real/ran |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\n(targets: ratio >= 2x, ours MFU >= 40%; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
