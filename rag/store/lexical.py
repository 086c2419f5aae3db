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

Two tiers: a term with more than :data:`HEAD` postings keeps its :data:`HEAD` highest-impact
postings first (the *head*, by slot) and the rest after them (the *tail*, by slot), with a bound
on what any tail posting can score (the least chunk length per term frequency in the tail). A
query scores every head, then only the tails that could still change the top k, and probes the
other tails for the few candidates left (MaxScore over the tails, exact; the impact-ordered
"champion list" idea of Brown, SIGIR 1995, and Strohman & Croft's impact tiers, made exact by
the bound). Searching 10^6 chunks then reads a few thousand postings of a common term, not 10^6.
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
#: Postings of a term scored on every query (its highest-impact ones). Speed only, never the
#: result: measured at 10^6 synthetic chunks (eval/bench_store.py), see the README.
HEAD = 2048
#: Tail bound table: least chunk length for tf = 1 .. TF_LEVELS - 1, and for tf >= TF_LEVELS.
TF_LEVELS = 8


class LexicalIndex:
    """BM25 postings with incremental add and remove.

    Args:
        slot_ids: int64 (n_slots,), increasing chunk keys.
        slot_len: float32 (n_slots,), tokens per chunk (``dl``).
        indptr: int64 (n_terms + 1,), postings of term ``t`` are ``[indptr[t], indptr[t + 1])``.
        slots: int32 (nnz,), slot of each posting (increasing within a term's head and its tail).
        tf: uint16 (nnz,), term count of each posting (clipped at 65535).
        live: bool (n_slots,), False for removed chunks (default all True).
        term_crc: uint32 (n_terms,), CRC-32 of each term's postings (``slots`` then ``tf`` bytes):
            when given, ``slots``/``tf`` may be memory-mapped and each term's postings are
            verified the first time a query reads them (a cold start reads no postings).
        tail_terms: int64 (m,), increasing ids of the terms split into head and tail.
        tail_start: int64 (m,), where each one's tail starts in ``slots``.
        tail_min_len: float32 (m, TF_LEVELS), least chunk length in the tail per term frequency
            (``inf`` for none).
        tail_max_tf: float32 (m,), largest term frequency in the tail.

    Raises:
        ValueError: (from searches) a term's postings fail their checksum.
    """

    def __init__(self, slot_ids: np.ndarray, slot_len: np.ndarray, indptr: np.ndarray,
                 slots: np.ndarray, tf: np.ndarray, live: np.ndarray | None = None,
                 term_crc: np.ndarray | None = None, tail_terms: np.ndarray | None = None,
                 tail_start: np.ndarray | None = None, tail_min_len: np.ndarray | None = None,
                 tail_max_tf: np.ndarray | None = None):
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
        empty = np.zeros(0, np.int64)
        self.tail_terms = empty if tail_terms is None else np.asarray(tail_terms, dtype=np.int64)
        self.tail_start = empty if tail_start is None else np.asarray(tail_start, dtype=np.int64)
        self.tail_min_len = np.zeros((0, TF_LEVELS), np.float32) if tail_min_len is None \
            else np.asarray(tail_min_len, dtype=np.float32)
        self.tail_max_tf = np.zeros(0, np.float32) if tail_max_tf is None else np.asarray(tail_max_tf, np.float32)
        self._extra: dict[int, list[tuple[int, int]]] = {}  # term -> [(slot, tf)] added since
        self._n_dead = int(n - self._live[:n].sum())
        self._dead = np.flatnonzero(~self._live[:n]).astype(np.int32)
        self._live_len = float(self._len[:n][self._live[:n]].sum())

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> "LexicalIndex":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(1, np.int64),
                   np.zeros(0, np.int32), np.zeros(0, np.uint16))

    @classmethod
    def build(cls, rows: Iterable[tuple[int, np.ndarray, np.ndarray]], head: int | None = None) -> "LexicalIndex":
        """Build from ``(chunk key, term ids int32 (k,), counts (k,))`` rows in increasing key order.

        Args:
            head: Postings kept in a term's head (default :data:`HEAD`).
        """
        ids, lens, terms, counts, owners = [], [], [], [], []
        for slot, (key, term_ids, tf) in enumerate(rows):
            ids.append(key)
            lens.append(float(np.asarray(tf).sum()))
            terms.append(np.asarray(term_ids, dtype=np.int64))
            counts.append(np.asarray(tf, dtype=np.int64))
            owners.append(np.full(len(term_ids), slot, dtype=np.int32))
        return cls._from_postings(np.asarray(ids, np.int64), np.asarray(lens, np.float32),
                                  _cat(terms, np.int64), _cat(owners, np.int64), _cat(counts, np.int64),
                                  head=HEAD if head is None else head)

    @classmethod
    def _from_postings(cls, ids, lens, terms, owners, counts, head: int = HEAD) -> "LexicalIndex":
        """Term-major postings (sorted by term, then slot) split into heads and tails."""
        order = np.lexsort((owners, terms))
        terms, owners, counts = terms[order], owners[order].astype(np.int32), np.minimum(counts[order], 65535)
        n_terms = int(terms.max()) + 1 if len(terms) else 0
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=n_terms), out=indptr[1:])
        counts = counts.astype(np.uint16)
        df = np.diff(indptr)
        big = np.flatnonzero(df > head)
        avgdl = float(lens.mean()) if len(lens) else 1.0
        tail_start = np.zeros(len(big), np.int64)
        tail_min_len = np.full((len(big), TF_LEVELS), np.inf, np.float32)
        tail_max_tf = np.zeros(len(big), np.float32)
        for row, term in enumerate(big.tolist()):
            a, z = int(indptr[term]), int(indptr[term + 1])
            s, f = owners[a:z], counts[a:z]
            f32 = f.astype(np.float32)
            impact = f32 / (f32 + K1 * (1 - B) + K1 * B * lens[s] / avgdl)
            top = np.zeros(z - a, dtype=bool)
            top[np.argpartition(-impact, head - 1)[:head]] = True
            reorder = np.concatenate([np.flatnonzero(top), np.flatnonzero(~top)])  # each part keeps slot order
            owners[a:z], counts[a:z] = s[reorder], f[reorder]
            tail_start[row] = a + head
            tail_s, tail_f = owners[a + head:z], counts[a + head:z]
            level = np.minimum(tail_f.astype(np.int64), TF_LEVELS) - 1
            np.minimum.at(tail_min_len[row], level, lens[tail_s])
            tail_max_tf[row] = float(tail_f.max())
        return cls(ids, lens, indptr, owners, counts, tail_terms=big.astype(np.int64), tail_start=tail_start,
                   tail_min_len=tail_min_len, tail_max_tf=tail_max_tf)

    def compacted(self, head: int | None = None) -> "LexicalIndex":
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
        return LexicalIndex._from_postings(self._ids[:n][keep], self._len[:n][keep], terms[alive],
                                           new_slot[owners[alive]], counts[alive],
                                           head=HEAD if head is None else head)

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
        if len(hit):
            self._dead = np.flatnonzero(~self._live[:self._n]).astype(np.int32)
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

    def _parts(self, term: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """A term's ``(head slots, head tf, tail slots, tail tf, live df)``; the head includes the
        postings added since the base and excludes removed chunks; the tail is raw (it may hold
        removed chunks: callers check ``_live``)."""
        empty_s, empty_f = self.slots[:0], self.tf[:0]
        head_s = head_f = tail_s = tail_f = None
        if 0 <= term < len(self.indptr) - 1:
            a, z = int(self.indptr[term]), int(self.indptr[term + 1])
            if self._verified is not None and not self._verified[term]:
                if _crc(self.slots[a:z], self.tf[a:z]) != self._term_crc[term]:
                    raise ValueError(f"the postings of term {term} fail their checksum")
                self._verified[term] = True
            row = np.searchsorted(self.tail_terms, term)
            split = int(self.tail_start[row]) if row < len(self.tail_terms) and self.tail_terms[row] == term else z
            head_s, head_f = self.slots[a:split], self.tf[a:split]
            tail_s, tail_f = self.slots[split:z], self.tf[split:z]
        else:
            head_s = head_f = None
        head_s = empty_s if head_s is None else head_s
        head_f = empty_f if head_f is None else head_f
        tail_s = empty_s if tail_s is None else tail_s
        tail_f = empty_f if tail_f is None else tail_f
        extra = self._extra.get(term)
        if extra:
            more = np.asarray(extra, dtype=np.int64)
            head_s = np.concatenate([head_s, more[:, 0].astype(np.int32)])
            head_f = np.concatenate([head_f, more[:, 1].astype(np.uint16)])
        df = len(head_s) + len(tail_s)
        if self._n_dead:
            keep = self._live[head_s]
            head_s, head_f = head_s[keep], head_f[keep]
            if len(tail_s):  # removed chunks in the tail: binary search (tails are by slot)
                at = np.searchsorted(tail_s, self._dead)
                df -= int(np.count_nonzero(tail_s[np.minimum(at, len(tail_s) - 1)] == self._dead))
            df -= int(np.count_nonzero(~keep))
        return head_s, head_f, tail_s, tail_f, df

    def _tail_bound(self, term: int, avgdl: float) -> float:
        """Largest ``tfc`` any tail posting of ``term`` can have at this ``avgdl`` (< 1)."""
        row = np.searchsorted(self.tail_terms, term)
        lens = self.tail_min_len[row]
        tf = np.arange(1, TF_LEVELS + 1, dtype=np.float32)
        tf[-1] = max(float(self.tail_max_tf[row]), TF_LEVELS)
        ok = np.isfinite(lens)
        if not ok.any():
            return 0.0
        return float(np.max(tf[ok] / (tf[ok] + K1 * (1 - B) + K1 * B * lens[ok] / avgdl)))

    def search(self, term_ids: Sequence[int], top_k: int, prune: bool = True,
               tail_budget: int | None = None) -> list[tuple[int, float]]:
        """Chunks ranked by BM25 for the query's term ids (repeats count, unknown ids < 0 skip).

        Exact top-k with MaxScore (Turtle & Flood, "Query evaluation: strategies and
        optimizations", IP&M 1995) over postings lists that are a term's head and its tail (or
        all its postings when it has no tail), each with a bound on what it adds to a chunk (its
        weight for a head, ``tfc < 1``; the tail bound for a tail): lists are scored in full in
        decreasing bound while the lists left could together lift a chunk not yet seen to the
        k-th best score so far; the lists left are then only probed (binary search) for the
        candidates whose score so far plus the bounds left can still reach it. ``prune=False``
        scores every posting (tests).

        ``tail_budget`` (default None: exact) caps the tail postings scored in full; past it the
        tails left are only probed for the chunks already seen, so a chunk reached by no head
        and few tails can be missed (approximate BM25, measured by ``eval/bench_store.py``).

        Returns:
            ``(chunk key, score > 0)`` pairs, best first (ties: lower key first), at most ``top_k``.
        """
        n = self.n_live
        if n == 0 or top_k <= 0:
            return []
        avgdl = self._live_len / n
        norm_a = K1 * (1 - B)
        norm_b = K1 * B / avgdl
        lists = []  # (bound on what the list adds to one chunk, weight, slots, tf, is a tail)
        for term, mult in Counter(int(t) for t in term_ids if t >= 0).items():
            head_s, head_f, tail_s, tail_f, df = self._parts(term)
            if df <= 0:
                continue
            weight = mult * math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            if len(head_s):
                lists.append((weight, np.float32(weight), head_s, head_f, False))
            if len(tail_s):
                bound = weight * self._tail_bound(term, avgdl) * (1 + 1e-6)
                lists.append((bound, np.float32(weight), tail_s, tail_f, True))
        if not prune:
            lists = [(np.inf, *rest) for _, *rest in lists]
        lists.sort(key=lambda item: (-item[0], len(item[2])))
        remaining = [sum(item[0] for item in lists[i:]) for i in range(len(lists) + 1)]
        acc = np.zeros(self._n, dtype=np.float32)

        def add(weight, slots, tf) -> None:
            f = tf.astype(np.float32)
            acc[slots] += weight * f / (f + norm_a + norm_b * self._len[slots])

        seen = np.zeros(self._n, dtype=bool)
        parts: list[np.ndarray] = []
        pool = np.zeros(0, np.int64)
        theta = 0.0
        done = 0
        scanned = 0
        for bound, weight, slots, tf, is_tail in lists:
            if done and remaining[done] < theta:  # a chunk not seen yet can no longer enter the top k
                break
            if is_tail and tail_budget is not None and scanned + len(slots) > tail_budget:
                break  # approximate from here: the tails left are only probed for the chunks seen
            scanned += len(slots) if is_tail else 0
            if is_tail and self._n_dead:
                keep = self._live[slots]
                slots, tf = slots[keep], tf[keep]
            add(weight, slots, tf)
            done += 1
            new = slots[~seen[slots]]
            seen[new] = True
            parts.append(new)
            pool = np.concatenate(parts) if len(parts) > 1 else new
            parts = [pool]
            if len(pool) >= top_k:
                theta = float(np.partition(acc[pool], len(pool) - top_k)[len(pool) - top_k])
        candidates = np.sort(pool).astype(np.int64)
        for i in range(done, len(lists)):
            candidates = candidates[acc[candidates] + np.float32(remaining[i]) >= theta]
            if not len(candidates):
                break
            _, weight, slots, tf, _ = lists[i]
            if len(candidates) * 8 < len(slots):  # few candidates: binary search for each
                at = np.minimum(np.searchsorted(slots, candidates), len(slots) - 1)
                hit = slots[at] == candidates
                add(weight, candidates[hit], tf[at[hit]])
            else:  # many: one pass over the list with a mask (cheaper than ~log2(len) probes each)
                mask = np.zeros(self._n, dtype=bool)
                mask[candidates] = True
                hit = mask[slots]
                add(weight, slots[hit], tf[hit])
        hit = candidates[self._live[candidates]] if self._n_dead else candidates
        hit = hit[acc[hit] > 0]
        if not len(hit):
            return []
        if len(hit) > top_k:  # keep every chunk tied with the k-th, then order ties by key
            kth_score = np.partition(acc[hit], len(hit) - top_k)[len(hit) - top_k]
            hit = hit[acc[hit] >= kth_score]
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
                "indptr": indptr, "slots": index.slots, "tf": index.tf, "term_crc": term_crc,
                "tail_terms": index.tail_terms, "tail_start": index.tail_start,
                "tail_min_len": index.tail_min_len, "tail_max_tf": index.tail_max_tf}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "LexicalIndex":
        """Inverse of :meth:`arrays`; ``slots`` and ``tf`` may be memory-mapped (checked per
        term on first use against ``term_crc``).

        Raises:
            ValueError: the arrays are inconsistent (lengths, bounds, order).
        """
        ids, lens, indptr, slots, tf, term_crc = (arrays[k] for k in ("slot_ids", "slot_len", "indptr", "slots",
                                                                      "tf", "term_crc"))
        tail_terms, tail_start, tail_min_len, tail_max_tf = (
            arrays[k] for k in ("tail_terms", "tail_start", "tail_min_len", "tail_max_tf"))
        if len(ids) != len(lens) or len(slots) != len(tf) or len(indptr) < 1 or indptr[0] != 0 \
                or indptr[-1] != len(slots) or np.any(np.diff(indptr) < 0) or len(term_crc) != len(indptr) - 1 \
                or np.any(np.diff(ids) <= 0) or slots.dtype != np.int32 or tf.dtype != np.uint16:
            raise ValueError("inconsistent lexical index arrays")
        if not (len(tail_terms) == len(tail_start) == len(tail_min_len) == len(tail_max_tf)) \
                or np.any(np.diff(tail_terms) <= 0) or (len(tail_terms) and (
                    tail_terms[0] < 0 or tail_terms[-1] >= len(indptr) - 1
                    or np.any(tail_start < indptr[tail_terms]) or np.any(tail_start > indptr[tail_terms + 1]))) \
                or tail_min_len.ndim != 2 or tail_min_len.shape[1] != TF_LEVELS:
            raise ValueError("inconsistent lexical tail arrays")
        return cls(ids, lens, indptr, slots, tf, term_crc=term_crc, tail_terms=tail_terms, tail_start=tail_start,
                   tail_min_len=tail_min_len, tail_max_tf=tail_max_tf)


def _crc(slots: np.ndarray, tf: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(tf).data, zlib.crc32(np.ascontiguousarray(slots).data))


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
