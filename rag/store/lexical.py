"""BM25 over chunk term counts, updatable one document at a time (bm25s cannot add or remove).

Scoring is bm25s's "lucene" method, so ranks and scores equal what ``bm25s.BM25`` computes on
the same tokens: ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))`` and
``tfc = tf / (tf + k1 * (1 - b + b * dl / avgdl))`` with ``k1 = 1.5``, ``b = 0.75`` (bm25s
defaults; Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", 2009;
Kamphuis et al., ECIR 2020, for the variant), summed over the query's tokens (a repeated query
token counts each time, as in bm25s). ``N``, ``df`` and ``avgdl`` cover the live chunks only.

Layout: a *base* of term-major postings (CSR: ``indptr`` by term id, ``slots`` int32, ``tf``
uint16) built in one pass, plus postings of chunks added since, kept per term in memory; removed
chunks are masked until the next compaction (:meth:`LexicalIndex.compacted`). A *slot* is a
chunk's position in ``slot_ids`` (chunk keys, increasing).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

#: bm25s defaults (``BM25(k1=1.5, b=0.75)``), kept so scores match the library's.
K1 = 1.5
B = 0.75


class LexicalIndex:
    """BM25 postings with incremental add and remove.

    Args:
        slot_ids: int64 (n_slots,), increasing chunk keys.
        slot_len: float32 (n_slots,), tokens per chunk (``dl``).
        indptr: int64 (n_terms + 1,), postings of term ``t`` are ``[indptr[t], indptr[t + 1])``.
        slots: int32 (nnz,), slot of each posting.
        tf: uint16 (nnz,), term count of each posting (clipped at 65535).
        live: bool (n_slots,), False for removed chunks (default all True).
        term_crc: uint32 (n_terms,), CRC-32 of each term's postings (``slots`` then ``tf`` bytes):
            when given, ``slots``/``tf`` may be memory-mapped and each term's postings are
            verified the first time a query reads them (a cold start reads no postings).

    Raises:
        ValueError: (from searches) a term's postings fail their checksum.
    """

    def __init__(self, slot_ids: np.ndarray, slot_len: np.ndarray, indptr: np.ndarray,
                 slots: np.ndarray, tf: np.ndarray, live: np.ndarray | None = None,
                 term_crc: np.ndarray | None = None):
        n = len(slot_ids)
        self._ids = np.ascontiguousarray(slot_ids, dtype=np.int64)
        self._len = np.ascontiguousarray(slot_len, dtype=np.float32)
        self._live = np.ones(n, dtype=bool) if live is None else np.array(live, dtype=bool)
        self._n = n
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.slots = slots if slots.dtype == np.int32 else np.ascontiguousarray(slots, dtype=np.int32)
        self.tf = tf if tf.dtype == np.uint16 else np.ascontiguousarray(tf, dtype=np.uint16)
        self._term_crc = term_crc
        self._verified = np.zeros(len(self.indptr) - 1, dtype=bool) if term_crc is not None else None
        self._extra: dict[int, list[tuple[int, int]]] = {}  # term -> [(slot, tf)] added since
        self._n_dead = int(n - self._live[:n].sum())
        self._live_len = float(self._len[:n][self._live[:n]].sum())

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> "LexicalIndex":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(1, np.int64),
                   np.zeros(0, np.int32), np.zeros(0, np.uint16))

    @classmethod
    def build(cls, rows: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> "LexicalIndex":
        """Build from ``(chunk key, term ids int32 (k,), counts (k,))`` rows in increasing key order."""
        ids, lens, terms, counts, owners = [], [], [], [], []
        for slot, (key, term_ids, tf) in enumerate(rows):
            ids.append(key)
            lens.append(float(np.asarray(tf).sum()))
            terms.append(np.asarray(term_ids, dtype=np.int64))
            counts.append(np.asarray(tf, dtype=np.int64))
            owners.append(np.full(len(term_ids), slot, dtype=np.int32))
        return cls._from_postings(np.asarray(ids, np.int64), np.asarray(lens, np.float32),
                                  _cat(terms, np.int64), _cat(owners, np.int32), _cat(counts, np.int64))

    @classmethod
    def _from_postings(cls, ids, lens, terms, owners, counts, live=None) -> "LexicalIndex":
        n_terms = int(terms.max()) + 1 if len(terms) else 0
        order = np.argsort(terms, kind="stable")  # stable: slots stay increasing within a term
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=n_terms), out=indptr[1:])
        return cls(ids, lens, indptr, owners[order], np.minimum(counts[order], 65535), live)

    def compacted(self) -> "LexicalIndex":
        """A copy with added postings merged into the base and removed chunks dropped."""
        n = self._n
        keep = np.flatnonzero(self._live[:n])
        new_slot = np.full(n, -1, dtype=np.int64)
        new_slot[keep] = np.arange(len(keep))
        base_terms = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), np.diff(self.indptr))
        extra_terms = [t for t, posts in self._extra.items() for _ in posts]
        extra_slots = [s for posts in self._extra.values() for s, _ in posts]
        extra_tf = [f for posts in self._extra.values() for _, f in posts]
        terms = np.concatenate([base_terms, np.asarray(extra_terms, np.int64)])
        owners = np.concatenate([self.slots.astype(np.int64), np.asarray(extra_slots, np.int64)])
        counts = np.concatenate([self.tf.astype(np.int64), np.asarray(extra_tf, np.int64)])
        alive = new_slot[owners] >= 0
        terms, owners, counts = terms[alive], new_slot[owners[alive]], counts[alive]
        order = np.lexsort((owners, terms))
        terms, owners, counts = terms[order], owners[order], counts[order]
        n_terms = int(terms.max()) + 1 if len(terms) else 0
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=n_terms), out=indptr[1:])
        return LexicalIndex(self._ids[:n][keep], self._len[:n][keep], indptr,
                            owners.astype(np.int32), counts.astype(np.uint16))

    # --- updates ------------------------------------------------------------------------------

    def add(self, key: int, term_ids: Sequence[int], counts: Sequence[int]) -> None:
        """Append one chunk; ``key`` must exceed every key already present."""
        if self._n and key <= self._ids[self._n - 1]:
            raise ValueError(f"chunk key {key} is not above the last key {self._ids[self._n - 1]}")
        if self._n == len(self._ids):
            grow = max(16, len(self._ids))
            self._ids = np.concatenate([self._ids, np.zeros(grow, np.int64)])
            self._len = np.concatenate([self._len, np.zeros(grow, np.float32)])
            self._live = np.concatenate([self._live, np.zeros(grow, bool)])
        slot = self._n
        length = float(np.sum(counts))
        self._ids[slot], self._len[slot], self._live[slot] = key, length, True
        self._n += 1
        self._live_len += length
        for term, tf in zip(term_ids, counts):
            self._extra.setdefault(int(term), []).append((slot, min(int(tf), 65535)))

    def remove_range(self, lo: int, hi: int) -> int:
        """Mask the chunks with keys in ``[lo, hi]``; returns how many were live."""
        a, z = np.searchsorted(self._ids[:self._n], [lo, hi + 1])
        hit = np.flatnonzero(self._live[a:z]) + a
        self._live[hit] = False
        self._n_dead += len(hit)
        self._live_len -= float(self._len[hit].sum())
        return len(hit)

    # --- queries ------------------------------------------------------------------------------

    @property
    def n_live(self) -> int:
        """Chunks searchable now."""
        return self._n - self._n_dead

    @property
    def n_postings(self) -> int:
        return len(self.slots) + sum(len(p) for p in self._extra.values())

    @property
    def n_added(self) -> int:
        """Postings added since the base was built (what a compaction would merge)."""
        return sum(len(p) for p in self._extra.values())

    @property
    def n_dead(self) -> int:
        return self._n_dead

    def keys(self) -> np.ndarray:
        """int64 keys of the live chunks, increasing."""
        return self._ids[:self._n][self._live[:self._n]]

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        if 0 <= term < len(self.indptr) - 1:
            a, z = self.indptr[term], self.indptr[term + 1]
            slots, tf = self.slots[a:z], self.tf[a:z]
            if self._verified is not None and not self._verified[term]:
                if _crc(slots, tf) != self._term_crc[term]:
                    raise ValueError(f"the postings of term {term} fail their checksum")
                self._verified[term] = True
        else:
            slots, tf = self.slots[:0], self.tf[:0]
        extra = self._extra.get(term)
        if extra:
            more = np.asarray(extra, dtype=np.int64)
            slots = np.concatenate([slots, more[:, 0].astype(np.int32)])
            tf = np.concatenate([tf, more[:, 1].astype(np.uint16)])
        if self._n_dead:
            keep = self._live[slots]
            slots, tf = slots[keep], tf[keep]
        return slots, tf

    def search(self, term_ids: Sequence[int], top_k: int, prune: bool = True) -> list[tuple[int, float]]:
        """Chunks ranked by BM25 for the query's term ids (repeats count, unknown ids < 0 skip).

        Exact top-k with MaxScore pruning (Turtle & Flood, "Query evaluation: strategies and
        optimizations", IP&M 1995): terms are scored in decreasing weight; once the k-th best
        score so far exceeds the most the remaining terms could add (``tfc < 1``, so a term adds
        at most its idf), chunks not yet touched cannot enter the top k, and the remaining
        (common, low-idf) terms are scored only on the touched chunks, by binary search in their
        postings instead of a pass over them. ``prune=False`` scores every posting (tests).

        Returns:
            ``(chunk key, score > 0)`` pairs, best first (ties: lower key first), at most ``top_k``.
        """
        n = self.n_live
        if n == 0 or top_k <= 0:
            return []
        avgdl = self._live_len / n
        norm_a = K1 * (1 - B)
        norm_b = K1 * B / avgdl
        plan = []
        for term, mult in Counter(int(t) for t in term_ids if t >= 0).items():
            slots, tf = self._postings(term)
            df = len(slots)
            if df:
                plan.append((mult * math.log(1.0 + (n - df + 0.5) / (df + 0.5)), slots, tf))
        plan.sort(key=lambda p: -p[0])
        rest = [sum(p[0] for p in plan[i:]) for i in range(len(plan))]  # bound on what terms i.. add
        acc = np.zeros(self._n, dtype=np.float32)
        touched: list[np.ndarray] = []
        n_touched = 0
        candidates = None
        for i, (weight, slots, tf) in enumerate(plan):
            if prune and touched and len(slots) > 4 * n_touched:
                pool = np.unique(np.concatenate(touched))
                if len(pool) >= top_k:
                    theta = np.partition(acc[pool], len(pool) - top_k)[len(pool) - top_k]
                    if theta > rest[i]:
                        for weight2, slots2, tf2 in plan[i:]:
                            at = np.minimum(np.searchsorted(slots2, pool), len(slots2) - 1)
                            hit = slots2[at] == pool
                            docs, counts = pool[hit], tf2[at[hit]].astype(np.float32)
                            acc[docs] += np.float32(weight2) * counts / (counts + norm_a + norm_b * self._len[docs])
                        candidates = pool
                        break
            tf32 = tf.astype(np.float32)
            acc[slots] += np.float32(weight) * tf32 / (tf32 + norm_a + norm_b * self._len[slots])
            touched.append(slots)
            n_touched += len(slots)
        hit = np.flatnonzero(acc > 0) if candidates is None else candidates[acc[candidates] > 0]
        if not len(hit):
            return []
        if len(hit) > top_k:  # keep every chunk tied with the k-th, then order ties by key
            kth = np.partition(acc[hit], len(hit) - top_k)[len(hit) - top_k]
            hit = hit[acc[hit] >= kth]
        order = sorted(hit.tolist(), key=lambda s: (-acc[s], s))[:top_k]
        return [(int(self._ids[s]), float(acc[s])) for s in order]

    # --- persistence --------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of :meth:`compacted`'s base with per-term checksums, for saving (see
        :meth:`from_arrays`)."""
        index = self if not self._extra and not self._n_dead else self.compacted()
        indptr = index.indptr
        term_crc = np.fromiter((_crc(index.slots[indptr[t]:indptr[t + 1]], index.tf[indptr[t]:indptr[t + 1]])
                                for t in range(len(indptr) - 1)), dtype=np.uint32, count=len(indptr) - 1)
        return {"slot_ids": index._ids[:index._n], "slot_len": index._len[:index._n],
                "indptr": indptr, "slots": index.slots, "tf": index.tf, "term_crc": term_crc}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "LexicalIndex":
        """Inverse of :meth:`arrays`; ``slots`` and ``tf`` may be memory-mapped (checked per
        term on first use against ``term_crc``).

        Raises:
            ValueError: the arrays are inconsistent (lengths, bounds, order).
        """
        ids, lens, indptr, slots, tf, term_crc = (arrays[k] for k in ("slot_ids", "slot_len", "indptr", "slots",
                                                                      "tf", "term_crc"))
        if len(ids) != len(lens) or len(slots) != len(tf) or len(indptr) < 1 or indptr[0] != 0 \
                or indptr[-1] != len(slots) or np.any(np.diff(indptr) < 0) or len(term_crc) != len(indptr) - 1 \
                or np.any(np.diff(ids) <= 0) or slots.dtype != np.int32 or tf.dtype != np.uint16:
            raise ValueError("inconsistent lexical index arrays")
        return cls(ids, lens, indptr, slots, tf, term_crc=term_crc)


def _crc(slots: np.ndarray, tf: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(tf).data, zlib.crc32(np.ascontiguousarray(slots).data))


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
