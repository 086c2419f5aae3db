"""Features of candidate sentences (for the sentence scorer) and of a composed answer (for
answerability). Both are plain float64 matrices with named columns, so the fit script
(``eval/fit_answerer.py``) and the answerer compute exactly the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..archive import ArchiveView
from ..types import Hit, Span
from .lexicon import HOW_WORDS, PROBLEM_WORDS, REMEDY_WORDS
from .question import QuestionAnalysis
from .sentences import FactsCache, SentenceFacts
from .slots import supports
from .synonyms import synonyms
from .textutil import norm, trim_span

__all__ = ["Prepared", "prepare", "SENTENCE_FEATURES", "sentence_features", "ANSWER_FEATURES",
           "answer_features", "coverage", "part_question"]


@dataclass
class Prepared:
    """The valid candidates of one question with their facts and dense cosines.

    Attributes:
        cands: Candidates whose span is verbatim in its document (outer whitespace trimmed).
        spans: Their trimmed spans.
        facts: Their :class:`SentenceFacts`.
        sections: Matching form of each candidate's section headings ("" if none).
        dense: float64 (n,) cosines with the query vector, or None without one.
        index: ``(doc_id, sentence_index) -> position`` for neighbour look-ups.
        hits_norm: Matching form of all retrieved hit texts, concatenated.
        hits_words: Words of the hits (for single-character topic tokens).
        hit_dense: Largest ``"dense"`` component score among the hits (cosine; 0 if absent).
        hit_norms: Matching form of each hit, in rank order.
        doc_years: Per candidate, the years its document reports on (``2020年`` and ``2019年``
            for a document dated 2020: reports and newspapers cover their year and the one
            before); empty without a document date.
        section_mentions: Per candidate, the slot mentions of its section headings
            (:meth:`rag.answer.sentences.FactsCache.section`).
        raw: ``doc_id -> stored text`` of the candidates' documents (for by-line quotes).
    """

    cands: list
    spans: list[Span]
    facts: list[SentenceFacts]
    sections: list[str]
    dense: np.ndarray | None
    index: dict[tuple[str, int], int]
    hits_norm: str
    hits_words: frozenset[str]
    hit_dense: float = 0.0
    hit_norms: tuple[str, ...] = ()
    doc_years: list[tuple[str, ...]] = field(default_factory=list)
    section_mentions: list[tuple] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cands)

    def chunk_norm(self, i: int) -> str:
        """Matching form of the retrieved chunk that holds candidate ``i`` ("" if unknown)."""
        rank = self.cands[i].chunk_rank
        return self.hit_norms[rank - 1] if 0 < rank <= len(self.hit_norms) else ""

    def neighbour(self, i: int, offset: int) -> int | None:
        c = self.cands[i]
        return self.index.get((c.span.doc_id, c.sentence_index + offset))


def prepare(candidates: Sequence, query_vector: np.ndarray | None, hits: Sequence[Hit],
            archive: ArchiveView, cache: FactsCache, use_dense: bool = True) -> Prepared:
    """Check candidates against the archive and attach their cached facts.

    With ``use_dense`` False the cosines are checked but dropped (lexical mode).

    Raises:
        ValueError: ``query_vector`` and a candidate vector have different dimensions.
    """
    cands, spans, facts, sections, years, raw = [], [], [], [], [], {}
    for cand in candidates:
        doc = archive.document(cand.span.doc_id)
        if doc is None or doc.text[cand.span.start:cand.span.end] != cand.span.text:
            continue
        span = trim_span(cand.span)
        if not span.text:
            continue
        cands.append(cand)
        spans.append(span)
        facts.append(cache.sentence(span, bool(cand.heading), doc.doc_id, doc.text))
        sections.append(norm(cand.section) if cand.section else "")
        year = int(doc.date[:4]) if doc.date and doc.date[:4].isdigit() else None
        years.append((f"{year}年", f"{year - 1}年") if year else ())
        raw[doc.doc_id] = doc.text
    dense = None
    if query_vector is not None and cands:
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        mat = np.stack([np.asarray(c.vector, dtype=np.float32).reshape(-1) for c in cands])
        if mat.shape[1] != q.shape[0]:
            raise ValueError(f"query vector has dim {q.shape[0]}, candidate vectors {mat.shape[1]}")
        dense = (mat @ q).astype(np.float64) if use_dense else None
    index = {(c.span.doc_id, c.sentence_index): i for i, c in enumerate(cands)}
    hit_norms = tuple(norm(h.text) for h in hits)
    hits_norm = "".join(hit_norms)
    words = frozenset().union(*(f.word_set for f in facts)) if facts else frozenset()
    # The hits' dense scores mean something only for the embedder the model was fitted with.
    hit_dense = max((float(h.scores.get("dense", 0.0)) for h in hits), default=0.0) if dense is not None else 0.0
    return Prepared(cands, spans, facts, sections, dense, index, hits_norm, words, hit_dense,
                    hit_norms, years, [cache.section(x) for x in sections], raw)


def coverage(weights: Mapping[str, float], text_norm: str, words: frozenset[str] | None = None) -> float:
    """IDF-weighted fraction in [0, 1] of topic tokens occurring in ``text_norm``.

    A token of two or more characters counts when it is a substring; a single-character token
    (周, 度, 票) only when it is one of the text's own ``words`` (so 周 does not match 周年).
    """
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    found = sum(w for t, w in weights.items()
                if t in text_norm and (len(t) > 1 or (words is not None and t in words)))
    return found / total


def synonym_coverage(weights: Mapping[str, float], syns: Mapping[str, frozenset[str]], text_norm: str,
                     words: frozenset[str]) -> float:
    """:func:`coverage` where a topic token also counts when one of its synonyms
    (:func:`rag.answer.synonyms.synonyms`) is one of the text's words (老年人 ~ 老人)."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    found = sum(wt for t, wt in weights.items()
                if (t in text_norm and (len(t) > 1 or t in words)) or (syns.get(t) and not syns[t].isdisjoint(words)))
    return found / total


