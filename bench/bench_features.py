"""Dev-set windows from the raw JSON: mrc.features versus HF run_qa.py's fast-tokenizer path, same process.

Ours: read the JSON, tokenize each paragraph once, cut windows, labels and max-context, into an
in-memory store (the cache is off, so nothing is reused). Theirs (run_qa.py
`prepare_validation_features`): per 1,000 questions one tokenizer(questions, contexts,
truncation="only_second", max_length=512, stride=S, return_overflowing_tokens=True,
return_offsets_mapping=True, padding="max_length") call, then the per-window Python loop that
maps windows to example ids and masks non-context offsets, then the int64 tensors a DataLoader
would batch. run_qa's `stride` is the overlap between windows, not the step: S is chosen so
the step equals our doc_stride for a question of average length, which gives a comparable
window count (both counts are printed).

    .venv/bin/python bench/bench_features.py [--data DEV.json] [--model FOLDER] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from mrc.data import read_examples
from mrc.features import build_store
from mrc.inspect_windows import inspect_counts
from mrc.store import WindowConfig

SHARED = Path(os.environ.get("MRC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CHUNK = 1000  # run_qa.py's datasets.map batch size


def ours(data: Path, model: Path, cfg: WindowConfig):
    return build_store(data, model, cfg, labels=True, use_cache=False)


def run_qa_features(data: Path, hf, cfg: WindowConfig, overlap: int) -> dict[str, np.ndarray]:
    raw = json.loads(data.read_text(encoding="utf-8"))
    ids, questions, contexts = [], [], []
    for article in raw["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                ids.append(qa["id"])
                questions.append(qa["question"].lstrip())
                contexts.append(para["context"])
    input_ids, token_type_ids, attention_mask, example_ids, offsets = [], [], [], [], []
    for lo in range(0, len(questions), CHUNK):
        tokenized = hf(questions[lo:lo + CHUNK], contexts[lo:lo + CHUNK], truncation="only_second",
                       max_length=cfg.max_seq_length, stride=overlap, return_overflowing_tokens=True,
                       return_offsets_mapping=True, padding="max_length")
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        for i in range(len(tokenized["input_ids"])):
            sequence_ids = tokenized.sequence_ids(i)
            example_ids.append(ids[lo + sample_mapping[i]])
            offsets.append([o if sequence_ids[k] == 1 else None for k, o in enumerate(tokenized["offset_mapping"][i])])
        input_ids += tokenized["input_ids"]
        token_type_ids += tokenized["token_type_ids"]
        attention_mask += tokenized["attention_mask"]
    return {"input_ids": np.array(input_ids, dtype=np.int64), "token_type_ids": np.array(token_type_ids, dtype=np.int64),
            "attention_mask": np.array(attention_mask, dtype=np.int64)}


def timed(fn):
    """(wall seconds, CPU seconds of all this process's threads, result)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data/korquad/KorQuAD_v1.0_dev.json")
    parser.add_argument("--model", type=Path, default=SHARED / "models/koelectra-base-v3-discriminator")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best time counts")
    args = parser.parse_args()
    if not args.data.is_file() or not args.model.is_dir():
        sys.exit(f"need {args.data} and {args.model}: set MRC_SHARED or pass --data/--model")
    from transformers import AutoTokenizer

    cfg = WindowConfig(512, 128, 64)
    hf = AutoTokenizer.from_pretrained(str(args.model))
    examples, _ = read_examples(args.data)
    mean_q = float(np.mean([len(q) for q in hf([ex.question for ex in examples], add_special_tokens=False,
                                                truncation=True, max_length=cfg.max_query_length)["input_ids"]]))
    overlap = cfg.max_seq_length - 3 - round(mean_q) - cfg.doc_stride
    del examples

    # Interleaved runs, best of each: a machine shared with other jobs slows both sides alike.
    ours_runs, theirs_runs = [], []
    for _ in range(args.repeat):
        *t, store = timed(lambda: ours(args.data, args.model, cfg))
        ours_runs.append(t)
        *t, tensors = timed(lambda: run_qa_features(args.data, hf, cfg, overlap))
        theirs_runs.append(t)
    (ours_wall, ours_cpu), (theirs_wall, theirs_cpu) = np.min(ours_runs, axis=0), np.min(theirs_runs, axis=0)
    counts = inspect_counts(store)
    padded_bytes = sum(a.nbytes for a in tensors.values())

    print(f"data: {args.data.name}, {store.num_examples:,} questions; machine: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat} interleaved runs")
    print(f"ours   : {ours_wall:6.3f} s wall {ours_cpu:6.3f} s CPU  {len(store):,} windows "
          f"(doc_stride {cfg.doc_stride} = step between window starts)")
    print(f"run_qa : {theirs_wall:6.3f} s wall {theirs_cpu:6.3f} s CPU  {len(tensors['input_ids']):,} windows "
          f"(stride {overlap} = overlap; step {cfg.doc_stride} for a {round(mean_q)}-token question)")
    print(f"speed-up        : {theirs_wall / ours_wall:6.1f}x wall, {theirs_cpu / ours_cpu:.1f}x CPU   (target >= 8x)")
    print(f"store bytes     : {counts['store_bytes']:,}  (all arrays, incl. paragraph texts and char offsets)")
    print(f"padded int64    : {padded_bytes:,}  (input_ids + token_type_ids + attention_mask [N, 512])")
    print(f"bytes ratio     : 1/{padded_bytes / counts['store_bytes']:.1f}   (target <= 1/10)")


if __name__ == "__main__":
    main()
