"""The archive's source of truth and its searches: the :class:`~rag.store.base.Store` protocol
and the embedded SQLite implementation (:class:`~rag.store.embedded.EmbeddedStore`)."""

from .base import (ChunkRecord, DocumentInfo, PreparedDocument, SentenceRecord, Store, StoredChunk,
                   StoredSentence)
from .embedded import EmbeddedStore
from .meta import expected_meta, model_fingerprint

__all__ = ["Store", "EmbeddedStore", "PreparedDocument", "ChunkRecord", "SentenceRecord", "DocumentInfo",
           "StoredChunk", "StoredSentence", "expected_meta", "model_fingerprint"]
