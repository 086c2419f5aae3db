"""The one pipeline shared by the CLI, the HTTP server and the evaluation harness: validate the
question, embed it, retrieve, and compose the extractive answer. Heavy things (model, index)
load once, lazily, in :meth:`Pipeline.warm_up`.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Callable, Sequence

import numpy as np

from .answerer import Answerer, Candidate
from .archive import InMemoryArchive
from .config import Settings
from .corpus import safe_doc_path
from .errors import (BadQuestionError, BadSpanError, CorruptIndexError, EmptyQuestionError,
                     IndexMismatchError, QuestionTooLongError, UnknownDocumentError)
from .index import ArchiveIndex, build_index, expected_meta
from .retriever import MODES, Retriever
from .tokenize import tokenize
from .types import Answer, Document, Hit


#: A UTF-16 surrogate code point on its own (valid text has none in a Python str).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class Pipeline:
    """Question in, :class:`~rag.types.Answer` out.

    Args:
        settings: All tunables (default: ``Settings.from_env()``).
        embedder: An object with the :class:`rag.embedding.Embedder` interface (default: the
            configured sentence-transformers model, loaded on warm-up).
        auto_index: Build the index when missing, stale or corrupt (True, the CLI default), or
            raise :class:`IndexMismatchError` / :class:`CorruptIndexError` (False).
        notify: Called with one-line progress messages (default: print to stderr).
        progress: Optional ``(stage, done, total)`` callback while embedding for the index.
    """

    def __init__(self, settings: Settings | None = None, embedder=None, *, auto_index: bool = True,
                 notify: Callable[[str], None] | None = None,
                 progress: Callable[[str, int, int], None] | None = None):
        self.settings = settings or Settings.from_env()
        self._embedder = embedder
        self.auto_index = auto_index
        self.notify = notify or (lambda msg: print(msg, file=sys.stderr))
        self.progress = progress
        self._index: ArchiveIndex | None = None
        self._archive: InMemoryArchive | None = None
        self._retriever: Retriever | None = None
        self._answerer = Answerer(self.settings)
        self._lock = threading.RLock()
        self.index_build_ms: float | None = None

    # --- loading ----------------------------------------------------------------------------

    @property
    def embedder(self):
        """The embedder, created (not yet loaded) on first access."""
        with self._lock:
            if self._embedder is None:
                from .embedding import Embedder

                self._embedder = Embedder(self.settings)
            return self._embedder

    def warm_up(self) -> "Pipeline":
        """Load the model and the index (building it if needed). Idempotent and thread-safe.

        Raises:
            ModelError: the embedding model cannot be loaded.
            CorpusError: the corpus folder is missing or empty (when building).
            IndexMismatchError, CorruptIndexError: the index is unusable and ``auto_index`` is off.
        """
        with self._lock:
            if self._index is not None:
                return self
            embedder = self.embedder
            embedder.warm_up()
            directory = self.settings.resolved_index_dir
            expect = expected_meta(self.settings, embedder.model_id, embedder.dim,
                                   getattr(embedder, "path", None))
            try:
                index = ArchiveIndex.load(directory, expect)
            except (IndexMismatchError, CorruptIndexError) as err:
                if not self.auto_index:
                    raise
                missing = not (directory / "meta.json").exists()
                self.notify(("building the index" if missing else f"rebuilding the index ({err.message})")
                            + f" at {directory} ...")
                index = self.rebuild()
            self._set_index(index)
            # Fill lazy caches (jieba dictionary, first torch inference) before the first real
            # question: measured ~0.9 s otherwise, which showed up as p95 latency in the server.
            tokenize("预热")
            self.embed_question("预热")
            self._answerer.warm_up(self._archive, list(self._index.documents))
            return self

    def rebuild(self) -> ArchiveIndex:
        """Build the index from the corpus, save it atomically, and use it.

        Raises:
            CorpusError: the corpus folder is missing or empty.
            CacheDirError: the index directory cannot be written.
        """
        with self._lock:
            embedder = self.embedder
            embedder.warm_up()
            started = time.perf_counter()
            index = build_index(self.settings, embedder, progress=self.progress)
            index.save(self.settings.resolved_index_dir)
            self.index_build_ms = _ms(started)
            self._set_index(index)
            return index

    def _set_index(self, index: ArchiveIndex) -> None:
        self._index = index
        self._archive = InMemoryArchive(index.documents)
        self._retriever = self._make_retriever(self.settings)

    def _make_retriever(self, settings: Settings) -> Retriever:
        return Retriever(self.index if self._index is None else self._index,
                         candidate_k=settings.candidate_k, dense_weight=settings.dense_weight,
                         fusion=settings.fusion, sentence_weight=settings.sentence_weight)

    def configure_retriever(self, dense_weight: float | None = None, fusion: str | None = None,
                            sentence_weight: float | None = None) -> None:
        """Swap fusion parameters on the loaded index (used by ablations; no reload)."""
        self._retriever = self._make_retriever(self.settings.replace(
            dense_weight=dense_weight, fusion=fusion, sentence_weight=sentence_weight))

    @property
    def index(self) -> ArchiveIndex:
        """The loaded index (warming up first if needed)."""
        if self._index is None:
            self.warm_up()
        assert self._index is not None
        return self._index

    @property
    def archive(self) -> InMemoryArchive:
        """What the answerer reads of the archive: stored texts and term statistics."""
        if self._archive is None:
            self.warm_up()
        assert self._archive is not None
        return self._archive

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self.warm_up()
        assert self._retriever is not None
        return self._retriever

    # --- questions --------------------------------------------------------------------------

    def validate_question(self, question: object) -> str:
        """Return the stripped question.

        Raises:
            EmptyQuestionError: not a string, or empty / whitespace only.
            BadQuestionError: holds a lone UTF-16 surrogate (U+D800..U+DFFF): a ``\\ud800``
                escape in JSON, or a byte that is not UTF-8 (Python decodes argv and files with
                ``surrogateescape``, so byte 0xED arrives as U+DCED). Such text cannot be
                encoded, tokenised or printed.
            QuestionTooLongError: longer than ``settings.max_question_chars`` characters.
        """
        if not isinstance(question, str) or not question.strip():
            raise EmptyQuestionError("the question is empty", hint="ask something, e.g. 委员对职业教育提了什么建议")
        bad = _LONE_SURROGATE.search(question)
        if bad:
            code = ord(bad.group(0))
            what = (f"the byte 0x{code - 0xDC00:02X}, which is not valid UTF-8" if 0xDC80 <= code <= 0xDCFF
                    else f"a lone UTF-16 surrogate U+{code:04X}, which is not valid Unicode text")
            raise BadQuestionError(f"the question has {what} (character {bad.start() + 1})",
                                   hint="send the question as UTF-8 text")
        question = question.strip()
        if len(question) > self.settings.max_question_chars:
            raise QuestionTooLongError(
                f"the question has {len(question)} characters; the limit is {self.settings.max_question_chars}",
                hint="shorten it or raise RAG_MAX_QUESTION_CHARS")
        return question

    def embed_question(self, question: str) -> np.ndarray:
        """float32 (dim,), L2-normalised embedding of ``question`` with the query prompt."""
        return np.asarray(self.embedder.embed_queries([question])[0], dtype=np.float32)

    def retrieve(self, question: str, top_k: int | None = None, mode: str = "hybrid",
                 timings: dict[str, float] | None = None, query_vector: np.ndarray | None = None) -> list[Hit]:
        """Validated question -> hits in rank order (see :meth:`Retriever.search`).

        Raises:
            EmptyQuestionError, QuestionTooLongError: bad question.
            ValueError: unknown ``mode`` or ``top_k`` < 1.
        """
        question = self.validate_question(question)
        if mode not in MODES:
            raise ValueError(f"unknown retriever {mode!r}; choose one of {', '.join(MODES)}")
        top_k = self.settings.top_k if top_k is None else int(top_k)
        retriever = self.retriever
        timings = {} if timings is None else timings
        if query_vector is None and mode != "bm25":
            started = time.perf_counter()
            query_vector = self.embed_question(question)
            timings["embed"] = _ms(started)
        started = time.perf_counter()
        hits = retriever.search(question, query_vector, top_k=top_k, mode=mode)
        timings["retrieve"] = _ms(started)
        return hits

    def ask(self, question: str, top_k: int | None = None, mode: str = "hybrid",
            query_vector: np.ndarray | None = None) -> Answer:
        """Answer ``question`` from the archive.

        The answer is composed from the sentences of the first ``settings.answer_hits`` hits, so
        asking for more hits (e.g. ``top_k=10`` in evaluation) does not change the answer.

        Returns:
            An :class:`Answer`; ``timings_ms`` has ``embed``, ``retrieve``, ``answer``, ``total`` (ms).

        Raises:
            EmptyQuestionError, QuestionTooLongError: bad question.
            ValueError: unknown ``mode`` or ``top_k`` < 1.
        """
        total_started = time.perf_counter()
        question = self.validate_question(question)
        self.warm_up()
        timings: dict[str, float] = {"embed": 0.0}
        if query_vector is None:
            started = time.perf_counter()
            query_vector = self.embed_question(question)
            timings["embed"] = _ms(started)
        hits = self.retrieve(question, top_k=top_k, mode=mode, timings=timings, query_vector=query_vector)
        started = time.perf_counter()
        evidence = hits[:self.settings.answer_hits]
        draft = self._answerer.answer(question, query_vector, evidence, self.candidates(evidence),
                                      self.archive)
        timings["answer"] = _ms(started)
        timings["total"] = _ms(total_started)
        return Answer(question=question, answer=draft.text, abstained=draft.abstained,
                      citations=tuple(draft.citations), hits=tuple(hits), timings_ms=timings,
                      confidence=draft.confidence, question_type=draft.question_type,
                      low_confidence=draft.low_confidence)

    def candidates(self, hits: Sequence[Hit]) -> list[Candidate]:
        """The sentences inside ``hits`` (each once, with the best rank of a chunk holding it).

        Each candidate also carries its heading flag and section (the nearest run of heading
        lines before it: a title and its byline), recorded per sentence at index time.
        """
        index = self.index
        seen: set[int] = set()
        out: list[Candidate] = []
        for hit in hits:
            ordinal = index.chunk_by_id[hit.chunk_id]
            for i in index.chunk_sentences[ordinal]:
                if i in seen:
                    continue
                seen.add(i)
                rec = index.sentences[i]
                out.append(Candidate(span=rec.span, vector=index.sentence_vectors[i], chunk_rank=hit.rank,
                                     chunk_score=hit.score, paragraph=rec.paragraph, sentence_index=i,
                                     heading=rec.heading, section=rec.section))
        return out

    # --- documents --------------------------------------------------------------------------

    def document(self, doc_id: str) -> Document:
        """The indexed document ``doc_id``.

        Raises:
            UnknownDocumentError: not a plain file stem of the corpus (path traversal included).
        """
        safe_doc_path(self.settings.corpus_dir, doc_id)  # rejects traversal before any lookup
        doc = self.index.documents.get(doc_id)
        if doc is None:
            raise UnknownDocumentError(f"unknown document {doc_id!r}")
        return doc

    def span(self, doc_id: str, start: int, end: int) -> str:
        """``raw[start:end]`` of ``doc_id``.

        Raises:
            UnknownDocumentError: unknown ``doc_id``.
            BadSpanError: ``start``/``end`` outside ``[0, len(raw)]`` or ``start > end``.
        """
        raw = self.document(doc_id).text
        if not (0 <= start <= end <= len(raw)):
            raise BadSpanError(f"span [{start}, {end}) is not inside document {doc_id} "
                               f"(0..{len(raw)}) or is reversed")
        return raw[start:end]

    def health(self) -> dict:
        """Model id, index metadata and chunk count (warms up first)."""
        index = self.index
        return {"status": "ok", "model_id": self.embedder.model_id, "dim": self.embedder.dim,
                "chunks": len(index.chunks), "sentences": len(index.sentences),
                "documents": len(index.documents), "index": index.meta,
                "index_dir": str(self.settings.resolved_index_dir)}
