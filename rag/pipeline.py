"""The one pipeline shared by the CLI, the HTTP server and the evaluation harness: validate the
question, embed it, retrieve, and compose the extractive answer; and ingest (add, remove, sync).
Heavy things (model, store caches) load once, lazily, in :meth:`Pipeline.warm_up`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .answerer import Answerer, Candidate
from .config import Settings
from .errors import (BadDocumentIdError, BadQuestionError, BadSpanError, CorpusError, CorruptIndexError,
                     EmptyQuestionError, IndexMismatchError, QuestionTooLongError, StoreBusyError,
                     UnknownDocumentError)
from .ingest.ids import check_doc_id
from .ingest.prepare import prepare_document
from .ingest.runner import Ingestor, IngestReport, embed_texts, folder_signature
from .retriever import MODES, Retriever
from .store.base import DocumentInfo, Store
from .store.embedded import EmbeddedStore, clean_stale_siblings
from .store.meta import expected_meta
from .tokenize import tokenize
from .types import Answer, Document, Hit

#: How long warm-up waits for another process that is building an empty store (first use with
#: several server workers): a first build of the bundled archive takes about a minute here.
FIRST_BUILD_WAIT_S = 1800.0
#: Archives of at most this many documents have their sentences tagged at warm-up (the bundled
#: five take about a second); larger ones are tagged as questions reach them.
WARM_TAG_MAX_DOCUMENTS = 50


#: A UTF-16 surrogate code point on its own (valid text has none in a Python str).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class Pipeline:
    """Question in, :class:`~rag.types.Answer` out; documents in and out of the store.

    Args:
        settings: All tunables (default: ``Settings.from_env()``).
        embedder: An object with the :class:`rag.embedding.Embedder` interface (default: the
            configured sentence-transformers model, loaded on warm-up).
        auto_index: On warm-up, build the store from the corpus folder when it is empty, sync it
            when the folder changed (size/mtime signature), and rebuild it when it was built with
            other settings (True, the CLI default); or raise :class:`IndexMismatchError` (False).
        notify: Called with one-line progress messages (default: print to stderr).
        progress: Optional ``(stage, done, total)`` callback while ingesting.
    """

    def __init__(self, settings: Settings | None = None, embedder=None, *, auto_index: bool = True,
                 notify: Callable[[str], None] | None = None,
                 progress: Callable[[str, int, int], None] | None = None):
        self.settings = settings or Settings.from_env()
        self._embedder = embedder
        self.auto_index = auto_index
        self.notify = notify or (lambda msg: print(msg, file=sys.stderr))
        self.progress = progress
        self._store: Store | None = None
        self._checked = False
        self._retriever: Retriever | None = None
        self._answerer = Answerer(self.settings)
        self._lock = threading.RLock()
        self._warm = False
        self.index_build_ms: float | None = None
        self.last_sync: IngestReport | None = None

    # --- loading ----------------------------------------------------------------------------

    @property
    def embedder(self):
        """The embedder, created (not yet loaded) on first access."""
        with self._lock:
            if self._embedder is None:
                from .embedding import Embedder

                self._embedder = Embedder(self.settings)
            return self._embedder

    def _expect(self) -> dict:
        self.embedder.warm_up()
        return expected_meta(self.settings, self.embedder)

    def _new_store(self) -> Store:
        """A handle on the configured store: the embedded store of the corpus folder, or the
        Milvus collections (``RAG_BACKEND=milvus``)."""
        settings = self.settings
        if settings.backend == "milvus":
            from .store.milvus import MilvusStore

            return MilvusStore(settings.resolved_milvus_uri, token=settings.milvus_token,
                               prefix=settings.resolved_milvus_prefix, timeout=settings.milvus_timeout,
                               index=settings.milvus_index, notify=self.notify, write_wait_s=settings.write_wait_s)
        clean_stale_siblings(settings.resolved_index_dir)
        return EmbeddedStore(settings.resolved_index_dir, notify=self.notify, write_wait_s=settings.write_wait_s)

    def open_store(self, check_model: bool = True) -> Store:
        """The store of the configured corpus (created when missing).

        Args:
            check_model: Load the model and check the store was built with it and the current
                chunk settings (listing and removing documents need neither).

        Raises:
            IndexMismatchError: built differently (``auto_index`` off, or a rebuild is refused).
            CorruptIndexError: the database is unreadable.
            CacheDirError: the store folder cannot be created.
            StoreUnavailableError: the Milvus server cannot be reached.
        """
        with self._lock:
            if self._store is None:
                self._store = self._new_store()
            if check_model and not self._checked:
                try:
                    self._store.adopt_or_check(self._expect())
                except IndexMismatchError as err:
                    if not self.auto_index:
                        raise
                    self.notify(f"rebuilding the store ({err.message}) ...")
                    self.rebuild()
                self._checked = True
            return self._store

    @property
    def store(self) -> Store:
        """The checked store (model loaded)."""
        return self.open_store(check_model=True)

    def warm_up(self) -> "Pipeline":
        """Load the model and the store with its search caches (building or syncing the store
        from the corpus folder first when ``auto_index``). Idempotent and thread-safe.

        Raises:
            ModelError: the embedding model cannot be loaded.
            CorpusError: the store is empty and the corpus folder is missing or yields nothing.
            IndexMismatchError, CorruptIndexError: the store is unusable and ``auto_index`` is off.
        """
        with self._lock:
            if self._warm:
                return self
            store = self.store
            if self.auto_index:
                self._auto_sync(store)
            elif store.count_documents() == 0:
                raise CorruptIndexError(f"the store at {store.location} holds no document",
                                        hint="run `rag sync` or `rag add PATH`")
            store.warm_caches()
            self._retriever = self._make_retriever(self.settings)
            # Fill lazy caches (jieba dictionary, first torch inference) before the first real
            # question: measured ~0.9 s otherwise, which showed up as p95 latency in the server.
            tokenize("预热")
            self.embed_question("预热")
            # Tag a small archive's documents now (first questions stay fast); a large one lazily.
            infos = store.list_documents() if store.count_documents() <= WARM_TAG_MAX_DOCUMENTS else []
            self._answerer.warm_up(store, [info.doc_id for info in infos])
            self._warm = True
            return self

    def _auto_sync(self, store: Store) -> None:
        """Sync the corpus folder when its stat signature changed since the last sync."""
        corpus = Path(self.settings.corpus_dir).expanduser()
        empty = store.count_documents() == 0
        if not corpus.is_dir():
            if empty:
                folder_signature(corpus)  # raises the CorpusError naming the folder
            return
        key = f"corpus_signature:{corpus.resolve()}"
        signature = folder_signature(corpus)
        if store.meta.get(key) == signature:
            return
        self.notify(f"building the store of {corpus} at {store.location} ..." if empty
                    else f"the corpus folder {corpus} changed; syncing the store ...")
        started = time.perf_counter()
        usual_wait, store.write_wait_s = store.write_wait_s, FIRST_BUILD_WAIT_S if empty else 0.0
        try:
            report = self.ingestor(store).sync(corpus)
        except StoreBusyError:
            if empty:
                raise
            self.notify("another process is writing to the store; answering from it as it is")
            return
        finally:
            store.write_wait_s = usual_wait
        self.last_sync = report
        for path, message in report.failed + report.skipped:
            self.notify(f"  skipped {path}: {message}")
        if store.count_documents() == 0:
            raise CorpusError(f"corpus folder {str(corpus)!r} holds no usable document",
                              hint="set RAG_CORPUS_DIR or pass --corpus to a folder of documents")
        store.set_meta(key, signature)
        if report.changed:
            self.index_build_ms = _ms(started)
            self.notify(f"  {len(report.added)} added, {len(report.replaced)} re-indexed, "
                        f"{len(report.removed)} removed in {report.seconds:.1f} s")

    def ingestor(self, store: Store | None = None) -> Ingestor:
        """An :class:`Ingestor` over the (checked) store with the loaded embedder."""
        return Ingestor(store or self.store, self.embedder, self.settings, progress=self.progress)

    def rebuild(self) -> Store:
        """Re-chunk and re-embed every stored document (from its stored text, so uploads and
        files no longer on disk survive) into a fresh store, then swap it in; with no readable
        store, build from the corpus folder. Other processes' writes wait meanwhile. On Milvus
        the fresh store is a new set of collections under the same prefix (see
        :meth:`rag.store.milvus.MilvusStore.new_set`).

        Raises:
            CorpusError: nothing to rebuild from.
            CacheDirError, StoreBusyError: the store cannot be written.
        """
        if self.settings.backend == "milvus":
            return self._rebuild_milvus()
        with self._lock:
            started = time.perf_counter()
            directory = self.settings.resolved_index_dir
            expect = self._expect()
            old = self._store
            if old is None and (directory / "store.sqlite").is_file():
                try:
                    old = EmbeddedStore(directory, notify=self.notify)
                except (CorruptIndexError, IndexMismatchError) as err:
                    self.notify(f"the old store is unreadable ({err.message}); building from the corpus folder")
                    old = None
            tmp = directory.with_name(f"{directory.name}.rebuild-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            fresh = EmbeddedStore(tmp, expect, notify=self.notify)
            lock = old.writer() if old is not None else contextlib.nullcontext()
            with lock:
                self._copy_documents(old, fresh)
                if old is not None:
                    old.close()
                fresh.close()
                if directory.exists():
                    retired = directory.with_name(f"{directory.name}.old-{os.getpid()}")
                    os.replace(directory, retired)
                    os.replace(tmp, directory)
                    shutil.rmtree(retired, ignore_errors=True)
                else:
                    os.replace(tmp, directory)
            self._store = EmbeddedStore(directory, expect, notify=self.notify,
                                        write_wait_s=self.settings.write_wait_s)
            self._checked = True
            self._warm = False
            self.index_build_ms = _ms(started)
            if self._store.count_documents() == 0 and self.auto_index:
                self._auto_sync(self._store)
            return self._store

    def _copy_documents(self, old: Store | None, fresh: Store) -> None:
        """Re-chunk and re-embed every document of ``old`` into ``fresh`` (a rebuild), with the
        corpus folders' sync signatures."""
        infos = old.list_documents() if old is not None else []
        for k, info in enumerate(infos, start=1):
            doc = old.document(info.doc_id)
            prepared = prepare_document(doc, info.sha256, self.settings.chunk_size,
                                        self.settings.chunk_overlap, bool(self.settings.section_context))
            vectors = embed_texts(self.embedder, prepared.embedding_texts(), self.settings.index_threads)
            n = len(prepared.chunks)
            fresh.upsert(prepared, vectors[:n], vectors[n:], root=info.root, size=info.size, mtime_ns=info.mtime_ns)
            if self.progress:
                self.progress("documents", k, len(infos))
        if old is not None:
            for key, value in old.meta.items():
                if key.startswith("corpus_signature:"):
                    fresh.set_meta(key, value)

    def _rebuild_milvus(self) -> Store:
        """:meth:`rebuild` on Milvus: fill a new set of collections under the writer lease, then
        point the root at it and drop the old set (readers follow on their next refresh)."""
        with self._lock:
            started = time.perf_counter()
            expect = self._expect()
            store = self._store if self._store is not None else self._new_store()
            with store.writer():
                fresh = store.new_set(expect)
                self._copy_documents(store, fresh)
                store.activate(fresh)
            self._store = store
            store.adopt_or_check(expect)
            self._checked = True
            self._warm = False
            self.index_build_ms = _ms(started)
            if store.count_documents() == 0 and self.auto_index:
                self._auto_sync(store)
            return store

    def _make_retriever(self, settings: Settings) -> Retriever:
        return Retriever(self.store, candidate_k=settings.candidate_k, dense_weight=settings.dense_weight,
                         fusion=settings.fusion, sentence_weight=settings.sentence_weight)

    def configure_retriever(self, dense_weight: float | None = None, fusion: str | None = None,
                            sentence_weight: float | None = None) -> None:
        """Swap fusion parameters on the loaded store (used by ablations; no reload)."""
        self._retriever = self._make_retriever(self.settings.replace(
            dense_weight=dense_weight, fusion=fusion, sentence_weight=sentence_weight))

    @property
    def archive(self) -> Store:
        """What the answerer reads of the archive (:class:`rag.archive.ArchiveView`): the store."""
        self.warm_up()
        return self.store

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self.warm_up()
        assert self._retriever is not None
        return self._retriever

    # --- documents in and out ------------------------------------------------------------------

    def add(self, paths: Sequence[Path | str], doc_id: str | None = None, replace: bool = False) -> IngestReport:
        """Add files or folders (see :meth:`rag.ingest.runner.Ingestor.add_paths`); files inside
        the corpus folder take their relative path as id."""
        return self.ingestor().add_paths(paths, doc_id=doc_id, replace=replace,
                                         corpus_root=Path(self.settings.corpus_dir).expanduser())

    def add_upload(self, name: str, data: bytes, doc_id: str | None = None, replace: bool = False) -> IngestReport:
        """Add an uploaded file (see :meth:`rag.ingest.runner.Ingestor.add_upload`)."""
        return self.ingestor().add_upload(name, data, doc_id=doc_id, replace=replace)

    def remove(self, doc_ids: Sequence[str]) -> IngestReport:
        """Remove documents by id (no model needed)."""
        store = self.open_store(check_model=False)
        return Ingestor(store, None, self.settings).remove(doc_ids)

    def sync(self, folder: Path | str | None = None) -> IngestReport:
        """Make the store match ``folder`` (default: the corpus folder)."""
        folder = Path(folder if folder is not None else self.settings.corpus_dir).expanduser()
        store = self.store
        report = self.ingestor(store).sync(folder)
        store.set_meta(f"corpus_signature:{folder.resolve()}", folder_signature(folder))
        return report

    def documents(self) -> list[DocumentInfo]:
        """Every stored document (no model needed)."""
        store = self.open_store(check_model=False)
        store.refresh()
        return store.list_documents()

    def document(self, doc_id: str) -> Document:
        """The stored document ``doc_id`` (no model needed).

        Raises:
            UnknownDocumentError: not a usable id, or no such document.
        """
        try:
            check_doc_id(doc_id)
        except BadDocumentIdError:
            raise UnknownDocumentError(f"unknown document {doc_id!r}",
                                       hint="`rag docs` lists the document ids") from None
        store = self.open_store(check_model=False)
        store.refresh()
        doc = store.document(doc_id)
        if doc is None:
            raise UnknownDocumentError(f"unknown document {doc_id!r}", hint="`rag docs` lists the document ids")
        return doc

    def document_info(self, doc_id: str) -> DocumentInfo:
        """The list row of ``doc_id``.

        Raises:
            UnknownDocumentError: no such document.
        """
        self.document(doc_id)
        info = self.open_store(check_model=False).document_info(doc_id)
        if info is None:
            raise UnknownDocumentError(f"unknown document {doc_id!r}")
        return info

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
        """Validated question -> hits in rank order (see :meth:`Retriever.search`). Changes other
        processes committed to the store are picked up first.

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
        self.store.refresh()
        hits = retriever.search(question, query_vector, top_k=top_k, mode=mode)
        timings["retrieve"] = _ms(started)
        return hits

    def ask(self, question: str, top_k: int | None = None, mode: str = "hybrid",
            query_vector: np.ndarray | None = None) -> Answer:
        """Answer ``question`` from the archive.

        The answer is composed from the sentences of the first :attr:`answer_hits` hits, so
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
        top_k = self.settings.top_k if top_k is None else int(top_k)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        # The answerer may read more hits than are shown (answer_hits > top_k).
        hits = self.retrieve(question, top_k=max(top_k, self.answer_hits), mode=mode, timings=timings,
                             query_vector=query_vector)
        started = time.perf_counter()
        evidence, candidates = self.evidence(question, query_vector, hits)
        hits = hits[:top_k]
        store = self.store
        draft = self._answerer.answer(question, query_vector, evidence, candidates, store)
        citations = []
        for c in draft.citations:
            doc = store.document(c.doc_id)
            page = doc.page_of(c.start) if doc is not None else None
            citations.append(dataclasses.replace(c, page=page) if page is not None else c)
        timings["answer"] = _ms(started)
        timings["total"] = _ms(total_started)
        return Answer(question=question, answer=draft.text, abstained=draft.abstained,
                      citations=tuple(citations), hits=tuple(hits), timings_ms=timings,
                      confidence=draft.confidence, question_type=draft.question_type,
                      low_confidence=draft.low_confidence)

    @property
    def answer_hits(self) -> int:
        """Hits the answerer reads: ``settings.answer_hits``, else the answer model's
        cross-validated choice."""
        if self.settings.answer_hits is not None:
            return max(1, int(self.settings.answer_hits))
        return self._answerer.answer_hits

    def evidence(self, question: str, query_vector: np.ndarray | None, hits: Sequence[Hit],
                 answer_hits: int | None = None) -> tuple[list[Hit], list[Candidate]]:
        """What the answerer reads for ``question``: the first ``answer_hits`` (default
        :attr:`answer_hits`) of the question's ``hits`` and the candidate sentences inside them.

        Used by :meth:`ask` and by the answer model's fit and diagnosis scripts
        (``eval/fit_answerer.py``), so they see exactly what ``rag ask`` answers from.
        """
        evidence = list(hits[:answer_hits or self.answer_hits])
        return evidence, self.candidates(evidence)

    def candidates(self, hits: Sequence[Hit]) -> list[Candidate]:
        """The sentences inside ``hits`` (each once, with the best rank of a chunk holding it),
        with their heading flag, section, paragraph and store-wide ordinal."""
        stored = self.store.fetch_chunks([hit.chunk_id for hit in hits], with_sentences=True)
        seen: set[int] = set()
        out: list[Candidate] = []
        for hit in hits:
            item = stored.get(hit.chunk_id)
            for s in item.sentences if item is not None else ():
                if s.sentence_index in seen:
                    continue
                seen.add(s.sentence_index)
                out.append(Candidate(span=s.span, vector=s.vector, chunk_rank=hit.rank, chunk_score=hit.score,
                                     paragraph=s.paragraph, sentence_index=s.sentence_index,
                                     heading=s.heading, section=s.section))
        return out

    def span(self, doc_id: str, start: int, end: int) -> str:
        """``stored[start:end]`` of ``doc_id``.

        Raises:
            UnknownDocumentError: unknown ``doc_id``.
            BadSpanError: ``start``/``end`` outside ``[0, len(stored)]`` or ``start > end``.
        """
        raw = self.document(doc_id).text
        if not (0 <= start <= end <= len(raw)):
            raise BadSpanError(f"span [{start}, {end}) is not inside document {doc_id} "
                               f"(0..{len(raw)}) or is reversed")
        return raw[start:end]

    def health(self) -> dict:
        """Model id, store metadata and counts (warms up first)."""
        self.warm_up()
        store = self.store
        return {"status": "ok", "model_id": self.embedder.model_id, "dim": self.embedder.dim,
                "chunks": store.count_chunks(), "sentences": store.count_sentences(),
                "documents": store.count_documents(), "generation": store.generation(),
                "index": {k: v for k, v in store.meta.items() if not k.startswith("corpus_signature:")},
                "index_dir": store.location}
