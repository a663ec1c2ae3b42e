"""Training throughput, same process: our loop vs transformers fed the seed's way (CPU).

    .venv/bin/python bench/bench_train.py [--layers 2 --batch 8 --steps 3 --rounds 2 --threads N]

Both sides train KoELECTRA-base widths (hidden 768, 12 heads, FFN 3072, vocab 35,000) cut to
`--layers` layers, from the same initial weights, on real KorQuAD dev windows (max_seq_length 512,
doc_stride 128, max_query_length 64), `--batch` windows per optimizer step, AdamW without decay on
biases and LayerNorm, clipping at 1.0, a linear schedule.

- ours: `mrc.train.train_step` on length-grouped batches (`LengthGroupedSampler` over one
  mega-batch of windows), each padded only to its longest window (multiple of 8);
- seed: `transformers.ElectraForQuestionAnswering` on random batches padded to 512, the step of
  the legacy `run_squad.py` (model(...)[0] loss, backward, clip, step, schedule, zero_grad, and
  its `loss.item()` per step).

The figure is real (non-padding) tokens per second; padding is work the seed does and ours
skips, so it counts for neither. Rounds alternate the two loops so load changes on a shared
machine hit both; each side reports its best round. `bench/gpu_train.py` is the GPU version.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrc.batching import MEGA_BATCH_BATCHES, LengthGroupedSampler, collate  # noqa: E402
from mrc.checkpoint import hf_to_ours  # noqa: E402
from mrc.dist import DistContext  # noqa: E402
from mrc.model import ElectraForQA, ModelConfig  # noqa: E402
from mrc.optim import build_optimizer, linear_warmup_decay  # noqa: E402
from mrc.train import collate_to_device, train_step  # noqa: E402

SEED_MAX_SEQ_LENGTH = 512


def shared_dir() -> Path:
    return Path(os.environ.get("MRC_SHARED", REPO.parent / "shared")).resolve()


def dev_store(cache_dir: Path | None):
    """Labelled windows of the real KorQuAD dev set with the seed's window settings."""
    from mrc.data import read_examples
    from mrc.features import build_store
    from mrc.store import WindowConfig

    dev = shared_dir() / "data/korquad/KorQuAD_v1.0_dev.json"
    vocab = shared_dir() / "models/koelectra-base-v3-discriminator"
    if not dev.is_file() or not vocab.is_dir():
        sys.exit(f"need {dev} and {vocab}: set MRC_SHARED to the folder holding data/ and models/")
    examples, _ = read_examples([dev])
    return build_store(examples, vocab, WindowConfig(512, 128, 64), labels=True, cache_dir=cache_dir)


def build_models(layers: int, device: torch.device) -> tuple[ElectraForQA, torch.nn.Module, ModelConfig]:
    """Ours and transformers' QA model with identical initial weights."""
    import transformers

    cfg = ModelConfig(num_hidden_layers=layers)  # KoELECTRA-base widths
    hf_cfg = transformers.ElectraConfig(**{k: v for k, v in cfg.to_hf().items() if k != "model_type"})
    torch.manual_seed(0)
    hf = transformers.ElectraForQuestionAnswering(hf_cfg)
    ours = ElectraForQA(cfg)
    state, _, _ = hf_to_ours(hf.state_dict(), cfg, Path("<transformers model>"))
    ours.load_state_dict(state)
    return ours.to(device).train(), hf.to(device).train(), cfg


@dataclass
class Batches:
    """The windows each side trains on: `ours` length-grouped, `seed` random; similar real tokens."""

    ours: list[np.ndarray]
    seed: list[np.ndarray]


def draw_batches(store, batch: int, count: int, seed: int) -> Batches:
    """`count` batches per side from one random mega-batch of dev windows (what the sampler groups in training)."""
    rng = np.random.default_rng(seed)
    pool = rng.choice(len(store), size=min(len(store), batch * MEGA_BATCH_BATCHES), replace=False)
    grouped = LengthGroupedSampler(store.sequence_lengths()[pool], batch, seed).batches(0)
    ours = [pool[grouped[i]] for i in rng.choice(len(grouped), size=count, replace=False)]
    shuffled = rng.permutation(pool)
    seed_batches = [shuffled[i * batch:(i + 1) * batch] for i in range(count)]
    return Batches(ours, seed_batches)


def real_tokens(store, rows: np.ndarray) -> int:
    return int(store.sequence_lengths()[rows].sum())


