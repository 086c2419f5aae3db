"""Dense, lexical and fused retrieval over an :class:`~rag.index.ArchiveIndex`, returning
:class:`~rag.types.Hit` lists. The retriever never touches files or models: the pipeline embeds
the question and passes the vector in.

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

from .index import ArchiveIndex
from .types import Hit

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "dense", "bm25")

#: RRF constant k=60 from Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms
#: Condorcet and individual Rank Learning Methods", SIGIR 2009.
RRF_K = 60


def _minmax(values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi - lo < 1e-9:
        return {k: (1.0 if hi > 0 else 0.0) for k in values}
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


class Retriever:
    """Ranks the chunks of one index for a question.

    Args:
        index: The loaded index.
        candidate_k: Chunks each component contributes to fusion (raised to ``top_k`` when smaller).
        dense_weight: Weight of the dense component in [0, 1]; BM25 gets ``1 - dense_weight``.
        fusion: ``"score"`` (min-max CombSUM, default) or ``"rrf"`` (weighted reciprocal rank).
        sentence_weight: Share of the best sentence cosine in a chunk's dense score (see
            :meth:`ArchiveIndex.dense_search`).
    """

    def __init__(self, index: ArchiveIndex, candidate_k: int = 30, dense_weight: float = 0.35,
                 fusion: str = "score", sentence_weight: float = 0.5):
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be in [0, 1], got {dense_weight}")
        if fusion not in ("score", "rrf"):
            raise ValueError(f"fusion must be 'score' or 'rrf', got {fusion!r}")
        self.index = index
        self.candidate_k = candidate_k
        self.dense_weight = dense_weight
        self.fusion = fusion
        self.sentence_weight = sentence_weight

    def component_scores(self, question: str, query_vector: np.ndarray | None, mode: str,
                         candidate_k: int | None = None) -> tuple[dict[int, float], dict[int, float]]:
        """Raw candidate scores per component: ``(dense score by ordinal, bm25 by ordinal)``, the
        best ``candidate_k`` (default ``self.candidate_k``) of each."""
        candidate_k = candidate_k or self.candidate_k
        dense: dict[int, float] = {}
        lexical: dict[int, float] = {}
        if mode in ("hybrid", "dense"):
            if query_vector is None:
                raise ValueError(f"mode {mode!r} needs a query vector")
            dense = dict(self.index.dense_search(query_vector, candidate_k, self.sentence_weight))
        if mode in ("hybrid", "bm25"):
            scores = self.index.bm25_scores(question)
            if len(scores):
                k = min(candidate_k, len(scores))
                best = np.argpartition(-scores, k - 1)[:k]
                lexical = {int(i): float(scores[i]) for i in best if scores[i] > 0}
        return dense, lexical

    def search(self, question: str, query_vector: np.ndarray | None, top_k: int = 5,
               mode: str = "hybrid") -> list[Hit]:
        """Best ``top_k`` chunks for ``question``.

        Args:
            question: The question text (for BM25).
            query_vector: float32 (dim,), L2-normalised question embedding (unused for ``bm25``).
            top_k: Number of hits (>= 1).
            mode: ``hybrid``, ``dense`` or ``bm25``.

        Returns:
            Hits in rank order without duplicate chunks. ``score``: hybrid/score fusion in
            [0, 1]; hybrid/rrf in (0, 1/61]; dense: cosine in [-1, 1]; bm25: >= 0.
            ``scores`` holds the raw ``dense`` score (chunk/sentence cosine mix) and ``bm25`` score where available.

        Raises:
            ValueError: unknown mode or ``top_k`` < 1.
        """
        if mode not in MODES:
            raise ValueError(f"unknown retriever {mode!r}; choose one of {', '.join(MODES)}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
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
        # Ties broken by chunk ordinal for determinism.
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        hits = []
        for rank, (ordinal, score) in enumerate(ranked, start=1):
            chunk = self.index.chunks[ordinal]
            parts = {}
            if ordinal in dense:
                parts["dense"] = dense[ordinal]
            if ordinal in lexical:
                parts["bm25"] = lexical[ordinal]
            hits.append(Hit(rank=rank, chunk_id=chunk.chunk_id, doc_id=chunk.doc_id, start=chunk.start,
                            end=chunk.end, score=float(score), text=chunk.text, title=chunk.title,
                            scores=parts))
        return hits

    def _rrf(self, dense: dict[int, float], lexical: dict[int, float]) -> dict[int, float]:
        fused: dict[int, float] = {}
        for weight, component in ((self.dense_weight, dense), (1 - self.dense_weight, lexical)):
            order = sorted(component.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (ordinal, _) in enumerate(order, start=1):
                fused[ordinal] = fused.get(ordinal, 0.0) + weight / (RRF_K + rank)
        return fused
