"""Text layout for the archive: cleanup with an offset map back to the raw text, page-furniture
detection, paragraph reconstruction across layout line breaks, sentence splitting and
repeated-block removal.

All offsets are half-open ``[start, end)`` code-point indices into the *raw* document text (the
file decoded from UTF-8, nothing else changed), so ``raw[span.start:span.end] == span.text``.

Why the reconstruction is needed: the archive files come from newspaper/PDF extraction. Lines are
broken mid-sentence and even mid-word (``…重大决策部`` / blank line / ``署同向同行…``), photo
captions and headlines are interleaved into running text, and whole blocks are repeated. A line
break is treated as a *layout* break (the text continues) only on evidence:

1. the line does not end with a sentence end mark (``。！？…`` plus closing quotes) and is not a
   heading-like line (short, no sentence punctuation);
2. the next line is not a heading-like line, a short caption set off by several blank lines,
   nor a verbatim repeat of an earlier line;
3. a dictionary word crosses the break (jieba, no HMM), or the line ends with a clause mark
   (``，；：、``), or, failing both, the next-but-one line is not a better continuation (interleaved paragraphs: ``…;推`` / ``近年来,…`` / ``进资源…``).

Text is never invented: when two pieces cannot be joined without including something else, they
stay separate sentences (fragments).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from rag.ingest.normalize import FOLD_TABLE
from rag.types import Span

# --- character classes ---------------------------------------------------------------------

#: Sentence end marks (after cleanup, so half-width ``!?`` next to CJK are already full-width).
END_MARKS = "。！？…"
#: Characters that stay with the sentence after an end mark (``。”``).
CLOSERS = "”’」』）)》〉】\"'"
#: Clause separators for :func:`split_clauses` (full-width, i.e. after cleanup).
CLAUSE_MARKS = "，；："
#: Half-width punctuation converted to full width when next to CJK text.
_HALF_TO_FULL = {",": "，", ":": "：", ";": "；", "?": "？", "!": "！", "(": "（", ")": "）"}
#: Marks whose presence makes a line "sentence-like" rather than a heading.
_SENTENCE_PUNCT = set("，,；;。！？!?")
#: A line ends a paragraph when its last character (after trailing closers) is one of these.
_LINE_END = set("。！？!?…")
#: Invisible characters treated like whitespace (BOM, zero-width space/joiners).
_INVISIBLE = {"\ufeff", "\u200b", "\u200c", "\u200d", "\u2060"}

#: Sentences longer than this (characters of clean text) are further split after ``；``.
LONG_SENTENCE_CHARS = 150
#: Longest line (characters) that can be a heading / caption.
HEADING_MAX_CHARS = 64
#: Longest line (characters) treated as a stand-alone caption when it follows a broken line
#: (captions end with ``。`` so they are not heading-like) ...
STANDALONE_MAX_CHARS = 30
#: ... and is set off by at least this many blank lines (an image placeholder).
CAPTION_MIN_BLANK_LINES = 2
#: Repeated-block thresholds: a run of >= 2 sentences with >= 20 characters, or any run with
#: >= 40 characters (key length), is a repeat; shorter repeats (common headings) are legitimate.
REPEAT_MIN_SENTENCES = 2
REPEAT_MIN_RUN_CHARS = 20
REPEAT_MIN_CHARS = 40
#: Lines at least this long (characters) that repeat an earlier line verbatim start a new
#: paragraph (a repeated block begins there).
REPEAT_LINE_MIN_CHARS = 20

_CN_NUM = "一二三四五六七八九十百零〇"
_ENUM_HEADING = re.compile(rf"^(?:[（(][{_CN_NUM}\d]+[）)]|[{_CN_NUM}]+、|第[{_CN_NUM}\d]+[章节部分条])")

#: Page furniture (masthead, imprint, hotline, e-mail, URL, page markers). Whole-line patterns.
FURNITURE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"e-?mail\s*[:：]",
    r"[\w.+-]+@[\w-]+\.[\w.-]+",
    r"https?://",
    r"\bwww\.",
    r"国内统一刊号",
    r"国际标准连续出版物号",
    r"新闻热线",
    r"广告热线",
    r"发行热线",
    r"总第\s*\d+\s*期",
    r"今日\s*\d+\s*版",
    r"主管主办",
    r"报社出版",
    r"^(?:责任编辑|责编|编辑|校对|美编|版式|组版)\s*[:：]",
    r"^[A-Z][A-Z .]{5,}$",  # romanised masthead, e.g. "LIAO YUAN RI BAO"
    r"^\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日\s*(?:星期|周)[一二三四五六日天]$",
    r"^[甲乙丙丁戊己庚辛壬癸][子丑寅卯辰巳午未申酉戌亥]年[正一二三四五六七八九十冬腊]",  # lunar date
    r"^第\s*[\d一二三四五六七八九十]+\s*版",
))
#: Jump markers inside a line, e.g. ``(下转第三版)``; dropped as furniture.
JUMP_MARKER = re.compile(rf"[（(]\s*(?:下转|上接|转|接)第?\s*[{_CN_NUM}\d]+\s*版\s*[)）]")
#: Lines at the top of a page that may belong to the masthead block if a furniture line follows.
_MASTHEAD_SCAN_LINES = 12
_MASTHEAD_SHORT_CHARS = 20


def _is_space(ch: str) -> bool:
    return ch.isspace() or ch in _INVISIBLE


def _is_cjk_context(ch: str) -> bool:
    """True for CJK ideographs and CJK/general punctuation (anything from U+2000 up)."""
    return ord(ch) >= 0x2000 and not _is_space(ch)


def _is_ascii_word(ch: str) -> bool:
    return ord(ch) < 128 and not ch.isspace()


def _strip_range(raw: str, start: int, end: int) -> tuple[int, int]:
    while start < end and _is_space(raw[start]):
        start += 1
    while end > start and _is_space(raw[end - 1]):
        end -= 1
    return start, end


# --- public helpers --------------------------------------------------------------------------

def line_of(raw: str, offset: int) -> int:
    """1-based line number of ``offset`` (code points) in ``raw``; lines are split at ``\\n``."""
    offset = max(0, min(offset, len(raw)))
    return raw.count("\n", 0, offset) + 1


def normalize_for_match(s: str) -> str:
    """NFKC-normalise ``s`` and remove all whitespace (and zero-width characters).

    Used to compare evidence strings with archive text regardless of layout breaks and
    full-/half-width forms.
    """
    norm = unicodedata.normalize("NFKC", s)
    return "".join(ch for ch in norm if not _is_space(ch))


def clean_with_offsets(raw: str, start: int = 0, end: int | None = None) -> tuple[str, list[int]]:
    """Clean ``raw[start:end]`` and keep, for every clean character, its raw offset.

    Cleanup: whitespace runs (layout line breaks, spaces, BOM/zero-width characters) are removed,
    except that one space is kept between two ASCII characters (``N95 mask``); half-width
    ``,:;?!()`` next to CJK text (judged on the nearest non-space neighbours in the *whole* raw
    text, so a substring cleans exactly as it does inside a longer range) become ``，：；？！（）``;
    Kangxi/CJK radical and compatibility code points become the ideographs they stand for
    (:data:`rag.ingest.normalize.FOLD_TABLE`, so ``⺠生`` is searched as ``民生``). Every other
    character is copied unchanged, so the map is one raw offset per clean character.

    Args:
        raw: The raw document text.
        start: First raw offset (code points, inclusive).
        end: Last raw offset (exclusive); ``None`` = ``len(raw)``.

    Returns:
        ``(clean, offsets)`` with ``len(offsets) == len(clean)`` and ``offsets`` strictly
        increasing; a kept space maps to the first whitespace character it replaces.

    Raises:
        ValueError: ``start``/``end`` outside ``[0, len(raw)]`` or reversed.
    """
    end = len(raw) if end is None else end
    if not 0 <= start <= end <= len(raw):
        raise ValueError(f"bad range [{start}, {end}) for text of length {len(raw)}")
    out: list[str] = []
    offsets: list[int] = []
    pending_ws: int | None = None
    for i in range(start, end):
        ch = raw[i]
        if _is_space(ch):
            if pending_ws is None:
                pending_ws = i
            continue
        if pending_ws is not None:
            if out and _is_ascii_word(out[-1]) and _is_ascii_word(ch):
                out.append(" ")
                offsets.append(pending_ws)
            pending_ws = None
        if ch in _HALF_TO_FULL and _next_to_cjk(raw, i):
            ch = _HALF_TO_FULL[ch]
        elif ch >= "\u2e80":
            ch = FOLD_TABLE.get(ord(ch), ch)
        out.append(ch)
        offsets.append(i)
    return "".join(out), offsets


def _next_to_cjk(raw: str, i: int) -> bool:
    j = i - 1
    while j >= 0 and _is_space(raw[j]):
        j -= 1
    if j >= 0 and _is_cjk_context(raw[j]):
        return True
    k = i + 1
    while k < len(raw) and _is_space(raw[k]):
        k += 1
    return k < len(raw) and _is_cjk_context(raw[k])


def raw_span_of_clean(offsets: list[int], clean_start: int, clean_end: int) -> tuple[int, int]:
    """Map a clean-text range back to the raw range that produced it.

    Args:
        offsets: The offset map from :func:`clean_with_offsets`.
        clean_start: Start index into the clean string (inclusive).
        clean_end: End index (exclusive).

    Returns:
        ``(raw_start, raw_end)``, half-open code-point offsets covering exactly the raw characters
        of the clean substring (layout whitespace between them included). An empty clean range
        maps to an empty raw range at the corresponding position.

    Raises:
        ValueError: the clean range is outside ``[0, len(offsets)]`` or reversed.
    """
    if not 0 <= clean_start <= clean_end <= len(offsets):
        raise ValueError(f"bad clean range [{clean_start}, {clean_end}) for {len(offsets)} chars")
    if clean_start == clean_end:
        pos = offsets[clean_start] if clean_start < len(offsets) else (offsets[-1] + 1 if offsets else 0)
        return pos, pos
    return offsets[clean_start], offsets[clean_end - 1] + 1


def split_clauses(span: Span) -> list[Span]:
    """Split a sentence at clause marks ``，；：`` (half-width forms next to CJK included).

    Each clause keeps its trailing mark; pieces are verbatim sub-spans of ``span`` with raw
    offsets (``raw[c.start:c.end] == c.text``) and no leading/trailing whitespace.

    Args:
        span: A sentence from :func:`document_spans`.

    Returns:
        Clauses in order; ``[span]`` when there is nothing to split.
    """
    clean, offsets = clean_with_offsets(span.text)
    pieces: list[Span] = []
    begin = 0
    for i, ch in enumerate(clean):
        if ch in CLAUSE_MARKS:
            pieces.append(_sub_span(span, clean, offsets, begin, i + 1))
            begin = i + 1
    if begin < len(clean):
        pieces.append(_sub_span(span, clean, offsets, begin, len(clean)))
    pieces = [p for p in pieces if p.text]
    return pieces if len(pieces) > 1 else [span]


def _sub_span(span: Span, clean: str, offsets: list[int], a: int, b: int) -> Span:
    while a < b and clean[a] == " ":
        a += 1
    while b > a and clean[b - 1] == " ":
        b -= 1
    rs, re_ = raw_span_of_clean(offsets, a, b)
    return Span(span.doc_id, span.start + rs, span.start + re_, span.text[rs:re_], clean[a:b])


# --- line classification ---------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """A non-empty piece of a raw line: ``raw[start:end] == text``, stripped of whitespace.

    ``hard_break`` is True when something was dropped right before it on the same line (a jump
    marker), so it may not be joined to the previous piece.
    """

    start: int
    end: int
    text: str
    hard_break: bool = False


def is_furniture_line(text: str) -> bool:
    """True if a (stripped) line is page furniture: masthead, imprint, hotline, e-mail, URL."""
    return any(p.search(text) for p in FURNITURE_PATTERNS)


def is_heading_line(text: str) -> bool:
    """True if a stripped line looks like a heading, kicker, byline or salutation.

    Headings are at most :data:`HEADING_MAX_CHARS` characters and contain no sentence punctuation
    (``，；。！？`` in either width); enumerated section heads (``(二)…``, ``一、…``) may contain
    commas but no end marks.
    """
    if not text or len(text) > HEADING_MAX_CHARS:
        return False
    body = text.rstrip(CLOSERS)
    if _ENUM_HEADING.match(text):
        return not any(ch in "。！？!?" for ch in body)
    return not any(ch in _SENTENCE_PUNCT for ch in text)


def _ends_sentence(text: str) -> bool:
    body = text.rstrip(CLOSERS)
    return bool(body) and body[-1] in _LINE_END


def _is_standalone(text: str) -> bool:
    """Short line without clause punctuation: a caption/heading that interrupts running text."""
    if len(text) > STANDALONE_MAX_CHARS:
        return False
    inner = text.rstrip(CLOSERS).rstrip("。！？!?…")
    return not any(ch in "，,；;" for ch in inner)


def split_lines(raw: str) -> tuple[list[Line], list[tuple[int, int, str]]]:
    """Non-empty, non-furniture line pieces of ``raw`` and the furniture ranges dropped.

    Returns:
        ``(lines, dropped)``: lines in order; dropped ``(start, end, "furniture")`` raw ranges.
    """
    candidates: list[Line] = []
    pos = 0
    for part in raw.split("\n"):
        s, e = _strip_range(raw, pos, pos + len(part))
        if s < e:
            candidates.append(Line(s, e, raw[s:e]))
        pos += len(part) + 1
    dropped: list[tuple[int, int, str]] = []
    furniture = [is_furniture_line(ln.text) for ln in candidates]
    # Masthead block: short lines at the top of a page up to the last furniture line there.
    last = -1
    for k, ln in enumerate(candidates[:_MASTHEAD_SCAN_LINES]):
        if furniture[k]:
            last = k
        elif len(ln.text) > _MASTHEAD_SHORT_CHARS or _ends_sentence(ln.text):
            break
    for k in range(last + 1):
        furniture[k] = True
    lines: list[Line] = []
    for ln, furn in zip(candidates, furniture):
        if furn:
            dropped.append((ln.start, ln.end, "furniture"))
            continue
        # Jump markers inside the line are cut out; the pieces around them cannot be joined.
        cursor, hard = ln.start, False
        for m in JUMP_MARKER.finditer(ln.text):
            ms, me = ln.start + m.start(), ln.start + m.end()
            s, e = _strip_range(raw, cursor, ms)
            if s < e:
                lines.append(Line(s, e, raw[s:e], hard))
            dropped.append((ms, me, "furniture"))
            cursor, hard = me, True
        s, e = _strip_range(raw, cursor, ln.end)
        if s < e:
            lines.append(Line(s, e, raw[s:e], hard))
    return lines, dropped


# --- joining layout breaks -------------------------------------------------------------------

def _segmenter():
    """The jieba tokenizer shared with :mod:`rag.tokenize` (same user dictionary, one copy)."""
    from rag.tokenize import jieba_tokenizer

    return jieba_tokenizer()


def _is_cjk_char(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


def word_crosses(left: str, right: str, window: int = 6) -> bool:
    """True if a dictionary word (jieba, no HMM guessing) spans the join of ``left``+``right``.

    Evidence that a line break falls inside a word (``部|署``, ``发|热``), i.e. is a layout break.
    Only words of two or more CJK characters count.
    """
    a = "".join(ch for ch in left if not _is_space(ch))[-window:]
    b = "".join(ch for ch in right if not _is_space(ch))[:window]
    if not a or not b or not (_is_cjk_char(a[-1]) and _is_cjk_char(b[0])):
        return False
    pos = 0
    for tok in _segmenter().cut(a + b, HMM=False):
        nxt = pos + len(tok)
        if pos < len(a) < nxt:
            return len(tok) >= 2 and all(_is_cjk_char(c) for c in tok)
        pos = nxt
        if pos >= len(a):
            break
    return False


def _join_decisions(raw: str, lines: list[Line]) -> list[bool]:
    """``joins[k]`` is True when the break between ``lines[k]`` and ``lines[k+1]`` is layout."""
    n = len(lines)
    joins = [False] * max(0, n - 1)
    keys = [normalize_for_match(ln.text) for ln in lines]
    first_seen: dict[str, int] = {}
    repeat_of: list[int | None] = []
    for k, key in enumerate(keys):
        repeat_of.append(first_seen.get(key) if len(key) >= REPEAT_LINE_MIN_CHARS else None)
        first_seen.setdefault(key, k)
    blank_lines = [max(0, raw.count("\n", lines[k].end, lines[k + 1].start) - 1)
                   for k in range(n - 1)]
    blocked: set[int] = set()  # breaks fixed as paragraph breaks by the interleave rule
    for k in range(n - 1):
        a, b = lines[k], lines[k + 1]
        if k in blocked or b.hard_break:
            continue
        if _ends_sentence(a.text) or is_heading_line(a.text):
            continue
        r = repeat_of[k + 1]
        if r is not None and (r == 0 or keys[r - 1] != keys[k]):
            continue  # a repeated block starts at b
        if word_crosses(a.text, b.text):
            joins[k] = True
            continue
        if a.text[-1] in "，,、；;：:" and not is_heading_line(b.text):
            joins[k] = True  # a line ending mid-clause continues unless a heading follows
            continue
        if is_heading_line(b.text):
            continue
        if _is_standalone(b.text) and blank_lines[k] >= CAPTION_MIN_BLANK_LINES:
            continue  # a caption set off by several blank lines (image placeholder)
        # Interleaved paragraph: b is itself broken and the line after it continues a.
        if k + 2 < n and not _ends_sentence(b.text) and not lines[k + 2].hard_break \
                and word_crosses(a.text, lines[k + 2].text):
            blocked.add(k + 1)
            continue
        joins[k] = True
    return joins


# --- sentences -------------------------------------------------------------------------------

def _sentence_bounds(clean: str) -> list[tuple[int, int]]:
    """Split clean paragraph text into ``[a, b)`` sentence ranges (clean indices)."""
    bounds: list[tuple[int, int]] = []
    begin, i, n = 0, 0, len(clean)
    while i < n:
        if clean[i] in END_MARKS:
            j = i + 1
            while j < n and clean[j] in END_MARKS:
                j += 1
            while j < n and clean[j] in CLOSERS:
                j += 1
            bounds.append((begin, j))
            begin = i = j
        else:
            i += 1
    if begin < n:
        bounds.append((begin, n))
    out: list[tuple[int, int]] = []
    for a, b in bounds:
        if b - a > LONG_SENTENCE_CHARS:
            cut = a
            for k in range(a, b):
                if clean[k] == "；" and k + 1 < b:
                    out.append((cut, k + 1))
                    cut = k + 1
            out.append((cut, b))
        else:
            out.append((a, b))
    trimmed = []
    for a, b in out:
        while a < b and clean[a] == " ":
            a += 1
        while b > a and clean[b - 1] == " ":
            b -= 1
        if a < b:
            trimmed.append((a, b))
    return trimmed


def _repeat_key(clean: str) -> str:
    norm = normalize_for_match(clean)
    return "".join(ch for ch in norm if unicodedata.category(ch)[0] in "LN")


def find_repeats(keys: list[str]) -> list[tuple[int, int, int]]:
    """Repeated runs in a sequence of sentence keys.

    Greedy left to right: at each position ``j`` take the longest run ``keys[j:j+k] ==
    keys[i:i+k]`` with ``i + k <= j`` (the first occurrence lies wholly before) and ``i`` not
    itself a repeat; runs below the thresholds (:data:`REPEAT_MIN_SENTENCES` sentences with
    :data:`REPEAT_MIN_RUN_CHARS` characters, or :data:`REPEAT_MIN_CHARS` characters) are ignored.

    Args:
        keys: Normalised sentence texts (empty keys never match).

    Returns:
        ``(j, k, i)`` triples: sentences ``j..j+k-1`` repeat sentences ``i..i+k-1``.
    """
    n = len(keys)
    positions: dict[str, list[int]] = {}
    for idx, key in enumerate(keys):
        if key:
            positions.setdefault(key, []).append(idx)
    is_repeat = [False] * n
    runs: list[tuple[int, int, int]] = []
    j = 0
    while j < n:
        best_k, best_i = 0, -1
        for i in positions.get(keys[j], []):
            if i >= j:
                break
            if is_repeat[i]:
                continue
            k = 0
            while j + k < n and i + k < j and keys[i + k] and keys[i + k] == keys[j + k] \
                    and not is_repeat[i + k]:
                k += 1
            if k > best_k:
                best_k, best_i = k, i
        chars = sum(len(keys[j + t]) for t in range(best_k))
        if best_k and ((best_k >= REPEAT_MIN_SENTENCES and chars >= REPEAT_MIN_RUN_CHARS)
                       or chars >= REPEAT_MIN_CHARS):
            runs.append((j, best_k, best_i))
            for t in range(best_k):
                is_repeat[j + t] = True
            j += best_k
        else:
            j += 1
    return runs


@dataclass(frozen=True)
class DocumentLayout:
    """The indexable structure of one document.

    Attributes:
        doc_id: Owning document.
        sentences: Indexable sentences in document order, non-overlapping; each
            ``raw[s.start:s.end] == s.text`` with no leading/trailing whitespace, ``s.clean`` has
            no line breaks.
        paragraph_ids: Paragraph ordinal (0-based, increasing) per sentence.
        headings: True per sentence when it is a heading/byline line (a paragraph of one
            heading-like line).
        dropped: Raw ranges not indexed, ``(start, end, reason)`` sorted by start; reason is
            ``"furniture"`` or ``"repeat of <start>"`` (start offset of the first occurrence).
    """

    doc_id: str
    sentences: list[Span] = field(default_factory=list)
    paragraph_ids: list[int] = field(default_factory=list)
    headings: list[bool] = field(default_factory=list)
    dropped: list[tuple[int, int, str]] = field(default_factory=list)

    def gap_between(self, end: int, start: int) -> bool:
        """True if a dropped range lies (partly) inside raw ``[end, start)``."""
        return any(ds < start and de > end for ds, de, _ in self.dropped)


def document_spans(doc_id: str, raw: str) -> DocumentLayout:
    """Reconstruct paragraphs and sentences of one raw document.

    Steps: drop furniture lines and jump markers; join layout-broken lines into paragraphs
    (evidence rules in the module docstring); clean each paragraph with an offset map and split it
    at ``。！？…`` (closing quotes kept), then after ``；`` in sentences over
    :data:`LONG_SENTENCE_CHARS` characters; headings are single sentences; finally drop repeated
    sentence runs (:func:`find_repeats`), keeping the first occurrence.

    Args:
        doc_id: Document id stored on each span.
        raw: Raw text exactly as decoded from the file.

    Returns:
        The :class:`DocumentLayout`. Empty lists for an empty or furniture-only text.
    """
    lines, dropped = split_lines(raw)
    joins = _join_decisions(raw, lines)
    sentences: list[Span] = []
    para_ids: list[int] = []
    headings: list[bool] = []
    para = 0
    k = 0
    while k < len(lines):
        first = k
        while k < len(joins) and joins[k]:
            k += 1
        start, end = lines[first].start, lines[k].end
        heading = first == k and is_heading_line(lines[k].text)
        clean, offsets = clean_with_offsets(raw, start, end)
        bounds = [(0, len(clean))] if heading else _sentence_bounds(clean)
        for a, b in bounds:
            rs, re_ = raw_span_of_clean(offsets, a, b)
            sentences.append(Span(doc_id, rs, re_, raw[rs:re_], clean[a:b]))
            para_ids.append(para)
            headings.append(heading)
        para += 1
        k += 1
    runs = find_repeats([_repeat_key(s.clean) for s in sentences])
    drop_idx: set[int] = set()
    for j, length, i in runs:
        dropped.append((sentences[j].start, sentences[j + length - 1].end,
                        f"repeat of {sentences[i].start}"))
        drop_idx.update(range(j, j + length))
    keep = [t for t in range(len(sentences)) if t not in drop_idx]
    dropped.sort()
    return DocumentLayout(doc_id=doc_id,
                          sentences=[sentences[t] for t in keep],
                          paragraph_ids=[para_ids[t] for t in keep],
                          headings=[headings[t] for t in keep],
                          dropped=dropped)