class OurLoop:
    """mrc.train's optimizer, schedule, scaler and train_step."""

    def __init__(self, model: ElectraForQA, store, device: torch.device, autocast_dtype: torch.dtype | None):
        self.model, self.store, self.device, self.autocast_dtype = model, store, device, autocast_dtype
        self.optimizer = build_optimizer(model, learning_rate=5e-5, weight_decay=0.01, adam_epsilon=1e-8, device=device)
        self.scheduler = linear_warmup_decay(self.optimizer, 0, 10_000)
        self.scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
        self.ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)

    def step(self, rows: np.ndarray) -> None:
        batch = collate_to_device(self.store, rows, self.device)
        train_step(self.model, [(batch, 1.0)], self.optimizer, self.scheduler, self.scaler, self.autocast_dtype, 1.0,
                   self.ctx)


class SeedLoop:
    """The legacy run_squad.py step on transformers' model, inputs padded to max_seq_length."""

    def __init__(self, model: torch.nn.Module, store, device: torch.device, autocast_dtype: torch.dtype | None):
        import transformers

        self.model, self.store, self.device, self.autocast_dtype = model, store, device, autocast_dtype
        no_decay = ["bias", "LayerNorm.weight"]
        groups = [
            {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
             "weight_decay": 0.01},
            {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
             "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=5e-5, eps=1e-8, fused=device.type == "cuda")
        self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, 0, 10_000)
        self.scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    def padded_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        batch = collate(self.store, rows, with_labels=True)
        pad = SEED_MAX_SEQ_LENGTH - batch["input_ids"].shape[1]
        out = {k: F.pad(batch[k], (0, pad)) for k in ("input_ids", "token_type_ids", "attention_mask")}  # [B, 512]
        out["start_positions"], out["end_positions"] = batch["start_positions"], batch["end_positions"]
        return {k: v.to(self.device, non_blocking=True) for k, v in out.items()}

    def step(self, rows: np.ndarray) -> float:
        inputs = self.padded_batch(rows)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            loss = self.model(**inputs)[0]
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.model.zero_grad()
        return loss.item()  # the seed's `tr_loss += loss.item()`: a host sync every step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_round(loop, store, batches: list[np.ndarray], device: torch.device) -> tuple[float, int]:
    """(seconds, real tokens) of one pass over `batches`."""
    synchronize(device)
    started = time.perf_counter()
    for rows in batches:
        loop.step(rows)
    synchronize(device)
    return time.perf_counter() - started, sum(real_tokens(store, rows) for rows in batches)


def compare(store, layers: int, batch: int, steps: int, rounds: int, device: torch.device,
            autocast_dtype: torch.dtype | None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Best-round real tokens/s of each loop, plus the padded positions each one ran."""
    ours_model, hf_model, cfg = build_models(layers, device)
    loops = {"ours": OurLoop(ours_model, store, device, autocast_dtype),
             "seed": SeedLoop(hf_model, store, device, autocast_dtype)}
    warm = draw_batches(store, batch, 1, seed + 1000)
    loops["ours"].step(warm.ours[0])  # first-call allocations and kernel selection, not timed
    loops["seed"].step(warm.seed[0])
    best = {name: 0.0 for name in loops}
    positions = {name: 0 for name in loops}
    tokens = {name: 0 for name in loops}
    for r in range(rounds):
        drawn = draw_batches(store, batch, steps, seed + r)
        for name, loop in loops.items():
            rows = drawn.ours if name == "ours" else drawn.seed
            seconds, real = timed_round(loop, store, rows, device)
            best[name] = max(best[name], real / seconds)
            tokens[name] += real
            positions[name] += sum(len(b) * (SEED_MAX_SEQ_LENGTH if name == "seed" else
                                             -(-int(store.sequence_lengths()[b].max()) // 8) * 8) for b in rows)
    return {name: {"tokens_per_s": best[name], "real_fraction": tokens[name] / positions[name]} for name in loops}


def main() -> None:
    # A GradScaler skipping an fp16 overflow step makes torch warn about the schedule order; expected.
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (base widths)")
    parser.add_argument("--batch", type=int, default=8, help="windows per optimizer step, both sides")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each side counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="window store cache (default $MRC_CACHE or .cache/mrc)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    store = dev_store(args.cache_dir)
    device = torch.device("cpu")
    result = compare(store, args.layers, args.batch, args.steps, args.rounds, device, None)
    print(f"KorQuAD dev windows: {len(store):,}; {args.layers} layers at base widths; batch {args.batch}; "
          f"{args.steps} steps x {args.rounds} rounds; {torch.get_num_threads()} CPU thread(s)")
    for name, r in result.items():
        print(f"  {name:5s} {r['tokens_per_s']:10,.0f} real tokens/s   ({100 * r['real_fraction']:.0f}% of the "
              "positions it ran were real tokens)")
    print(f"ratio ours / seed: {result['ours']['tokens_per_s'] / result['seed']['tokens_per_s']:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
