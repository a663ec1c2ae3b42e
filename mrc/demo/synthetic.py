"""A deterministic synthetic Korean extractive-QA set, written as KorQuAD 1.0 files.

Paragraphs describe a person, an organisation or a city with facts drawn from templates (birth,
schooling, headquarters, population, ...). Distractor sentences state the same kinds of facts about
other entities of the same kind, so a question is answered only by matching its subject and its
relation, never by entity type alone. Everything is a pure function of the seed: the same seed
writes byte-identical files, and they flow through the normal readers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mrc.config import field
from mrc.demo.korean import KINDS, Relation, TOPICS, render
from mrc.errors import MRCError
from mrc.io import atomic_write_text

# ---------------------------------------------------------------------------------------------
# Paragraphs

@dataclass(frozen=True)
class Fact:
    relation: Relation
    values: dict[str, str]          # includes the subject `s`
    template: str


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    answer_start: int


@dataclass(frozen=True)
class Paragraph:
    title: str
    context: str
    qas: tuple[QA, ...]


def _draw(rng: random.Random, kind: str, taken: set[str]) -> str:
    """A value of `kind` not yet used in the paragraph, so every answer text names one fact."""
    value = KINDS[kind](rng)
    while value in taken:
        value = KINDS[kind](rng)
    taken.add(value)
    return value


def _fact(rng: random.Random, relation: Relation, subject: str, taken: set[str]) -> Fact:
    values = {"s": subject}
    for slot, kind in relation.slots.items():
        values[slot] = _draw(rng, kind, taken)
    return Fact(relation, values, rng.choice(relation.sentences))


def make_paragraph(rng: random.Random, long: bool, n_questions: int) -> Paragraph:
    """One paragraph about a random topic, with distractors and up to `n_questions` questions.

    A long paragraph states every fact about its topic plus many distractor facts, so it needs
    several windows at the demo's sequence length.
    """
    topic_kind = rng.choice(sorted(TOPICS))
    entity_kind, relations = TOPICS[topic_kind]
    n_topic = len(relations) if long else rng.randint(2, 4)
    n_distract = rng.randint(6, 10) if long else rng.randint(1, 2)
    taken: set[str] = set()
    topic, *others = (_draw(rng, entity_kind, taken) for _ in range(1 + min(n_distract, 4)))
    topic_relations = rng.sample(relations, n_topic)
    topic_facts = [_fact(rng, rel, topic, taken) for rel in topic_relations]
    # A distractor never repeats a (subject, relation) pair, so every question has one answer. In an
    # ordinary paragraph it also states a relation the topic does not (its values still compete with
    # the answer's kind); long paragraphs repeat relations across subjects, so there the subject
    # itself must be matched.
    pairs = [(o, rel) for o in others for rel in relations if long or rel not in topic_relations]
    distractors = [_fact(rng, rel, o, taken) for o, rel in rng.sample(pairs, min(n_distract, len(pairs)))]
    rest = topic_facts[1:] + distractors
    rng.shuffle(rest)
    facts = [topic_facts[0], *rest]

    sentences, starts, length = [], [], 0
    for fact in facts:
        text, _ = render(fact.template, fact.values)
        starts.append(length)
        sentences.append(text)
        length += len(text) + 1
    context = " ".join(sentences)

    askable = [(i, slot) for i, fact in enumerate(facts) for slot in fact.relation.questions]
    # Mostly about the topic; distractor facts are asked too, so the subject must be matched.
    weights = [3.0 if facts[i].values["s"] == topic else 1.0 for i, _ in askable]
    chosen: list[tuple[int, str]] = []
    while askable and len(chosen) < n_questions:
        k = rng.choices(range(len(askable)), weights)[0]
        chosen.append(askable.pop(k))
        weights.pop(k)
    qas = []
    for i, slot in chosen:
        fact = facts[i]
        question, _ = render(rng.choice(fact.relation.questions[slot]), fact.values)
        _, offsets = render(fact.template, fact.values)
        qas.append(QA(question, fact.values[slot], starts[i] + offsets[slot]))
    return Paragraph(topic, context, tuple(qas))


def corpus_sentences(rng: random.Random, n_facts: int) -> Iterator[str]:
    """Texts for vocab training: random facts and their questions with a space before every particle."""
    for _ in range(n_facts):
        entity_kind, relations = TOPICS[rng.choice(sorted(TOPICS))]
        rel = rng.choice(relations)
        taken: set[str] = set()
        fact = _fact(rng, rel, _draw(rng, entity_kind, taken), taken)
        yield render(fact.template, fact.values, particle_gap=" ")[0]
        for slot in rel.questions:
            yield render(rng.choice(rel.questions[slot]), fact.values, particle_gap=" ")[0]


# ---------------------------------------------------------------------------------------------
# Files

SPLITS = ("train", "dev", "sample")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] first: id 0, as config.json says


@dataclass
class SyntheticConfig:
    """Size and seed of the synthetic set (every field changes the bytes written)."""

    seed: int = field(13, "seed of the generator; the same seed writes byte-identical files")
    train_paragraphs: int = field(1600, "paragraphs in train.json")
    dev_paragraphs: int = field(200, "held-out paragraphs in dev.json (generated from their own seed stream)")
    sample_paragraphs: int = field(8, "paragraphs in sample.json, the file the demo runs predict.py on")
    questions_per_paragraph: int = field(4, "questions asked about each paragraph (fewer when it has fewer facts)")
    long_fraction: float = field(0.1, "share of long paragraphs (every topic fact plus many distractors)")
    vocab_size: int = field(3000, "most whole words kept in the vocab (characters and particles come on top)")
    vocab_min_frequency: int = field(10, "corpus count a word needs to become one vocab entry")

    def __post_init__(self) -> None:
        for name in ("train_paragraphs", "dev_paragraphs", "sample_paragraphs", "questions_per_paragraph"):
            if getattr(self, name) < 1:
                raise MRCError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.long_fraction <= 1.0:
            raise MRCError(f"--long_fraction must be in [0, 1], got {self.long_fraction}")
        if self.vocab_size < len(SPECIAL_TOKENS) + 1:
            raise MRCError(f"--vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {self.vocab_size}")
        if self.vocab_min_frequency < 1:
            raise MRCError(f"--vocab_min_frequency must be at least 1, got {self.vocab_min_frequency}")




def split_rng(seed: int, split: str) -> random.Random:
    """An independent, reproducible stream per split (string seeds hash the same on every run)."""
    return random.Random(f"mrc-synthetic/{seed}/{split}")


def generate_split(cfg: SyntheticConfig, split: str) -> list[Paragraph]:
    n = {"train": cfg.train_paragraphs, "dev": cfg.dev_paragraphs, "sample": cfg.sample_paragraphs}[split]
    rng = split_rng(cfg.seed, split)
    return [make_paragraph(rng, rng.random() < cfg.long_fraction, cfg.questions_per_paragraph) for _ in range(n)]


def to_korquad(paragraphs: list[Paragraph], split: str) -> dict:
    """KorQuAD 1.0 JSON: one article per paragraph, ids `syn-<split>-<paragraph>-<question>`."""
    data = []
    for p, para in enumerate(paragraphs):
        qas = [{"id": f"syn-{split}-{p}-{q}", "question": qa.question,
                "answers": [{"text": qa.answer, "answer_start": qa.answer_start}]}
               for q, qa in enumerate(para.qas)]
        data.append({"title": para.title, "paragraphs": [{"context": para.context, "qas": qas}]})
    return {"version": "synthetic-1.0", "data": data}


def write_dataset(cfg: SyntheticConfig, out_dir: Path) -> dict[str, Path]:
    """Write train.json, dev.json and sample.json into `out_dir`; {split: path}."""
    paths = {}
    for split in SPLITS:
        path = Path(out_dir) / f"{split}.json"
        body = json.dumps(to_korquad(generate_split(cfg, split), split), ensure_ascii=False, indent=1)
        atomic_write_text(path, body + "\n")
        paths[split] = path
    return paths
