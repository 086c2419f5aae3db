"""Dense, lexical and fused retrieval over any :class:`~rag.store.base.Store`, returning
:class:`~rag.types.Hit` lists. The retriever never touches files or models: the pipeline embeds
the question and passes the vector in.

Dense: a chunk's score mixes its own cosine with its best sentence's cosine,
``(1 - sentence_weight) * cos(chunk) + sentence_weight * max cos(sentence)``: a one-sentence
paraphrase is diluted in a 400-character chunk vector but not in its own sentence vector. The
candidates are the :data:`DENSE_POOL` nearest chunks of the store's chunk index; only their
sentence vectors are read from the store (no sentence index in memory, which would not fit at
10^6 chunks).

Fusion (``hybrid``): each component contributes its ``candidate_k`` best chunks; on the union,
each component's scores are min-max normalised to [0, 1] over the candidates (a chunk a component
did not return gets 0 from it), and the fused score is the convex combination
``dense_weight * dense + (1 - dense_weight) * bm25``. This is "CombSUM with min-max
normalisation" (Fox & Shaw, TREC-2 1994; Lee, SIGIR 1997); unlike equal-weight reciprocal rank
fusion (Cormack et al., SIGIR 2009) it keeps BM25's score margins, which on this archive carry
most of the signal. Weighted RRF is available as ``fusion="rrf"`` for ablation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .tokenize import tokenize
from .types import Hit

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")

#: RRF constant k=60 from Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms
#: Condorcet and individual Rank Learning Methods", SIGIR 2009.
RRF_K = 60
#: Nearest chunks re-scored with their best sentence (README "Retrieval without a sentence index":
#: 100 keeps dev/held-out recall@5 and MRR@10 at their values with the former sentence index).
DENSE_POOL = 100


def _minmax(values: dict[str, float]) -> dict[str, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi - lo < 1e-9:
        return {k: (1.0 if hi > 0 else 0.0) for k in values}
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


def _order_key(chunk_id: str) -> tuple[str, int]:
    doc_id, _, ordinal = chunk_id.rpartition("#")
    return doc_id, int(ordinal) if ordinal.isdigit() else 0


class Retriever:
    """Ranks the chunks of one store for a question.

    Args:
        store: The store (:class:`rag.store.base.Store`).
        candidate_k: Chunks each component contributes to fusion (raised to ``top_k`` when smaller).
        dense_weight: Weight of the dense component in [0, 1]; BM25 gets ``1 - dense_weight``.
        fusion: ``"score"`` (min-max CombSUM, default) or ``"rrf"`` (weighted reciprocal rank).
        sentence_weight: Share of the best sentence cosine in a chunk's dense score.
        dense_pool: Nearest chunks re-scored with their sentences (at least ``candidate_k``).

    Raises:
        ValueError: ``dense_weight`` outside [0, 1] or unknown ``fusion``.
    """

    def __init__(self, store, candidate_k: int = 30, dense_weight: float = 0.5, fusion: str = "score",
                 sentence_weight: float = 0.5, dense_pool: int = DENSE_POOL):
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be in [0, 1], got {dense_weight}")
        if fusion not in ("score", "rrf"):
            raise ValueError(f"fusion must be 'score' or 'rrf', got {fusion!r}")
        self.store = store
        self.candidate_k = candidate_k
        self.dense_weight = dense_weight
        self.fusion = fusion
        self.sentence_weight = sentence_weight
        self.dense_pool = dense_pool

    def dense_scores(self, query_vector: np.ndarray, top_k: int) -> dict[str, float]:
        """``chunk_id -> dense score in [-1, 1]`` for the ``top_k`` best chunks (module docstring)."""
        if top_k <= 0:
            return {}
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        weight = self.sentence_weight
        pool = self.store.dense_search(query, max(top_k, self.dense_pool) if weight > 0 else top_k)
        if weight <= 0 or not pool:
            return dict(pool[:top_k])
        vectors = self.store.vectors([chunk_id for chunk_id, _ in pool])
        ids = [chunk_id for chunk_id, _ in pool if chunk_id in vectors]
        if not ids:
            return {}
        chunk_cos = np.stack([vectors[c][0] for c in ids]) @ query
        counts = np.array([len(vectors[c][1]) for c in ids])
        scores = chunk_cos.astype(np.float64)
        if counts.sum():
            sentence_cos = np.concatenate([vectors[c][1] for c in ids]) @ query
            has = counts > 0
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[has]
            best = np.maximum.reduceat(sentence_cos, starts)
            scores[has] = (1 - weight) * chunk_cos[has] + weight * best
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:top_k]
        return {ids[i]: float(scores[i]) for i in order}

    def lexical_scores(self, question: str, top_k: int) -> dict[str, float]:
        """``chunk_id -> BM25 score > 0`` for the ``top_k`` best chunks."""
        tokens = tokenize(question)
        return dict(self.store.lexical_search(tokens, top_k)) if tokens else {}

    def component_scores(self, question: str, query_vector: np.ndarray | None, mode: str,
                         candidate_k: int | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """Raw candidate scores per component: ``(dense by chunk_id, bm25 by chunk_id)``, the
        best ``candidate_k`` (default ``self.candidate_k``) of each."""
        candidate_k = candidate_k or self.candidate_k
        dense: dict[str, float] = {}
        lexical: dict[str, float] = {}
        if mode in ("hybrid", "dense"):
            if query_vector is None:
                raise ValueError(f"mode {mode!r} needs a query vector")
            dense = self.dense_scores(query_vector, candidate_k)
        if mode in ("hybrid", "bm25"):
            lexical = self.lexical_scores(question, candidate_k)
        return dense, lexical

    def search(self, question: str, query_vector: np.ndarray | None, top_k: int = 5,
               mode: str = "hybrid") -> list[Hit]:
        """Top ``top_k`` chunks for the question.

        Args:
            question: The (validated) question text, for BM25.
            query_vector: float32 (dim,), L2-normalised; required unless ``mode == "bm25"``.
            top_k: Number of hits (>= 1).
            mode: ``hybrid``, ``dense`` or ``bm25``.

        Returns:
            Hits in rank order. Scores: dense in [-1, 1], bm25 >= 0, hybrid score fusion in
            [0, 1], rrf in (0, 1/61].

        Raises:
            ValueError: ``top_k < 1``, unknown ``mode``, or a missing query vector.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if mode not in MODES:
            raise ValueError(f"unknown retriever {mode!r}; choose one of {', '.join(MODES)}")
        dense, lexical = self.component_scores(question, query_vector, mode, max(self.candidate_k, top_k))
        if mode == "dense":
            fused = dense
        elif mode == "bm25":
            fused = lexical
        elif self.fusion == "rrf":
            fused = self._rrf(dense, lexical)
        else:
            nd, nb = _minmax(dense), _minmax(lexical)
            w = self.dense_weight
            fused = {k: w * nd.get(k, 0.0) + (1 - w) * nb.get(k, 0.0) for k in set(nd) | set(nb)}
        # Ties broken by document id and chunk ordinal for determinism.
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], _order_key(kv[0])))[:top_k]
        stored = self.store.fetch_chunks([chunk_id for chunk_id, _ in ranked])
        hits = []
        for chunk_id, score in ranked:
            item = stored.get(chunk_id)
            if item is None:  # removed by another process since the search
                continue
            chunk = item.chunk
            parts = {}
            if chunk_id in dense:
                parts["dense"] = dense[chunk_id]
            if chunk_id in lexical:
                parts["bm25"] = lexical[chunk_id]
            hits.append(Hit(rank=len(hits) + 1, chunk_id=chunk_id, doc_id=chunk.doc_id, start=chunk.start,
                            end=chunk.end, score=float(score), text=chunk.text, title=chunk.title,
                            scores=parts, page=item.page))
        return hits

    def _rrf(self, dense: dict[str, float], lexical: dict[str, float]) -> dict[str, float]:
        fused: dict[str, float] = {}
        for weight, component in ((self.dense_weight, dense), (1 - self.dense_weight, lexical)):
            order = sorted(component.items(), key=lambda kv: (-kv[1], _order_key(kv[0])))
            for rank, (chunk_id, _) in enumerate(order, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (RRF_K + rank)
        return fused
