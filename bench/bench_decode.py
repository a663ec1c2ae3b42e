"""Decode the whole KorQuAD dev set from logits: ours vs the legacy 20 x 20 Python loop.

    .venv/bin/python bench/bench_decode.py [--repeats 3] [--seed 0] [--threads 1]

Builds the real dev window store (6,559 windows, max_seq_length 512, doc_stride 128), draws
random logits [N, 512] with a fixed seed, and decodes them with n-best 20 in this process:
- legacy: `legacy_postprocess` below (the algorithm of HF `postprocess_qa_predictions`: per
  window the 20 best starts x 20 best ends, the same max-context and length checks, text from
  char offsets, a sort per example, softmax over the n-best). Per example it produces the answer
  text and an n-best list of dicts (text, probability, start_logit, end_logit). Its features
  (offset maps, max-context dicts) and context strings are built before the timer, as HF builds
  them during preprocessing.
- ours: `mrc.decode.decode`, which produces per example the answer (text, char offsets, score)
  and the whole n-best list as columns: every entry's text sliced, char offsets, start/end
  logits and probabilities. It reads the paragraph texts from the store inside the timer.
  A second timing adds turning every n-best list into dicts (what writing JSON needs), and a
  third times the span search alone (`mrc.span_search`), to show where the time goes.

Prints the best wall and CPU time (this process) of each, the ratios, and how often the best
answers agree (they must agree whenever the best valid span lies inside the legacy grid;
elsewhere ours scores higher). With CUDA present it also times our decode with the logits
already on the GPU.

The legacy functions are also the reference of tests/test_decode.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass
class LegacyFeature:
    """One window as HF's postprocess sees it."""

    example_index: int
    offset_mapping: list            # per sequence position: (char_start, char_end), None outside the context
    token_is_max_context: dict      # str(position) -> True for starts in this window's max-context interval


def legacy_features(store, windows: np.ndarray, width: int) -> list[LegacyFeature]:
    """HF-style features of `windows` (not timed: HF builds them during preprocessing)."""
    table = store.windows
    features = []
    for w in windows:
        w = int(w)
        first = int(table.query_length[w]) + 2
        length = int(table.context_length[w])
        positions = np.arange(first, first + length)
        char_start, char_end = store.window_char_spans(np.full(length, w), positions, positions)
        offsets: list = [None] * width
        for k in range(min(length, width - first)):
            offsets[first + k] = (int(char_start[k]), int(char_end[k]))
        lo, hi = int(table.max_context_start[w]), int(table.max_context_end[w])
        features.append(LegacyFeature(
            example_index=int(table.example_index[w]),
            offset_mapping=offsets,
            token_is_max_context={str(first + k): True for k in range(lo, hi)},
        ))
    return features


