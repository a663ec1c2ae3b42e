"""GPU benchmark: full 12-layer KoELECTRA-base, fp16 autocast, 512 tokens, ours vs transformers.

Same weights in both models, same run. Figures per model:
  train      forward + loss + backward + AdamW step (GradScaler, dropout on), tokens/s and MFU
  inference  forward under torch.no_grad (eval), tokens/s and MFU
MFU (model-FLOPs utilisation) counts FLOPs analytically, the PaLM way: per token, training costs
6 * N + 12 * L * T * H and inference 2 * N + 4 * L * T * H, where N is the number of matmul
parameters (encoder linears, embedding projection, QA head; embedding lookups do no matmul),
L layers, T tokens per sequence, H hidden width (the second term is attention's QK^T and AV).
Peak: 989 TFLOP/s, NVIDIA's dense FP16/BF16 tensor-core figure for H100/H200 SXM (pass --peak_tflops
for another GPU). Each figure is the median over rounds of --steps timed steps after --warmup, the
two models alternating rounds so clock or thermal drift hits both. Runs in about 2 minutes on an
H200 (well under 8).

    .venv/bin/python bench/gpu_model.py [--batch 32 --seq 512 --steps 20 --rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from mrc.checkpoint import hf_to_ours
from mrc.loss import qa_loss
from mrc.model import ElectraForQA, ModelConfig

H200_PEAK_TFLOPS = 989.0


def require_cuda() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_model.py needs a CUDA GPU: torch.cuda.is_available() is False here "
                 f"(torch {torch.__version__}). Run it on a GPU machine; bench/bench_model.py is the CPU benchmark.")


def matmul_params(cfg: ModelConfig) -> int:
    """N: weights of every matmul in the model (biases and LayerNorms are negligible)."""
    H, I, E = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_size
    per_layer = 3 * H * H + H * H + 2 * H * I  # QKV, attention output, feed-forward in and out
    projection = E * H if E != H else 0
    return cfg.num_hidden_layers * per_layer + projection + 2 * H


def flops_per_token(cfg: ModelConfig, seq: int, training: bool) -> float:
    attention = 4 * cfg.num_hidden_layers * seq * cfg.hidden_size  # QK^T and AV, forward
    forward = 2 * matmul_params(cfg) + attention
    return 3 * forward if training else forward


def build_models(device: torch.device) -> tuple[ElectraForQA, torch.nn.Module, ModelConfig]:
    import transformers

    cfg = ModelConfig()  # KoELECTRA-base-v3: 12 layers, hidden 768, vocab 35000
    hf_cfg = transformers.ElectraConfig(**{k: v for k, v in cfg.to_hf().items() if k != "model_type"})
    torch.manual_seed(0)
    hf = transformers.ElectraForQuestionAnswering(hf_cfg)  # sdpa attention, transformers' default
    ours = ElectraForQA(cfg)
    state, _, _ = hf_to_ours(hf.state_dict(), cfg, Path("<transformers model>"))
    ours.load_state_dict(state)
    return ours.to(device), hf.to(device), cfg


def make_batch(cfg: ModelConfig, batch: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, cfg.vocab_size, (batch, seq), generator=g)
    types = torch.zeros_like(ids)
    types[:, seq // 8:] = 1
    out = {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids),
           "start_positions": torch.randint(0, seq, (batch,), generator=g),
           "end_positions": torch.randint(0, seq, (batch,), generator=g)}
    return {k: v.to(device) for k, v in out.items()}


class Runner:
    """One model's train step and inference forward, fp16 autocast."""

    def __init__(self, name: str, model: torch.nn.Module, is_ours: bool, batch: dict[str, torch.Tensor]):
        self.name, self.model, self.is_ours, self.b = name, model, is_ours, batch
        self.opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
        self.scaler = torch.amp.GradScaler("cuda")

    def logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.b
        if self.is_ours:
            return self.model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        out = self.model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                         attention_mask=b["attention_mask"])
        return out.start_logits, out.end_logits

    def train_step(self) -> None:
        b = self.b
        with torch.autocast("cuda", dtype=torch.float16):
            start, end = self.logits()
            loss = qa_loss(start, end, b["start_positions"], b["end_positions"], b["attention_mask"])
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    def infer(self) -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            self.logits()


def timed_seconds_per_step(fn, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def measure(runners: list[Runner], mode: str, warmup: int, steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each runner; rounds alternate between the runners."""
    steps_of = {r.name: r.train_step if mode == "train" else r.infer for r in runners}
    for r in runners:
        r.model.train(mode == "train")
        for _ in range(warmup):
            steps_of[r.name]()
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for _ in range(rounds):
        for r in runners:
            times[r.name].append(timed_seconds_per_step(steps_of[r.name], steps))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak_tflops", type=float, default=H200_PEAK_TFLOPS,
                        help="dense fp16 tensor-core peak of the GPU (H100/H200 SXM: 989)")
    args = parser.parse_args()
    require_cuda()

    device = torch.device("cuda")
    ours, hf, cfg = build_models(device)
    batch = make_batch(cfg, args.batch, args.seq, device)
    runners = [Runner("ours", ours, True, batch), Runner("transformers", hf, False, batch)]

    ours.eval(), hf.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        diff = (runners[0].logits()[0] - runners[1].logits()[0]).abs().max().item()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; KoELECTRA-base ({cfg.num_hidden_layers} layers, "
          f"{matmul_params(cfg) / 1e6:.1f}M matmul params), batch {args.batch} x {args.seq}, fp16 autocast; "
          f"peak {args.peak_tflops:.0f} TFLOP/s; max |start logit difference| ours vs transformers: {diff:.2e}")

    tokens = args.batch * args.seq
    rows = []
    for mode in ("train", "inference"):
        per_step = measure(runners, mode, args.warmup, args.steps, args.rounds)
        flops = flops_per_token(cfg, args.seq, training=mode == "train") * tokens
        for name, seconds in per_step.items():
            mfu = flops / seconds / (args.peak_tflops * 1e12)
            ratio = per_step["transformers"] / seconds
            rows.append(f"| {mode} | {name} | {seconds * 1e3:.1f} | {tokens / seconds:,.0f} | {mfu:.1%} | {ratio:.2f} |")
    print("\n| mode | model | ms / step | tokens / s | MFU | speed vs transformers |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\npeak GPU memory allocated (both models resident): {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