def _char_share(weights: Mapping[str, float], text_norm: str) -> float:
    """IDF-weighted mean share of each topic token's characters present in the text (partial
    credit: 医生护士 ~ 医护人员, 职校 ~ 职业学校)."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(w * sum(ch in text_norm for ch in t) / len(t) for t, w in weights.items()) / total


def _matched(weights: Mapping[str, float], facts: SentenceFacts) -> list[str]:
    return [t for t in weights if (len(t) > 1 and t in facts.norm) or t in facts.word_set]


def part_question(whole: QuestionAnalysis, part: QuestionAnalysis, other_weight: float) -> QuestionAnalysis:
    """A part of a compound question with the other parts' topic tokens at ``other_weight`` x
    their IDF (the shared subject of ``收入现在多少了，比上年涨了多少``)."""
    weights = dict(part.weights)
    for t, w in whole.weights.items():
        weights.setdefault(t, other_weight * w)
    return QuestionAnalysis(text=part.text, norm=part.norm, qtype=part.qtype, slots=part.slots,
                            weights=weights, entities=whole.entities,
                            unknown_entities=whole.unknown_entities, unknown_other=whole.unknown_other,
                            unknown_share=whole.unknown_share,
                            constraints=whole.constraints, attributes=part.attributes)


#: Columns of :func:`sentence_features`.
SENTENCE_FEATURES = (
    "lex", "char_share", "lex_prev", "lex_next", "lex_section", "matched_max_idf",
    "dense", "dense_gap", "dense_rrank", "has_dense", "chunk_rrank", "chunk_score",
    "slot_asked", "slot_hit", "slot_near", "slot_attr", "slot_neighbour", "slot_person_heading",
    "constraint", "entity", "heading", "byline", "terminal", "fragment", "log_len",
    "item", "announced", "is_list", "multi_part",
    "list_x_item", "list_x_heading", "list_x_byline", "slot_x_near", "slot_x_miss", "list_x_lex",
    "slot_section", "lex_paragraph", "dense_z", "lex_syn", "lex_gap", "lex_rrank", "syn_gap",
    "slot_clause_lex", "list_kind",
)

#: Slot kinds a section heading (title + by-line) can answer: who wrote or gave it, for whom.
SECTION_SLOTS = frozenset({"person", "org", "name", "title"})


def section_support(q: QuestionAnalysis, prep: "Prepared", i: int) -> float:
    """Share of the question's slots that candidate ``i``'s section headings support (only
    person, organisation, name and title slots: a by-line says who, not how much)."""
    if not q.slots or not prep.section_mentions or not prep.section_mentions[i]:
        return 0.0
    hit = sum(1 for slot in q.slots if slot.kind in SECTION_SLOTS
              and any(supports(slot, m, q.norm) for m in prep.section_mentions[i]))
    return hit / len(q.slots)


def _slot_hits(q: QuestionAnalysis, f: SentenceFacts, matched: list[str]) -> tuple[float, float, float]:
    """Shares of asked slots supported anywhere in the sentence, in a clause that also holds a
    matched topic token, and in a clause that holds the slot's attribute (what it measures)."""
    if not q.slots:
        return 0.0, 0.0, 0.0
    topic = []
    for t in matched:
        pos = f.norm.find(t)
        while pos >= 0:
            topic.append((pos, pos + len(t), f.clause_of(pos)))
            pos = f.norm.find(t, pos + 1)
    hit = near = attr = 0
    for k, slot in enumerate(q.slots):
        ms = [m for m in f.mentions if supports(slot, m, q.norm)]
        if ms:
            hit += 1
            # A topic word inside the mention itself (公里 in 22公里) does not count.
            close = [(a, b) for m in ms for a, b, c in topic
                     if c in _clauses_of(f, m) and not (a < m.end and m.start < b)]
            if close:
                near += 1
            word = q.attributes[k] if k < len(q.attributes) else ""
            if word and any(f.norm[a:b] == word or word in f.norm[a:b] for a, b in close) or \
                    (not word and close):
                attr += 1
    n = len(q.slots)
    return hit / n, near / n, attr / n


