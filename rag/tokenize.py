"""Chinese tokenisation for BM25 and answer scoring: jieba search mode with a domain user
dictionary, NFKC-normalised, punctuation and whitespace dropped, ASCII lower-cased.

Source: jieba ``cut_for_search`` (https://github.com/fxsjy/jieba, "搜索引擎模式"), which emits the
fine-grained sub-words of long words as well, so ``职业教育`` also matches ``教育``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path

#: Domain terms jieba splits badly (政协, 专精特新, 梅花鹿, people's names in the archive, ...).
USER_DICT_PATH = Path(__file__).with_name("data") / "userdict.txt"

_lock = threading.Lock()
_tokenizer = None


def jieba_tokenizer():
    """The process-wide jieba tokenizer with the user dictionary loaded (lazily, once)."""
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tok = jieba.Tokenizer()
            tok.load_userdict(str(USER_DICT_PATH))
            _tokenizer = tok
        return _tokenizer


def _is_word_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in ("L", "N")


@lru_cache(maxsize=4096)
def _tokenize_cached(text: str) -> tuple[str, ...]:
    norm = unicodedata.normalize("NFKC", text).lower()
    out = []
    for token in jieba_tokenizer().cut_for_search(norm):
        token = token.strip()
        if token and any(_is_word_char(ch) for ch in token):
            out.append(token)
    return tuple(out)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into search tokens.

    Args:
        text: Any string (Chinese, ASCII, full-width forms).

    Returns:
        Tokens in text order; search mode also emits overlapping sub-words. Tokens made only of
        punctuation, symbols or whitespace are dropped. Empty list for empty text.
    """
    return list(_tokenize_cached(text))


def user_dict_hash() -> str:
    """SHA-256 (first 16 hex digits) of the user dictionary, recorded in index metadata."""
    return hashlib.sha256(USER_DICT_PATH.read_bytes()).hexdigest()[:16]
