"""Korean text for the synthetic set: particles chosen by batchim, entity names, the fact relations
(person, organisation, city) with their sentence and question templates, and rendering.

Particles and endings after a slot (은/는, 이/가, 을/를, 과/와, 으로/로, 이다/다, 이었다/였다) are
chosen by the slot's final consonant (batchim).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

# ---------------------------------------------------------------------------------------------
# Batchim and particles

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
_RIEUL = 8  # index of ㄹ among the 28 final-consonant slots (0 = none)

# Particle (or copula ending) as written after a consonant -> (after consonant, after vowel).
# 으로 is the exception: a ㄹ final takes 로, like a vowel.
ALTERNATING = {
    "은": ("은", "는"),
    "이": ("이", "가"),
    "을": ("을", "를"),
    "과": ("과", "와"),
    "으로": ("으로", "로"),
    "이다": ("이다", "다"),
    "이었다": ("이었다", "였다"),
}


def final_consonant(word: str) -> int:
    """Index (0..27) of the final consonant of the word's last syllable; 0 when it ends in a vowel."""
    code = ord(word[-1])
    if not _HANGUL_FIRST <= code <= _HANGUL_LAST:
        raise ValueError(f"{word!r} does not end in a Hangul syllable; its particle cannot be chosen")
    return (code - _HANGUL_FIRST) % 28


def particle(word: str, written: str) -> str:
    """The form of `written` (its after-consonant form, e.g. 은, 으로) that fits after `word`."""
    if written not in ALTERNATING:
        return written
    after_consonant, after_vowel = ALTERNATING[written]
    final = final_consonant(word)
    if final == 0 or (written == "으로" and final == _RIEUL):
        return after_vowel
    return after_consonant


# ---------------------------------------------------------------------------------------------
# Entity pools (every entity ends in a Hangul syllable, so its particle is always decidable)

SURNAMES = tuple("김이박최정강조윤장임한오서신권황안송류홍")
GIVEN_SYLLABLES = tuple("민서준지현우수영하윤도예은재성태진혜경호상나연원석희주빈철훈")
PLACES = ("서울", "부산", "대구", "인천", "광주", "대전", "울산", "수원", "청주", "전주", "포항", "창원", "제주",
          "춘천", "강릉", "목포", "여수", "경주", "안동", "원주", "천안", "군산", "진주", "김해", "순천", "속초",
          "통영", "평택", "구미", "익산", "파리", "런던", "도쿄", "베를린", "뉴욕", "시드니", "로마", "프라하",
          "마드리드", "이스탄불", "카이로", "몽골", "네팔", "브라질", "포르투갈", "이스라엘", "오슬로")
ORG_PREFIXES = ("한빛", "새솔", "푸른", "누리", "다온", "미래", "하늘", "바다", "은하", "금강", "태백", "백두", "한결",
                "가람", "솔빛", "온누리", "청운", "대성", "동방", "서진", "세움", "나래", "아람", "보람")
COMPANY_KINDS = ("전자", "건설", "제약", "은행", "항공", "식품", "화학", "출판사", "중공업", "물산", "통신", "자동차")
SCHOOL_KINDS = ("대학교", "고등학교", "예술학교", "과학기술원")
AWARD_KINDS = ("문학상", "과학상", "공로상", "예술상", "평화상", "교육상")
FESTIVAL_KINDS = ("벚꽃축제", "국화축제", "불꽃축제", "음악축제", "영화제", "등불축제", "해맞이축제")


def _people(n: int) -> tuple[str, ...]:
    """A fixed cast of `n` distinct three-syllable names (the same for every seed).

    A closed cast recurs across paragraphs with different facts each time, so a model cannot
    memorise a name's answers; it has to read the paragraph. Every name is one vocab entry.
    """
    rng = random.Random("mrc-synthetic/people")
    names: dict[str, None] = {}
    while len(names) < n:
        names[rng.choice(SURNAMES) + rng.choice(GIVEN_SYLLABLES) + rng.choice(GIVEN_SYLLABLES)] = None
    return tuple(names)


