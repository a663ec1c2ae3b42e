"""Window logits files: streamed writing, pickle-free reading, re-decoding, ensembling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrc.errors import MRCError
from mrc.logits import WindowLogitsWriter, average_window_logits, load_window_logits, save_window_logits


@pytest.fixture(scope="module")
def store(korquad_dev: Path, koelectra_folder: Path):
    """Real dev windows, short enough that many questions span several windows."""
    from mrc.data import read_examples
    from mrc.features import build_store
    from mrc.store import WindowConfig

    examples, _ = read_examples(korquad_dev)
    config = WindowConfig(max_seq_length=96, doc_stride=48, max_query_length=24)
    built = build_store(examples[:40], koelectra_folder, config, labels=False, use_cache=False)
    assert len(built) > 60, "the sample must have questions with several windows"
    return built


def random_logits(store, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, T] logits as inference returns them: -inf past each window's length, T padded to 8."""
    rng = np.random.default_rng(seed)
    lengths = store.sequence_lengths()
    width = int(np.ceil(lengths.max() / 8) * 8)
    start = rng.normal(size=(len(lengths), width)).astype(np.float32)
    end = rng.normal(size=(len(lengths), width)).astype(np.float32)
    past = np.arange(width)[None, :] >= lengths[:, None]
    start[past] = end[past] = -np.inf
    return start, end


def write(path: Path, store, start, end, chunks=(0, 17, 40), **kwargs) -> None:
    bounds = [*chunks, len(store)]
    with WindowLogitsWriter(path, store, **kwargs) as writer:
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            writer.add(lo, start[lo:hi], end[lo:hi])


def test_written_logits_come_back_per_window_and_padded(tmp_path, store):
    start, end = random_logits(store, 0)
    write(tmp_path / "dev.logits.npz", store, start, end)
    loaded = load_window_logits(tmp_path / "dev.logits.npz")
    lengths = store.sequence_lengths()
    assert len(loaded) == len(store) and np.array_equal(loaded.sequence_lengths(), lengths)
    padded_start, padded_end = loaded.padded()
    assert np.array_equal(padded_start, start[:, :lengths.max()]) and np.array_equal(padded_end, end[:, :lengths.max()])
    assert loaded.example_ids == store.example_ids
    assert list(loaded.window_index) == list(range(len(store)))


def test_file_alone_redecodes_to_the_same_answers_as_the_store(tmp_path, store):
    from mrc.decode import decode

    start, end = random_logits(store, 1)
    write(tmp_path / "a.npz", store, start, end)
    loaded = load_window_logits(tmp_path / "a.npz")
    windows = np.arange(len(store))
    expected = decode(start, end, store, windows, n_best_size=5, max_answer_length=30)
    again = decode(*loaded.padded(), loaded, windows, n_best_size=5, max_answer_length=30)
    assert [(p.example_id, p.text, p.char_start, p.char_end) for p in again] == \
        [(p.example_id, p.text, p.char_start, p.char_end) for p in expected]
    assert any(p.text for p in again)


def test_a_logits_file_and_a_store_both_satisfy_what_decoding_needs(tmp_path, store):
    from mrc.store import DecodableWindows

    start, end = random_logits(store, 3)
    write(tmp_path / "a.npz", store, start, end)
    assert isinstance(store, DecodableWindows)
    assert isinstance(load_window_logits(tmp_path / "a.npz"), DecodableWindows)


def test_float16_file_is_smaller_and_close(tmp_path, store):
    start, end = random_logits(store, 2)
    write(tmp_path / "f32.npz", store, start, end)
    write(tmp_path / "f16.npz", store, start, end, dtype="float16")
    assert (tmp_path / "f16.npz").stat().st_size < 0.8 * (tmp_path / "f32.npz").stat().st_size
    half = load_window_logits(tmp_path / "f16.npz")
    assert half.start.dtype == np.float16
    padded, _ = half.padded()
    n = store.sequence_lengths()[3]
    np.testing.assert_allclose(padded[3, :n], start[3, :n], atol=2e-3)


