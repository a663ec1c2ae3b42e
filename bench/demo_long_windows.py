"""Do longer windows help? The demo's synthetic data, one initial model, three trainings.

    python bench/demo_long_windows.py --out /tmp/long_demo [--train_paragraphs 12000]

1. Write the demo's data, vocab and initial model (128 positions; `mrc.demo.run.make_inputs`).
2. Train it three times with the demo's recipe (`mrc.train.run`): at --max_seq_length 128
   (doc_stride 64, the demo's), and extended to 256 (doc_stride 128) by --extend_positions copy
   and by interpolate. Same data, same epochs, same batch of windows: a longer window holds what
   two or three short ones did, so the long runs see fewer (and fewer repeated) tokens; the
   table prints the tokens and seconds each run trained on.
3. Score each model's held-out predictions with the official KorQuAD metric, on all questions and
   on those whose paragraph needs more than one window at 128.

Prints one table and writes `results.json` in --out. Each arm is one full demo training: run it on
an otherwise idle machine, or in the background.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mrc import train
from mrc.data import read_examples
from mrc.demo.run import MAX_QUERY_LENGTH, SIZES, DemoConfig, make_inputs, prepare_out_dir, train_config
from mrc.features import build_store
from mrc.metrics import evaluate, load_predictions
from mrc.store import WindowConfig

ARMS = (("128", 128, None), ("256 copy", 256, "copy"), ("256 interpolate", 256, "interpolate"))


def windows_per_question(examples, tokenizer: Path, window: WindowConfig, cache: Path) -> dict[str, int]:
    store = build_store(examples, tokenizer, window, labels=False, cache_dir=cache)
    counts = np.bincount(np.asarray(store.windows.example_index), minlength=store.num_examples)
    return dict(zip(store.example_ids, counts.tolist()))


def train_tokens(train_file: Path, tokenizer: Path, window: WindowConfig, cache: Path) -> int:
    examples, _ = read_examples([train_file])
    store = build_store(examples, tokenizer, window, labels=True, cache_dir=cache)
    return int(store.sequence_lengths().astype(np.int64).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train_paragraphs", type=int, default=SIZES["full"].train_paragraphs)
    parser.add_argument("--dev_paragraphs", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--arms", nargs="+", default=[a[0] for a in ARMS], choices=[a[0] for a in ARMS])
    args = parser.parse_args()
    size = dataclasses.replace(SIZES["full"], train_paragraphs=args.train_paragraphs,
                               dev_paragraphs=args.dev_paragraphs)
    demo = DemoConfig(out=args.out, size="full", seed=args.seed)
    prepare_out_dir(demo.out)
    files = make_inputs(demo, size)
    tokenizer, cache = demo.out / "tokenizer", demo.out / "cache"
    dev, _ = read_examples([files["dev"]])
    short = WindowConfig(max_seq_length=128, doc_stride=64, max_query_length=MAX_QUERY_LENGTH)
    multi_ids = {q for q, n in windows_per_question(dev, tokenizer, short, cache).items() if n > 1}
    if not multi_ids:
        raise SystemExit(f"no held-out question needs more than one window at 128; raise --dev_paragraphs "
                         f"(about one paragraph in ten is long)")
    results = {"train_paragraphs": size.train_paragraphs, "dev_questions": len(dev),
               "dev_questions_multi_window_at_128": len(multi_ids), "arms": {}}
    for name, length, method in ARMS:
        if name not in args.arms:
            continue
        window = WindowConfig(max_seq_length=length, doc_stride=length // 2, max_query_length=MAX_QUERY_LENGTH)
        out = demo.out / f"model_{name.replace(' ', '_')}"
        cfg = dataclasses.replace(train_config(demo, size, files), output_dir=str(out), window=window,
                                  extend_positions=method)
        started = time.perf_counter()
        train.run(cfg)
        seconds = time.perf_counter() - started
        final = next(out.glob("predictions_*.json"))  # predictions_<final step>.json
        answers = load_predictions(final)
        overall = evaluate(dev, answers)
        long_only = evaluate([ex for ex in dev if ex.id in multi_ids], answers)
        results["arms"][name] = {
            "max_seq_length": length, "doc_stride": length // 2, "extend_positions": method,
            "train_seconds": round(seconds, 1), "steps": int(final.stem.split("_")[-1]),
            "train_tokens_per_epoch": train_tokens(files["train"], tokenizer, window, cache),
            "windows_per_multi_question_dev": float(np.mean([n for q, n in windows_per_question(
                dev, tokenizer, window, cache).items() if q in multi_ids])),
            "em": overall.exact_match, "f1": overall.f1, "em_multi": long_only.exact_match, "f1_multi": long_only.f1}
        (demo.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"held-out: {len(dev)} questions, {len(multi_ids)} of them in paragraphs needing > 1 window at 128/64")
    print(f"{'arm':<16} {'tokens':>10} {'steps':>6} {'seconds':>8} {'EM':>6} {'F1':>6} {'EM>1w':>6} {'F1>1w':>6} "
          f"{'win/>1w':>7}")
    for name, r in results["arms"].items():
        print(f"{name:<16} {r['train_tokens_per_epoch']:>10,} {r['steps']:>6,} {r['train_seconds']:>8.0f} "
              f"{r['em']:>6.2f} {r['f1']:>6.2f} {r['em_multi']:>6.2f} {r['f1_multi']:>6.2f} "
              f"{r['windows_per_multi_question_dev']:>7.2f}")


if __name__ == "__main__":
    main()