PEOPLE = _people(300)
COMPANIES = tuple(p + k for p in ORG_PREFIXES for k in COMPANY_KINDS)
SCHOOLS = tuple(p + k for p in ORG_PREFIXES for k in SCHOOL_KINDS)
AWARDS = tuple(p + k for p in ORG_PREFIXES for k in AWARD_KINDS)
FESTIVALS = tuple(p + k for p in ORG_PREFIXES for k in FESTIVAL_KINDS)
ENTITY_WORDS = (*PEOPLE, *PLACES, *COMPANIES, *SCHOOLS, *AWARDS, *FESTIVALS)


def _count(unit: str, lo: int, hi: int) -> Callable[[random.Random], str]:
    # Digits without thousands separators: a comma would split a number into words, and a model
    # trained for minutes keeps starting the answer at the wrong group.
    return lambda rng: f"{rng.randint(lo, hi)}{unit}"


def _measure(unit: str, lo: int, hi: int) -> Callable[[random.Random], str]:
    """A measurement; one in four has one decimal place."""
    def make(rng: random.Random) -> str:
        value = rng.randint(lo, hi)
        return f"{value}.{rng.randint(1, 9)}{unit}" if rng.random() < 0.25 else f"{value}{unit}"
    return make


# Slot kind -> value generator.
KINDS: dict[str, Callable[[random.Random], str]] = {
    "person": lambda rng: rng.choice(PEOPLE),
    "place": lambda rng: rng.choice(PLACES),
    "company": lambda rng: rng.choice(COMPANIES),
    "school": lambda rng: rng.choice(SCHOOLS),
    "award": lambda rng: rng.choice(AWARDS),
    "festival": lambda rng: rng.choice(FESTIVALS),
    "date": lambda rng: f"{rng.randint(1900, 2023)}년 {rng.randint(1, 12)}월 {rng.randint(1, 28)}일",
    "year": lambda rng: f"{rng.randint(1900, 2023)}년",
    "month": lambda rng: f"{rng.randint(1, 12)}월",
    "staff": _count("명", 12, 48_000),
    "population": _count("명", 3_000, 9_800_000),
    "branches": _count("개", 2, 900),
    "books": _count("권", 2, 60),
    "height": _count("센티미터", 150, 198),
    "distance": _measure("킬로미터", 3, 950),
    "area": _measure("제곱킬로미터", 12, 2_400),
    "output": _measure("톤", 40, 90_000),
}


# ---------------------------------------------------------------------------------------------
# Fact templates. `{slot}` is replaced by the slot's value; the Hangul run right after a slot is its
# particle and is re-chosen by batchim (write the after-consonant form: 은, 이, 을, 과, 으로, 이다).
# The slot `s` is the subject: the paragraph's topic or, in a distractor, another entity of its kind.

@dataclass(frozen=True)
class Relation:
    """One kind of fact: how it is said, and how each of its slots is asked for."""

    slots: dict[str, str]                      # slot -> kind (the subject `s` is implied)
    sentences: tuple[str, ...]
    questions: dict[str, tuple[str, ...]]      # answer slot -> question templates