def test_failed_run_leaves_no_file_and_no_parts(tmp_path, store):
    start, end = random_logits(store, 3)
    with pytest.raises(RuntimeError):
        with WindowLogitsWriter(tmp_path / "x.npz", store) as writer:
            writer.add(0, start[:10], end[:10])
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="cover 10 of"):
        with WindowLogitsWriter(tmp_path / "x.npz", store) as writer:
            writer.add(0, start[:10], end[:10])
    with pytest.raises(ValueError, match="store order"):
        with WindowLogitsWriter(tmp_path / "x.npz", store) as writer:
            writer.add(10, start[10:20], end[10:20])
    assert list(tmp_path.iterdir()) == []


def test_ensemble_average_decodes_and_refuses_other_windows(tmp_path, store, korquad_dev, koelectra_folder):
    from mrc.data import read_examples
    from mrc.decode import decode
    from mrc.features import build_store
    from mrc.store import WindowConfig

    runs = [random_logits(store, seed) for seed in (4, 5)]
    for i, (start, end) in enumerate(runs):
        write(tmp_path / f"m{i}.npz", store, start, end)
    files = [load_window_logits(tmp_path / f"m{i}.npz") for i in range(2)]
    avg = average_window_logits(files)
    save_window_logits(tmp_path / "avg.npz", avg)
    loaded = load_window_logits(tmp_path / "avg.npz")
    mean_start = (runs[0][0] + runs[1][0]) / 2
    assert np.allclose(loaded.padded()[0], mean_start[:, :loaded.padded()[0].shape[1]], equal_nan=False)
    windows = np.arange(len(store))
    expected = decode(mean_start, (runs[0][1] + runs[1][1]) / 2, store, windows, n_best_size=3, max_answer_length=30)
    assert [p.text for p in decode(*loaded.padded(), loaded, windows, n_best_size=3, max_answer_length=30)] == \
        [p.text for p in expected]

    examples, _ = read_examples(korquad_dev)
    other = build_store(examples[:40], koelectra_folder, WindowConfig(max_seq_length=128, doc_stride=48,
                                                                       max_query_length=24),
                        labels=False, use_cache=False)
    write(tmp_path / "other.npz", other, *random_logits(other, 6), chunks=(0,))
    with pytest.raises(MRCError, match="different windows"):
        average_window_logits([files[0], load_window_logits(tmp_path / "other.npz")], ["m0.npz", "other.npz"])


def test_files_that_are_not_logits_are_refused_without_unpickling(tmp_path):
    pickled = tmp_path / "evil.npz"
    np.savez(pickled, start=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MRCError, match="not a readable logits"):
        load_window_logits(pickled)
    np.savez(tmp_path / "other.npz", start=np.zeros(3))
    with pytest.raises(MRCError, match="missing format_version, offsets"):
        load_window_logits(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(MRCError, match="not a readable logits"):
        load_window_logits(tmp_path / "junk.npz")
    with pytest.raises(MRCError, match="no such logits file"):
        load_window_logits(tmp_path / "absent.npz")


def test_ensemble_cli_writes_predictions_of_the_averaged_logits(tmp_path, store):
    import json

    from mrc.decode import decode
    from mrc.logits import main

    runs = [random_logits(store, seed) for seed in (7, 8)]
    for i, (start, end) in enumerate(runs):
        write(tmp_path / f"m{i}.npz", store, start, end)
    args = ["--logits", str(tmp_path / "m0.npz"), str(tmp_path / "m1.npz"), "--output", str(tmp_path / "ens"),
            "--n_best_size", "3"]
    main(args)
    predictions = json.loads((tmp_path / "ens" / "predictions.json").read_text(encoding="utf-8"))
    expected = decode((runs[0][0] + runs[1][0]) / 2, (runs[0][1] + runs[1][1]) / 2, store, np.arange(len(store)),
                      n_best_size=3, max_answer_length=30)
    assert predictions == {p.example_id: p.text for p in expected}
    assert (tmp_path / "ens" / "nbest_predictions.json").is_file()
    with pytest.raises(SystemExit):  # existing outputs without --overwrite: error, exit status 2
        main(args)
    main(args + ["--overwrite"])
