"""The store protocol: the one place that holds the archive (documents, their stored text,
chunks, sentences and vectors) and answers searches over it.

Every store (the embedded SQLite store here, a Milvus store later) implements :class:`Store`, and
the conformance suite ``tests/store_conformance.py`` runs the same tests on each. The retriever
fuses the dense and lexical candidate lists client-side (see :mod:`rag.retriever`), so a store
only provides the two primitive searches. Nothing here names SQL, FAISS or files.

Keys are ``chunk_id`` strings ``"{doc_id}#{ordinal}"``. Scores are higher-is-better: dense is
the inner product of L2-normalised vectors (cosine, [-1, 1]); lexical is BM25 (>= 0).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from rag.types import Chunk, Document, Span

#: Metadata keys a store must match before it is used with an embedder and settings; a
#: difference raises :class:`rag.errors.IndexMismatchError`.
META_KEYS_THAT_MUST_MATCH = ("model_id", "model_fingerprint", "dim", "chunk_size", "chunk_overlap",
                             "section_context", "user_dict_hash")


@dataclass(frozen=True)
class SentenceRecord:
    """A sentence of a document as ingested.

    Attributes:
        ordinal: 0-based position among the document's sentences.
        span: Verbatim span (``stored[start:end] == span.text``) and its clean text.
        paragraph: Paragraph ordinal within the document.
        heading: The layout flags it as a heading/byline line.
        section: The nearest run of heading lines before it (title, byline), ``""`` if none.
    """

    ordinal: int
    span: Span
    paragraph: int = 0
    heading: bool = False
    section: str = ""


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk of a document as ingested.

    Attributes:
        ordinal: 0-based position among the document's chunks (``chunk_id`` is ``doc_id#ordinal``).
        start, end: Offsets into the stored text.
        clean: Clean text of the chunk.
        context: Section headings prepended for retrieval (``""`` when section context is off).
        sentence_lo, sentence_hi: Ordinals ``[lo, hi)`` of the sentences lying wholly inside it.
        terms: Token -> count over the retrieval text (:func:`rag.tokenize.tokenize`), for BM25.
    """

    ordinal: int
    start: int
    end: int
    clean: str
    context: str
    sentence_lo: int
    sentence_hi: int
    terms: Mapping[str, int] = field(default_factory=dict)

    @property
    def retrieval_text(self) -> str:
        """What the embedder and BM25 see: section context, then the clean chunk text."""
        return f"{self.context}\n{self.clean}" if self.context else self.clean


@dataclass(frozen=True)
class PreparedDocument:
    """Everything a store needs about one document except its vectors.

    Attributes:
        document: The document with its stored text, title, date, format and page map.
        sha256: Hex SHA-256 of the source bytes (what ``sync`` compares).
        chunks, sentences: In document order.
        n_units: Number of units (pseudo-sentences) for term statistics
            (:func:`rag.archive.unit_term_counts`).
        unit_df: Token -> number of units containing it.
    """

    document: Document
    sha256: str
    chunks: tuple[ChunkRecord, ...]
    sentences: tuple[SentenceRecord, ...]
    n_units: int
    unit_df: Mapping[str, int]

    def embedding_texts(self) -> list[str]:
        """Texts to embed, chunks first then sentences (``len == len(chunks) + len(sentences)``)."""
        return [c.retrieval_text for c in self.chunks] + [s.span.clean for s in self.sentences]


@dataclass(frozen=True)
class DocumentInfo:
    """A row of the document list.

    Attributes:
        doc_id, title, date, format: As in :class:`rag.types.Document`.
        source: Source path when ingested from a file, ``""`` for an upload.
        sha256: Hex SHA-256 of the source bytes.
        added: When it was (last) stored, ISO 8601 UTC.
        chunks: Number of chunks.
        chars: Length of the stored text in code points.
        pages: Number of PDF pages (0 for other formats).
        root: The corpus folder whose ``sync`` owns it, ``""`` for a file added from elsewhere
            or an upload.
        size, mtime_ns: The source file's size and modification time when stored.
    """

    doc_id: str
    title: str
    date: str | None
    format: str
    source: str
    sha256: str
    added: str
    chunks: int
    chars: int
    pages: int = 0
    root: str = ""
    size: int = 0
    mtime_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "title": self.title, "date": self.date, "format": self.format,
                "chunks": self.chunks, "chars": self.chars, "pages": self.pages, "added": self.added,
                "source": self.source, "sha256": self.sha256}


