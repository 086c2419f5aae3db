"""Dense chunk search with FAISS (Johnson, Douze & Jégou, "Billion-scale similarity search with
GPUs", 2017), keyed by the store's chunk keys so one document's chunks can be added or removed
without a rebuild.

Two layouts, chosen by size (see :data:`FLAT_MAX` and the README's scale section):

* ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact inner product (cosine for L2-normalised rows);
* ``ivf``: ``IndexIVFScalarQuantizer`` with 8-bit scalar quantisation (SQ8, a quarter of the
  float32 memory) and inner-product metric; ``nlist`` coarse cells trained by k-means on a
  sample of the vectors, ``nprobe`` of them scanned per query. Both support ``remove_ids``
  (HNSW in FAISS does not).
"""

from __future__ import annotations

import math
import numpy as np

#: FAISS runs on one OpenMP thread: on the 2-core target machine with the other core busy, its
#: default team made a 2,000-vector flat search take ~7 ms instead of well under 1 ms.
QUERY_THREADS = 1

_BLAS_LIMITED = False  # set once per process by DenseIndex._threads

#: Largest collection searched exactly. Measured with eval/bench_store.py on the shared 2-core
#: machine: a flat search reads every vector (154 MB at 10^5 chunks) and took 87-150 ms per query
#: at 10^5; up to 2*10^4 vectors (31 MB) it stays within a few ms, and exact.
FLAT_MAX = 20_000
#: Coarse cells per vector: nlist = clamp(4 * sqrt(n), 256, 8192) (FAISS guidelines: 4-16 * sqrt(n)).
NLIST_PER_SQRT = 4
#: nprobe before calibration (and when there is nothing to calibrate on): 1/32 of the cells.
NPROBE_SHARE = 1 / 32
#: recall@10 against exact search that the calibration must reach on held-out queries (the issue's
#: target for the default setting), plus a margin for questions unlike the calibration queries.
RECALL_TARGET, RECALL_MARGIN = 0.95, 0.02
#: Training sample per cell (FAISS warns below 39 points per centroid).
TRAIN_PER_CELL = 40


class DenseIndex:
    """A FAISS index over L2-normalised float32 vectors with int64 keys.

    Attributes:
        kind: ``"flat"`` or ``"ivf"``.
        dim: Vector dimension.
    """

    def __init__(self, index, kind: str, dim: int):
        self.index = index
        self.kind = kind
        self.dim = dim

    @classmethod
    def build(cls, dim: int, keys: np.ndarray, vectors: np.ndarray, kind: str | None = None,
              seed: int = 0) -> "DenseIndex":
        """Index ``vectors`` (float32 (n, dim)) under ``keys`` (int64 (n,)).

        Args:
            kind: ``"flat"``, ``"ivf"``, or None to choose by size (:data:`FLAT_MAX`).
            seed: k-means seed (deterministic builds).
        """
        import faiss

        n = len(keys)
        kind = kind or ("flat" if n <= FLAT_MAX else "ivf")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            nlist = int(min(8192, max(256, NLIST_PER_SQRT * math.sqrt(max(n, 1)))))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            sample = min(n, nlist * TRAIN_PER_CELL)
            rows = np.random.default_rng(seed).choice(n, size=sample, replace=False) if sample < n else slice(None)
            index.train(vectors[rows])
            index.nprobe = max(1, int(round(nlist * NPROBE_SHARE)))
        dense = cls(index, kind, dim)
        if n:
            dense.add(keys, vectors)
        return dense

    def calibrate(self, keys: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int = 10,
                  target: float = RECALL_TARGET + RECALL_MARGIN) -> dict:
        """Set ``nprobe`` to the smallest value whose recall@``k`` against exact search reaches
        ``target`` on ``queries`` (the rule the FAISS wiki gives for choosing nprobe: measure
        recall against a flat index on sample queries and raise nprobe until it is met).

        Args:
            keys: int64 (n,), the keys of ``vectors``.
            vectors: float32 (n, dim), the indexed vectors (all of them: exact search runs over them).
            queries: float32 (q, dim), L2-normalised held-out queries (not rows of ``vectors``).

        Returns:
            ``{"nprobe", "recall", "queries", "target"}``; ``{}`` for a flat index.
        """
        if self.kind != "ivf" or not len(queries) or self.ntotal < k:
            return {}
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
        _, truth_rows = exact.search(queries, k)
        del exact
        keys = np.asarray(keys)
        truth = [set(keys[row].tolist()) for row in truth_rows]
        nlist = int(self.index.nlist)

        def recall(nprobe: int) -> float:
            _, found = self.index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
            return float(np.mean([len(t & set(f.tolist())) / k for t, f in zip(truth, found)]))

        self._threads()
        lo, hi = 0, 1
        while hi < nlist and recall(hi) < target:
            lo, hi = hi, min(nlist, hi * 2)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if recall(mid) >= target:
                hi = mid
            else:
                lo = mid
        self.index.nprobe = hi
        return {"nprobe": hi, "nlist": nlist, "recall": recall(hi), "queries": len(queries), "target": target}

    @staticmethod
    def _threads() -> None:
        """FAISS's OpenMP team and the BLAS under numpy (the retriever's sentence re-scoring is a
        matrix-vector product) both to :data:`QUERY_THREADS`, the BLAS once per process
        (threadpoolctl, BSD-3): OpenBLAS's default 2-thread gemv measured ~10x slower than one
        thread (p50 15 ms vs 1.4 ms for 2*10^4 x 384) while the other core is busy."""
        global _BLAS_LIMITED
        import faiss

        faiss.omp_set_num_threads(QUERY_THREADS)
        if not _BLAS_LIMITED:
            from threadpoolctl import threadpool_limits

            threadpool_limits(QUERY_THREADS, user_api="blas")
            _BLAS_LIMITED = True

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows (float32 (n, dim)) under ``keys`` (int64 (n,))."""
        if len(keys):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                    np.ascontiguousarray(keys, dtype=np.int64))

    def remove_range(self, lo: int, hi: int) -> int:
        """Remove the keys in ``[lo, hi]``; returns how many were there."""
        import faiss

        return int(self.index.remove_ids(faiss.IDSelectorRange(int(lo), int(hi) + 1)))

    def search(self, query: np.ndarray, top_k: int, nprobe: int | None = None) -> list[tuple[int, float]]:
        """``(key, inner product)`` of the ``top_k`` nearest rows, best first.

        Args:
            query: float32 (dim,), L2-normalised.
            nprobe: IVF cells to scan (default: the index's setting).
        """
        if self.ntotal == 0 or top_k <= 0:
            return []
        import faiss

        self._threads()
        params = None
        if self.kind == "ivf" and nprobe is not None:
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        scores, ids = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                        min(top_k, self.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def write(self, path) -> None:
        """Save to a file (FAISS's own format), see :meth:`read`."""
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def read(cls, path, kind: str, dim: int) -> "DenseIndex":
        """Inverse of :meth:`write`.

        Raises:
            ValueError: not a FAISS index of this dimension.
        """
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise ValueError(f"not a FAISS index: {err}") from err
        if index.d != dim:
            raise ValueError(f"FAISS index has dimension {index.d}, expected {dim}")
        return cls(index, kind, dim)

