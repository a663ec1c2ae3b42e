"""End-to-end batch prediction speed: `predict.py` against the path HF `run_qa.py` users get.

Both sides do the whole job on the same KorQuAD dev subset, in this process, timed from the input
file to the written prediction files (model loading included on both sides):
- ours: `mrc.predict.run` (read -> window store -> length-sorted unpadded batches -> tensor decode
  -> streamed JSON), fp32, then again with `--int8`;
- baseline: the HF fast tokenizer's overflowing windows padded to 512 (run_qa.py's
  `prepare_validation_features`), transformers' `ElectraForQuestionAnswering` at eval batch 8 under
  no_grad (the Trainer's prediction step), then the 20x20 Python candidate loop of HF's
  `postprocess_qa_predictions`, written here, and json.dump of predictions and n-best.

HF's `stride` is the overlap between windows, ours (the legacy one) is the step between window
starts; the default `--hf_stride 361` gives exactly the legacy converter's window count on the
full dev set (6,559 windows at step 128; stride 360 gives 6,555, 362 gives 6,563). The window
counts of both sides on the subset are printed.

The model: KoELECTRA-base widths with `--layers` (2) layers and random weights saved as an HF
folder, or a trained model folder with `--model` (e.g. one the demo wrote, with `--data` its dev
file); then the int8 vs fp32 answer agreement and the EM/F1 of each path are meaningful.

    .venv/bin/python bench/bench_predict.py [--questions 500] [--model FOLDER [--data DEV.json]]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrc.checkpoint import save_model  # noqa: E402
from mrc.config import from_flat  # noqa: E402
from mrc.data import read_examples  # noqa: E402
from mrc.metrics import evaluate  # noqa: E402
from mrc.model import ElectraForQA, ModelConfig  # noqa: E402
from mrc.predict import PredictConfig, run  # noqa: E402


def shared_dir() -> Path:
    return Path(os.environ.get("MRC_SHARED", REPO.parent / "shared")).resolve()


def korquad_subset(dev_path: Path, min_questions: int) -> dict:
    """The first paragraphs of a SQuAD-format file, in order, until they hold at least `min_questions`."""
    dev = json.loads(dev_path.read_text(encoding="utf-8"))
    data, count = [], 0
    for article in dev["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            if count >= min_questions:
                break
            paragraphs.append(para)
            count += len(para["qas"])
        if paragraphs:
            data.append({"title": article["title"], "paragraphs": paragraphs})
        if count >= min_questions:
            break
    return {"version": dev.get("version", "KorQuAD_v1.0_dev"), "data": data}


def save_random_model(folder: Path, tokenizer_folder: Path, layers: int) -> None:
    """KoELECTRA-base widths, `layers` layers, seeded random weights, as an HF folder."""
    hf = json.loads((tokenizer_folder / "config.json").read_text(encoding="utf-8"))
    cfg = ModelConfig.from_hf({**hf, "num_hidden_layers": layers})
    torch.manual_seed(0)
    save_model(ElectraForQA(cfg), cfg, folder, tokenizer_folder=tokenizer_folder)


# ---------------------------------------------------------------------------------------------
# Ours


def run_ours(model: Path, data: Path, out: Path, *, int8: bool, args: argparse.Namespace
             ) -> tuple[float, dict, int]:
    """Seconds, predictions and window count of one `predict.py` run (fresh window cache)."""
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=out))
    cfg = from_flat(PredictConfig, dict(model=model, input=[data], output=out, overwrite=True, int8=int8,
                                        device="cpu", batch_size=args.batch_size, max_seq_length=args.max_seq_length,
                                        doc_stride=args.doc_stride, max_query_length=args.max_query_length,
                                        cache_dir=cache))
    began = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):      # the resolved config and count tables
        run(cfg)
    seconds = time.perf_counter() - began
    predictions = json.loads((out / f"{data.stem}.predictions.json").read_text(encoding="utf-8"))
    windows = len(np.load(next(cache.glob("windows-*/example_index.npy"))))
    return seconds, predictions, windows


# ---------------------------------------------------------------------------------------------
# Baseline: what a run_qa.py user gets


def hf_windows(tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int):
    """run_qa.py's prepare_validation_features: padded overflowing windows, offsets of context tokens only."""
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    sample_of = enc.pop("overflow_to_sample_mapping")
    offsets = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        offsets.append([o if seq_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])])
    return enc, sample_of, offsets


