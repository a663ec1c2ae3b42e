"""The tokenizers-built WordPiece must give the same ids as transformers' AutoTokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrc.data import read_examples
from mrc.errors import MRCError
from mrc.tokenizer import BatchEncoder, load_tokenizer, special_tokens, tokenizer_fingerprint

transformers = pytest.importorskip("transformers")

TOY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "café", "hello", "##s", "world", "漢", "字", ".", ","]
TOY_TEXTS = ["Café HELLOs, Wörld漢字.", "Hello cafés, world.", "ｈｅｌｌｏ\x07 cafés [SEP] world", "漢字漢 hello\u00a0world"]


def _ids(tok, texts):
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def hf_koelectra(koelectra_folder):
    return transformers.AutoTokenizer.from_pretrained(str(koelectra_folder))


def test_ids_equal_autotokenizer_on_every_korquad_dev_text(korquad_dev, koelectra_folder, hf_koelectra):
    examples, _ = read_examples(korquad_dev)
    texts = sorted({ex.context for ex in examples}) + [ex.question for ex in examples]
    texts += [a.text for ex in examples for a in ex.answers]
    ours = _ids(load_tokenizer(koelectra_folder), texts)
    theirs = hf_koelectra(texts, add_special_tokens=False)["input_ids"]
    mismatched = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatched, f"{len(mismatched)} texts tokenize differently, first: {mismatched[0][:80]!r}"


def test_koelectra_is_cased_and_keeps_hangul_whole(koelectra_folder, hf_koelectra):
    tok = load_tokenizer(koelectra_folder)
    texts = ["KorQuAD 한국어 café 漢字 ［전각］ zero\u200bwidth \x00ctrl [SEP] x" + "ㄱ" * 120]
    assert _ids(tok, texts) == hf_koelectra(texts, add_special_tokens=False)["input_ids"]
    assert tok.encode("Seoul", add_special_tokens=False).ids != tok.encode("seoul", add_special_tokens=False).ids
    pair = tok.encode("질문", "문맥")
    assert pair.ids == hf_koelectra("질문", "문맥")["input_ids"]
    assert pair.type_ids == hf_koelectra("질문", "문맥")["token_type_ids"]


def test_batch_encoder_equals_the_plain_tokenizer_ids_and_offsets(korquad_dev, koelectra_folder):
    """The encoder skips the normaliser on texts it leaves unchanged; results must not change."""
    examples, _ = read_examples(korquad_dev)
    tricky = ["줄\n바꿈", "탭\t문자", "nbsp\u00a0공백", "폭없는\u200b공백", "제어\x07문자", "대체\ufffd문자", "漢字섞인문장",
              "\u3000전각공백", "[SEP]문자", "𠀀확장한자", "정상 문장, 부호! (괄호) 123.", ""]
    texts = sorted({ex.context for ex in examples}) + [ex.question for ex in examples] + tricky
    encoder = BatchEncoder(koelectra_folder)
    reference = load_tokenizer(koelectra_folder).encode_batch(texts, add_special_tokens=False)
    ours = encoder.encode(texts)
    assert [e.ids for e in ours] == [e.ids for e in reference]
    assert [e.offsets for e in ours] == [e.offsets for e in reference]
    assert encoder.ids(texts) == [e.ids for e in reference]
    assert sum(map(encoder._normalizer_is_identity, texts)) > len(texts) // 2  # the fast path is taken


UNKNOWN_WORD_TEXTS = [   # the first text holds a literal [SEP]: it takes the library's offsets, spliced in first
    "[SEP]ꙮ 문자", "앞 ꙮꙮ 뒤", "ꙮ,ꙮ.ꙮ", "가ꙮ나 다ꙮ", "ꙮ\u200bꙮ 끝", "ꙮ漢ꙮ", "😀 이모지 😀😀", "a" * 120 + " 긴 단어",
    "ꙮ\tꙮ\nꙮ\u00a0ꙮ", "\x07ꙮ\x07", "ꙮ\x1cꙮ\x85ꙮ", "ꙮ\u3000ꙮ\u2028끝", "ꙮ\ufffdꙮ", "ꙮ", " ꙮ ", "(ꙮ)", "가나\u200b다라ꙮ", "漢字ꙮ漢字",
]


def test_encode_flat_offsets_equal_the_tokenizers_offsets(korquad_dev, korquad_train_subset, klue_dev,
                                                          koelectra_folder):
    """Offsets computed from piece lengths must equal tokenizers' own, [UNK] words and odd characters included."""
    texts = list(UNKNOWN_WORD_TEXTS)
    for path in (korquad_dev, korquad_train_subset, klue_dev):
        examples, _ = read_examples(path)
        texts += sorted({ex.context for ex in examples}) + [ex.question for ex in examples]
    texts += ["ꙮ [CLS] 나", "ꙮ 끝", ""]       # a library-encoded text near the end; an empty last text after an [UNK]
    encoder = BatchEncoder(koelectra_folder)
    reference = load_tokenizer(koelectra_folder).encode_batch(texts, add_special_tokens=False)
    unk = encoder.specials.unk_id
    assert sum(unk in e.ids for e in reference) > 100          # the [UNK] word lengths are exercised
    ids, offsets, lengths = encoder.encode_flat(texts)
    assert lengths.tolist() == [len(e.ids) for e in reference]
    assert ids.tolist() == [i for e in reference for i in e.ids]
    assert offsets.tolist() == [list(o) for e in reference for o in e.offsets]