def slot_clause_coverage(q: QuestionAnalysis, f: SentenceFacts) -> float:
    """Topic coverage of the clause(s) around the best supporting mention of an asked slot
    (:func:`_clauses_of`): a value answers the question only if its own clause is about the
    question (``北环路22公里`` does not give the length of 集双高速). 0 when nothing is supported."""
    best = 0.0
    for slot in q.slots:
        for m in f.mentions:
            if not supports(slot, m, q.norm):
                continue
            ks = _clauses_of(f, m)
            a = f.clause_ends[ks[0] - 1] if ks[0] > 0 else 0
            b = f.clause_ends[ks[-1]]
            best = max(best, coverage(q.weights, f.norm[a:b], f.word_set))
    return best


def _clauses_of(f: SentenceFacts, m) -> tuple[int, ...]:
    """The clause holding mention ``m``, and the next one when the mention is most of its own
    clause: a clause that is only the value (a fronted ``2019年，``) modifies the next one."""
    k = f.clause_of(m.start)
    start = f.clause_ends[k - 1] if k > 0 else 0
    body = f.clause_ends[k] - start - 1  # without its clause mark
    if 2 * (m.end - m.start) >= body and k + 1 < len(f.clause_ends):
        return (k, k + 1)
    return (k,)


#: Sentences looked back (this one and the three before it in the document) for the kind of
#: list a passage is in: a proposal's "存在的问题：" heads a short paragraph of a few sentences.
_KIND_LOOKBACK = 4


def list_kind(text_norm: str) -> int:
    """+1 when the last list-kind word in ``text_norm`` is a remedy word (建议, 措施), -1 when it is
    a problem word (问题, 困难), 0 when there is none (:data:`PROBLEM_WORDS`, :data:`REMEDY_WORDS`)."""
    last, kind = -1, 0
    for words, k in ((PROBLEM_WORDS, -1), (REMEDY_WORDS, 1)):
        for w in words:
            pos = text_norm.rfind(w)
            if pos > last:
                last, kind = pos, k
    return kind


def asked_kind(q: QuestionAnalysis) -> int:
    """The list kind a question asks for (:func:`list_kind` of the question); a how-question
    (:data:`HOW_WORDS`: 怎么解决这些问题) asks for remedies whatever noun it names."""
    return 1 if any(w in q.norm for w in HOW_WORDS) else list_kind(q.norm)


