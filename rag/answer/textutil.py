"""Answer text helpers: the matching form of text, how a quoted span is shown, the fixed template
glue and its removal, clause splitting with verbatim offsets, and near-duplicate similarity."""

from __future__ import annotations

import re
import unicodedata

from ..types import Span

__all__ = ["NOT_FOUND", "LOW_CONFIDENCE_LEAD", "LIST_LEAD", "norm", "strip_whitespace",
           "display_text", "strip_template", "bigram_jaccard", "split_clauses", "trim_span"]

#: The abstention answer.
NOT_FOUND = "未找到相关内容。"
#: Lead-in of the low-confidence snippets appended after :data:`NOT_FOUND`.
LOW_CONFIDENCE_LEAD = NOT_FOUND + "以下片段可能相关（低置信度）："
#: Lead-in of list answers.
LIST_LEAD = "根据资料："


def norm(text: str) -> str:
    """NFKC, lower-case, whitespace removed: the form used for substring matching."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if not ch.isspace())


def strip_whitespace(text: str) -> str:
    """``text`` with every whitespace character removed (the comparison form of answers)."""
    return "".join(ch for ch in text if not ch.isspace())


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def display_text(raw_span: str) -> str:
    """How a quoted span is shown in the answer: its raw text with whitespace removed.

    A whitespace run between two ASCII letters/digits becomes one space (``"COVID 19"`` stays
    readable); every other whitespace character (layout line breaks, full-width spaces) is
    deleted. Nothing else changes, so ``strip_whitespace(display_text(s)) == strip_whitespace(s)``.
    """
    out: list[str] = []
    i, n = 0, len(raw_span)
    while i < n:
        ch = raw_span[i]
        if ch.isspace():
            j = i
            while j < n and raw_span[j].isspace():
                j += 1
            if out and j < n and _is_ascii_alnum(out[-1]) and _is_ascii_alnum(raw_span[j]):
                out.append(" ")
            i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


_NUMBERING_RE = re.compile(r"^\d+\. ")
_MARKER_END_RE = re.compile(r"\[\d+\]$")


def strip_template(answer_text: str) -> str:
    """Remove the fixed template glue and citation markers from an answer.

    Drops the lead-in lines (:data:`LIST_LEAD`, :data:`LOW_CONFIDENCE_LEAD`, a bare
    :data:`NOT_FOUND`), the ``{i}. `` numbering at line starts and the ``[n]`` marker at line
    ends, then joins the lines. For any answer produced by :class:`rag.answer.Answerer` the result
    equals ``"".join(display_text(c.text) for c in citations)``.

    Args:
        answer_text: An answer's text.

    Returns:
        The quoted content only (``""`` for a plain abstention).
    """
    parts: list[str] = []
    for line in answer_text.split("\n"):
        if line in (LIST_LEAD, LOW_CONFIDENCE_LEAD, NOT_FOUND):
            continue
        line = _NUMBERING_RE.sub("", line, count=1)
        line = _MARKER_END_RE.sub("", line, count=1)
        parts.append(line)
    return "".join(parts)


def _bigrams(text_norm: str) -> set[str]:
    if len(text_norm) < 2:
        return {text_norm} if text_norm else set()
    return {text_norm[i:i + 2] for i in range(len(text_norm) - 1)}


def bigram_jaccard(a: str, b: str) -> float:
    """Jaccard similarity (Jaccard 1901) in [0, 1] of the character-bigram sets of ``a`` and ``b``
    (normalised: NFKC, lower-case, no whitespace). 1.0 when both are empty."""
    ga, gb = _bigrams(norm(a)), _bigrams(norm(b))
    if not ga and not gb:
        return 1.0
    return len(ga & gb) / len(ga | gb)


#: Clause marks: a clause ends after one of these (kept with the clause before).
CLAUSE_PUNCT = frozenset("，,；;：:")


def split_clauses(span: Span) -> list[Span]:
    """Split a sentence span into verbatim clause spans at ，,；;：: (kept with the clause before).

    A half-width ``,``/``:`` between two digits (``11,473``, ``10:30``) does not split. Leading
    and trailing whitespace of each clause is left out of its offsets; whitespace-only pieces
    are dropped.

    Args:
        span: A sentence span with ``text == raw[start:end]``.

    Returns:
        Clause spans in order, each with ``text == raw[start:end]``; ``clean`` is the clause's
        text with whitespace removed. ``[span]``-equivalent when there is no clause punctuation.
    """
    text = span.text
    cuts = [0]
    for i, ch in enumerate(text):
        if ch in CLAUSE_PUNCT:
            if ch in ",:" and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
                continue
            cuts.append(i + 1)
    if cuts[-1] != len(text):
        cuts.append(len(text))
    out: list[Span] = []
    for a, b in zip(cuts, cuts[1:]):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            piece = text[a:b]
            out.append(Span(doc_id=span.doc_id, start=span.start + a, end=span.start + b, text=piece,
                            clean=strip_whitespace(piece)))
    return out


def trim_span(span: Span) -> Span:
    """The span without leading/trailing whitespace (offsets adjusted)."""
    text = span.text
    a, b = 0, len(text)
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if a == 0 and b == len(text):
        return span
    return Span(doc_id=span.doc_id, start=span.start + a, end=span.start + b, text=text[a:b],
                clean=span.clean)