def legacy_postprocess(contexts: dict[int, str], example_ids: list[str], features: list[LegacyFeature],
                       start_logits: np.ndarray, end_logits: np.ndarray, n_best_size: int = 20,
                       max_answer_length: int = 30, null_score_diff_threshold: float | None = None
                       ) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """HF `postprocess_qa_predictions`' algorithm: ({id: text}, {id: n-best}).

    contexts: example index -> context text; features in example order.
    """
    by_example: dict[int, list[int]] = {}
    for i, feature in enumerate(features):
        by_example.setdefault(feature.example_index, []).append(i)
    answers, nbest_json = {}, {}
    for example_index, feature_indices in by_example.items():
        min_null = None
        prelim = []
        for fi in feature_indices:
            start, end = start_logits[fi], end_logits[fi]
            offsets = features[fi].offset_mapping
            max_context = features[fi].token_is_max_context
            null_score = start[0] + end[0]
            if min_null is None or min_null["score"] > null_score:
                min_null = {"offsets": (0, 0), "score": null_score, "start_logit": start[0], "end_logit": end[0]}
            start_indexes = np.argsort(start)[-1:-n_best_size - 1:-1].tolist()
            end_indexes = np.argsort(end)[-1:-n_best_size - 1:-1].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if (s >= len(offsets) or e >= len(offsets) or offsets[s] is None or len(offsets[s]) < 2
                            or offsets[e] is None or len(offsets[e]) < 2):
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    if not max_context.get(str(s), False):
                        continue
                    prelim.append({"offsets": (offsets[s][0], offsets[e][1]), "score": start[s] + end[e],
                                   "start_logit": start[s], "end_logit": end[e]})
        if null_score_diff_threshold is not None:
            prelim.append(min_null)
            example_null_score = min_null["score"]
        predictions = sorted(prelim, key=lambda x: x["score"], reverse=True)[:n_best_size]
        if null_score_diff_threshold is not None and not any(p["offsets"] == (0, 0) for p in predictions):
            predictions.append(min_null)
        context = contexts[example_index]
        for pred in predictions:
            lo, hi = pred.pop("offsets")
            pred["text"] = context[lo:hi]
        if not predictions or (len(predictions) == 1 and predictions[0]["text"] == ""):
            predictions.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        scores = np.array([pred.pop("score") for pred in predictions])
        exp_scores = np.exp(scores - np.max(scores))
        probs = exp_scores / exp_scores.sum()
        for prob, pred in zip(probs, predictions):
            pred["probability"] = prob
        example_id = example_ids[example_index]
        if null_score_diff_threshold is None:
            answers[example_id] = predictions[0]["text"]
        else:
            best = next(p for p in predictions if p["text"] != "")
            diff = example_null_score - best["start_logit"] - best["end_logit"]
            answers[example_id] = "" if diff > null_score_diff_threshold else best["text"]
        nbest_json[example_id] = [{"text": p["text"], "probability": float(p["probability"]),
                                   "start_logit": float(p["start_logit"]), "end_logit": float(p["end_logit"])}
                                  for p in predictions]
    return answers, nbest_json


def example_contexts(store, windows: np.ndarray) -> dict[int, str]:
    """Example index -> its context text, for the examples of `windows`."""
    paragraph_of = np.asarray(store.example_paragraph)
    return {int(e): store.paragraph_texts(int(paragraph_of[e]))
            for e in np.unique(np.asarray(store.windows.example_index)[windows])}


def build_dev_store(cache_dir: Path):
    """The real dev window store (seed settings), from ../shared."""
    from mrc.data import read_examples
    from mrc.features import build_store
    from mrc.store import WindowConfig

    shared = Path(os.environ.get("MRC_SHARED", REPO.parent / "shared"))
    dev = shared / "data/korquad/KorQuAD_v1.0_dev.json"
    model = shared / "models/koelectra-base-v3-discriminator"
    examples, _ = read_examples(dev)
    return build_store(examples, model, WindowConfig(max_seq_length=512, doc_stride=128, max_query_length=64),
                       cache_dir=cache_dir, labels=False)


def legacy_score(nbest: list[dict]) -> float:
    """Score of the legacy best answer."""
    return nbest[0]["start_logit"] + nbest[0]["end_logit"]


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall time and best CPU time (this process, all threads) of `repeats` runs, and the last result."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu, result


def span_search(store, start, end, n_best_size: int, max_answer_length: int):
    """Only the tensor part of our decode: the n best spans of every example (windows in store order)."""
    import torch

    from mrc.span_search import top_spans_per_group
    from mrc.decode import window_spans

    windows = np.arange(len(store))
    _, sizes = np.unique(np.asarray(store.windows.example_index), return_counts=True)
    return top_spans_per_group(start, end, window_spans(store, windows, start.device),
                               torch.from_numpy(sizes.astype(np.int64)), max_answer_length, n_best_size)