def _kind_match(asked: int, prep: "Prepared", i: int) -> float:
    """Whether candidate ``i`` sits in a passage listing what the question asks for (``asked``,
    :func:`asked_kind`): +1 same kind (问题 asked, the passage lists problems), -1 the other kind,
    0 when either is unknown. The passage's kind is that of the nearest list-kind word at or
    before the sentence."""
    if not asked:
        return 0.0
    j: int | None = i
    for _ in range(_KIND_LOOKBACK):
        if j is None:
            break
        k = list_kind(prep.facts[j].norm)
        if k:
            return float(k * asked)
        j = prep.neighbour(j, -1)
    return 0.0


def _found_share(items, texts: Sequence[str]) -> float:
    if not items:
        return 1.0
    return sum(any(x in t for t in texts) for x in items) / len(items)


def sentence_features(q: QuestionAnalysis, prep: Prepared) -> np.ndarray:
    """Feature matrix of the candidates for question (or part) ``q``.

    Returns:
        float64 (len(prep), len(SENTENCE_FEATURES)); columns in :data:`SENTENCE_FEATURES` order.
        Lexical columns are IDF-weighted coverages in [0, 1]; ``dense`` is the raw cosine (0
        without a query vector, ``has_dense`` then 0); ``log_len`` is ``ln(1 + characters)``.
    """
    n = len(prep)
    X = np.zeros((n, len(SENTENCE_FEATURES)), dtype=np.float64)
    if n == 0:
        return X
    w = q.weights
    max_idf = max(w.values(), default=1.0) or 1.0
    lex = np.array([coverage(w, f.norm, f.word_set) for f in prep.facts])
    syns = {t: synonyms(t) for t in w if len(t) > 1}
    syn_cov = np.array([synonym_coverage(w, syns, f.norm, f.word_set) for f in prep.facts])
    # Where a sentence stands among this question's candidates (the scorer sees one row at a
    # time): gap to the best coverage and the coverage rank (ties share the better rank).
    lex_max, syn_max = float(lex.max()), float(syn_cov.max())
    lex_rank = 1 + np.array([int(np.sum(lex > v + 1e-12)) for v in lex])
    slot_hit = np.zeros(n)
    slot_near = np.zeros(n)
    slot_attr = np.zeros(n)
    matched_max = np.zeros(n)
    for i, f in enumerate(prep.facts):
        matched = _matched(w, f)
        matched_max[i] = max((w[t] for t in matched), default=0.0) / max_idf
        slot_hit[i], slot_near[i], slot_attr[i] = _slot_hits(q, f, matched)
    constraint_items = [m.text for m in q.constraints]
    is_list = 1.0 if q.qtype == "list" else 0.0
    kind_asked = asked_kind(q)
    person_slot = any(s.kind in ("person", "name") for s in q.slots)
    if prep.dense is not None:
        dense = prep.dense
        order = np.argsort(-dense, kind="stable")
        rank = np.empty(n)
        rank[order] = np.arange(1, n + 1)
        dense_gap = dense - dense.max()
        # Cosines of one embedder sit in a narrow band: standardise within the question.
        dense_z = (dense - dense.mean()) / max(float(dense.std()), 1e-3)
    paragraphs: dict[tuple[str, int], list[int]] = {}
    for i, c in enumerate(prep.cands):
        paragraphs.setdefault((c.span.doc_id, c.paragraph), []).append(i)
    lex_paragraph = np.zeros(n)
    for members in paragraphs.values():
        text = "".join(prep.facts[j].norm for j in members)
        words = frozenset().union(*(prep.facts[j].word_set for j in members))
        lex_paragraph[members] = coverage(w, text, words)
    for i, f in enumerate(prep.facts):
        prev, nxt = prep.neighbour(i, -1), prep.neighbour(i, 1)
        context = [f.norm, prep.sections[i], prep.chunk_norm(i)]
        row = {
            "lex": lex[i],
            "char_share": _char_share(w, f.norm),
            "lex_prev": lex[prev] if prev is not None else 0.0,
            "lex_next": lex[nxt] if nxt is not None else 0.0,
            "lex_section": coverage(w, prep.sections[i]) if prep.sections[i] else 0.0,
            "matched_max_idf": matched_max[i],
            "dense": prep.dense[i] if prep.dense is not None else 0.0,
            "dense_gap": dense_gap[i] if prep.dense is not None else 0.0,
            "dense_rrank": 1.0 / rank[i] if prep.dense is not None else 0.0,
            "has_dense": 1.0 if prep.dense is not None else 0.0,
            "chunk_rrank": 1.0 / max(prep.cands[i].chunk_rank, 1),
            "chunk_score": float(prep.cands[i].chunk_score),
            "slot_asked": 1.0 if q.slots else 0.0,
            "slot_hit": slot_hit[i],
            "slot_near": slot_near[i],
            "slot_attr": slot_attr[i],
            "slot_neighbour": max(slot_near[j] for j in (prev, nxt) if j is not None)
            if (prev is not None or nxt is not None) else 0.0,
            "slot_person_heading": 1.0 if (person_slot and f.name_line
                                           and not any(p in q.norm for p in f.persons)) else 0.0,
            "constraint": _found_share(constraint_items, context + list(prep.doc_years[i])),
            "entity": _found_share(q.entities, context),
            "heading": float(f.heading),
            "byline": float(f.byline),
            "terminal": float(f.terminal),
            "fragment": float(f.fragment),
            "log_len": math.log1p(len(f.norm)),
            "item": float(f.item),
            "announced": float(prev is not None and prep.facts[prev].announces),
            "is_list": is_list,
            "multi_part": 1.0 if q.parts else 0.0,
        }
        row["list_x_item"] = is_list * max(row["item"], row["announced"])
        row["list_x_heading"] = is_list * row["heading"]
        row["list_x_byline"] = is_list * row["byline"]
        row["slot_x_near"] = row["slot_asked"] * row["slot_near"]
        row["slot_x_miss"] = row["slot_asked"] * (1.0 - row["slot_hit"])
        row["list_x_lex"] = is_list * row["lex"]
        row["slot_section"] = section_support(q, prep, i)
        row["lex_paragraph"] = lex_paragraph[i]
        row["dense_z"] = dense_z[i] if prep.dense is not None else 0.0
        row["lex_syn"] = syn_cov[i]
        row["lex_gap"] = lex[i] - lex_max
        row["lex_rrank"] = 1.0 / lex_rank[i]
        row["syn_gap"] = syn_cov[i] - syn_max
        row["slot_clause_lex"] = slot_clause_coverage(q, f) if slot_hit[i] > 0 else 0.0
        row["list_kind"] = _kind_match(kind_asked, prep, i)
        X[i] = [row[name] for name in SENTENCE_FEATURES]
    return X