@pytest.mark.parametrize("lower", [True, False])
def test_encode_flat_on_a_toy_vocab(toy_folder, lower):
    """Lowercasing tokenizers take tokenizers' offsets; cased ones compute them: both must agree."""
    (toy_folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower}), encoding="utf-8")
    texts = TOY_TEXTS + ["hello hellos worlds.", "cafe\u200bs", "漢字,字 ."]
    reference = load_tokenizer(toy_folder).encode_batch(texts, add_special_tokens=False)
    ids, offsets, lengths = BatchEncoder(toy_folder).encode_flat(texts)
    assert lengths.tolist() == [len(e.ids) for e in reference]
    assert ids.tolist() == [i for e in reference for i in e.ids]
    assert offsets.tolist() == [list(o) for e in reference for o in e.offsets]


def test_special_token_ids_come_from_the_vocab(koelectra_folder, hf_koelectra):
    sp = special_tokens(koelectra_folder, load_tokenizer(koelectra_folder))
    assert (sp.cls_id, sp.sep_id, sp.pad_id, sp.unk_id) == (hf_koelectra.cls_token_id, hf_koelectra.sep_token_id,
                                                           hf_koelectra.pad_token_id, hf_koelectra.unk_token_id)


@pytest.fixture
def toy_folder(tmp_path) -> Path:
    (tmp_path / "vocab.txt").write_text("\n".join(TOY_VOCAB) + "\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("lower", [True, False])
def test_do_lower_case_switches_lowercasing_and_accent_stripping(toy_folder, lower):
    config = {"do_lower_case": lower, "tokenizer_class": "BertTokenizer"}
    (toy_folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    hf = transformers.AutoTokenizer.from_pretrained(str(toy_folder))
    expected = hf(TOY_TEXTS, add_special_tokens=False)["input_ids"]
    assert _ids(load_tokenizer(toy_folder), TOY_TEXTS) == expected
    assert BatchEncoder(toy_folder).ids(TOY_TEXTS) == expected


def test_tokenizer_json_is_loaded_as_is(toy_folder, tmp_path_factory):
    (toy_folder / "tokenizer_config.json").write_text('{"do_lower_case": true}', encoding="utf-8")
    json_folder = tmp_path_factory.mktemp("json_tok")
    load_tokenizer(toy_folder).save(str(json_folder / "tokenizer.json"))
    # Only tokenizer.json describes this folder: lowercasing must come from it, not from defaults.
    assert _ids(load_tokenizer(json_folder), TOY_TEXTS) == _ids(load_tokenizer(toy_folder), TOY_TEXTS)
    assert tokenizer_fingerprint(json_folder) != tokenizer_fingerprint(toy_folder)


def test_broken_model_folders_raise_actionable_errors(tmp_path, toy_folder):
    with pytest.raises(MRCError, match="model folder not found"):
        load_tokenizer(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MRCError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(empty)
    (toy_folder / "tokenizer_config.json").write_text('{"unk_token": "<unk>"}', encoding="utf-8")
    with pytest.raises(MRCError, match="unknown token '<unk>' is missing"):
        load_tokenizer(toy_folder)
    (toy_folder / "tokenizer_config.json").write_text('{"cls_token": "<s>"}', encoding="utf-8")
    with pytest.raises(MRCError, match="cls_token '<s>' is not in the vocabulary"):
        special_tokens(toy_folder, load_tokenizer(toy_folder))
    (toy_folder / "tokenizer_config.json").write_text('{"do_lower_case": tru', encoding="utf-8")
    with pytest.raises(MRCError, match="tokenizer_config.json: not valid JSON"):
        load_tokenizer(toy_folder)
