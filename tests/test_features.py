"""Windows against a legacy-converter reference, the window store's cache, and the inspection CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mrc.features as features
import mrc.inspect_windows as inspect_windows
from mrc.batching import collate
from mrc.data import Answer, Example, read_examples
from mrc.errors import MRCError
from mrc.features import build_store
from mrc.inspect_windows import inspect_counts
from mrc.store import WindowConfig, WindowStore
from mrc.tokenizer import BatchEncoder

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# Legacy reference: what transformers 4.x `squad_convert_examples_to_features` did (the seed's
# converter), rewritten here from its description because transformers 5 no longer ships it.
# Whitespace-split words, each word sub-tokenized; windows every doc_stride tokens until one
# reaches the paragraph end; labels from word boundaries tightened by `_improve_answer_span`;
# max context by `_check_is_max_context`.


def _is_whitespace(c: str) -> bool:
    return c in " \t\r\n" or ord(c) == 0x202F


def _split_words(context: str) -> tuple[list[str], list[int]]:
    words: list[str] = []
    char_to_word: list[int] = []
    previous_was_space = True
    for c in context:
        if _is_whitespace(c):
            previous_was_space = True
        else:
            if previous_was_space:
                words.append(c)
            else:
                words[-1] += c
            previous_was_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def _legacy_paragraphs(examples, hf) -> dict[str, dict]:
    paragraphs = {}
    for ex in examples:
        if ex.context not in paragraphs:
            words, char_to_word = _split_words(ex.context)
            paragraphs[ex.context] = {"words": words, "char_to_word": char_to_word}
    all_words = [w for p in paragraphs.values() for w in p["words"]]
    word_ids = iter(hf(all_words, add_special_tokens=False)["input_ids"]) if all_words else iter(())
    for p in paragraphs.values():
        doc, word_to_token = [], []
        for _ in p["words"]:
            word_to_token.append(len(doc))
            doc.extend(next(word_ids))
        p["doc"], p["word_to_token"] = doc, word_to_token
    return paragraphs


def _legacy_answer_tokens(ex, p, hf) -> tuple[int, int]:
    answer = ex.answers[0]
    start_word = p["char_to_word"][answer.start]
    end_word = p["char_to_word"][answer.end - 1]
    tok_start = p["word_to_token"][start_word]
    tok_end = p["word_to_token"][end_word + 1] - 1 if end_word + 1 < len(p["words"]) else len(p["doc"]) - 1
    target = hf(answer.text, add_special_tokens=False)["input_ids"]
    for new_start in range(tok_start, tok_end + 1):  # _improve_answer_span
        for new_end in range(tok_end, new_start - 1, -1):
            if p["doc"][new_start:new_end + 1] == target:
                return new_start, new_end
    return tok_start, tok_end


def _legacy_max_context(spans: list[tuple[int, int]], span_index: int, position: int) -> bool:
    best_score, best_index = None, None
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, i
    return best_index == span_index


def legacy_features(examples, hf, cfg: WindowConfig, *, labels: bool, max_context: bool = False) -> list[dict]:
    paragraphs = _legacy_paragraphs(examples, hf)
    questions = hf([ex.question for ex in examples], add_special_tokens=False, truncation=True,
                   max_length=cfg.max_query_length)["input_ids"]
    out = []
    for ex, q in zip(examples, questions):
        p = paragraphs[ex.context]
        doc = p["doc"]
        room = cfg.max_seq_length - len(q) - 3
        spans: list[tuple[int, int]] = []
        while len(spans) * cfg.doc_stride < len(doc):
            start = len(spans) * cfg.doc_stride
            spans.append((start, min(len(doc) - start, room)))
            if start + room >= len(doc):
                break
        answer = _legacy_answer_tokens(ex, p, hf) if labels and ex.answers and not ex.is_impossible else None
        for si, (start, length) in enumerate(spans):
            feat = {"example_id": ex.id, "token_start": start,
                    "input_ids": [hf.cls_token_id, *q, hf.sep_token_id, *doc[start:start + length], hf.sep_token_id]}
            if labels:
                inside = answer is not None and start <= answer[0] and answer[1] < start + length
                feat["label"] = (answer[0] - start + len(q) + 2, answer[1] - start + len(q) + 2) if inside else (0, 0)
            if max_context:
                feat["max_context"] = [_legacy_max_context(spans, si, start + k) for k in range(length)]
            out.append(feat)
    return out


# ---------------------------------------------------------------------------------------------


def window_ids(store: WindowStore) -> list[list[int]]:
    batch = collate(store, np.arange(len(store)), with_labels=False)
    lengths = store.sequence_lengths()
    return [row[:n].tolist() for row, n in zip(batch["input_ids"].numpy(), lengths)]


def max_context_masks(store: WindowStore) -> list[list[bool]]:
    t = store.windows
    return [[int(lo) <= k < int(hi) for k in range(int(n))]
            for lo, hi, n in zip(t.max_context_start, t.max_context_end, t.context_length)]


@pytest.fixture(scope="module")
def hf(koelectra_folder):
    return transformers.AutoTokenizer.from_pretrained(str(koelectra_folder))


@pytest.fixture(scope="module")
def dev_examples(korquad_dev):
    return read_examples(korquad_dev)[0]


@pytest.fixture(scope="module")
def dev_store(korquad_dev, koelectra_folder):
    return build_store(korquad_dev, koelectra_folder, WindowConfig(512, 128, 64), labels=True, use_cache=False)


@pytest.fixture(scope="module")
def dev_legacy(dev_examples, hf):
    return legacy_features(dev_examples, hf, WindowConfig(512, 128, 64), labels=True)


def test_dev_set_gives_6559_windows_for_5774_questions(dev_store):
    assert (len(dev_store), dev_store.num_examples) == (6559, 5774)
    assert np.array_equal(np.unique(dev_store.windows.example_index), np.arange(5774))
    assert (dev_store.sequence_lengths() <= 512).all()


def test_dev_windows_equal_the_legacy_converter(dev_store, dev_legacy):
    assert len(dev_store) == len(dev_legacy)
    assert [dev_store.example_ids[e] for e in dev_store.windows.example_index] == [f["example_id"] for f in dev_legacy]
    assert dev_store.windows.token_start.tolist() == [f["token_start"] for f in dev_legacy]
    ours = window_ids(dev_store)
    mismatched = [i for i, (a, f) in enumerate(zip(ours, dev_legacy)) if a != f["input_ids"]]
    assert not mismatched, f"{len(mismatched)} windows differ from the legacy converter, first {mismatched[0]}"


def test_dev_labels_equal_legacy_or_are_tighter(dev_store, dev_legacy):
    """Our span is the tokens overlapping the answer's chars; the legacy one comes from whole words
    (tightened when the answer's own tokenization matches). They agree except where a word glues
    the answer to more text, and there ours lies inside the legacy span."""
    ours = np.stack([dev_store.windows.start_position, dev_store.windows.end_position], axis=1)
    legacy = np.array([f["label"] for f in dev_legacy])
    differ = np.flatnonzero((ours != legacy).any(axis=1))
    assert len(differ) <= 0.005 * len(ours)
    assert ((legacy[differ, 0] <= ours[differ, 0]) & (ours[differ, 1] <= legacy[differ, 1])).all()
    assert ((ours[differ] > 0).all(axis=1) == (legacy[differ] > 0).all(axis=1)).all()


def test_labels_are_the_tokens_overlapping_the_answer_chars(dev_store, dev_examples):
    t = dev_store.windows
    w = np.flatnonzero(t.start_position > 0)
    assert len(w) > 0.9 * len(dev_store)  # most windows hold their answer
    first_tok = dev_store.window_char_spans(w, t.start_position[w], t.start_position[w])
    last_tok = dev_store.window_char_spans(w, t.end_position[w], t.end_position[w])
    answers = [dev_examples[e].answers[0] for e in t.example_index[w]]
    # Spaces around an answer's text belong to no token.
    a_start = np.array([a.start + len(a.text) - len(a.text.lstrip()) for a in answers])
    a_end = np.array([a.start + len(a.text.rstrip()) for a in answers])
    assert (first_tok[0] <= a_start).all() and (first_tok[1] > a_start).all()
    assert (last_tok[0] < a_end).all() and (last_tok[1] >= a_end).all()
    # Every example has at least one window holding the whole answer.
    assert set(t.example_index[w].tolist()) == set(range(dev_store.num_examples))


def test_char_spans_give_the_answer_text(dev_store, dev_examples):
    t = dev_store.windows
    w = np.flatnonzero(t.start_position > 0)[:200]
    starts, ends = dev_store.window_char_spans(w, t.start_position[w], t.end_position[w])
    for wi, cs, ce in zip(w, starts, ends):
        ex = dev_examples[t.example_index[wi]]
        assert dev_store.paragraph_texts(int(t.paragraph_index[wi])) == ex.context
        assert ex.answers[0].text in ex.context[cs:ce]
    q = int(t.query_length[0])
    outside = dev_store.window_char_spans([0, 0], [0, q + 1], [q + 2 + int(t.context_length[0]), 1])
    assert outside[0].tolist() == [-1, -1] and outside[1].tolist() == [-1, -1]


@pytest.mark.parametrize("cfg", [WindowConfig(512, 128, 64), WindowConfig(64, 7, 16), WindowConfig(40, 21, 8)],
                         ids=str)
def test_windows_labels_and_max_context_equal_legacy_on_train_subset(korquad_train_subset, koelectra_folder, hf, cfg):
    examples, _ = read_examples(korquad_train_subset)
    store = build_store(examples, koelectra_folder, cfg, labels=True, use_cache=False)
    legacy = legacy_features(examples, hf, cfg, labels=True, max_context=True)
    assert window_ids(store) == [f["input_ids"] for f in legacy]
    assert max_context_masks(store) == [f["max_context"] for f in legacy]
    ours = list(zip(store.windows.start_position.tolist(), store.windows.end_position.tolist()))
    agree = sum(a == tuple(f["label"]) for a, f in zip(ours, legacy))
    assert agree >= 0.98 * len(legacy)


def test_dev_max_context_equals_bert_rule(dev_store, dev_legacy, dev_examples, hf):
    counts = np.bincount(dev_store.windows.example_index)
    multi = set(np.flatnonzero(counts > 1)[:150].tolist())  # a sample keeps the pure-Python rule fast
    chosen = [ex for i, ex in enumerate(dev_examples) if i in multi]
    legacy = legacy_features(chosen, hf, dev_store.config, labels=False, max_context=True)
    rows = np.flatnonzero(np.isin(dev_store.windows.example_index, sorted(multi)))
    masks = max_context_masks(dev_store)
    assert [masks[r] for r in rows] == [f["max_context"] for f in legacy]


def test_store_is_compact_and_never_padded(dev_store):
    assert dev_store.context_ids.dtype == np.uint16 and dev_store.question_ids.dtype == np.uint16
    padded_int64 = len(dev_store) * 512 * 8
    for name, arr in dev_store._arrays.items():
        assert arr.nbytes < padded_int64 / 4, f"{name} is as big as a padded tensor"
    counts = inspect_counts(dev_store)
    assert counts["store_bytes"] * 10 <= counts["padded_int64_bytes"]
    assert counts["tokens"] == int(dev_store.sequence_lengths().sum())
    assert counts["windows_without_answer"] == int((dev_store.windows.start_position == 0).sum())


def test_second_build_reuses_the_cache(korquad_train_subset, koelectra_folder, tmp_path, monkeypatch):
    first = build_store(korquad_train_subset, koelectra_folder, labels=True, cache_dir=tmp_path)
    assert isinstance(first.context_ids, np.memmap)

    def no_rebuild(*a, **k):
        raise AssertionError("the store was rebuilt instead of reused")

    monkeypatch.setattr(features, "build_arrays", no_rebuild)
    second = build_store(korquad_train_subset, koelectra_folder, labels=True, cache_dir=tmp_path)
    assert second.folder == first.folder
    assert window_ids(second) == window_ids(first)
    assert second.read_stats.questions == 142
    with pytest.raises(AssertionError, match="rebuilt"):  # other settings are another key
        build_store(korquad_train_subset, koelectra_folder, WindowConfig(256, 64, 32), labels=True, cache_dir=tmp_path)


def test_cache_key_follows_the_file_bytes(korquad_train_subset, koelectra_folder, tmp_path):
    copy = tmp_path / "train.json"
    copy.write_bytes(korquad_train_subset.read_bytes())
    first = build_store(copy, koelectra_folder, labels=True, cache_dir=tmp_path / "cache")
    data = json.loads(copy.read_text(encoding="utf-8"))
    data["data"][0]["paragraphs"][0]["qas"][0]["question"] += " 정말?"
    copy.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    second = build_store(copy, koelectra_folder, labels=True, cache_dir=tmp_path / "cache")
    assert second.folder != first.folder
    assert second.windows.query_length[0] > first.windows.query_length[0]


def test_crashed_build_is_never_used(korquad_train_subset, koelectra_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_save = np.save
    saved = []

    def crash_midway(path, arr):
        saved.append(path)
        if len(saved) == 5:
            raise OSError("disk full")
        real_save(path, arr)

    monkeypatch.setattr(features.np, "save", crash_midway)
    with pytest.raises(MRCError, match="disk full"):
        build_store(korquad_train_subset, koelectra_folder, labels=True, cache_dir=cache)
    assert not any(cache.glob("windows-*")), "a half-written store is visible under its final name"
    monkeypatch.setattr(features.np, "save", real_save)
    # A killed process leaves its temp folder behind; it must not be mistaken for a store.
    (cache / ".windows-leftover.tmp").mkdir()
    store = build_store(korquad_train_subset, koelectra_folder, labels=True, cache_dir=cache)
    assert store.folder.name.startswith("windows-") and len(store) == 142


def test_opening_a_folder_that_is_no_store_says_so(tmp_path):
    with pytest.raises(MRCError, match="not a window store"):
        WindowStore.open(tmp_path)


def test_cache_folder_defaults_to_env_then_current_directory(korquad_train_subset, koelectra_folder, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MRC_CACHE", raising=False)
    store = build_store(korquad_train_subset, koelectra_folder, labels=False)
    assert store.folder.parent.resolve() == (tmp_path / ".cache" / "mrc").resolve()
    monkeypatch.setenv("MRC_CACHE", str(tmp_path / "elsewhere"))
    store = build_store(korquad_train_subset, koelectra_folder, labels=False)
    assert store.folder.parent == tmp_path / "elsewhere"


def test_unlabelled_store_and_examples_input(korquad_train_subset, koelectra_folder):
    examples, _ = read_examples(korquad_train_subset)
    from_file = build_store(korquad_train_subset, koelectra_folder, labels=False, use_cache=False)
    from_examples = build_store(examples, koelectra_folder, labels=False, use_cache=False)
    assert not from_file.has_labels and (from_file.windows.start_position == -1).all()
    assert window_ids(from_file) == window_ids(from_examples)
    with pytest.raises(MRCError, match="built without labels"):
        collate(from_file, [0], with_labels=True)


def test_klue_unanswerable_questions_are_labelled_cls(klue_train, koelectra_folder):
    store = build_store(klue_train, koelectra_folder, labels=True, use_cache=False)
    examples, _ = read_examples(klue_train)
    impossible = np.array([ex.is_impossible for ex in examples])[store.windows.example_index]
    assert impossible.any()
    assert (store.windows.start_position[impossible] == 0).all() and (store.windows.end_position[impossible] == 0).all()
    answered = set(store.windows.example_index[store.windows.start_position > 0].tolist())
    assert answered == {i for i, ex in enumerate(examples) if not ex.is_impossible}


def test_empty_context_still_gets_one_window(koelectra_folder):
    examples = [Example("e", "질문?", "", ()), Example("f", "질문?", "짧은 문맥", ())]
    store = build_store(examples, koelectra_folder, labels=True, use_cache=False)
    assert store.windows.example_index.tolist() == [0, 1]
    assert store.windows.context_length[0] == 0 and store.windows.start_position.tolist() == [0, 0]


def test_window_config_rejects_settings_that_skip_tokens():
    with pytest.raises(MRCError, match="--doc_stride must be between 1 and 445"):
        WindowConfig(512, 446, 64)
    with pytest.raises(MRCError, match="--max_seq_length 64 leaves no room"):
        WindowConfig(64, 8, 64)


def test_cli_prints_counts_and_dumps_windows_in_order(korquad_train_subset, koelectra_folder, hf, tmp_path, capsys):
    dump = tmp_path / "windows.jsonl"
    inspect_windows.main([str(korquad_train_subset), "--model", str(koelectra_folder),
                          "--features_cache_dir", str(tmp_path), "--max_seq_length", "128", "--doc_stride", "32",
                          "--dump", str(dump)])
    out = capsys.readouterr().out
    examples, _ = read_examples(korquad_train_subset)
    legacy = legacy_features(examples, hf, WindowConfig(128, 32, 64), labels=True)
    assert f"{len(legacy):,}" in out and "windows without answer" in out and "142 questions" in out
    rows = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines()]
    assert [r["input_ids"] for r in rows] == [f["input_ids"] for f in legacy]
    assert [r["example_id"] for r in rows] == [f["example_id"] for f in legacy]
    assert all(r["token_type_ids"].count(0) == r["input_ids"].index(hf.sep_token_id) + 1 for r in rows)
    labelled = [(r["start_position"], r["end_position"]) for r in rows]
    assert sum(a == tuple(f["label"]) for a, f in zip(labelled, legacy)) >= 0.98 * len(rows)


def test_cli_dump_of_unlabelled_jsonl_has_no_labels(koelectra_folder, tmp_path, capsys):
    data = tmp_path / "ask.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "수도는?", "context": "서울은 수도이다."}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    dump = tmp_path / "w.jsonl"
    inspect_windows.main([str(data), "--model", str(koelectra_folder), "--no_cache", "--dump", str(dump)])
    row = json.loads(dump.read_text(encoding="utf-8"))
    assert row["example_id"] == "q1" and "start_position" not in row
    assert "1 unlabelled" in capsys.readouterr().out


def test_cli_reports_bad_input_without_traceback(koelectra_folder, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": 1}]}]}]}), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "mrc.features", str(bad), "--model", str(koelectra_folder),
                           "--no_cache"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.json: data[0].paragraphs[0].qas[0]: missing 'question'" in proc.stderr


def test_examples_input_is_cached_by_content(korquad_train_subset, koelectra_folder, tmp_path):
    examples, _ = read_examples(korquad_train_subset)
    first = build_store(examples, koelectra_folder, labels=True, cache_dir=tmp_path)
    assert build_store(list(examples), koelectra_folder, labels=True, cache_dir=tmp_path).folder == first.folder
    answer = examples[0].answers[0]
    changed = [dataclasses.replace(examples[0], answers=(Answer(answer.text[1:], answer.start + 1),)), *examples[1:]]
    assert build_store(changed, koelectra_folder, labels=True, cache_dir=tmp_path).folder != first.folder
    assert build_store(examples, koelectra_folder, labels=False, cache_dir=tmp_path).folder != first.folder
    with pytest.raises(MRCError, match="no questions"):
        build_store([], koelectra_folder, labels=True, cache_dir=tmp_path)


def test_all_paragraph_texts_are_the_contexts(dev_store, dev_examples):
    # One joined string with char bases, decoded from the stored UTF-8 (multi-byte Hangul throughout).
    texts = dev_store.all_paragraph_texts
    assert len(texts.base) == dev_store.num_paragraphs + 1
    for ex, p in zip(dev_examples, dev_store.example_paragraph):
        assert texts[int(p)] == ex.context == dev_store.paragraph_texts(int(p))
    assert len(texts.joined) == texts.base[-1]


# The sha256 of everything `build_arrays` returns for FINGERPRINT_INPUT below, recorded with the
# WINDOW_SEMANTICS_VERSION it belongs to.
RECORDED_SEMANTICS = (1, "1e3f4e63341ad668ba590331061d553f5b43c90b946980c5853ef1ad93f75f27")


def fingerprint_examples(korquad_dev) -> list[Example]:
    """The first 40 dev questions plus texts where tokenization is awkward."""
    examples = read_examples([korquad_dev])[0][:40]
    awkward = ["세종은 1443년 훈민정음을 만들었다[SEP] 그리고…", "emoji 😀 와 한자 漢字 그리고\u3000공백",
               "제어\x1c문자와\u2028줄 바꿈", "아주긴단어" * 30, ""]
    examples += [Example(id=f"awkward-{i}", question="무엇을 만들었나?", context=text,
                         answers=(Answer(text[:2], 0),) if text else ()) for i, text in enumerate(awkward)]
    return examples


def arrays_fingerprint(arrays: dict, meta: dict) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_window_semantics_change_only_with_a_version_bump(korquad_dev, koelectra_folder):
    """The cache key holds WINDOW_SEMANTICS_VERSION instead of hashing source files: a change to what
    the builder returns must come with a bump, or users' caches would serve stale windows."""
    arrays, meta = features.build_arrays(fingerprint_examples(korquad_dev), BatchEncoder.for_folder(koelectra_folder),
                                         WindowConfig(max_seq_length=128, doc_stride=48, max_query_length=32),
                                         labels=True)
    got = (features.WINDOW_SEMANTICS_VERSION, arrays_fingerprint(arrays, meta))
    assert got == RECORDED_SEMANTICS, (
        f"the window semantics changed (now {got}): bump WINDOW_SEMANTICS_VERSION in mrc/features.py and record "
        "the new (version, hash) in RECORDED_SEMANTICS")