#: Columns of :func:`answer_features`. Only evidence and what the question asks for: not its
#: form (list, compound), which says how the gold questions were written, not whether the
#: archive holds the answer.
ANSWER_FEATURES = (
    "top_logit", "answer_logit", "answer_lex", "hits_lex", "dense_max", "answer_dense", "has_dense",
    "hit_dense",
    "slot_asked", "answer_slot_near", "answer_slot_attr", "answer_slot_all", "best_slot_near", "unknown_entity",
    "unknown_other", "unknown_share",
    "answer_constraint", "answer_entity", "no_topic", "log_topic_tokens",
    "answer_slot_section", "answer_lex_own", "missing_top", "missing_max_idf", "deictic_day", "dense_z_max",
    "question_cue", "answer_idf_max",
)


def _all_slots(q: QuestionAnalysis, prep: Prepared, chosen: Sequence[int]) -> float:
    """1 when every asked slot (of the question or of any part) has a supporting mention in the
    answer, else 0 (1 when nothing specific is asked)."""
    questions = q.parts or [q]
    slots = [(p, s) for p in questions for s in p.slots]
    if not slots:
        return 1.0
    return float(all(any(supports(s, m, p.norm) for i in chosen for m in prep.facts[i].mentions)
                     or (s.kind in SECTION_SLOTS and any(supports(s, m, p.norm) for i in chosen
                                                         for m in prep.section_mentions[i]))
                     for p, s in slots))


