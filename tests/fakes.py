"""Test doubles: a deterministic, model-free embedder with the :class:`rag.embedding.Embedder`
interface. Vectors are L2-normalised hashed character uni/bi-gram counts, so texts sharing
characters are similar, which is enough to exercise dense retrieval and fusion."""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Sequence

import numpy as np


class FakeEmbedder:
    """Hashed character n-gram embedder. ``dim`` 256, float32, rows L2-normalised."""

    def __init__(self, dim: int = 256, model_id: str = "fake-hash-embedder"):
        self.dim = dim
        self.model_id = model_id
        self.warm_calls = 0
        self.max_seq_length = 512

    def warm_up(self) -> None:
        self.warm_calls += 1

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        chars = [c for c in unicodedata.normalize("NFKC", text) if not c.isspace()]
        grams = chars + [a + b for a, b in zip(chars, chars[1:])]
        for gram in grams:
            h = int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=4).digest(), "little")
            vec[h % self.dim] += 1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def _many(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(t) for t in texts]).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._many(texts)

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False,
                       threads: int | None = None) -> np.ndarray:
        return self._many(texts)
