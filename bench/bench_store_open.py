"""What the damage check costs when a cached window store is opened, beside what the cache saves.

    .venv/bin/python bench/bench_store_open.py [--data ../shared/data/korquad/KorQuAD_v1.0_dev.json] [--repeats 5]

Builds the store of the data file (KoELECTRA v3 vocab, max_seq_length 512, doc_stride 128) in a
temporary cache, then times, in this process, the best of `--repeats`:
- open + check: `WindowStore.open` as every run does it (sizes and SHA-256 of every array file
  against meta.json, then memory-map);
- open only: memory-mapping the same arrays without the check (what opening cost before it);
- build: reading and tokenizing the file again (`build_store(..., use_cache=False)`), what the
  cache saves.
Prints the times and the ratios check/open and (open + check)/build.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrc.features import build_store  # noqa: E402
from mrc.store import WindowStore  # noqa: E402

SHARED = REPO.parent / "shared"


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def open_unchecked(folder: Path) -> WindowStore:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    return WindowStore(arrays, meta, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data/korquad/KorQuAD_v1.0_dev.json"))
    parser.add_argument("--model", default=str(SHARED / "models/koelectra-base-v3-discriminator"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        store = build_store(args.data, args.model, labels=True, cache_dir=cache)
        folder = store.folder
        size = sum(p.stat().st_size for p in folder.glob("*.npy"))
        checked = best_of(args.repeats, lambda: WindowStore.open(folder))
        unchecked = best_of(args.repeats, lambda: open_unchecked(folder))
        build = best_of(max(1, args.repeats // 2), lambda: build_store(args.data, args.model, labels=True,
                                                                       use_cache=False))
    print(f"store: {len(store):,} windows, {size / 1e6:.1f} MB of arrays")
    print(f"open + check  {checked * 1e3:8.1f} ms")
    print(f"open only     {unchecked * 1e3:8.1f} ms   check/open-only ratio {checked / unchecked:.1f}x")
    print(f"build again   {build * 1e3:8.1f} ms   (open + check)/build ratio {checked / build:.3f}")


if __name__ == "__main__":
    main()