def answer_features(q: QuestionAnalysis, prep: Prepared, X: np.ndarray, logits: np.ndarray,
                    chosen: Sequence[int]) -> np.ndarray:
    """Question-level features of a composed answer (for the answerability model).

    Args:
        q: The whole question's analysis.
        prep: Its prepared candidates.
        X: :func:`sentence_features` of ``prep`` for ``q``.
        logits: Sentence-scorer logits, float64 (len(prep),).
        chosen: Positions of the quoted candidates.

    Returns:
        float64 (len(ANSWER_FEATURES),).
    """
    col = {name: k for k, name in enumerate(SENTENCE_FEATURES)}
    # A quote's own words and the section headings it sits under (a by-line answering 谁 is
    # about its title).
    answer_norm = "".join(prep.facts[i].norm + prep.sections[i] for i in chosen)
    own_norm = "".join(prep.facts[i].norm for i in chosen)
    answer_words = frozenset().union(*(prep.facts[i].word_set for i in chosen)) if chosen else frozenset()
    row = {
        "top_logit": float(logits.max()) if len(logits) else -10.0,
        "answer_logit": float(min(logits[i] for i in chosen)) if chosen else -10.0,
        "answer_lex": coverage(q.weights, answer_norm, answer_words),
        "hits_lex": coverage(q.weights, prep.hits_norm + answer_norm, prep.hits_words),
        "dense_max": float(prep.dense.max()) if prep.dense is not None and len(prep.dense) else 0.0,
        "answer_dense": float(max(prep.dense[i] for i in chosen)) if prep.dense is not None and chosen else 0.0,
        "has_dense": 1.0 if prep.dense is not None else 0.0,
        "hit_dense": prep.hit_dense,
        "slot_asked": 1.0 if q.slots else 0.0,
        "answer_slot_near": float(max((X[i, col["slot_near"]] for i in chosen), default=0.0)),
        "answer_slot_attr": float(max((X[i, col["slot_attr"]] for i in chosen), default=0.0)),
        "answer_slot_all": _all_slots(q, prep, chosen),
        "best_slot_near": float((X[:, col["slot_near"]] * X[:, col["lex"]]).max()) if len(X) else 0.0,
        "unknown_entity": 1.0 if q.unknown_entities else 0.0,
        "unknown_other": 1.0 if q.unknown_other else 0.0,
        "unknown_share": q.unknown_share,
        "answer_constraint": float(max((X[i, col["constraint"]] for i in chosen), default=0.0)),
        "answer_entity": float(max((X[i, col["entity"]] for i in chosen), default=0.0)),
        "no_topic": 0.0 if q.weights else 1.0,
        "log_topic_tokens": math.log1p(len(q.weights)),
        "answer_slot_section": float(max((X[i, col["slot_section"]] for i in chosen), default=0.0)),
        "answer_lex_own": coverage(q.weights, own_norm, answer_words),
        "missing_top": 0.0,
        "missing_max_idf": 0.0,
        "deictic_day": 1.0 if q.deictic else 0.0,
        "dense_z_max": float(max((X[i, col["dense_z"]] for i in chosen), default=0.0)),
        "question_cue": 1.0 if q.cued else 0.0,
        "answer_idf_max": 0.0,
    }
    if q.weights:
        # The most specific words of the question that the quote (with its headings) leaves out:
        # a near-domain question shares the topic but not what it asks about (注册资本, 占地).
        top = max(q.weights.values())
        missing = [wt for t, wt in q.weights.items()
                   if not ((len(t) > 1 and t in answer_norm) or t in answer_words)]
        row["missing_max_idf"] = max(missing, default=0.0) / top
        row["missing_top"] = 1.0 if missing and max(missing) >= top else 0.0
        # How specific the most specific shared word is, on the archive's scale (辽源, in every
        # other sentence, says nothing about whether a weather question is answered).
        found = [wt for t, wt in q.weights.items() if (len(t) > 1 and t in answer_norm) or t in answer_words]
        row["answer_idf_max"] = max(found, default=0.0) / max(q.idf_ceiling, 1e-9)
    return np.array([row[name] for name in ANSWER_FEATURES], dtype=np.float64)
