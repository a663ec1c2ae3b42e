"""The WordPiece tokenizer of a model folder, built with `tokenizers` (no `transformers` at run time).

A folder with `tokenizer.json` is loaded as is. Otherwise `vocab.txt` + `tokenizer_config.json`
give a BERT tokenizer with the semantics of HF's BertTokenizerFast: clean text (drop control
characters, map whitespace to spaces), split CJK ideographs into their own words, lowercase and
strip accents only when `do_lower_case` is true (KoELECTRA sets it false: Hangul must never be
NFD-decomposed), split on whitespace and punctuation, then greedy longest-match WordPiece.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
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
        # Offsets from piece lengths (encode_flat) need the cased BERT normaliser with clean_text, BERT's
        # pre-tokeniser and `##` WordPiece.
        model = self.tokenizer.model
        self._piece_offsets = (self._plain is not None and norm.clean_text and hasattr(self._plain, "encode_batch_fast")
                               and isinstance(self.tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
                               and isinstance(model, models.WordPiece) and model.continuing_subword_prefix == "##")
        self._isolates_cjk = self._plain is not None and norm.handle_chinese_chars
        self._kind_table = np.full(0x10000, -1, dtype=np.int8)   # code point -> char kind, -1 = not seen yet

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

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int64 `[T]`, char offsets int32 `[T, 2]`, tokens per text int64 `[len(texts)]`) of all
        `texts`, concatenated: the same ids and offsets as `encode`, faster.

        tokenizers' offsets cost more than the tokenizing itself (tracking them in Rust, then a
        Python tuple per token), so for a cased BERT WordPiece tokenizer they are computed here
        from the ids (`_offsets_from_pieces`); any text where that does not check out is encoded
        again with tokenizers' own offsets.
        """
        texts = list(texts)
        if not (self._piece_offsets and texts):
            return self._flat_from_library(texts)
        encoded = [e.ids for e in self._split_encode(texts, "encode_batch_fast")]
        ids, offsets, lengths, ok = self._offsets_from_pieces(texts, encoded)
        if ok.all():
            return ids, offsets, lengths
        # Rare: splice the library's encoding of the texts that did not check out into text order.
        retry = np.flatnonzero(~ok)
        retry_ids, retry_offsets, retry_lengths = self._flat_from_library([texts[i] for i in retry])
        ours, theirs = np.cumsum(lengths)[:-1], np.cumsum(retry_lengths)[:-1]
        id_parts, offset_parts = np.split(ids, ours), np.split(offsets, ours)
        for i, retry_id_part, retry_offset_part in zip(retry.tolist(), np.split(retry_ids, theirs),
                                                      np.split(retry_offsets, theirs)):
            id_parts[i], offset_parts[i] = retry_id_part, retry_offset_part
        lengths[retry] = retry_lengths
        return np.concatenate(id_parts), np.concatenate(offset_parts), lengths

    def _flat_from_library(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`encode_flat` with tokenizers' own offsets."""
        encodings = self.encode(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        total = int(lengths.sum())
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
        flat = itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encodings))
        offsets = np.fromiter(flat, dtype=np.int32, count=2 * total).reshape(total, 2)
        return ids, offsets, lengths

    def _offsets_from_pieces(self, texts: list[str], encoded: list[list[int]]
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids `[T]`, offsets `[T, 2]`, tokens per text `[n]`, ok `[n]`): char offsets of every token
        from its piece length; a text's offsets are right where ok, meaningless elsewhere.

        With a cased BERT normaliser and pre-tokeniser, each character of a text is either covered
        by tokens (in order) or not: whitespace, and what clean_text deletes (control and format
        characters, U+FFFD). A token other than [UNK] covers as many characters as its vocab
        piece without `##`; an [UNK] covers a whole word, a run of covered characters split at
        whitespace, punctuation and (with handle_chinese_chars) CJK ideographs, which are words of
        their own. Deleted characters do not split words. A text is ok when its token lengths add
        up to its covered characters and none is zero.
        """
        n_tokens = np.fromiter((len(x) for x in encoded), dtype=np.int64, count=len(encoded))
        token_ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(n_tokens.sum()))
        token_base = np.concatenate([[0], np.cumsum(n_tokens)])                                 # [n+1]
        text_of_token = np.repeat(np.arange(len(texts)), n_tokens)                               # [T]
        chars = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        char_base = np.concatenate([[0], np.cumsum([len(t) for t in texts], dtype=np.int64)])   # [n+1]
        kind = self._char_kinds(chars)                                                             # [C]
        covered = np.flatnonzero(kind >= _COVERED)               # char positions the tokens cover, in order
        covered_before = np.searchsorted(covered, char_base)     # [n+1] covered chars before each text
        token_chars = self._piece_tables[0][token_ids]           # [T]
        unknown = np.flatnonzero(token_ids == self.specials.unk_id)
        if len(unknown):
            token_chars[unknown] = self._unknown_word_chars(covered, kind, covered_before, token_ids,
                                                            token_base, text_of_token, unknown)
        chars_before = np.concatenate([[0], np.cumsum(token_chars)])                               # [T+1]
        ok = (chars_before[token_base[1:]] - chars_before[token_base[:-1]]) == np.diff(covered_before)
        # No zero-length token (an empty text's reduceat slot reads the next token: at worst a needless retry).
        ok &= np.minimum.reduceat(np.append(token_chars, 1), token_base[:-1]) > 0
        good = ok[text_of_token]                                  # [T] tokens of texts that check out
        first = chars_before[:-1] - chars_before[token_base[:-1]][text_of_token] + covered_before[:-1][text_of_token]
        first, last = np.where(good, first, 0), np.where(good, first + token_chars - 1, 0)
        shift = char_base[:-1][text_of_token]
        offsets = np.stack([covered[first] - shift, covered[last] + 1 - shift], axis=1).astype(np.int32) \
            if len(covered) else np.zeros((len(token_ids), 2), dtype=np.int32)
        return token_ids, offsets, n_tokens, ok

    def _unknown_word_chars(self, covered, kind, covered_before, token_ids, token_base, text_of_token,
                            unknown) -> np.ndarray:
        """Covered characters of the word each [UNK] token (`unknown`, token indices) stands for.

        Every token without `##` starts a word, so the j-th such token of a text is its j-th word.
        """
        covered_kind = kind[covered]
        gaps = np.cumsum(kind == _SPACE)[covered]                 # whitespace seen up to each covered char
        starts = np.ones(len(covered), dtype=bool)                # does covered char i begin a word?
        starts[1:] = ((gaps[1:] != gaps[:-1]) | (covered_kind[1:] == _ISOLATED) | (covered_kind[:-1] == _ISOLATED))
        starts[covered_before[:-1][covered_before[:-1] < len(covered)]] = True        # each text's first char
        word_first = np.flatnonzero(starts)                                             # [W] covered index
        word_chars = np.diff(np.append(word_first, len(covered)))                       # [W]
        words_before = np.searchsorted(word_first, covered_before[:-1])                 # [n] words before each text
        opened_before = np.concatenate([[0], np.cumsum(self._piece_tables[1][token_ids])])   # [T+1] word starts
        text = text_of_token[unknown]
        word = opened_before[unknown] - opened_before[token_base[text]] + words_before[text]
        if not len(word_chars):
            return np.zeros(len(unknown), dtype=np.int64)
        return np.where(word < len(word_chars), word_chars[np.minimum(word, len(word_chars) - 1)], 0)

    def _char_kinds(self, chars: np.ndarray) -> np.ndarray:
        """int8 kind of each code point in `chars`: _GONE, _SPACE, _COVERED or _ISOLATED (see
        `_offsets_from_pieces`). Each distinct code point is classified once per encoder."""
        if len(chars) and int(chars.max()) >= len(self._kind_table):   # beyond the BMP: grow the table
            grow = int(chars.max()) + 1 - len(self._kind_table)
            self._kind_table = np.concatenate([self._kind_table, np.full(grow, -1, dtype=np.int8)])
        table = self._kind_table
        seen = np.zeros(len(table), dtype=bool)
        seen[chars] = True
        new = np.flatnonzero(seen & (table < 0))
        if len(new):
            table[new] = [self._char_kind(cp) for cp in new.tolist()]
        return table[chars]

    def _char_kind(self, cp: int) -> int:
        """The normaliser's rules, in its order: delete controls (but tab, newline, return), then
        whitespace becomes a space; then BERT punctuation (all ASCII symbols, Unicode P*)."""
        ch = chr(cp)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch)[0] == "C" and ch not in "\t\n\r"):
            return _GONE
        if ch.isspace():
            return _SPACE
        if (cp < 128 and not ch.isalnum()) or unicodedata.category(ch)[0] == "P" or (self._isolates_cjk and _is_cjk(cp)):
            return _ISOLATED
        return _COVERED

    @functools.cached_property
    def _piece_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """int64 `[vocab]` each: (characters of the text each token id stands for, `##` prefix
        dropped; 1 where the token begins a word, i.e. has no `##`). Characters are 0 for [UNK] (a
        whole word of unknown length) and for added tokens such as a literal [SEP] (their offsets
        may take in stripped spaces), so a text holding one takes the library's offsets."""
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        chars, opens = np.zeros(size, dtype=np.int64), np.ones(size, dtype=np.int64)
        for token, i in self.tokenizer.get_vocab(with_added_tokens=True).items():
            continuation = token.startswith("##")
            chars[i], opens[i] = len(token) - 2 * continuation, not continuation
        chars[list(self.tokenizer.get_added_tokens_decoder())] = 0
        chars[self.specials.unk_id] = 0
        return chars, opens

    def _split_encode(self, texts: Sequence[str], method: str) -> list[Encoding]:
        if self._plain is None:
            return getattr(self.tokenizer, method)(list(texts), add_special_tokens=False)
        plain = [self._normalizer_is_identity(t) for t in texts]
        plain_out = iter(getattr(self._plain, method)([t for t, p in zip(texts, plain) if p], add_special_tokens=False))
        full_out = iter(getattr(self.tokenizer, method)([t for t, p in zip(texts, plain) if not p],
                                                        add_special_tokens=False))
        return [next(plain_out) if p else next(full_out) for p in plain]


# Character kinds for offsets from piece lengths: deleted by clean_text, whitespace (splits words, not
# covered), covered by tokens, covered and a word of its own (punctuation, CJK ideographs).
_GONE, _SPACE, _COVERED, _ISOLATED = 0, 1, 2, 3
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    """BERT's CJK ideograph ranges (what handle_chinese_chars puts spaces around)."""
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


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
