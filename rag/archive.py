"""What the answerer may read of the archive, independent of where the archive is stored.

The answerer needs three things beyond the candidate sentences it is given: a document's stored
text and facts (to check and cite spans), inverse document frequencies of tokens (to weight the
question's words), and whether a term occurs anywhere (to notice names the archive never
mentions). :class:`ArchiveView` is that contract; any store (in-memory, embedded database,
Milvus) implements it, so the answerer never sees FAISS, files or a database.

Term statistics are counted over *units*: pseudo-sentences, i.e. a document's text split at
``。！？!?`` and line breaks. Counts are additive per document (:func:`unit_term_counts`), so a
store can add or subtract one document's counts without recounting the archive.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from typing import Callable, Iterable, Mapping, Protocol, runtime_checkable

from .tokenize import tokenize
from .types import Document

__all__ = ["ArchiveView", "TermStats", "InMemoryArchive", "unit_term_counts", "idf_from_counts"]

_UNIT_SPLIT_RE = re.compile(r"[。！？!?\n]+")


def unit_term_counts(text: str, tokenizer: Callable[[str], list[str]] = tokenize) -> tuple[int, Counter]:
    """Units and per-unit token document frequencies of one document.

    Args:
        text: A document's stored text.
        tokenizer: :func:`rag.tokenize.tokenize` or an equivalent (ingest passes a memoised one,
            :class:`rag.ingest.tokens.BlockTokenizer`).

    Returns:
        ``(number of non-empty units, Counter token -> number of units containing it)``;
        tokens are :func:`rag.tokenize.tokenize` output (NFKC, lower-cased jieba search mode).
    """
    n = 0
    df: Counter = Counter()
    for part in _UNIT_SPLIT_RE.split(text):
        part = part.strip()
        if not part:
            continue
        n += 1
        df.update(set(tokenizer(part)))
    return n, df


def idf_from_counts(n_units: int, df: int) -> float:
    """``ln(1 + (N - df + 0.5) / (df + 0.5))``, > 0 for ``0 <= df <= N``.

    The Robertson–Spärck Jones form used by BM25 (Robertson & Zaragoza 2009, after Spärck Jones
    1972). A token the archive never uses gets the largest value.
    """
    n = max(int(n_units), 1)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


@runtime_checkable
class ArchiveView(Protocol):
    """Read access the answerer needs. Implementations must be safe to call from several threads."""

    def document(self, doc_id: str) -> Document | None:
        """The document with its stored text (offsets address it), or None when unknown."""

    def idf(self, token: str) -> float:
        """Inverse unit frequency of a :func:`~rag.tokenize.tokenize` token (> 0, see
        :func:`idf_from_counts`)."""

    def mentions(self, term: str) -> bool:
        """Whether ``term`` (a normalised token) occurs as a token in any unit of the archive."""


class TermStats:
    """Unit count and token document frequencies, updatable per document.

    Attributes:
        n_units: Number of units (pseudo-sentences) in the archive.
        df: token -> number of units containing it.
    """

    def __init__(self) -> None:
        self.n_units = 0
        self.df: Counter = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "TermStats":
        """Statistics of the given document texts."""
        stats = cls()
        for text in texts:
            stats.add(*unit_term_counts(text))
        return stats

    def add(self, n_units: int, df: Mapping[str, int]) -> None:
        """Add one document's counts (from :func:`unit_term_counts`)."""
        with self._lock:
            self.n_units += n_units
            self.df.update(df)

    def remove(self, n_units: int, df: Mapping[str, int]) -> None:
        """Subtract one document's counts; tokens whose count reaches 0 are dropped."""
        with self._lock:
            self.n_units = max(0, self.n_units - n_units)
            self.df.subtract(df)
            for token in [t for t, c in self.df.items() if c <= 0]:
                del self.df[token]

    def idf(self, token: str) -> float:
        """See :func:`idf_from_counts`."""
        return idf_from_counts(self.n_units, self.df.get(token, 0))

    def mentions(self, term: str) -> bool:
        """True when ``term`` occurs in at least one unit."""
        return self.df.get(term, 0) > 0


class InMemoryArchive:
    """An :class:`ArchiveView` over documents held in memory (tests, the file-based index).

    Args:
        documents: ``doc_id -> Document``.
        stats: Precomputed statistics of exactly these documents (computed lazily, once, when
            omitted: about 1 s for the bundled archive).
    """

    def __init__(self, documents: Mapping[str, Document], stats: TermStats | None = None):
        self.documents = documents
        self._stats = stats
        self._lock = threading.Lock()

    @property
    def stats(self) -> TermStats:
        with self._lock:
            if self._stats is None:
                self._stats = TermStats.from_texts(d.text for d in self.documents.values())
            return self._stats

    def document(self, doc_id: str) -> Document | None:
        return self.documents.get(doc_id)

    def idf(self, token: str) -> float:
        return self.stats.idf(token)

    def mentions(self, term: str) -> bool:
        return self.stats.mentions(term)