PERSON = (
    Relation({"date": "date", "place": "place"},
             ("{s}은 {date}에 {place}에서 태어났다.", "{s}은 {place}에서 {date}에 출생하였다."),
             {"date": ("{s}이 태어난 날은 언제인가?", "{s}의 생년월일은?", "{s}은 언제 태어났는가?"),
              "place": ("{s}이 태어난 곳은 어디인가?", "{s}의 출생지는?", "{s}은 어디에서 태어났습니까?")}),
    Relation({"school": "school", "year": "year"},
             ("{s}은 {year}에 {school}을 졸업했다.", "{year}에 {s}은 {school}을 졸업하였다."),
             {"school": ("{s}이 졸업한 학교는?", "{s}은 어느 학교를 졸업했는가?"),
              "year": ("{s}이 {school}을 졸업한 해는?",)}),
    Relation({"org": "company", "year": "year"},
             ("{s}은 {year}부터 {org}에서 근무했다.", "{year}부터 {s}은 {org}에서 일하였다."),
             {"org": ("{s}이 근무한 회사는 어디인가?", "{s}은 어느 회사에서 일했는가?"),
              "year": ("{s}이 {org}에서 일을 시작한 해는?",)}),
    Relation({"place": "place", "year": "year"},
             ("{s}은 {year}에 {place}으로 이사했다.", "{year}에 {s}은 가족과 함께 {place}으로 이주하였다."),
             {"place": ("{s}이 이사한 도시는?", "{s}은 어디로 이사했는가?"),
              "year": ("{s}이 {place}으로 이사한 해는 언제인가?",)}),
    Relation({"n": "books"},
             ("{s}은 지금까지 {n}의 책을 펴냈다.", "{s}이 쓴 책은 모두 {n}이다."),
             {"n": ("{s}이 펴낸 책은 모두 몇 권인가?", "{s}은 몇 권의 책을 썼는가?")}),
    Relation({"spouse": "person", "year": "year"},
             ("{s}은 {year}에 {spouse}과 결혼했다.", "{year}에 {s}은 {spouse}과 혼인하였다."),
             {"spouse": ("{s}과 결혼한 사람은 누구인가?", "{s}의 배우자는 누구인가?"),
              "year": ("{s}이 {spouse}과 결혼한 해는?",)}),
    Relation({"h": "height"},
             ("{s}의 키는 {h}이다.", "{s}은 키가 {h}에 이른다."),
             {"h": ("{s}의 키는 얼마인가?", "{s}은 키가 몇 센티미터인가?")}),
    Relation({"award": "award", "year": "year"},
             ("{s}은 {year}에 {award}을 받았다.", "{year}에 {s}은 {award}을 수상했다."),
             {"award": ("{s}이 받은 상은 무엇인가?", "{s}은 어떤 상을 수상했는가?"),
              "year": ("{s}이 {award}을 받은 해는?",)}),
)

ORGANISATION = (
    Relation({"founder": "person", "date": "date", "place": "place"},
             ("{founder}은 {date}에 {place}에서 {s}을 설립하였다.", "{s}은 {date}에 {founder}이 {place}에서 세웠다."),
             {"founder": ("{s}을 설립한 사람은 누구인가?", "{s}의 창업자는?"),
              "date": ("{s}이 설립된 날은 언제인가?",),
              "place": ("{s}이 처음 세워진 도시는?", "{s}은 어디에서 설립되었는가?")}),
    Relation({"place": "place", "year": "year"},
             ("{s}은 {year}에 본사를 {place}으로 옮겼다.", "{year}에 {s}은 본사를 {place}으로 이전하였다."),
             {"place": ("{s}이 본사를 옮긴 곳은 어디인가?", "{s}의 본사는 어디로 옮겨졌는가?"),
              "year": ("{s}이 본사를 {place}으로 옮긴 해는?",)}),
    Relation({"n": "staff"},
             ("{s}의 직원 수는 {n}에 이른다.", "{s}은 {n}의 직원을 두고 있다."),
             {"n": ("{s}의 직원은 몇 명인가?", "{s}에서 일하는 직원은 모두 몇 명인가?")}),
    Relation({"n": "branches"},
             ("{s}은 전국에 {n}의 지점을 운영한다.", "{s}의 지점은 모두 {n}이다."),
             {"n": ("{s}이 운영하는 지점은 몇 개인가?", "{s}의 지점 수는?")}),
    Relation({"ceo": "person", "year": "year"},
             ("{year}부터 {ceo}이 {s}의 대표를 맡고 있다.", "{s}의 대표는 {year}부터 {ceo}이다."),
             {"ceo": ("{s}의 대표는 누구인가?", "{s}을 이끄는 대표는 누구인가?"),
              "year": ("{ceo}이 {s}의 대표가 된 해는?",)}),
    Relation({"q": "output"},
             ("{s}은 한 해에 {q}의 제품을 생산한다.", "{s}의 연간 생산량은 {q}이다."),
             {"q": ("{s}이 한 해에 생산하는 양은?", "{s}의 연간 생산량은 얼마인가?")}),
)

