"""`mrc.Reader` speed: one question against the bare model forward, a file against predict.py.

Two measurements, in this process, on random-weight models of KoELECTRA-base widths (hidden 768,
12 heads, intermediate 3072, the real 35,000-token vocabulary):
- latency (`--layers`, 12 by default): `reader(question, context)` after load, against the bare
  `model(input_ids, token_type_ids, attention_mask)` forward on the very window the Reader builds
  for it (same tensors, under inference_mode). The Reader's overhead (tokenizing, windowing,
  collating, decoding, the Answer) as a share of the forward;
- throughput (`--throughput_layers`, 2 by default, as bench_predict.py, so the file runs in
  seconds on a CPU): questions per second over a KorQuAD dev subset, `mrc.predict.run` (predict.py:
  read -> window store in a fresh cache -> batches -> decode -> files written) against
  `Reader.from_pretrained(...).predict_file(...)`, both from the model folder to the answers (load
  included), and the Reader's `predict_file` alone after load. Their answers are checked equal.

The two sides are interleaved over `--repeats` rounds and each keeps its best (the machine may be
shared: the load average is printed).

    .venv/bin/python bench/bench_reader.py [--layers 12] [--questions 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_predict import korquad_subset, save_random_model  # noqa: E402
from mrc import Reader  # noqa: E402
from mrc.batching import collate  # noqa: E402
from mrc.data import Example  # noqa: E402
from mrc.features import build_store  # noqa: E402
from mrc.predict import PredictConfig, run  # noqa: E402


def shared_dir() -> Path:
    return Path(os.environ.get("MRC_SHARED", REPO.parent / "shared")).resolve()


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - began


def latency(folder: Path, question: str, context: str, repeats: int, device: str) -> dict:
    reader = Reader.from_pretrained(folder, device=device, quiet=True)
    store = build_store([Example("q", question, context, ())], folder, reader.settings.window, labels=False,
                        use_cache=False)
    if len(store) != 1:
        raise SystemExit(f"the question and context make {len(store)} windows; pick a shorter context")
    batch = {k: v.to(reader.device) for k, v in collate(store, [0], with_labels=False).items()}

    def forward() -> None:
        with torch.inference_mode():
            reader.model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])

    forward(), reader(question, context)       # warm-up: first-call allocations, tokenizer load
    bare, ours = [], []
    for _ in range(repeats):
        bare.append(timed(forward))
        ours.append(timed(lambda: reader(question, context)))
    return {"tokens": int(batch["input_ids"].shape[1]), "forward": bare, "reader": ours}


def throughput(folder: Path, data: Path, out: Path, repeats: int, batch_size: int, device: str) -> dict:
    best = {"predict.py": float("inf"), "Reader load + predict_file": float("inf"), "Reader predict_file": float("inf")}
    answers = {}
    for round_ in range(repeats):
        cache = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=out))
        cfg = PredictConfig(model=folder, input=[data], output=out, overwrite=True, batch_size=batch_size,
                            device=device, cache_dir=cache)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            best["predict.py"] = min(best["predict.py"], timed(lambda: run(cfg)))
        holder = {}

        def load_and_predict() -> None:
            holder["reader"] = Reader.from_pretrained(folder, device=device, batch_size=batch_size, quiet=True)
            holder["answers"] = holder["reader"].predict_file(data)

        best["Reader load + predict_file"] = min(best["Reader load + predict_file"], timed(load_and_predict))
        best["Reader predict_file"] = min(best["Reader predict_file"],
                                          timed(lambda: holder["reader"].predict_file(data)))
        answers = holder["answers"]
    written = json.loads((out / f"{data.stem}.predictions.json").read_text(encoding="utf-8"))
    if dict(answers) != written:
        raise SystemExit("the Reader's answers differ from predict.py's file")
    return {"seconds": best, "questions": len(written)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="encoder layers of the latency model")
    parser.add_argument("--throughput_layers", type=int, default=2, help="encoder layers of the throughput model")
    parser.add_argument("--questions", type=int, default=200, help="dev questions for throughput (whole paragraphs)")
    parser.add_argument("--repeats", type=int, default=5, help="latency rounds (median and best printed)")
    parser.add_argument("--file_repeats", type=int, default=1, help="throughput rounds (best kept)")
    parser.add_argument("--batch_size", type=int, default=32, help="windows per forward pass (both sides)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = shared_dir()
    tokenizer = shared / "models" / "koelectra-base-v3-discriminator"
    dev = shared / "data" / "korquad" / "KorQuAD_v1.0_dev.json"
    first = json.loads(dev.read_text(encoding="utf-8"))["data"][0]["paragraphs"][0]
    question, context = first["qas"][0]["question"], first["context"]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_random_model(tmp / "latency", tokenizer, args.layers)
        lat = latency(tmp / "latency", question, context, args.repeats, args.device)
        fwd, ours = statistics.median(lat["forward"]), statistics.median(lat["reader"])
        print(f"\nlatency, {args.layers} layers, one window of {lat['tokens']} tokens, {args.repeats} rounds:")
        print(f"  bare forward   median {fwd * 1e3:8.1f} ms, best {min(lat['forward']) * 1e3:8.1f} ms")
        print(f"  reader(q, c)   median {ours * 1e3:8.1f} ms, best {min(lat['reader']) * 1e3:8.1f} ms")
        paired = statistics.median((r - f) / f for r, f in zip(lat["reader"], lat["forward"]))
        print(f"  overhead       median {(ours - fwd) * 1e3:8.1f} ms = {(ours - fwd) / fwd:.1%} of the forward; "
              f"best vs best {(min(lat['reader']) - min(lat['forward'])) / min(lat['forward']):.1%}; "
              f"median of the rounds' (reader - forward) / forward {paired:.1%} (goal <= 15 %)")

        data = tmp / "dev_subset.json"
        data.write_text(json.dumps(korquad_subset(dev, args.questions), ensure_ascii=False), encoding="utf-8")
        save_random_model(tmp / "throughput", tokenizer, args.throughput_layers)
        (tmp / "out").mkdir()
        thr = throughput(tmp / "throughput", data, tmp / "out", args.file_repeats, args.batch_size, args.device)
        n, seconds = thr["questions"], thr["seconds"]
        print(f"\nthroughput, {args.throughput_layers} layers, {n} dev questions, batch {args.batch_size} "
              f"(answers equal on both sides):")
        for name, s in seconds.items():
            print(f"  {name:28s} {s:7.2f} s  {n / s:7.1f} q/s  {seconds['predict.py'] / s:5.2f}x predict.py")
        print(f"  goal: Reader >= 0.95x predict.py; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
