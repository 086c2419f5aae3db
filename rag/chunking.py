"""Sentence-aware chunking: pack whole sentences of a :class:`~rag.text.DocumentLayout` into
retrieval chunks with raw ``[start, end)`` offsets.

Rules (sizes are characters of *clean* text):

* chunks hold consecutive sentences and never span a dropped range (repeated block, furniture);
* a new paragraph starts a new chunk, except that heading lines and tiny paragraphs
  (< ``chunk_size // 4``) are glued to the following paragraph, so a section heading is
  retrievable together with the text under it;
* sentences are packed until adding the next would exceed ``chunk_size``; a sentence longer than
  ``chunk_size`` is a chunk of its own, and one longer than ``2 * chunk_size`` is cut at clause
  marks (``，；：``) into pieces of at most ``chunk_size`` where possible;
* a tail shorter than ``chunk_size // 4`` left at the end of a paragraph group joins the
  previous chunk of that group if the result stays within ``1.25 * chunk_size``;
* overlap: the trailing whole sentences (pieces) of the previous chunk totalling at most
  ``chunk_overlap`` characters are repeated at the start of the next chunk, unless a dropped
  range lies between them or the new chunk starts with a heading.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from rag.text import DocumentLayout, clean_with_offsets, document_spans, split_clauses
from rag.types import Chunk, Document, Span


@dataclass(frozen=True)
class Piece:
    """A packing unit: a whole sentence, or a run of clauses of an over-long sentence.

    Attributes:
        start, end: Raw offsets (code points).
        clean: Clean text of ``raw[start:end]``.
        sentence: Index of the owning sentence in ``layout.sentences``.
        paragraph: Paragraph ordinal of that sentence.
        heading: True when the sentence is a heading line.
    """

    start: int
    end: int
    clean: str
    sentence: int
    paragraph: int
    heading: bool


@dataclass(frozen=True)
class ChunkPlan:
    """The pieces of one chunk; the first ``overlap`` pieces repeat the previous chunk."""

    pieces: tuple[Piece, ...]
    overlap: int

    @property
    def main(self) -> tuple[Piece, ...]:
        """Pieces this chunk owns (not repeated from the previous chunk)."""
        return self.pieces[self.overlap:]


def _check(chunk_size: int, chunk_overlap: int) -> None:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0 characters, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap}")


def _pieces(raw: str, layout: DocumentLayout, chunk_size: int) -> list[Piece]:
    out: list[Piece] = []
    for idx, (span, para) in enumerate(zip(layout.sentences, layout.paragraph_ids)):
        heading = layout.headings[idx] if idx < len(layout.headings) else False
        if len(span.clean) <= 2 * chunk_size:
            out.append(Piece(span.start, span.end, span.clean, idx, para, heading))
            continue
        # Over-long sentence: greedy runs of clauses up to chunk_size characters.
        run: list[Span] = []
        for clause in split_clauses(span) + [None]:
            if run and (clause is None
                        or sum(len(c.clean) for c in run) + len(clause.clean) > chunk_size):
                s, e = run[0].start, run[-1].end
                out.append(Piece(s, e, clean_with_offsets(raw, s, e)[0], idx, para, heading))
                run = []
            if clause is not None:
                run.append(clause)
    return out


def _join_clean(pieces: tuple[Piece, ...] | list[Piece]) -> str:
    parts: list[str] = []
    for k, p in enumerate(pieces):
        if k:
            prev = pieces[k - 1]
            if p.paragraph != prev.paragraph:
                parts.append("\n")
            elif prev.clean[-1:].isascii() and p.clean[:1].isascii() \
                    and prev.clean[-1:].isalnum() and p.clean[:1].isalnum():
                parts.append(" ")
        parts.append(p.clean)
    return "".join(parts)


def plan_chunks(raw: str, layout: DocumentLayout, chunk_size: int,
                chunk_overlap: int) -> list[ChunkPlan]:
    """Group the sentences of ``layout`` into chunk plans (see the module docstring).

    Args:
        raw: Raw document text the layout was computed on.
        layout: Output of :func:`rag.text.document_spans`.
        chunk_size: Target chunk length in characters of clean text (soft: whole sentences).
        chunk_overlap: Most characters of trailing sentences repeated in the next chunk.

    Returns:
        Plans in document order; every piece appears in exactly one plan's ``main`` part.

    Raises:
        ValueError: ``chunk_size <= 0`` or ``chunk_overlap`` outside ``[0, chunk_size)``.
    """
    _check(chunk_size, chunk_overlap)
    pieces = _pieces(raw, layout, chunk_size)
    if not pieces:
        return []
    tiny = max(1, chunk_size // 4)

    # Paragraph groups, split at dropped ranges.
    groups: list[list[Piece]] = []
    for k, p in enumerate(pieces):
        new = k == 0 or p.paragraph != pieces[k - 1].paragraph \
            or layout.gap_between(pieces[k - 1].end, p.start)
        if new:
            groups.append([p])
        else:
            groups[-1].append(p)

    # Glue headings and tiny paragraphs to the following group when no gap separates them.
    glued: list[list[Piece]] = []
    carry: list[Piece] = []
    for g in groups:
        if carry and layout.gap_between(carry[-1].end, g[0].start):
            glued.append(carry)
            carry = []
        cur = carry + g
        carry = []
        is_heading = all(p.heading for p in g)
        if is_heading or sum(len(p.clean) for p in g) < tiny:
            carry = cur
        else:
            glued.append(cur)
    if carry:
        glued.append(carry)

    plans: list[ChunkPlan] = []
    for group in glued:
        cur: list[Piece] = []
        n_overlap = 0
        if plans:
            prev = plans[-1].pieces
            if not layout.gap_between(prev[-1].end, group[0].start) and not group[0].heading:
                cur, n_overlap = _overlap(prev, chunk_overlap)
        for p in group:
            size = sum(len(x.clean) for x in cur)
            if len(cur) > n_overlap and size + len(p.clean) > chunk_size:
                plans.append(ChunkPlan(tuple(cur), n_overlap))
                cur, n_overlap = _overlap(cur, chunk_overlap)
                size = sum(len(x.clean) for x in cur)
            if n_overlap and len(cur) == n_overlap and size + len(p.clean) > chunk_size:
                cur, n_overlap = [], 0  # the overlap would push a long sentence over the size
            cur.append(p)
        if len(cur) > n_overlap:
            tail = cur[n_overlap:]
            tail_size = sum(len(x.clean) for x in tail)
            prev_plan = plans[-1] if plans and plans[-1].pieces[-1] in group else None
            if prev_plan is not None and tail_size < tiny and sum(
                    len(x.clean) for x in prev_plan.pieces) + tail_size <= chunk_size * 5 // 4:
                # An orphan tail is merged into the previous chunk of the same group (+25% slack).
                plans[-1] = ChunkPlan(prev_plan.pieces + tuple(tail), prev_plan.overlap)
            else:
                plans.append(ChunkPlan(tuple(cur), n_overlap))
    return plans


def _overlap(prev: tuple[Piece, ...] | list[Piece], chunk_overlap: int) -> tuple[list[Piece], int]:
    """Trailing pieces of ``prev`` totalling <= ``chunk_overlap`` characters (never all of it)."""
    taken: list[Piece] = []
    total = 0
    for p in reversed(prev[1:]):
        if total + len(p.clean) > chunk_overlap:
            break
        taken.insert(0, p)
        total += len(p.clean)
    return taken, len(taken)


#: Most characters of section headings prepended to a chunk's retrieval text.
CONTEXT_MAX_CHARS = 100


def chunk_document(doc: Document, layout: DocumentLayout, chunk_size: int,
                   chunk_overlap: int) -> list[Chunk]:
    """Cut one document into chunks.

    Time is linear in the document's length: section contexts come from one
    :class:`SectionIndex` built per document (rescanning every sentence for each chunk made
    chunking quadratic: 1.6M characters took 69 s).

    Args:
        doc: The document (its ``text`` is the raw text the layout addresses).
        layout: ``rag.text.document_spans(doc.doc_id, doc.text)``.
        chunk_size: Target chunk length, characters of clean text.
        chunk_overlap: Most characters of trailing sentences repeated at the next chunk's start.

    Returns:
        Chunks with ``chunk_id = f"{doc_id}#{i}"`` (``i`` from 0), ``text = doc.text[start:end]``,
        ``clean`` = the pieces' clean texts joined (no separator inside a paragraph, ``"\\n"``
        between paragraphs), ``title = doc.title``.

    Raises:
        ValueError: bad ``chunk_size``/``chunk_overlap`` (see :func:`plan_chunks`).
    """
    sections = SectionIndex(layout)
    chunks: list[Chunk] = []
    for i, plan in enumerate(plan_chunks(doc.text, layout, chunk_size, chunk_overlap)):
        start, end = plan.pieces[0].start, plan.pieces[-1].end
        chunks.append(Chunk(chunk_id=f"{doc.doc_id}#{i}", doc_id=doc.doc_id, start=start, end=end,
                            text=doc.text[start:end], clean=_join_clean(plan.pieces),
                            title=doc.title, context=sections.context(start)))
    return chunks


class SectionIndex:
    """The heading blocks of one layout, for :meth:`context` lookups in O(log n).

    A heading block is a maximal run of consecutive heading sentences (e.g. ``关于…的建议`` +
    ``民建…委员 李鹏``).
    """

    def __init__(self, layout: DocumentLayout):
        self._starts = [span.start for span in layout.sentences]
        self._headings = [i for i, heading in enumerate(layout.headings) if heading]
        self._clean = {i: layout.sentences[i].clean for i in self._headings}

    def context(self, start: int, max_chars: int = CONTEXT_MAX_CHARS) -> str:
        """The headings a chunk starting at raw offset ``start`` sits under, for retrieval text.

        A speech summary's later chunks no longer name the speaker or the proposal title, and a
        work report's "2020年工作安排" chunks do not say 2020; prepending the last two heading
        blocks that end before the chunk restores that context ("contextual chunk headers").
        Headings inside the chunk are not repeated.

        Returns:
            Clean heading texts joined by spaces, at most ``max_chars`` characters (the nearest
            headings are kept); ``""`` when the chunk starts before any heading.
        """
        before = bisect_left(self._starts, start)  # sentences starting before the chunk
        k = bisect_left(self._headings, before) - 1
        out = ""
        blocks = 0
        while k >= 0:
            index = self._headings[k]
            if k + 1 >= len(self._headings) or self._headings[k + 1] != index + 1 or self._headings[k + 1] >= before:
                blocks += 1  # ``index`` ends a block (as seen from the chunk start)
                if blocks > 2:
                    break
            text = self._clean[index]
            candidate = text if not out else f"{text} {out}"
            if len(candidate) > max_chars:
                break
            out = candidate
            k -= 1
        return out


def section_context(layout: DocumentLayout, start: int, max_chars: int = CONTEXT_MAX_CHARS) -> str:
    """:meth:`SectionIndex.context` for one lookup (build a :class:`SectionIndex` for many)."""
    return SectionIndex(layout).context(start, max_chars)


def chunk_corpus(docs: list[Document], chunk_size: int,
                 chunk_overlap: int) -> tuple[list[Chunk], dict[str, DocumentLayout]]:
    """Lay out and chunk every document.

    Returns:
        ``(chunks, layouts)``: all chunks in document order, and the layout per ``doc_id``.

    Raises:
        ValueError: bad ``chunk_size``/``chunk_overlap``, or duplicate ``doc_id`` values.
    """
    _check(chunk_size, chunk_overlap)
    chunks: list[Chunk] = []
    layouts: dict[str, DocumentLayout] = {}
    for doc in docs:
        if doc.doc_id in layouts:
            raise ValueError(f"duplicate doc_id {doc.doc_id!r}")
        layout = document_spans(doc.doc_id, doc.text)
        layouts[doc.doc_id] = layout
        chunks.extend(chunk_document(doc, layout, chunk_size, chunk_overlap))
    return chunks, layouts