CITY = (
    Relation({"n": "population"},
             ("{s}의 인구는 {n}이다.", "{s}에는 {n}이 살고 있다."),
             {"n": ("{s}의 인구는 몇 명인가?", "{s}에 사는 사람은 몇 명인가?")}),
    Relation({"a": "area"},
             ("{s}의 면적은 {a}이다.", "{s}은 면적이 {a}에 달한다."),
             {"a": ("{s}의 면적은 얼마인가?",)}),
    Relation({"other": "place", "d": "distance"},
             ("{s}에서 {other}까지의 거리는 {d}이다.", "{other}은 {s}에서 {d} 떨어져 있다."),
             {"d": ("{s}에서 {other}까지의 거리는?", "{other}은 {s}에서 얼마나 떨어져 있는가?")}),
    Relation({"mayor": "person", "year": "year"},
             ("{year}에 {s}의 시장은 {mayor}이었다.", "{mayor}은 {year}에 {s}의 시장으로 뽑혔다."),
             {"mayor": ("{year}에 {s}의 시장은 누구였는가?", "{s}의 시장으로 뽑힌 사람은?"),
              "year": ("{mayor}이 {s}의 시장이 된 해는?",)}),
    Relation({"other": "place", "year": "year"},
             ("{s}은 {year}에 {other}과 자매결연을 맺었다.", "{year}에 {s}은 {other}과 자매도시가 되었다."),
             {"other": ("{s}과 자매결연을 맺은 도시는?", "{s}의 자매도시는 어디인가?"),
              "year": ("{s}이 {other}과 자매결연을 맺은 해는?",)}),
    Relation({"fest": "festival", "month": "month"},
             ("{s}에서는 매년 {month}에 {fest}이 열린다.", "{fest}은 매년 {month}에 {s}에서 열린다."),
             {"fest": ("{s}에서 매년 열리는 축제는 무엇인가?",),
              "month": ("{fest}이 {s}에서 열리는 달은?", "{fest}은 몇 월에 열리는가?")}),
)

TOPICS: dict[str, tuple[str, tuple[Relation, ...]]] = {
    "person": ("person", PERSON),
    "organisation": ("company", ORGANISATION),
    "city": ("place", CITY),
}

_SLOT = re.compile(r"\{(\w+)\}([가-힣]*)")


def render(template: str, values: dict[str, str], particle_gap: str = "") -> tuple[str, dict[str, int]]:
    """Fill a template; returns the text and the char offset of each slot's first occurrence.

    `particle_gap` goes between a value and its particle: "" for the data, " " for the corpus the
    vocab is trained on (so no vocab entry straddles an answer's edge).
    """
    out: list[str] = []
    offsets: dict[str, int] = {}
    length = 0
    pos = 0
    for m in _SLOT.finditer(template):
        literal = template[pos:m.start()]
        value = values[m.group(1)]
        offsets.setdefault(m.group(1), length + len(literal))
        piece = literal + value + (particle_gap + particle(value, m.group(2)) if m.group(2) else "")
        out.append(piece)
        length += len(piece)
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), offsets


def particle_forms() -> list[str]:
    """Every particle or ending any template puts right after a slot, in all its forms (sorted)."""
    forms: set[str] = set()
    for _, relations in TOPICS.values():
        for rel in relations:
            for template in (*rel.sentences, *(q for qs in rel.questions.values() for q in qs)):
                for m in _SLOT.finditer(template):
                    if m.group(2):
                        forms.update(ALTERNATING.get(m.group(2), (m.group(2),)))
    return sorted(forms)
