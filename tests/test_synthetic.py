"""The synthetic Korean QA set: reproducible, exactly extractable answers, correct particles, long paragraphs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mrc.data import read_examples
from mrc.demo.korean import particle
from mrc.demo.run import DOC_STRIDE, MAX_QUERY_LENGTH, MAX_SEQ_LENGTH
from mrc.features import build_store
from mrc.store import WindowConfig
from mrc.demo.synthetic import SPLITS, SyntheticConfig, write_dataset
from mrc.demo.untrained import train_vocab, write_initial_model
from mrc.tokenizer import load_tokenizer, special_tokens

SMALL = SyntheticConfig(train_paragraphs=150, dev_paragraphs=40, sample_paragraphs=5)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small data set and its vocab folder, shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("synthetic")
    paths = write_dataset(SMALL, root / "data")
    train_vocab(SMALL, root / "tokenizer")
    return paths, root / "tokenizer"


def _paragraphs(path):
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        yield from article["paragraphs"]


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path, built):
    paths, tokenizer_folder = built
    again = write_dataset(SMALL, tmp_path / "again")
    train_vocab(SMALL, tmp_path / "again_tok")
    for split in SPLITS:
        assert again[split].read_bytes() == paths[split].read_bytes(), split
    assert (tmp_path / "again_tok" / "vocab.txt").read_bytes() == (tokenizer_folder / "vocab.txt").read_bytes()
    other = write_dataset(SyntheticConfig(seed=SMALL.seed + 1, train_paragraphs=150, dev_paragraphs=40,
                                          sample_paragraphs=5), tmp_path / "other")
    assert other["train"].read_bytes() != paths["train"].read_bytes()


def test_splits_hold_different_paragraphs(built):
    paths, _ = built
    train = {p["context"] for p in _paragraphs(paths["train"])}
    dev = {p["context"] for p in _paragraphs(paths["dev"])}
    assert len(dev) == SMALL.dev_paragraphs and not train & dev


def test_answers_sit_at_answer_start_and_on_token_boundaries(built):
    paths, tokenizer_folder = built
    tokenizer = load_tokenizer(tokenizer_folder)
    unk = tokenizer.token_to_id("[UNK]")
    checked = 0
    for split in SPLITS:
        for para in _paragraphs(paths[split]):
            context = para["context"]
            enc = tokenizer.encode(context, add_special_tokens=False)
            assert unk not in enc.ids, context
            starts = {s for s, _ in enc.offsets}
            ends = {e for _, e in enc.offsets}
            for qa in para["qas"]:
                (answer,) = qa["answers"]
                begin, text = answer["answer_start"], answer["text"]
                assert context[begin:begin + len(text)] == text, qa["id"]
                # A model can only extract an answer exactly when its edges are token edges.
                assert begin in starts and begin + len(text) in ends, (qa["id"], text)
                checked += 1
    assert checked >= 3 * (SMALL.train_paragraphs + SMALL.dev_paragraphs)


def test_files_read_cleanly_through_the_normal_reader(built):
    paths, _ = built
    examples, stats = read_examples([paths["dev"]])
    assert stats.kept == len(examples) > SMALL.dev_paragraphs * 3
    assert all(e.answers and e.context[e.answers[0].start:].startswith(e.answers[0].text) for e in examples)


@pytest.mark.parametrize("word, written, expected", [
    ("서울", "으로", "로"),      # ㄹ final takes 로
    ("부산", "으로", "으로"),
    ("파리", "으로", "로"),
    ("김민수", "은", "는"),
    ("박준석", "은", "은"),
    ("한빛전자", "이", "가"),
    ("새솔은행", "이", "이"),
    ("청운대학교", "을", "를"),
    ("누리물산", "을", "을"),
    ("도쿄", "과", "와"),
    ("베를린", "과", "과"),
    ("이민호", "이었다", "였다"),
    ("36권", "이다", "이다"),
    ("서울", "에서", "에서"),   # not an alternating particle: unchanged
])
def test_particle_follows_the_final_consonant(word, written, expected):
    assert particle(word, written) == expected


PAIRS = [("은", "는"), ("이", "가"), ("을", "를"), ("과", "와"), ("이다", "다"), ("이었다", "였다")]


RIEUL = 8


def _final_consonant(ch: str) -> int:
    """Final-consonant index of a Hangul syllable, computed here independently of mrc.demo.korean."""
    return (ord(ch) - 0xAC00) % 28


def test_particles_after_answers_agree_with_batchim(built):
    paths, _ = built
    seen: set[str] = set()
    ro_after_rieul = 0
    for split in SPLITS:
        for para in _paragraphs(paths[split]):
            context = para["context"]
            for qa in para["qas"]:
                answer = qa["answers"][0]
                end = answer["answer_start"] + len(answer["text"])
                run = re.match(r"[가-힣]*", context[end:]).group()
                final = _final_consonant(answer["text"][-1])
                for consonant_form, vowel_form in PAIRS:
                    if run in (consonant_form, vowel_form):
                        assert run == (consonant_form if final else vowel_form), (answer["text"], run)
                        seen.add(run)
                if run in ("으로", "로"):
                    assert run == ("으로" if final not in (0, RIEUL) else "로"), (answer["text"], run)
                    seen.add(run)
                    ro_after_rieul += run == "로" and final == RIEUL
    # The checks above must have met both forms of the common particles, and 로 after a ㄹ final.
    assert {"은", "는", "이", "가", "을", "를", "과", "와", "으로", "로"} <= seen
    assert ro_after_rieul > 0


def test_some_paragraphs_need_several_windows_at_the_demo_length(built, tmp_path):
    paths, tokenizer_folder = built
    model = write_initial_model(tmp_path / "model", tokenizer_folder, _tiny_model_config(tokenizer_folder), seed=0)
    windows = WindowConfig(max_seq_length=MAX_SEQ_LENGTH, doc_stride=DOC_STRIDE, max_query_length=MAX_QUERY_LENGTH)
    store = build_store(paths["train"], model, windows, labels=True, use_cache=False)
    per_example = np.bincount(np.asarray(store.windows.example_index))
    assert per_example.max() >= 3
    assert 0.05 < (per_example > 1).mean() < 0.6


def _tiny_model_config(tokenizer_folder):
    from mrc.model import ModelConfig

    vocab_size = (tokenizer_folder / "vocab.txt").read_text(encoding="utf-8").count("\n")
    return ModelConfig(vocab_size=vocab_size, hidden_size=32, embedding_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)


def test_initial_model_folder_loads_with_the_real_loaders(built, tmp_path):
    from mrc.checkpoint import load_model

    _, tokenizer_folder = built
    folder = write_initial_model(tmp_path / "model", tokenizer_folder, _tiny_model_config(tokenizer_folder), seed=0)
    model, cfg = load_model(folder)
    tokenizer = load_tokenizer(folder)
    assert cfg.vocab_size == tokenizer.get_vocab_size() == model.embeddings.word.num_embeddings
    specials = special_tokens(folder, tokenizer)
    assert specials.pad_id == 0 == cfg.pad_token_id
    assert json.loads((folder / "tokenizer_config.json").read_text())["do_lower_case"] is False
    # Cased: a Latin capital survives tokenization (do_lower_case false reaches the tokenizer).
    assert tokenizer.normalizer.normalize_str("KT") == "KT"


def test_init_for_reading_gives_similar_nearby_positions_and_a_local_head():
    """Sinusoids make a position's embedding close to its neighbours'; head 0 of the first layer then
    starts as a local-attention head. HF's random initialisation has neither."""
    import torch

    from mrc.model import ElectraForQA, ModelConfig
    from mrc.model import POSITION_SCALE, init_for_reading

    cfg = ModelConfig(vocab_size=300, hidden_size=128, embedding_size=128, num_hidden_layers=1,
                      num_attention_heads=4, intermediate_size=256, max_position_embeddings=128)
    T = 96
    ids = torch.randint(5, 300, (1, T), generator=torch.Generator().manual_seed(0))
    types = (torch.arange(T) >= 20).long()[None, :]
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs()           # [T, T]

    def neighbour_similarity(model) -> tuple[float, float]:
        """Mean cosine of position embeddings 1-3 apart, and 32 or more apart."""
        table = torch.nn.functional.normalize(model.embeddings.position.weight[:T].detach(), dim=1)
        cosine = table @ table.T
        return float(cosine[(distance >= 1) & (distance <= 3)].mean()), float(cosine[distance >= 32].mean())

    def head0_mass_near(model) -> float:
        """Attention weight of first-layer head 0 within 3 positions, averaged over queries."""
        with torch.no_grad():
            x = model.embeddings(ids, types)[0]                                       # [T, H]
            q, k = model.layers[0].qkv(x)[:, :256].split(128, dim=-1)
        d = cfg.head_size
        weights = torch.softmax(q[:, :d] @ k[:, :d].T / d ** 0.5, dim=-1)           # [T, T]
        return float((weights * (distance <= 3)).sum(-1).mean())

    for seed in range(3):
        torch.manual_seed(seed)
        model = ElectraForQA(cfg)
        near, far = neighbour_similarity(model)
        assert abs(near) < 0.1 and abs(far) < 0.1
        assert head0_mass_near(model) < 0.15                      # about 7/96: uniform
        init_for_reading(model, seed)
        near, far = neighbour_similarity(model)
        assert near > 0.85 and near - far > 0.3                   # sinusoids share a constant part (slow frequencies)
        assert head0_mass_near(model) > 0.6
    table = model.embeddings.position.weight
    assert torch.allclose(table[:, 0], POSITION_SCALE * torch.sin(torch.arange(128.0)))
    assert torch.allclose(table[:, 1], POSITION_SCALE * torch.cos(torch.arange(128.0)))


def test_offsets_from_piece_lengths_hold_for_the_synthetic_vocab(built):
    """The demo's own cased vocab takes the fast offsets path; they must equal tokenizers' offsets."""
    from mrc.tokenizer import BatchEncoder

    paths, tokenizer_folder = built
    examples, _ = read_examples(paths["train"])
    texts = sorted({ex.context for ex in examples}) + [ex.question for ex in examples]
    reference = load_tokenizer(tokenizer_folder).encode_batch(texts, add_special_tokens=False)
    ids, offsets, lengths = BatchEncoder(tokenizer_folder).encode_flat(texts)
    assert lengths.tolist() == [len(e.ids) for e in reference]
    assert ids.tolist() == [i for e in reference for i in e.ids]
    assert offsets.tolist() == [list(o) for e in reference for o in e.offsets]
