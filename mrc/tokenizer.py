"""The WordPiece tokenizer of a model folder, built with `tokenizers` (no `transformers` at run time).

A folder with `tokenizer.json` is loaded as is. Otherwise `vocab.txt` + `tokenizer_config.json`
give a BERT tokenizer with the semantics of HF's BertTokenizerFast: clean text (drop control
characters, map whitespace to spaces), split CJK ideographs into their own words, lowercase and
strip accents only when `do_lower_case` is true (KoELECTRA sets it false: Hangul must never be
NFD-decomposed), split on whitespace and punctuation, then greedy longest-match WordPiece.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from tokenizers import AddedToken, Encoding, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from mrc.errors import MRCError
from mrc.io import read_json_object

# Files whose bytes define the tokenizer (hashed into the window-store cache key).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_SPECIAL = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                   "mask_token": "[MASK]"}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens a window is assembled from."""

    cls_id: int
    sep_id: int
    pad_id: int
    unk_id: int


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The folder's tokenizer, with truncation and padding off (windows are cut by mrc.features)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MRCError(f"{folder}: model folder not found; pass the folder holding vocab.txt "
                       f"(or tokenizer.json), e.g. a downloaded koelectra-base-v3-discriminator")
    if (folder / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            raise MRCError(f"{folder / 'tokenizer.json'}: cannot be loaded ({e}); re-download the model folder") from None
    elif (folder / "vocab.txt").is_file():
        tok = _wordpiece_from_vocab(folder)
    else:
        raise MRCError(f"{folder}: has neither tokenizer.json nor vocab.txt; pass a model folder with its tokenizer files")
    tok.no_truncation()
    tok.no_padding()
    return tok


def special_tokens(folder: str | Path, tokenizer: Tokenizer) -> SpecialTokens:
    """[CLS]/[SEP]/[PAD]/[UNK] ids, names taken from the folder's config when it renames them."""
    names = _special_token_names(Path(folder))
    ids = {}
    for role in ("cls_token", "sep_token", "pad_token", "unk_token"):
        tid = tokenizer.token_to_id(names[role])
        if tid is None:
            raise MRCError(f"{folder}: the {role} {names[role]!r} is not in the vocabulary; "
                           f"fix {role} in tokenizer_config.json")
        ids[role] = tid
    return SpecialTokens(cls_id=ids["cls_token"], sep_id=ids["sep_token"], pad_id=ids["pad_token"],
                         unk_id=ids["unk_token"])


class BatchEncoder:
    """`encode_batch(texts, add_special_tokens=False)` of a folder's tokenizer, with the same results, faster.

    A cased BERT normaliser changes a text only where it holds a control or format character, a
    non-space whitespace character, U+FFFD or a CJK ideograph (characters it drops, maps to a
    space, or splits off). On every other text it is the identity, so those texts are encoded by a
    twin tokenizer without the normaliser; that skips a quarter of the tokenizer's time on
    KorQuAD. Any other normaliser (lowercasing, accents, tokenizer.json pipelines) is always run.
    """

    # Superset of the characters the normaliser may change, besides what isprintable() rejects.
    _MAY_CHANGE = re.compile("[\ufffd\u3400-\u9fff\uf900-\ufaff\U00020000-\U0010ffff]")

    def __init__(self, folder: str | Path):
        self.tokenizer = load_tokenizer(folder)
        self.specials = special_tokens(folder, self.tokenizer)
        self._plain = None
        norm = self.tokenizer.normalizer
        if isinstance(norm, normalizers.BertNormalizer) and not norm.lowercase and not norm.strip_accents:
            self._plain = load_tokenizer(folder)
            self._plain.normalizer = None

    @classmethod
    def for_folder(cls, folder: str | Path) -> BatchEncoder:
        """One encoder per folder and tokenizer-file content, reused across builds in a process."""
        return _cached_encoder(str(Path(folder).resolve()), tokenizer_fingerprint(folder))

    def _normalizer_is_identity(self, text: str) -> bool:
        return text.isprintable() and not self._MAY_CHANGE.search(text)

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Encodings (ids, char offsets) of `texts`, without special tokens."""
        return self._split_encode(texts, "encode_batch")

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of `texts`, without special tokens (no offsets: encode_batch_fast, tokenizers >= 0.20)."""
        method = "encode_batch_fast" if hasattr(self.tokenizer, "encode_batch_fast") else "encode_batch"
        return [e.ids for e in self._split_encode(texts, method)]

    def _split_encode(self, texts: Sequence[str], method: str) -> list[Encoding]:
        if self._plain is None:
            return getattr(self.tokenizer, method)(list(texts), add_special_tokens=False)
        plain = [self._normalizer_is_identity(t) for t in texts]
        plain_out = iter(getattr(self._plain, method)([t for t, p in zip(texts, plain) if p], add_special_tokens=False))
        full_out = iter(getattr(self.tokenizer, method)([t for t, p in zip(texts, plain) if not p],
                                                        add_special_tokens=False))
        return [next(plain_out) if p else next(full_out) for p in plain]


@lru_cache(maxsize=8)
def _cached_encoder(folder: str, fingerprint: str) -> BatchEncoder:
    """`fingerprint` is part of the cache key only: edited tokenizer files give a fresh encoder."""
    return BatchEncoder(folder)


def tokenizer_fingerprint(folder: str | Path) -> str:
    """sha256 over the bytes of the folder's tokenizer files: equal fingerprints tokenize equally."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        p = Path(folder) / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    """An optional tokenizer config file: {} when absent."""
    return read_json_object(path) if path.is_file() else {}


def _token_text(value: Any) -> str:
    """A special token as written in HF configs: a string or {"content": ...}."""
    return value["content"] if isinstance(value, dict) else str(value)


def _special_token_names(folder: Path) -> dict[str, str]:
    names = dict(DEFAULT_SPECIAL)
    for source in (_read_json(folder / "special_tokens_map.json"), _read_json(folder / "tokenizer_config.json")):
        for role in DEFAULT_SPECIAL:
            if source.get(role) is not None:
                names[role] = _token_text(source[role])
    return names


def _wordpiece_from_vocab(folder: Path) -> Tokenizer:
    cfg = _read_json(folder / "tokenizer_config.json")
    lowercase = bool(cfg.get("do_lower_case", True))  # BertTokenizer's default when the config is silent
    strip_accents = cfg.get("strip_accents")  # None: follow lowercase, as BERT does
    names = _special_token_names(folder)
    vocab = _read_vocab(folder / "vocab.txt")
    if names["unk_token"] not in vocab:
        raise MRCError(f"{folder / 'vocab.txt'}: the unknown token {names['unk_token']!r} is missing; "
                       f"fix unk_token in tokenizer_config.json or use the model's own vocab.txt")
    tok = Tokenizer(models.WordPiece(vocab, unk_token=names["unk_token"], max_input_chars_per_word=100,
                                     continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)),
        strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    # Special tokens match before normalisation, so a literal "[SEP]" in a text stays one token (as in HF).
    tok.add_special_tokens([AddedToken(names[r], normalized=False, special=True)
                            for r in DEFAULT_SPECIAL if names[r] in vocab])
    cls, sep = names["cls_token"], names["sep_token"]
    if cls in vocab and sep in vocab:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    return tok


def _read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt: one token per line, id = line number (a repeated token keeps its last line, as HF does)."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            vocab[line.rstrip("\n")] = i
    if not vocab:
        raise MRCError(f"{path}: is empty; use the model's own vocab.txt")
    return vocab
