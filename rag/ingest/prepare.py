"""A document's stored text -> what the store keeps: sentences with their layout facts, chunks
with the sentences inside them and their BM25 term counts, and the document's unit term counts.
Everything but the vectors; time is linear in the document's length.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from rag.archive import unit_term_counts
from rag.chunking import chunk_document
from rag.store.base import ChunkRecord, PreparedDocument, SentenceRecord
from rag.text import document_spans
from rag.types import Document

from .metadata import extract_date, extract_title
from .readers import StoredText
from .tokens import BlockTokenizer


def make_document(doc_id: str, stored: StoredText, source: str = "") -> Document:
    """A :class:`Document` from a reader's output: title from the first heading line, else the
    file's metadata title; date from the document's head."""
    title = extract_title(stored.text) or stored.title
    return Document(doc_id=doc_id, path=source, title=title, date=extract_date(stored.text),
                    text=stored.text, format=stored.format, pages=stored.pages)


def prepare_document(document: Document, sha256: str, chunk_size: int, chunk_overlap: int,
                     section_context: bool = True, tokenizer: BlockTokenizer | None = None) -> PreparedDocument:
    """Lay out, chunk and count the terms of one document. Each jieba block is segmented once
    (chunk overlaps, section headings and term-statistics units reuse it), see
    :mod:`rag.ingest.tokens`.

    Args:
        document: The document with its stored text.
        sha256: Hex SHA-256 of the source bytes.
        chunk_size, chunk_overlap: Chunking parameters (characters of clean text).
        section_context: Prepend each chunk's section headings to its retrieval text.
        tokenizer: A :class:`BlockTokenizer` to share across documents (default: a new one).

    Returns:
        The :class:`PreparedDocument`.

    Raises:
        ValueError: bad ``chunk_size``/``chunk_overlap``.
    """
    tokenize = (tokenizer or BlockTokenizer()).tokenize
    layout = document_spans(document.doc_id, document.text)
    sentences: list[SentenceRecord] = []
    block: list[str] = []
    previous_was_heading = False
    for ordinal, (span, paragraph, heading) in enumerate(
            zip(layout.sentences, layout.paragraph_ids, layout.headings)):
        sentences.append(SentenceRecord(ordinal=ordinal, span=span, paragraph=paragraph,
                                        heading=heading, section=" ".join(block)))
        if heading:
            block = (block if previous_was_heading else []) + [span.clean]
        previous_was_heading = heading

    chunks: list[ChunkRecord] = []
    lo = 0  # sentences are ordered and disjoint: the ones inside a chunk form a range
    for ordinal, chunk in enumerate(chunk_document(document, layout, chunk_size, chunk_overlap)):
        while lo < len(sentences) and sentences[lo].span.start < chunk.start:
            lo += 1
        hi = lo
        while hi < len(sentences) and sentences[hi].span.end <= chunk.end:
            hi += 1
        context = chunk.context if section_context else ""
        text = f"{context}\n{chunk.clean}" if context else chunk.clean
        chunks.append(ChunkRecord(ordinal=ordinal, start=chunk.start, end=chunk.end, clean=chunk.clean,
                                  context=context, sentence_lo=lo, sentence_hi=hi,
                                  terms=Counter(tokenize(text) or [""])))
    n_units, unit_df = unit_term_counts(document.text, tokenize)
    return PreparedDocument(document=document, sha256=sha256, chunks=tuple(chunks),
                            sentences=tuple(sentences), n_units=n_units, unit_df=dict(unit_df))


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_documents(folder: Path | str) -> list[Document]:
    """Read every readable file of a folder (recursively) into documents, in id order; files
    that cannot be read are left out (``rag sync`` reports them).

    Raises:
        CorpusError: the folder does not exist.
    """
    from rag.errors import IngestError

    from .ids import scan_folder
    from .readers import read_file

    docs = []
    for doc_id, path in scan_folder(folder).files.items():
        try:
            docs.append(make_document(doc_id, read_file(path), str(path.resolve())))
        except IngestError:
            continue
    return docs
