"""Character and line repairs for text extracted from PDF, Word and web pages.

Two defects of PDF text layers make text unsearchable and quotes unreadable:

* **Radical code points.** Fonts often map a glyph to a radical instead of the ideograph it
  draws: ``⼯`` (U+2F2F KANGXI RADICAL WORK) for 工, ``⺠`` (U+2EA0 CJK RADICAL CIVILIAN) for 民.
  Kangxi radicals (U+2F00–U+2FD5) have NFKC compatibility mappings to their ideographs;
  the CJK Radicals Supplement (U+2E80–U+2EF3) has none (except U+2E9F and U+2EF3), so
  :data:`RADICAL_SUPPLEMENT` maps it, after the Unicode data file
  ``EquivalentUnifiedIdeograph.txt`` (Unicode 15.1), for the entries whose equivalent is a BMP
  ideograph. CJK compatibility ideographs (U+F900–U+FAD9) are replaced by their canonical
  (NFC) unified ideographs. Every replacement is one code point for one code point, so offsets
  computed before and after folding agree.
* **Line-wrap breaks.** A PDF line ends where the page is full, not where the sentence ends:
  :func:`rejoin_wrapped_lines` removes a line break when the line fills the text width and does
  not end a sentence.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["RADICAL_SUPPLEMENT", "FOLD_TABLE", "fold_cjk_variants", "rejoin_wrapped_lines"]

#: CJK Radicals Supplement code point -> equivalent unified ideograph (EquivalentUnifiedIdeograph.txt,
#: Unicode 15.1; entries whose equivalent lies outside the BMP or is disputed are left out and stay
#: unchanged).
RADICAL_SUPPLEMENT: dict[str, str] = {
    "\u2E81": "厂", "\u2E82": "乛", "\u2E83": "乚", "\u2E84": "乙", "\u2E85": "亻", "\u2E86": "冂",
    "\u2E89": "刂", "\u2E8A": "卜", "\u2E8B": "㔾", "\u2E8C": "小", "\u2E8E": "兀", "\u2E8F": "尣",
    "\u2E90": "尢", "\u2E92": "巳", "\u2E93": "幺", "\u2E94": "彑", "\u2E96": "忄", "\u2E97": "㣺",
    "\u2E98": "扌", "\u2E99": "攵", "\u2E9B": "旡", "\u2E9C": "日", "\u2E9D": "月", "\u2E9E": "歺",
    "\u2E9F": "母", "\u2EA0": "民", "\u2EA1": "氵", "\u2EA2": "氺", "\u2EA3": "灬", "\u2EA4": "爫",
    "\u2EA6": "丬", "\u2EA7": "牛", "\u2EA8": "犭", "\u2EA9": "王", "\u2EAB": "罒", "\u2EAC": "示",
    "\u2EAD": "礻", "\u2EAF": "糹", "\u2EB0": "纟", "\u2EB1": "罓", "\u2EB2": "罒", "\u2EB3": "㓁",
    "\u2EB6": "羊", "\u2EB9": "耂", "\u2EBC": "肉", "\u2EBD": "臼", "\u2EBE": "艹", "\u2EBF": "艹",
    "\u2EC0": "艹", "\u2EC1": "虎", "\u2EC2": "衤", "\u2EC3": "覀", "\u2EC4": "西", "\u2EC5": "见",
    "\u2EC6": "角", "\u2EC8": "讠", "\u2EC9": "贝", "\u2ECB": "车", "\u2ECC": "辶", "\u2ECD": "辶",
    "\u2ECF": "阝", "\u2ED0": "钅", "\u2ED1": "長", "\u2ED2": "镸", "\u2ED3": "长", "\u2ED4": "门",
    "\u2ED6": "阝", "\u2ED7": "雨", "\u2ED8": "青", "\u2ED9": "韦", "\u2EDA": "页", "\u2EDB": "风",
    "\u2EDC": "飞", "\u2EDD": "食", "\u2EDF": "飠", "\u2EE0": "饣", "\u2EE2": "马", "\u2EE3": "骨",
    "\u2EE4": "鬼", "\u2EE5": "鱼", "\u2EE6": "鸟", "\u2EE7": "卤", "\u2EE8": "麦", "\u2EE9": "黄",
    "\u2EEA": "黾", "\u2EEB": "斉", "\u2EEC": "齐", "\u2EED": "歯", "\u2EEE": "齿", "\u2EEF": "竜",
    "\u2EF0": "龙", "\u2EF1": "龜", "\u2EF2": "亀", "\u2EF3": "龟",
}


def _build_table() -> dict[int, str]:
    table = {ord(k): v for k, v in RADICAL_SUPPLEMENT.items()}
    for cp in range(0x2F00, 0x2FD6):  # Kangxi radicals: NFKC gives the ideograph
        mapped = unicodedata.normalize("NFKC", chr(cp))
        if len(mapped) == 1 and mapped != chr(cp):
            table[cp] = mapped
    for cp in range(0xF900, 0xFADA):  # CJK compatibility ideographs: canonical singletons
        mapped = unicodedata.normalize("NFC", chr(cp))
        if len(mapped) == 1 and mapped != chr(cp):
            table[cp] = mapped
    return table


#: code point -> replacement, for ``str.translate`` (one code point for one).
FOLD_TABLE: dict[int, str] = _build_table()
_NEEDS_FOLD = re.compile("[\u2E80-\u2EFF\u2F00-\u2FDF\uF900-\uFAFF]")


def fold_cjk_variants(text: str) -> str:
    """Replace radical and compatibility code points by the ideographs they stand for.

    Args:
        text: Any text.

    Returns:
        A string of the same length (one code point for one), so offsets are unchanged.
    """
    if not _NEEDS_FOLD.search(text):
        return text
    return text.translate(FOLD_TABLE)


_SENTENCE_END = "。！？!?…；;：:"
_CLOSERS = "”’」』）)》〉】\"'"
#: A line at least this share of the page's text width (display columns) fills the line.
FULL_LINE_SHARE = 0.8
#: Pages whose longest line is shorter than this (display columns) are not wrapped prose.
MIN_WRAP_WIDTH = 16


def _width(line: str) -> int:
    """Display columns: 2 for East Asian wide/full-width characters, 1 otherwise."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def rejoin_wrapped_lines(text: str) -> str:
    """Join lines that were broken only because the line was full.

    A line break is removed when the line before it fills at least :data:`FULL_LINE_SHARE` of
    the widest line of ``text`` (one page), does not end with sentence or clause-final
    punctuation (``。！？；：…`` and their closing quotes), and the next line is not empty. Between
    two ASCII letters or digits a space takes the break's place; between CJK characters nothing
    does. Blank lines (paragraph breaks) and short lines (headings, last lines of paragraphs)
    are kept.

    Args:
        text: The text of one page, lines separated by ``\\n``.

    Returns:
        The text with wrap breaks removed; trailing spaces of joined lines are dropped.
    """
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    widths = [_width(line.rstrip()) for line in lines]
    widest = max(widths)
    if widest < MIN_WRAP_WIDTH:
        return text
    parts: list[str] = []
    for k, line in enumerate(lines[:-1]):
        stripped = line.rstrip()
        nxt = lines[k + 1]
        wraps = (stripped and nxt.strip() and not nxt.startswith(("  ", "\u3000"))
                 and widths[k] >= FULL_LINE_SHARE * widest
                 and stripped.rstrip(_CLOSERS)[-1:] not in _SENTENCE_END)
        if not wraps:
            parts.append(line + "\n")
            continue
        left, right = stripped[-1], nxt.lstrip()[:1]
        glue = " " if left.isascii() and left.isalnum() and right.isascii() and right.isalnum() else ""
        parts.append(stripped + glue)
        lines[k + 1] = nxt.lstrip()
    parts.append(lines[-1])
    return "".join(parts)