def main() -> None:
    import torch

    from mrc.decode import decode

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per decoder; the best time counts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random logits")
    parser.add_argument("--n_best_size", type=int, default=20)
    parser.add_argument("--max_answer_length", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for our decoder (the legacy loop is single-threaded)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as cache:
        store = build_dev_store(Path(cache))
        n, width = len(store), 512
        windows = np.arange(n)
        generator = torch.Generator().manual_seed(args.seed)
        start = torch.randn(n, width, generator=generator)
        end = torch.randn(n, width, generator=generator)
        print(f"{n:,} windows x {width}, n-best {args.n_best_size}, max answer length {args.max_answer_length}, "
              f"torch threads {torch.get_num_threads()}")

        features = legacy_features(store, windows, width)
        contexts = example_contexts(store, windows)
        start_np, end_np = start.numpy(), end.numpy()
        legacy_s, legacy_cpu, (legacy_answers, legacy_nbest) = timed(lambda: legacy_postprocess(
            contexts, store.example_ids, features, start_np, end_np, args.n_best_size, args.max_answer_length),
            max(1, args.repeats // 2))
        ours_s, ours_cpu, preds = timed(lambda: decode(start, end, store, windows, args.n_best_size,
                                                       args.max_answer_length), args.repeats)
        dicts_s, dicts_cpu, _ = timed(lambda: [p.nbest for p in decode(start, end, store, windows, args.n_best_size,
                                                                       args.max_answer_length)], args.repeats)
        differ = [p for p in preds if p.text != legacy_answers[p.example_id]]
        higher = sum(p.score > legacy_score(legacy_nbest[p.example_id]) + 1e-5 for p in differ)
        search_s, search_cpu, _ = timed(lambda: span_search(store, start, end, args.n_best_size,
                                                            args.max_answer_length), args.repeats)
        print("legacy: per example, the answer text and its n-best list of dicts (text, probability, start_logit,\n"
              "  end_logit); ours: per example, the answer text, char offsets and score, and its whole n-best list\n"
              "  as columns (every text sliced, char offsets, start/end logits, probabilities). Best of the runs.")
        print(f"legacy 20x20 loop          : wall {legacy_s * 1e3:8.1f} ms  cpu {legacy_cpu * 1e3:8.1f} ms")
        print(f"ours (n-best as columns)   : wall {ours_s * 1e3:8.1f} ms  cpu {ours_cpu * 1e3:8.1f} ms   "
              f"ratio wall {legacy_s / ours_s:.1f}x  cpu {legacy_cpu / ours_cpu:.1f}x")
        print(f"  of which span search : wall {search_s * 1e3:8.1f} ms  cpu {search_cpu * 1e3:8.1f} ms   "
              "(the rest: char offsets, texts, probabilities, Prediction objects)")
        print(f"ours + n-best dicts (JSON) : wall {dicts_s * 1e3:8.1f} ms  cpu {dicts_cpu * 1e3:8.1f} ms   "
              f"ratio wall {legacy_s / dicts_s:.1f}x  cpu {legacy_cpu / dicts_cpu:.1f}x")
        print(f"best answers agree: {len(preds) - len(differ):,} / {len(preds):,} examples; of the "
              f"{len(differ):,} that differ, ours scores higher in {higher:,} (best span outside the 20x20 grid)")

        if torch.cuda.is_available():
            start_gpu, end_gpu = start.cuda(), end.cuda()

            def on_gpu():
                out = decode(start_gpu, end_gpu, store, windows, args.n_best_size, args.max_answer_length)
                torch.cuda.synchronize()
                return out

            on_gpu()  # warm-up: CUDA context and kernels
            gpu_s, _, gpu_preds = timed(on_gpu, args.repeats)
            same = sum(a.text == b.text for a, b in zip(gpu_preds, preds))
            print(f"ours (GPU, logits on device): {gpu_s * 1e3:9.1f} ms   ratio vs legacy {legacy_s / gpu_s:.1f}x, "
                  f"same answers as CPU: {same:,} / {len(preds):,}")
        else:
            print("no CUDA device: GPU path skipped")


if __name__ == "__main__":
    main()
