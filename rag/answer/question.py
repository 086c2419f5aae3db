"""Question analysis: what kind of answer to compose, what the question is about (topic tokens,
entities, constraints) and what it asks for (slots), and its parts when it asks several things.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from ..archive import ArchiveView
from ..tokenize import tokenize
from .lexicon import (COMMON_SURNAMES, DEICTIC_DAY, FACTOID_CUES, FUTURE_DAY, QUESTION_PREFIXES, RELATIVE_YEARS,
                      STOPWORDS, STRONG_LIST_CUES, WEAK_LIST_CUES)
from .sentences import person_like, pos_cut
from .slots import Mention, Slot, asked_slots, find_mentions
from .textutil import norm

__all__ = ["QuestionAnalysis", "analyse_question", "question_type", "sub_questions", "content_weights",
           "question_entities"]

#: Cue tiers, strongest first: the first tier with a cue in the question decides. Strong list
#: cues (哪些, 如何, 有什么, 什么建议, 哪几, ...) beat factoid cues (多少, 几, 谁, 哪年, ...), which beat
#: weak list cues (介绍, 措施, 做法: often just verbs of reported speech, "秦勇介绍，…多少个").
_TYPE_TIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("list", STRONG_LIST_CUES), ("factoid", FACTOID_CUES), ("list", WEAK_LIST_CUES))

#: jieba part-of-speech tags of named entities (person, place, organisation, other proper noun,
#: foreign word), see the jieba README ("词性标注").
_ENTITY_TAGS = frozenset({"nr", "nrt", "nrfg", "ns", "nt", "nz", "eng"})
_CONSTRAINT_KINDS = frozenset({"year", "date", "number"})
#: An identity question about a named person (``秦勇是谁``, ``宋煜是干什么的``): it asks who the
#: person is — a title or role — not for a person (《现代汉语八百词》 谁: 问身份).
_IDENTITY_RE = re.compile(r"^(?P<name>[\u4e00-\u9fff]{2,4}?)(?:到底|究竟)?(?:是谁|是哪位|是什么人|是何人|"
                          r"是干什么的|是做什么的|是干啥的|是做啥的|是干嘛的|是什么身份|什么身份)[?？。!！]*$")
_CLAUSE_SPLIT_RE = re.compile(r"[，,；;。？?！!]")


def question_type(question: str) -> str:
    """Classify a question with the cue tiers (strong list > factoid > weak list).

    Args:
        question: The question (any length; may be empty).

    Returns:
        ``"factoid"`` (多少, 几, 哪年, 何时, 谁, 哪个, 哪里, 第几, 是否, X是什么, ...) or
        ``"list"`` (哪些, 如何, 怎样, 有什么, 什么建议, 介绍, ..., and the default).
    """
    q = unicodedata.normalize("NFKC", question)
    for kind, cues in _TYPE_TIERS:
        if any(c in q for c in cues):
            return kind
    return "factoid" if ("什么" in q or "啥" in q) else "list"


_PART_SPLIT_RE = re.compile(r"[？?；;，,。!！]|\s+")


def _asks(part: str) -> bool:
    """Whether a piece of a question carries a question cue of its own."""
    n = norm(part)
    return bool(asked_slots(n)) or any(c in n for tier in _TYPE_TIERS for c in tier[1]) or "什么" in n \
        or "啥" in n or "吗" in n or "没" in n[-2:]


def sub_questions(question: str) -> list[str]:
    """Split a compound question into its parts (at most 3).

    The question is cut at ``？?；;，,。！!`` and whitespace; a piece becomes a part of its own only
    when it has a question cue (a slot, a type cue, 什么, 吗), otherwise it is glued to the piece
    before it (or after it, at the start): ``"脱贫人口人均收入现在多少了，比上年涨了多少"`` gives two
    parts, ``"为了让农民多挣钱，乡村振兴部门打算怎么做"`` one.

    Returns:
        The parts (pieces joined without their punctuation); ``[question.strip()]`` when fewer
        than two pieces carry a cue.
    """
    text = unicodedata.normalize("NFKC", question)
    pieces = [p.strip() for p in _PART_SPLIT_RE.split(text)]
    pieces = [p for p in pieces if len(p) >= 2]
    if len(pieces) <= 1:
        return [question.strip()] if question.strip() else [question]
    parts: list[str] = []
    pending = ""
    for piece in pieces:
        if _asks(piece):
            parts.append(pending + piece)
            pending = ""
        elif parts:
            parts[-1] = parts[-1] + piece
        else:
            pending += piece
    if pending and parts:
        parts[-1] += pending
    return parts[:3] if len(parts) > 1 else [question.strip()]


def question_entities(question: str, names_only: bool = False) -> list[str]:
    """Named entities of the question (jieba tags nr/ns/nt/nz/eng, >= 2 characters), normalised.

    With ``names_only``: persons (``nr`` starting with a common surname, :func:`person_like`),
    places (``ns``) and organisations (``nt``) only; ``nz``/``eng`` and ``nr`` words that do not
    look like names (jieba tags 查体 ``nr``) are left out.
    """
    out = []
    for w, f in pos_cut(question):
        n = norm(w)
        if f not in _ENTITY_TAGS or len(n) < 2:
            continue
        if names_only and not (person_like(n, f) or f in ("ns", "nt")):
            continue
        out.append(n)
    return out


def _inside(t: str, text: str, spans) -> bool:
    """Whether every occurrence of ``t`` in ``text`` lies inside one of ``spans``."""
    pos = text.find(t)
    if pos < 0 or not spans:
        return False
    while pos >= 0:
        if not any(a <= pos and pos + len(t) <= b for a, b in spans):
            return False
        pos = text.find(t, pos + 1)
    return True


def content_weights(question: str, archive: ArchiveView | None = None, slots=()) -> dict[str, float]:
    """Topic tokens of ``question`` with their weights.

    Tokens come from :func:`rag.tokenize.tokenize` (jieba search mode); stopwords and question
    words (:data:`rag.answer.lexicon.STOPWORDS`) and tokens starting with a question word
    (几位, 哪份, 多少户) are dropped, and so are tokens inside an asked-for phrase from its
    interrogative word on (篇 in 多少篇, 钱 in 多少钱, 学校 in 哪个学校: what is asked, not what the
    question is about; ``slots`` from :func:`rag.answer.slots.asked_slots`). A verb's aspect
    particle 了 is cut off (发了 -> 发): it marks tense, not topic; time nouns relative to the
    asker's year (:data:`rag.answer.lexicon.RELATIVE_YEARS`: 去年, 这几年) say when, not what
    about. Weight = IDF over the archive's units (:meth:`rag.archive.ArchiveView.idf`; 1.0 for
    every token when ``archive`` is None).

    Returns:
        ``{normalised token: weight > 0}``; empty when the question has no content word.
    """
    out: dict[str, float] = {}
    q_norm = norm(question)
    asked = [(s.at, s.end) for s in slots if s.end > s.at]
    for tok in tokenize(question):
        t = norm(tok)
        if len(t) > 1 and t.endswith("了"):
            t = t[:-1]
        if not t or t in STOPWORDS or t in RELATIVE_YEARS or t in out or t.startswith(QUESTION_PREFIXES) \
                or _inside(t, q_norm, asked):
            continue
        w = archive.idf(t) if archive is not None else 1.0
        if w > 0:
            out[t] = w
    return out


@dataclass
class QuestionAnalysis:
    """Everything the answerer reads off a question (or one part of it).

    Attributes:
        text: The question (or part) as asked.
        norm: Its matching form.
        qtype: ``"factoid"`` or ``"list"``.
        slots: What it asks for (:func:`rag.answer.slots.asked_slots`).
        weights: Topic tokens -> IDF weight (:func:`content_weights`).
        entities: Named entities (normalised).
        unknown_entities: Person, place and organisation names the archive never mentions
            (``长春市``, ``四平市``).
        unknown_other: Other proper nouns and foreign words the archive never mentions
            (``世界杯``, ``python``).
        unknown_share: IDF-weighted share of topic tokens the archive never mentions, in [0, 1].
        constraints: Years, dates and Arabic numbers the question states (``2019年``, ``3名``): an
            answer about another year is about something else.
        attributes: For each slot, the topic token that names what is measured or identified
            (人均收入 in ``人均收入达到多少``, 全长 in ``全长多少公里``): the nearest topic token
            before the interrogative phrase in its clause (else the nearest after it); "" if none.
        parts: Sub-question analyses (empty for a simple question).
        idf_ceiling: The IDF of a token the archive never uses (the largest; 1.0 without an
            archive), the scale of :attr:`weights`.
        cued: The question carries a question word or type cue (a slot, 什么, 哪些, 如何, ...);
            chat and commands (``陪我聊会儿天``, ``给我讲个笑话``) carry none.
        deictic: The question is anchored to the asker's day (今天, 明天, 此刻, ...): an archive
            of past documents cannot report on it (:data:`rag.answer.lexicon.DEICTIC_DAY`).
        future_day: The question asks about a day after it is asked (明天, 后天, ...:
            :data:`rag.answer.lexicon.FUTURE_DAY`); the answerer abstains.
    """

    text: str
    norm: str
    qtype: str
    slots: tuple[Slot, ...]
    weights: dict[str, float]
    entities: tuple[str, ...] = ()
    unknown_entities: tuple[str, ...] = ()
    unknown_other: tuple[str, ...] = ()
    unknown_share: float = 0.0
    constraints: tuple[Mention, ...] = ()
    attributes: tuple[str, ...] = ()
    parts: list["QuestionAnalysis"] = field(default_factory=list)
    deictic: bool = False
    future_day: bool = False
    cued: bool = True
    idf_ceiling: float = 1.0

    @property
    def total_weight(self) -> float:
        return sum(self.weights.values())


def _attribute(q_norm: str, slot: Slot, weights: dict[str, float], nouns: set[str]) -> str:
    """What the slot measures or identifies: a noun-like topic token right after the
    interrogative phrase (``多少名学生``), else the nearest one before it in its clause (``全长多少
    公里``), else the nearest after it; "" if none."""
    start = max((m.end() for m in _CLAUSE_SPLIT_RE.finditer(q_norm, 0, slot.at)), default=0)
    nxt = _CLAUSE_SPLIT_RE.search(q_norm, slot.at)
    end = nxt.start() if nxt else len(q_norm)
    best, best_gap = "", None
    for t in weights:
        if len(t) < 2 or not any(t in w for w in nouns):
            continue
        for m in re.finditer(re.escape(t), q_norm[start:end]):
            pos = m.start() + start
            if slot.end <= pos <= slot.end + 1:
                gap = (0, pos - slot.end, -len(t))
            elif pos + len(t) <= slot.at:
                gap = (1, slot.at - (pos + len(t)), -len(t))
            elif pos >= slot.at:
                gap = (2, pos - slot.at, -len(t))
            else:
                continue
            if best_gap is None or gap < best_gap:
                best, best_gap = t, gap
    return best


def _analyse_one(text: str, archive: ArchiveView | None, qtype: str | None = None) -> QuestionAnalysis:
    q_norm = norm(text)
    slots = asked_slots(q_norm)
    identity = _IDENTITY_RE.match(q_norm)
    if identity and identity.group("name")[0] in COMMON_SURNAMES:
        slots = (Slot("title", "", identity.end("name"), len(q_norm)),)
    weights = content_weights(text, archive, slots)
    entities = tuple(dict.fromkeys(question_entities(text)))
    names = set(question_entities(text, names_only=True))
    unknown_all = [e for e in entities if archive is not None and not archive.mentions(e)]
    unknown = tuple(e for e in unknown_all if e in names)
    unknown_other = tuple(e for e in unknown_all if e not in names)
    total = sum(weights.values())
    unknown_share = 0.0
    if archive is not None and total > 0:
        unknown_share = sum(w for t, w in weights.items() if not archive.mentions(t)) / total
    constraints = tuple({m.text: m for m in find_mentions(q_norm)
                         if m.kind in _CONSTRAINT_KINDS and any(ch.isdigit() for ch in m.text)}.values())
    # Attributes are nominal: words jieba tags as verbs, adverbs, prepositions, conjunctions,
    # particles, pronouns, numerals or classifiers (达到, 一共) are not what is measured.
    nouns = {norm(w) for w, f in pos_cut(text) if f in ("vn", "an") or f[:1] not in "vdpcurmqy"} if slots else set()
    return QuestionAnalysis(text=text, norm=q_norm, qtype=qtype or question_type(text),
                            slots=slots, weights=weights, entities=entities,
                            attributes=tuple(_attribute(q_norm, s, weights, nouns) for s in slots),
                            unknown_entities=unknown, unknown_other=unknown_other,
                            unknown_share=unknown_share,
                            constraints=constraints, deictic=any(w in q_norm for w in DEICTIC_DAY),
                            future_day=any(w in q_norm for w in FUTURE_DAY),
                            cued=bool(slots) or any(c in q_norm for _, cues in _TYPE_TIERS for c in cues)
                            or "什么" in q_norm or "啥" in q_norm,
                            idf_ceiling=archive.idf("\u0000") if archive is not None else 1.0)


def analyse_question(question: str, archive: ArchiveView | None = None) -> QuestionAnalysis:
    """Analyse ``question`` and, when it has several parts, each part.

    A part's topic keeps its own tokens and inherits the other parts' tokens (the shared subject:
    ``辽源脱贫人口人均收入现在多少了，比上年涨了多少``), see :func:`part_weights`.

    Args:
        question: The validated question.
        archive: For IDF weights and the unknown-entity check (None: all weights 1.0).
    """
    whole = _analyse_one(question, archive)
    texts = sub_questions(question)
    if len(texts) > 1:
        whole.parts = [_analyse_one(t, archive, qtype=question_type(t)) for t in texts]
    return whole