def hf_logits(model, enc, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The Trainer's evaluation loop in short: batches of `batch_size`, no_grad, logits to numpy."""
    ids = torch.tensor(enc["input_ids"])
    types = torch.tensor(enc["token_type_ids"])
    mask = torch.tensor(enc["attention_mask"])
    starts, ends = [], []
    with torch.no_grad():
        for b in range(0, len(ids), batch_size):
            out = model(input_ids=ids[b:b + batch_size], token_type_ids=types[b:b + batch_size],
                        attention_mask=mask[b:b + batch_size])
            starts.append(out.start_logits.numpy())
            ends.append(out.end_logits.numpy())
    return np.concatenate(starts), np.concatenate(ends)


def hf_postprocess(contexts: list[str], ids: list[str], sample_of: list[int], offsets: list,
                   start_logits: np.ndarray, end_logits: np.ndarray, n_best: int = 20,
                   max_answer_length: int = 30) -> tuple[dict, dict]:
    """postprocess_qa_predictions: per feature, the 20 best starts x 20 best ends in Python loops."""
    features_of = collections.defaultdict(list)
    for f, ex in enumerate(sample_of):
        features_of[ex].append(f)
    predictions, nbest_all = {}, {}
    for ex, context in enumerate(contexts):
        candidates = []
        for f in features_of[ex]:
            start, end, offset = start_logits[f], end_logits[f], offsets[f]
            for s in np.argsort(start)[-1:-n_best - 1:-1].tolist():
                for e in np.argsort(end)[-1:-n_best - 1:-1].tolist():
                    if s >= len(offset) or e >= len(offset) or offset[s] is None or offset[e] is None:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append({"offsets": (offset[s][0], offset[e][1]),
                                       "score": float(start[s] + end[e]),
                                       "start_logit": float(start[s]), "end_logit": float(end[e])})
        best = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best]
        for c in best:
            lo, hi = c.pop("offsets")
            c["text"] = context[lo:hi]
        if not best:
            best = [{"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0}]
        scores = np.array([c.pop("score") for c in best])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        for c, p in zip(best, probs):
            c["probability"] = float(p)
        predictions[ids[ex]] = best[0]["text"]
        nbest_all[ids[ex]] = best
    return predictions, nbest_all


def run_hf(model_folder: Path, data: Path, out: Path, *, max_length: int, stride: int, batch_size: int = 8
           ) -> tuple[float, dict, int]:
    """Seconds, predictions and window count of the run_qa.py path, from the file to written outputs."""
    from transformers import AutoTokenizer, ElectraForQuestionAnswering
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = ElectraForQuestionAnswering.from_pretrained(model_folder).eval()
    squad = json.loads(data.read_text(encoding="utf-8"))
    ids, questions, contexts = [], [], []
    for article in squad["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                ids.append(qa["id"])
                questions.append(qa["question"].lstrip())   # run_qa.py strips leading spaces
                contexts.append(para["context"])
    enc, sample_of, offsets = hf_windows(tokenizer, questions, contexts, max_length, stride)
    start, end = hf_logits(model, enc, batch_size)
    predictions, nbest = hf_postprocess(contexts, ids, sample_of, offsets, start, end)
    (out / "hf.predictions.json").write_text(json.dumps(predictions, ensure_ascii=False, indent=4), encoding="utf-8")
    (out / "hf.nbest.json").write_text(json.dumps(nbest, ensure_ascii=False, indent=4), encoding="utf-8")
    return time.perf_counter() - began, predictions, len(sample_of)


def agreement(a: dict, b: dict) -> float:
    return 100.0 * sum(a[k] == b.get(k) for k in a) / max(len(a), 1)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500, help="dev questions in the subset (whole paragraphs)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a trained model folder (e.g. from the demo); default: random weights, --layers layers")
    parser.add_argument("--data", type=Path, default=None,
                        help="SQuAD-format file to take the questions from (default: the shared KorQuAD dev set); "
                             "e.g. the demo's dev file for a demo model")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers of the random model")
    parser.add_argument("--batch_size", type=int, default=PredictConfig.batch_size, help="our windows per batch")
    parser.add_argument("--hf_stride", type=int, default=361, help="HF overlap stride (see the module doc)")
    parser.add_argument("--max_seq_length", type=int, default=512, help="window length (both paths)")
    parser.add_argument("--doc_stride", type=int, default=128, help="our step between window starts")
    parser.add_argument("--max_query_length", type=int, default=64, help="our question token limit")
    parser.add_argument("--skip_int8", action="store_true", help="only the fp32 comparison")
    parser.add_argument("--skip_hf", action="store_true", help="only ours (fp32 vs --int8), e.g. for a demo model")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all paths; each keeps its fastest")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for every path (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shared = shared_dir()
    dev_path = args.data or shared / "data/korquad/KorQuAD_v1.0_dev.json"
    tokenizer_folder = shared / "models/koelectra-base-v3-discriminator"
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "subset.json"
        data.write_text(json.dumps(korquad_subset(dev_path, args.questions), ensure_ascii=False), encoding="utf-8")
        model = args.model
        if model is None:
            model = tmp / "model"
            save_random_model(model, tokenizer_folder, args.layers)
        examples, _ = read_examples([data])
        n = len(examples)
        print(f"{n} questions of {dev_path.name}, model {args.model or f'random, {args.layers} layers, base widths'}, "
              f"{torch.get_num_threads()} CPU threads")

        paths = []
        if not args.skip_hf:
            paths.append(("HF run_qa.py path (padded, batch 8)",
                          lambda: run_hf(model, data, tmp, max_length=args.max_seq_length, stride=args.hf_stride)))
        paths.append(("predict.py fp32", lambda: run_ours(model, data, tmp, int8=False, args=args)))
        if not args.skip_int8:
            paths.append(("predict.py --int8", lambda: run_ours(model, data, tmp, int8=True, args=args)))
        # Rounds interleave the paths, and each keeps its fastest round: on a shared machine the
        # load changes from minute to minute, and the fastest round is the least disturbed one.
        best: dict[str, tuple[float, dict, int]] = {}
        for _ in range(args.repeats):
            for name, timed_run in paths:
                result = timed_run()
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
        rows = [(name, *best[name]) for name, _ in paths]

        _, base_seconds, base_pred, _ = rows[0]
        print(f"{'path':42s} {'seconds':>8s} {'q/s':>7s} {'windows':>8s} {'speed-up':>9s}")
        for name, seconds, pred, windows in rows:
            print(f"{name:42s} {seconds:8.2f} {n / seconds:7.1f} {windows:8d} {base_seconds / seconds:8.2f}x")
        predicted = {name: pred for name, _, pred, _ in rows}
        if not args.skip_hf:
            print(f"answers: predict.py fp32 vs HF path agree on "
                  f"{agreement(predicted['predict.py fp32'], base_pred):.1f}% (windows differ slightly)")
        if not args.skip_int8:
            print(f"answers: --int8 vs fp32 agree on "
                  f"{agreement(predicted['predict.py fp32'], predicted['predict.py --int8']):.1f}%")
        if args.model is not None:
            for name, _, pred, _ in rows:
                scores = evaluate(examples, pred)
                print(f"{name:42s} EM {scores.exact_match:.2f}  F1 {scores.f1:.2f}")


if __name__ == "__main__":
    main()