@dataclass(frozen=True)
class StoredSentence:
    """A sentence read back with its vector.

    Attributes:
        span: Verbatim span and clean text.
        vector: float32 (dim,), L2-normalised (stored as float16; the rounding is < 1e-3 per
            component).
        paragraph, heading, section: As in :class:`SentenceRecord`.
        sentence_index: A store-wide ordinal; adjacent sentences of a document have adjacent
            numbers.
    """

    span: Span
    vector: np.ndarray
    paragraph: int
    heading: bool
    section: str
    sentence_index: int


@dataclass(frozen=True)
class StoredChunk:
    """A chunk read back, optionally with its sentences.

    Attributes:
        chunk: The chunk (``text == stored[start:end]``).
        page: 1-based PDF page where it starts, None without pages.
        sentences: Its sentences in order when asked for, else empty.
    """

    chunk: Chunk
    page: int | None = None
    sentences: tuple[StoredSentence, ...] = ()


@runtime_checkable
class Store(Protocol):
    """What the pipeline needs of a store. Implementations are safe to call from several threads;
    reads in several processes see each other's committed writes after :meth:`refresh`."""

    meta: dict[str, Any]

    @property
    def location(self) -> str:
        """Where the store lives, for messages (a folder, a server URI)."""

    @property
    def write_wait_s(self) -> float:
        """Seconds :meth:`writer` waits for another writer (settable)."""

    def adopt_or_check(self, expect: dict[str, Any]) -> None:
        """Record ``expect`` (see :data:`META_KEYS_THAT_MUST_MATCH`) in an empty store, or check a
        filled one against it.

        Raises:
            IndexMismatchError: the store holds documents built differently.
        """

    def set_meta(self, key: str, value: Any) -> None:
        """Record one metadata value (JSON-serialisable) in ``meta``."""

    def count_documents(self) -> int:
        """Number of documents."""

    def count_chunks(self) -> int:
        """Number of chunks."""

    def count_sentences(self) -> int:
        """Number of sentences."""

    def generation(self) -> int:
        """A number that grows with every committed change (any process)."""

    def refresh(self) -> bool:
        """Catch up with changes committed by other processes; True if there were any."""

    def writer(self) -> AbstractContextManager:
        """The store's writer lock (one writer at a time, across processes).

        Raises:
            StoreBusyError: another writer holds it for longer than the configured wait.
        """

    def upsert(self, prepared: PreparedDocument, chunk_vectors: np.ndarray,
               sentence_vectors: np.ndarray, *, root: str = "", size: int = 0, mtime_ns: int = 0) -> None:
        """Store one document, replacing any document with the same id, atomically: after a
        crash the store holds either the old document or the new one, never a mix.

        Args:
            prepared: The document, its chunks and sentences.
            chunk_vectors: float32 (len(chunks), dim), L2-normalised, in chunk order.
            sentence_vectors: float32 (len(sentences), dim), L2-normalised.
            root: The corpus folder whose ``sync`` owns the document (``""``: added from
                elsewhere or uploaded).
            size, mtime_ns: The source file's size and modification time.

        Raises:
            ValueError: vector shapes do not match.
        """

    def delete(self, doc_id: str) -> bool:
        """Remove a document and everything derived from it; False when it was not there."""

    def touch(self, doc_id: str, size: int, mtime_ns: int) -> None:
        """Record a new source size and modification time for a document whose content is unchanged."""

    def document(self, doc_id: str) -> Document | None:
        """The document with its stored text, or None (also :class:`rag.archive.ArchiveView`)."""

    def document_info(self, doc_id: str) -> DocumentInfo | None:
        """One row of :meth:`list_documents`, or None."""

    def list_documents(self) -> list[DocumentInfo]:
        """Every document, sorted by id."""

    def dense_search(self, query_vector: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        """Chunks whose vectors are nearest to ``query_vector`` (float32 (dim,), L2-normalised).

        Returns:
            ``(chunk_id, cosine)`` pairs, best first, at most ``top_k``.
        """

    def lexical_search(self, tokens: Sequence[str], top_k: int) -> list[tuple[str, float]]:
        """Chunks ranked by BM25 for query ``tokens`` (:func:`rag.tokenize.tokenize` output).

        Returns:
            ``(chunk_id, score > 0)`` pairs, best first, at most ``top_k``.
        """

    def fetch_chunks(self, chunk_ids: Sequence[str], with_sentences: bool = False) -> dict[str, StoredChunk]:
        """The chunks with these ids (unknown ids are left out)."""

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per chunk id: its vector float32 (dim,) and its sentences' vectors float32 (m, dim)."""

    def warm_caches(self) -> None:
        """Load whatever searches need now rather than on the first search."""

    def idf(self, token: str) -> float:
        """Inverse unit frequency (:func:`rag.archive.idf_from_counts`)."""

    def mentions(self, term: str) -> bool:
        """Whether ``term`` occurs in any unit of the archive."""

    def close(self) -> None:
        """Release files and connections."""
