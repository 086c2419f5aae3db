"""Composition: which scored sentences to quote, trimmed to which clauses, and the answer text
with its citations.

* **factoid** (one part): the best sentence; when it lacks the asked-for slot and the next (or
  the one after, or the previous) sentence of the same document has it, that one too (a value
  often follows the sentence that names the topic); else a runner-up whose probability is at
  least ``factoid_second_ratio`` x the best's (a near tie is resolved by quoting both).
* **several parts** (``收入多少了，比上年涨了多少``): each part's best sentence, scored with the
  part's own topic and slot (:func:`rag.answer.features.part_question`); one sentence answering
  two parts is quoted once.
* **by-lines**: a who-question (person or organisation slot) answered by a body sentence that
  names no one also quotes the heading line of that sentence's section naming the person
  (:func:`byline_span`): a proposal's author stands under its title, not in its sentences.
* **list**: sentences in order of probability (or, with ``list_by_source``, round robin over
  documents), at least ``list_min_ratio`` x the best's, each not a near-duplicate of one already
  chosen, up to ``settings.answer_max_sentences`` sentences and ``settings.answer_max_chars``
  characters; grouped by document in reading order.

Trimming (:func:`clause_window`): a sentence longer than the window is cut to the contiguous run
of whole clauses (clauses end at ，；：) that covers most of the topic and holds the asked-for
slot. A window starts at the sentence start or right after a clause mark, and when it stops
before the sentence end its trailing clause mark is left out, so an answer never ends on a
dangling comma; citations stay verbatim (``raw[start:end] == text``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence
from urllib.parse import quote

import numpy as np

from ..archive import ArchiveView
from ..types import Citation, Span
from .features import Prepared, coverage
from .question import QuestionAnalysis
from .slots import find_mentions, supports
from .textutil import LIST_LEAD, display_text, norm, split_clauses, strip_whitespace

__all__ = ["Choice", "order_candidates", "duplicate", "choose_factoid", "choose_parts", "choose_list",
           "clause_window", "compose_text", "group_by_source", "byline_span", "add_bylines", "DUPLICATE_JACCARD"]

#: Two sentences whose character-bigram Jaccard similarity exceeds this say the same thing (the
#: archive repeats blocks and overlapping chunks share sentences): quote only the better one.
DUPLICATE_JACCARD = 0.7
_CLAUSE_MARKS = "，,；;：:、"


@dataclass
class Choice:
    """A candidate chosen for quoting.

    Attributes:
        index: Position in the :class:`Prepared` candidates.
        span: The quoted span (the sentence or a clause window of it).
        part: Index of the question part it answers (0 for a simple question).
    """

    index: int
    span: Span
    part: int = 0


def order_candidates(prep: Prepared, logits: np.ndarray) -> list[int]:
    """Candidate positions best first (ties: earlier chunk rank, then document position)."""
    return sorted(range(len(prep)), key=lambda i: (-float(logits[i]), prep.cands[i].chunk_rank,
                                                    prep.spans[i].doc_id, prep.spans[i].start))


def duplicate(prep: Prepared, i: int, chosen) -> bool:
    """Whether candidate ``i`` repeats (bigram Jaccard > :data:`DUPLICATE_JACCARD`) a chosen one."""
    a = prep.facts[i].bigrams
    for k in chosen:
        b = prep.facts[k].bigrams
        if a == b or len(a & b) > DUPLICATE_JACCARD * len(a | b):
            return True
    return False


def _has_slot(q: QuestionAnalysis, prep: Prepared, i: int) -> bool:
    return any(supports(s, m, q.norm) for s in q.slots for m in prep.facts[i].mentions)


def choose_factoid(q: QuestionAnalysis, prep: Prepared, logits: np.ndarray, order: Sequence[int],
                   second_ratio: float) -> list[int]:
    """Positions to quote for a one-part factoid question (see the module docstring)."""
    best = order[0]
    if q.slots and not _has_slot(q, prep, best):
        for offset in (1, 2, -1):
            j = prep.neighbour(best, offset)
            if j is not None and _has_slot(q, prep, j):
                return sorted([best, j], key=lambda k: prep.spans[k].start)
        return [best]
    rest = [i for i in order[1:3] if not duplicate(prep, i, [best])]
    if rest:
        runner = rest[0]
        p = 1.0 / (1.0 + np.exp(-logits[[best, runner]]))
        if p[1] >= second_ratio * p[0] and (not q.slots or _has_slot(q, prep, runner)):
            return [best, runner]
    return [best]


#: Slot kinds a by-line answers when the quoted body sentence does not name anyone.
BYLINE_SLOTS = frozenset({"person", "org"})
#: Lines searched back from a sentence for its section's by-line (a proposal's or speech's
#: heading block sits right above its body; 200 lines is past any section of the archive).
_BYLINE_LOOKBACK_LINES = 200


def byline_span(q: QuestionAnalysis, prep: Prepared, i: int) -> Span | None:
    """The heading line of candidate ``i``'s section that names who the question asks for
    (``九三学社辽源市委员会兼职副主委 刘卫平`` under ``关于加强…的建议``), as a verbatim span of the
    document; None when the question asks for no person/organisation, the sentence itself
    names one, or the section does not."""
    slots = [s for s in q.slots if s.kind in BYLINE_SLOTS]
    if not slots or _has_slot(q, prep, i) or not prep.sections[i] or not prep.section_mentions:
        return None
    names = [m.text for m in prep.section_mentions[i] for s in slots if supports(s, m, q.norm)]
    raw = prep.raw.get(prep.spans[i].doc_id, "")
    if not names or not raw:
        return None
    end = prep.spans[i].start
    for _ in range(_BYLINE_LOOKBACK_LINES):
        if end <= 0:
            break
        start = raw.rfind("\n", 0, end - 1) + 1
        line = raw[start:end]
        line_norm = norm(line)
        if line_norm and line_norm in prep.sections[i] and any(n in line_norm for n in names):
            a = start + len(line) - len(line.lstrip())
            b = start + len(line.rstrip())
            return Span(prep.spans[i].doc_id, a, b, raw[a:b], strip_whitespace(raw[a:b]))
        end = start
    return None


def add_bylines(choices: list[Choice], questions: Sequence[QuestionAnalysis], prep: Prepared) -> list[Choice]:
    """Put the section by-line (:func:`byline_span`) before each quoted sentence that answers a
    who-question without naming anyone (each by-line once)."""
    out: list[Choice] = []
    seen: set[tuple[str, int]] = set()
    for c in choices:
        q = questions[c.part] if c.part < len(questions) else questions[0]
        span = byline_span(q, prep, c.index)
        if span is not None and (span.doc_id, span.start) not in seen \
                and not any(o.span.doc_id == span.doc_id and o.span.start <= span.start < o.span.end for o in choices):
            seen.add((span.doc_id, span.start))
            out.append(Choice(c.index, span, c.part))
        out.append(c)
    return out


def _supporting(q: QuestionAnalysis, prep: Prepared, i: int) -> set[tuple[int, int]]:
    return {(m.start, m.end) for s in q.slots for m in prep.facts[i].mentions if supports(s, m, q.norm)}


def choose_parts(parts: Sequence[QuestionAnalysis], prep: Prepared,
                 part_logits: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """``(position, part)`` pairs: each part's best sentence (for a part with a slot, the best
    one supporting it, if any). When an earlier part already took that sentence, it answers this
    part too if it holds a mention of this part's slot other than the ones the earlier part used
    (``收入达到11473元，同比提高26.7%``); otherwise this part takes its best sentence not yet
    taken."""
    chosen: list[tuple[int, int]] = []
    used: dict[int, set[tuple[int, int]]] = {}
    for k, (part, logits) in enumerate(zip(parts, part_logits)):
        order = order_candidates(prep, logits)
        if not order:
            continue
        if part.slots:  # an answer needs support for what the part asks for
            order = [i for i in order if _has_slot(part, prep, i)] + [i for i in order if not _has_slot(part, prep, i)]
        best = order[0]
        if best in used:
            own = _supporting(part, prep, best)
            if part.slots and own - used[best]:
                used[best] |= own
                continue
            rest = [i for i in order if i not in used and not duplicate(prep, i, list(used))]
            if not rest:
                continue
            best = rest[0]
        used[best] = _supporting(part, prep, best)
        chosen.append((best, k))
    return chosen


def choose_list(prep: Prepared, logits: np.ndarray, order: Sequence[int], min_ratio: float,
                max_sentences: int, firsts: Sequence[int] = (), by_source: bool = False) -> list[int]:
    """Positions to quote for a list question: ``firsts`` (a compound question's part answers)
    or the best, then others in probability order with probability >= ``min_ratio`` x the best's,
    skipping near-duplicates and, when any body sentence is a candidate, headings (character
    budget applied later, after trimming). With ``by_source`` the others are taken round robin
    over documents."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    # Titles and by-lines are not items of a list when a body sentence is on offer.
    body = [i for i in order if not prep.facts[i].heading]
    if body:
        order = body
    chosen = list(dict.fromkeys(firsts)) or [order[0]]
    floor = min_ratio * float(p[order[0]])
    if by_source:
        # Round robin over documents (in order of their best sentence): each document's best
        # eligible sentence first, then the second best of each, ... (lists that span reports).
        rank_in_doc: dict[str, int] = {}
        keyed = []
        for pos, i in enumerate(order):
            doc = prep.spans[i].doc_id
            rank_in_doc[doc] = rank_in_doc.get(doc, -1) + 1
            keyed.append((rank_in_doc[doc], pos, i))
        order = [i for _, _, i in sorted(keyed)]
    for i in order:
        if len(chosen) >= max_sentences:
            break
        if i in chosen or p[i] < floor:
            continue
        if duplicate(prep, i, chosen):
            continue
        chosen.append(i)
    return chosen[:max(1, max_sentences)]


def clause_window(span: Span, q: QuestionAnalysis, full_chars: int, max_chars: int) -> Span:
    """Trim ``span`` to whole clauses (see the module docstring).

    Args:
        span: A verbatim sentence span.
        q: The question (or part) it answers: its topic weights and slots rank windows.
        full_chars: Sentences showing at most this many characters are kept whole.
        max_chars: Longest window shown (a single longer clause is kept whole).

    Returns:
        A verbatim sub-span (``raw[start:end] == text``), or ``span`` itself.
    """
    shown_total = len(display_text(span.text))
    if shown_total <= full_chars:
        return span
    clauses = _pieces(span)
    if len(clauses) <= 1:
        return span
    norms = [norm(c.text) for c in clauses]
    words = frozenset(q.weights)
    best_key: tuple | None = None
    best = span
    for i in range(len(clauses)):
        for j in range(i, len(clauses)):
            end_clause = clauses[j]
            end = end_clause.end
            text = span.text[clauses[i].start - span.start:end - span.start]
            if j < len(clauses) - 1:  # stop before the sentence end: drop the clause mark
                trimmed = text.rstrip()
                while trimmed and trimmed[-1] in _CLAUSE_MARKS:
                    trimmed = trimmed[:-1].rstrip()
                end -= len(text) - len(trimmed)
                text = trimmed
            shown = len(display_text(text))
            if shown > max_chars and j > i:
                break
            window_norm = "".join(norms[i:j + 1])
            cov = coverage(q.weights, window_norm, words)
            slot = 0.0
            if q.slots:
                mentions = find_mentions(window_norm)
                slot = float(any(supports(s, m, q.norm) for s in q.slots for m in mentions))
            key = (round(slot + cov, 9), -shown if slot + cov > 0 else shown, -i)
            if best_key is None or key > best_key:
                best_key = key
                best = Span(doc_id=span.doc_id, start=clauses[i].start, end=end, text=text,
                            clean=strip_whitespace(text))
    return best


_SENTENCE_END = "。！？!?…"
_CLOSERS = "”’」』）)》\"'"


def _pieces(span: Span) -> list[Span]:
    """Clauses of ``span`` (:func:`split_clauses`), further cut after sentence ends (``。！？``
    with their closing quotes) inside it: a stored sentence may hold several."""
    out: list[Span] = []
    for clause in split_clauses(span):
        text = clause.text
        start = 0
        i = 0
        while i < len(text):
            if text[i] in _SENTENCE_END:
                j = i + 1
                while j < len(text) and (text[j] in _SENTENCE_END or text[j] in _CLOSERS):
                    j += 1
                piece = text[start:j]
                if piece.strip() and j < len(text):
                    a = start + (len(piece) - len(piece.lstrip()))
                    out.append(Span(span.doc_id, clause.start + a, clause.start + j, text[a:j],
                                    strip_whitespace(text[a:j])))
                    start = j
                i = j
                continue
            i += 1
        rest = text[start:]
        if rest.strip():
            a = start + (len(rest) - len(rest.lstrip()))
            b = len(text) - (len(rest) - len(rest.rstrip()))
            out.append(Span(span.doc_id, clause.start + a, clause.start + b, text[a:b], strip_whitespace(text[a:b])))
    return out


def group_by_source(choices: list[Choice]) -> list[Choice]:
    """Group by document (groups ordered by their first chosen sentence), reading order inside."""
    order: list[str] = []
    groups: dict[str, list[Choice]] = {}
    for c in choices:
        if c.span.doc_id not in groups:
            order.append(c.span.doc_id)
            groups[c.span.doc_id] = []
        groups[c.span.doc_id].append(c)
    out: list[Choice] = []
    for doc_id in order:
        out.extend(sorted(groups[doc_id], key=lambda c: c.span.start))
    return out


def citation(n: int, span: Span, archive: ArchiveView, base_url: str) -> Citation:
    """The numbered citation of a verbatim span."""
    doc = archive.document(span.doc_id)
    base = (base_url or "").rstrip("/")
    url = f"{base}/sources/{quote(span.doc_id, safe='')}?start={span.start}&end={span.end}"
    return Citation(id=n, doc_id=span.doc_id, title=doc.title, date=doc.date, start=span.start,
                    end=span.end, text=doc.text[span.start:span.end], url=url,
                    line=doc.text.count("\n", 0, span.start) + 1)


def compose_text(spans: Sequence[Span], as_list: bool, archive: ArchiveView, base_url: str,
                 lead: str | None = None) -> tuple[str, tuple[Citation, ...]]:
    """Answer text and citations. One line per span: ``{span}[n]``; a list (or any text with a
    ``lead``) starts with the lead line and numbers its lines ``{n}. {span}[n]``."""
    citations = tuple(citation(i, s, archive, base_url) for i, s in enumerate(spans, start=1))
    if not as_list and lead is None:
        return "\n".join(f"{display_text(c.text)}[{c.id}]" for c in citations), citations
    lines = [lead or LIST_LEAD]
    lines += [f"{c.id}. {display_text(c.text)}[{c.id}]" for c in citations]
    return "\n".join(lines), citations


def budget(spans: Sequence[Span], max_chars: int) -> list[int]:
    """Indices of ``spans`` kept in order while their shown length fits ``max_chars`` (the first
    is always kept)."""
    kept, used = [], 0
    for k, s in enumerate(spans):
        shown = len(display_text(s.text))
        if kept and used + shown > max_chars:
            continue
        kept.append(k)
        used += shown
    return kept
