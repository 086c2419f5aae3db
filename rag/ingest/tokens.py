"""Tokenising a document once: :func:`rag.tokenize.tokenize` output, memoised per jieba block.

jieba cuts a text block by block: it splits at every character outside ``re_han_default``
(punctuation, whitespace, most symbols) and segments each run of Han characters, letters and
digits on its own; search mode (``cut_for_search``) only adds sub-words of each word. So the
tokens of any text are the concatenation of the tokens of its blocks, and a block seen before
(the ~20% of a chunk repeated as overlap, every clause again as a term-statistics unit, a
heading prepended to each chunk of its section) need not be segmented again. The output equals
:func:`rag.tokenize.tokenize` exactly (a test compares them on the seeds and odd inputs).
"""

from __future__ import annotations

import unicodedata

from rag.tokenize import jieba_tokenizer

#: Blocks remembered per tokenizer; a document has a few thousand distinct clauses at most, and
#: the memo is cleared when full so memory stays bounded in long ingest runs.
MEMO_BLOCKS = 200_000


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in ("L", "N")


class BlockTokenizer:
    """:func:`rag.tokenize.tokenize` with a memo per jieba block (see the module docstring).

    Not thread-safe: use one per thread or process.
    """

    def __init__(self) -> None:
        import jieba

        self._jieba = jieba_tokenizer()
        self._han = jieba.re_han_default
        self._memo: dict[str, tuple[str, ...]] = {}
        self.blocks_cut = 0
        self.blocks_seen = 0

    def _block(self, block: str) -> tuple[str, ...]:
        self.blocks_seen += 1
        hit = self._memo.get(block)
        if hit is None:
            self.blocks_cut += 1
            hit = tuple(t for t in (w.strip() for w in self._jieba.cut_for_search(block))
                        if t and any(_is_word_char(ch) for ch in t))
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[block] = hit
        return hit

    def tokenize(self, text: str) -> list[str]:
        """Tokens of ``text``, equal to :func:`rag.tokenize.tokenize` (``text`` any string)."""
        norm = unicodedata.normalize("NFKC", text).lower()
        out: list[str] = []
        han = self._han
        for block in han.split(norm):
            if not block:
                continue
            if han.match(block):
                out.extend(self._block(block))
            else:  # jieba yields these one character at a time; keep letters and digits
                out.extend(ch for ch in block if _is_word_char(ch))
        return out
