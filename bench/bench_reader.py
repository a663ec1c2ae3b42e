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


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn(): CPU time is what to read on a shared machine."""
    began, began_cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - began, time.process_time() - began_cpu


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


SIDES = ("predict.py", "Reader load + predict_file", "Reader predict_file")


def throughput(folder: Path, data: Path, out: Path, repeats: int, batch_size: int, device: str) -> dict:
    """Each side's best (wall, CPU) seconds over the rounds, and the question count."""
    best = {side: (float("inf"), float("inf")) for side in SIDES}
    answers = {}
    for _ in range(repeats):
        cache = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=out))
        cfg = PredictConfig(model=folder, input=[data], output=out, overwrite=True, batch_size=batch_size,
                            device=device, features_cache_dir=cache)
        holder = {}

        def predict_py() -> None:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                run(cfg)

        def load_and_predict() -> None:
            holder["reader"] = Reader.from_pretrained(folder, device=device, batch_size=batch_size, quiet=True)
            holder["answers"] = holder["reader"].predict_file(data)

        for side, fn in zip(SIDES, (predict_py, load_and_predict, lambda: holder["reader"].predict_file(data))):
            wall, cpu = timed(fn)
            best[side] = (min(best[side][0], wall), min(best[side][1], cpu))
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
        print(f"\nlatency, {args.layers} layers, one window of {lat['tokens']} tokens, {args.repeats} rounds:")
        for clock, k in (("wall", 0), ("CPU", 1)):
            fwd = [t[k] for t in lat["forward"]]
            ours = [t[k] for t in lat["reader"]]
            paired = statistics.median((r - f) / f for r, f in zip(ours, fwd))
            print(f"  {clock:4s} bare forward median {statistics.median(fwd) * 1e3:8.1f} ms "
                  f"(best {min(fwd) * 1e3:8.1f}), "
                  f"reader(q, c) median {statistics.median(ours) * 1e3:8.1f} ms (best {min(ours) * 1e3:8.1f}): "
                  f"overhead {(min(ours) - min(fwd)) / min(fwd):6.1%} best vs best, {paired:6.1%} median of the "
                  f"rounds (goal <= 15 %)")

        data = tmp / "dev_subset.json"
        data.write_text(json.dumps(korquad_subset(dev, args.questions), ensure_ascii=False), encoding="utf-8")
        save_random_model(tmp / "throughput", tokenizer, args.throughput_layers)
        (tmp / "out").mkdir()
        thr = throughput(tmp / "throughput", data, tmp / "out", args.file_repeats, args.batch_size, args.device)
        n, seconds = thr["questions"], thr["seconds"]
        print(f"\nthroughput, {args.throughput_layers} layers, {n} dev questions, batch {args.batch_size}, best of "
              f"{args.file_repeats} (answers equal on both sides):")
        base_wall, base_cpu = seconds["predict.py"]
        for name, (wall, cpu) in seconds.items():
            print(f"  {name:28s} wall {wall:7.2f} s {n / wall:6.1f} q/s {base_wall / wall:5.2f}x | "
                  f"CPU {cpu:7.2f} s {n / cpu:6.1f} q/s {base_cpu / cpu:5.2f}x predict.py")
        print(f"  goal: Reader >= 0.95x predict.py; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
