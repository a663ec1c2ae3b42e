"""The demo's untrained starting point: a WordPiece vocab trained on the synthetic corpus, and a
randomly initialised small ELECTRA saved as an HF folder.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from mrc.checkpoint import save_model
from mrc.demo.korean import ENTITY_WORDS, particle_forms
from mrc.demo.synthetic import SPECIAL_TOKENS, SyntheticConfig, corpus_sentences, split_rng
from mrc.errors import MRCError
from mrc.io import atomic_write_text
from mrc.model import ElectraForQA, ModelConfig, init_for_reading

UNITS = ("명", "개", "권", "센티미터", "킬로미터", "제곱킬로미터", "톤", "년", "월", "일")


@functools.cache
def _entity_suffixes() -> frozenset[str]:
    """Every non-empty suffix of every non-numeric value a slot can take."""
    return frozenset(w[i:] for w in ENTITY_WORDS for i in range(len(w)))


_NUMERIC_SUFFIX = re.compile(r"[0-9,.]*(?:" + "|".join(sorted({u[i:] for u in UNITS for i in range(len(u))}, key=len, reverse=True)) + ")")


def straddles_particle(token: str) -> bool:
    """Could this vocab entry cover the end of a slot value and the start of its particle?

    Greedy longest-match would then glue an answer to its particle (`하노` + `##이다` for 하노이다),
    and the answer could never be extracted exactly.
    """
    text = token.removeprefix("##")
    heads = {f[:i] for f in particle_forms() for i in range(1, len(f) + 1)}
    return any(text[k:] in heads and (text[:k] in _entity_suffixes() or _NUMERIC_SUFFIX.fullmatch(text[:k]))
               for k in range(1, len(text)))


def train_vocab(cfg: SyntheticConfig, folder: Path) -> Path:
    """Train a cased BERT WordPiece vocab on synthetic text; writes vocab.txt + tokenizer_config.json.

    Words are counted by `tokenizers` (BERT normalizer, cased; BertPreTokenizer) on a corpus with a
    space before every particle, and those seen `vocab_min_frequency` times become whole-word
    pieces: template words, places, years. Names, organisations and numbers are rarer and fall
    back to single-character pieces, the same way in every split. Then come `##` + each particle
    form and every character with and without `##`, so the greedy longest match splits 서울에서
    into 서울 ##에서 and no word becomes [UNK]. Entries that could still cover a value's end and its
    particle are dropped.

    tokenizers' WordPieceTrainer would learn merges too, but it breaks ties between equal pair
    counts in hash order, so its vocab changes from run to run; WordLevelTrainer sorts by
    (count, word) and is reproducible.
    """
    texts = list(corpus_sentences(split_rng(cfg.seed, "vocab"), 4000))
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=False, lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.vocab_min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    learned = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    vocab = [tok for tok, _ in learned if not straddles_particle(tok)]
    seen = set(vocab)
    characters = sorted({ch for text in texts for ch in text if not ch.isspace()})
    for extra in [*ENTITY_WORDS, *(f"##{p}" for p in particle_forms()), *characters, *(f"##{c}" for c in characters)]:
        if extra not in seen:
            seen.add(extra)
            vocab.append(extra)
    if vocab[:len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
        raise MRCError(f"vocab training put {vocab[:5]} first, expected {list(SPECIAL_TOKENS)} ([PAD] must be id 0)")
    folder = Path(folder)
    atomic_write_text(folder / "vocab.txt", "".join(t + "\n" for t in vocab))
    atomic_write_text(folder / "tokenizer_config.json",
                      json.dumps({"do_lower_case": False, "model_max_length": 512}, indent=2) + "\n")
    return folder / "vocab.txt"


def write_initial_model(folder: Path, tokenizer_folder: Path, model_cfg: ModelConfig, seed: int) -> Path:
    """A freshly initialised ElectraForQA (HF's random initialisation plus `init_for_reading`) saved
    as an HF folder (weights, config.json, tokenizer files).

    `model_cfg` is an mrc.model.ModelConfig whose vocab_size matches the tokenizer folder's vocab.txt.
    """
    vocab_lines = (Path(tokenizer_folder) / "vocab.txt").read_text(encoding="utf-8").count("\n")
    if model_cfg.vocab_size != vocab_lines:
        raise MRCError(f"model vocab_size {model_cfg.vocab_size} differs from the {vocab_lines} tokens of "
                       f"{tokenizer_folder / 'vocab.txt'}; build the ModelConfig from the vocab")
    torch.manual_seed(seed)
    model = ElectraForQA(model_cfg)
    init_for_reading(model, seed)
    save_model(model, model_cfg, folder, tokenizer_folder)
    return Path(folder)
