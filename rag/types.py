"""Frozen value types shared by every layer (ingest, store, retriever, answerer, CLI, server).

Offsets are half-open ``[start, end)`` code-point indices into a document's *stored text* (for a
``.txt`` file the decoded file itself; see :mod:`rag.ingest.readers`), so
``stored[start:end] == text`` holds for every span-bearing object below.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One archive document.

    Attributes:
        doc_id: Path relative to the corpus root without extension, e.g. ``"000_f5ea1269c607c469"``.
        path: Absolute path of the source file (``""`` for an upload).
        title: Title (file metadata or first heading line), ``""`` if none.
        date: ISO date ``YYYY-MM-DD`` stated in the text, or ``None``.
        text: Stored text (offsets address this string).
        format: ``txt``, ``md``, ``html``, ``pdf`` or ``docx``.
        pages: For a PDF, the start offset of each page in ``text`` (``pages[0] == 0``); empty
            otherwise.
    """

    doc_id: str
    path: str
    title: str
    date: str | None
    text: str
    format: str = "txt"
    pages: tuple[int, ...] = ()

    def page_of(self, offset: int) -> int | None:
        """1-based page holding ``offset`` (code points), or None for a document without pages."""
        if not self.pages:
            return None
        return max(1, bisect_right(self.pages, offset))

    def to_dict(self, with_text: bool = False) -> dict[str, Any]:
        out = {"doc_id": self.doc_id, "path": self.path, "title": self.title, "date": self.date,
               "format": self.format, "chars": len(self.text)}
        if with_text:
            out["text"] = self.text
        return out


@dataclass(frozen=True)
class Span:
    """A sentence-like span of a document: the unit the answerer quotes.

    Attributes:
        doc_id: Owning document.
        start: Start offset (code points, inclusive) into the raw text.
        end: End offset (code points, exclusive).
        text: ``raw[start:end]``, verbatim.
        clean: The same span after cleanup (broken lines joined, punctuation normalised); this is
            what models and tokenisers see.
    """

    doc_id: str
    start: int
    end: int
    text: str
    clean: str


@dataclass(frozen=True)
class Chunk:
    """A retrieval unit: consecutive sentences of one document.

    Attributes:
        chunk_id: ``"{doc_id}#{ordinal}"``, stable for a given corpus and chunk settings.
        doc_id: Owning document.
        start: Start offset (code points) into the raw text.
        end: End offset (exclusive).
        text: ``raw[start:end]``, verbatim (may contain layout line breaks).
        clean: Cleaned text fed to the embedder and BM25 tokenizer.
        title: Title of the owning document.
        context: Section headings the chunk sits under (speaker, proposal title, report part);
            prepended to ``clean`` for embedding and BM25, never part of offsets or citations.
    """

    chunk_id: str
    doc_id: str
    start: int
    end: int
    text: str
    clean: str
    title: str
    context: str = ""

    @property
    def retrieval_text(self) -> str:
        """What the embedder and BM25 see: section context, then the clean chunk text."""
        return f"{self.context}\n{self.clean}" if self.context else self.clean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its rank and score.

    Attributes:
        rank: 1-based rank in the result list.
        chunk_id, doc_id, start, end, text, title: as in :class:`Chunk`.
        score: Fused relevance score, higher is better; range depends on the retriever and is
            documented there (hybrid: [0, 1]).
        scores: Per-retriever component scores (e.g. ``{"dense": 0.83, "bm25": 12.1}``).
        page: 1-based PDF page where the chunk starts, None for documents without pages.
    """

    rank: int
    chunk_id: str
    doc_id: str
    start: int
    end: int
    score: float
    text: str
    title: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "chunk_id": self.chunk_id, "doc_id": self.doc_id,
                "title": self.title, "start": self.start, "end": self.end, "page": self.page,
                "score": round(float(self.score), 6), "text": self.text,
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()}}


@dataclass(frozen=True)
class Citation:
    """One quoted span supporting the answer.

    Attributes:
        id: Marker number ``n`` as in ``[n]`` in the answer text (1-based).
        doc_id, title, date: Source document facts.
        start, end: Raw code-point offsets; ``text == raw[start:end]``.
        text: The quoted span, verbatim.
        url: Link to the highlighted span, ``{base_url}/sources/{doc_id}?start=..&end=..``.
        line: 1-based line number in the stored text where the span starts.
        page: 1-based PDF page where the span starts, None for documents without pages.
    """

    id: int
    doc_id: str
    title: str
    date: str | None
    start: int
    end: int
    text: str
    url: str
    line: int
    page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """A reply to one question.

    Attributes:
        question: The question as asked (stripped).
        answer: Answer text with ``[n]`` markers, or ``未找到相关内容。`` when abstaining.
        abstained: True when the archive does not hold a confident answer.
        citations: Spans quoted in ``answer`` (empty when abstaining, unless low-confidence
            snippets are attached; then ``low_confidence`` is True).
        hits: Retrieved chunks in rank order.
        timings_ms: Stage latencies in milliseconds (``embed``, ``retrieve``, ``answer``, ``total``).
        confidence: Evidence strength in [0, 1] compared against the abstention threshold.
        question_type: ``"factoid"`` or ``"list"``.
        low_confidence: True when the citations are only the nearest snippets after abstaining.
    """

    question: str
    answer: str
    abstained: bool
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    timings_ms: dict[str, float]
    confidence: float = 0.0
    question_type: str = "list"
    low_confidence: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "abstained": self.abstained,
                "confidence": round(float(self.confidence), 4),
                "question_type": self.question_type, "low_confidence": self.low_confidence,
                "citations": [c.to_dict() for c in self.citations],
                "hits": [h.to_dict() for h in self.hits],
                "timings_ms": {k: round(float(v), 3) for k, v in self.timings_ms.items()}}
