"""Per-sentence facts that do not depend on the question, computed once and cached.

Part-of-speech tagging is the expensive step (jieba ``posseg``: about 1 ms for a 46-character
sentence). It runs once per *document* (:class:`DocumentWords`: the document's matching form,
tagged in one pass, about 0.1 s for a 7,000-character page) and each candidate sentence takes
the words whose first character lies inside it. :class:`SentenceFacts` then holds everything
the feature extractor needs about one sentence: matching form, words, clause boundaries, slot
mentions, heading/by-line/list-item/fragment flags. Both caches are bounded LRU dictionaries
keyed by document text identity, so a changed document is re-analysed.
"""

from __future__ import annotations

import bisect
import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

from ..types import Span
from .lexicon import BYLINE_WORDS, COMMON_SURNAMES, ENUM_PREFIXES, LIST_ANNOUNCERS, ORG_SUFFIXES
from .slots import Mention, find_mentions
from .textutil import CLAUSE_PUNCT, norm

__all__ = ["DocumentWords", "SentenceFacts", "FactsCache", "pos_cut", "person_like", "section_mentions"]

_pos_lock = threading.Lock()
_pos_tokenizer = None


def pos_cut(text: str) -> list[tuple[str, str]]:
    """jieba part-of-speech tagging (``jieba.posseg``) with the domain user dictionary.

    Returns:
        ``[(word, flag), ...]`` covering ``text`` in order (flags as in the jieba README,
        "词性标注": ``nr`` person, ``ns`` place, ``nt`` organisation, ``nz`` other proper noun).
    """
    global _pos_tokenizer
    with _pos_lock:
        if _pos_tokenizer is None:
            import jieba.posseg

            from ..tokenize import jieba_tokenizer

            _pos_tokenizer = jieba.posseg.POSTokenizer(jieba_tokenizer())
        tok = _pos_tokenizer
    return [(w.word, w.flag) for w in tok.cut(text)]


def person_like(word: str, flag: str) -> bool:
    """A jieba ``nr*`` word of 2–4 characters starting with a common surname (jieba tags many
    ordinary words ``nr``: 拓宽, 智慧; surnames from :data:`rag.answer.lexicon.COMMON_SURNAMES`)."""
    return flag.startswith("nr") and 2 <= len(word) <= 4 and word[0] in COMMON_SURNAMES


def _org_like(word: str, flag: str) -> bool:
    return flag == "nt" or (len(word) > 2 and word.endswith(ORG_SUFFIXES) and flag.startswith("n"))


@dataclass(frozen=True)
class DocumentWords:
    """A document's matching form, tagged once.

    Attributes:
        norm: NFKC, lower-case, whitespace-free text.
        raw_pos: For every character of ``norm``, its offset in the raw text.
        words: ``(norm_start, norm_end, word, flag)`` in order.
        word_starts: ``norm_start`` of each word (for bisection).
    """

    norm: str
    raw_pos: tuple[int, ...]
    words: tuple[tuple[int, int, str, str], ...]
    word_starts: tuple[int, ...]

    @classmethod
    def of(cls, raw: str) -> "DocumentWords":
        chars: list[str] = []
        pos: list[int] = []
        for i, ch in enumerate(raw):
            if ch.isspace():
                continue
            for c in unicodedata.normalize("NFKC", ch).lower():
                if not c.isspace():
                    chars.append(c)
                    pos.append(i)
        text = "".join(chars)
        words = []
        at = 0
        for word, flag in pos_cut(text):
            words.append((at, at + len(word), word, flag))
            at += len(word)
        return cls(text, tuple(pos), tuple(words), tuple(w[0] for w in words))

    def norm_range(self, start: int, end: int) -> tuple[int, int]:
        """Norm offsets ``[a, b)`` of the raw range ``[start, end)``."""
        return bisect.bisect_left(self.raw_pos, start), bisect.bisect_left(self.raw_pos, end)

    def words_in(self, a: int, b: int) -> list[tuple[int, int, str, str]]:
        """Words whose first character lies in norm ``[a, b)``."""
        i = bisect.bisect_left(self.word_starts, a)
        j = bisect.bisect_left(self.word_starts, b)
        return list(self.words[i:j])


_TERMINAL = set("。！？!?；;…”’\"')）")
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
_NAME_LINE_RE = re.compile(r"[\u4e00-\u9fff]{2,4}")
_ITEM_RE = re.compile(r"^[“\"]?(?:[一二三四五六七八九十]+(?:是|要|则|、)|" + "|".join(ENUM_PREFIXES) + r"|"
                      r"第[一二三四五六七八九十]+[,，、:：]|[（(][一二三四五六七八九十\d]+[)）]|\d+[.、．]\D|"
                      r"建议[:：])")
_ANNOUNCE_END_RE = re.compile(r"(?:" + "|".join(LIST_ANNOUNCERS) + r")(?:如下)?[:：]$")
_BYLINE_RE = re.compile(r"^——|" + "|".join(BYLINE_WORDS))


@dataclass(frozen=True)
class SentenceFacts:
    """Question-independent facts of one candidate sentence.

    Attributes:
        norm: Matching form of the sentence.
        words: Normalised words (jieba precise mode, from the document tagging).
        word_set: ``frozenset(words)``.
        persons: Person names (surname-filtered ``nr``).
        mentions: Slot mentions (:func:`rag.answer.slots.find_mentions`), offsets into ``norm``.
        clause_ends: Norm offsets where a clause ends (after ``，；：``), and ``len(norm)``.
        heading: A heading/by-line line (layout flag, or a line of its own of at most 40
            characters without terminal punctuation).
        byline: A heading naming a person or reporter (``——访…``, ``本报记者``, a bare name).
        name_line: A heading that is a name (``刘立新``, ``市长 孙弘``).
        terminal: Ends with terminal punctuation.
        fragment: Starts a layout line that continues a word cut at the end of the previous line.
        item: Starts like an enumerated item (一是, 首先, (一), 1., 建议:).
        announces: Ends like a list announcement (``建议如下：``).
        bigrams: Character bigrams of ``norm`` (near-duplicate test).
    """

    norm: str
    words: tuple[str, ...]
    word_set: frozenset[str]
    persons: frozenset[str]
    mentions: tuple[Mention, ...]
    clause_ends: tuple[int, ...]
    heading: bool
    byline: bool
    name_line: bool
    terminal: bool
    fragment: bool
    item: bool
    announces: bool
    bigrams: frozenset[str] = frozenset()

    def clause_of(self, pos: int) -> int:
        """Index of the clause holding norm offset ``pos``."""
        return bisect.bisect_right(self.clause_ends, pos)


def _is_heading(layout_heading: bool, span: Span, raw: str) -> bool:
    if layout_heading:
        return True
    line_start = raw.rfind("\n", 0, span.start) + 1
    line_end = raw.find("\n", span.end)
    line_end = len(raw) if line_end < 0 else line_end
    text = span.text.rstrip()
    # 40 characters: longer lines without end punctuation are broken body text, not titles.
    return (not raw[line_start:span.start].strip() and not raw[span.end:line_end].strip()
            and len("".join(text.split())) <= 40 and text[-1:] not in _TERMINAL)


def _is_fragment(span: Span, raw: str) -> bool:
    """The span starts a layout line that continues a word cut at the end of the previous
    non-blank line (that line is 20+ characters and ends in a CJK character), e.g.
    ``程医疗服务,…`` after ``…基层防病治病和健康``. 20: shorter lines are headings or captions."""
    line_start = raw.rfind("\n", 0, span.start) + 1
    if raw[line_start:span.start].strip() or line_start == 0:
        return False
    before = raw[:line_start].rstrip()
    prev_line = before[before.rfind("\n") + 1:].strip()
    return len(prev_line) >= 20 and bool(_CJK_RE.fullmatch(prev_line[-1]))


def _clause_ends(text_norm: str) -> tuple[int, ...]:
    ends = []
    for i, ch in enumerate(text_norm):
        if ch in CLAUSE_PUNCT:
            if ch in ",:" and 0 < i < len(text_norm) - 1 and text_norm[i - 1].isdigit() \
                    and text_norm[i + 1].isdigit():
                continue
            ends.append(i + 1)
    if not ends or ends[-1] != len(text_norm):
        ends.append(len(text_norm))
    return tuple(ends)


def analyse_sentence(span: Span, layout_heading: bool, raw: str, doc: DocumentWords) -> SentenceFacts:
    """Compute :class:`SentenceFacts` of ``span`` (``raw[span.start:span.end] == span.text``)."""
    text_norm = norm(span.text)
    a, _ = doc.norm_range(span.start, span.end)
    # Align the document tagging to the sentence's own matching form (they agree character for
    # character except around NFKC expansions, where the sentence form wins).
    words = []
    persons, orgs, places, others = [], [], [], []
    if doc.norm[a:a + len(text_norm)] == text_norm:
        for ws, we, word, flag in doc.words_in(a, a + len(text_norm)):
            s, e = ws - a, min(we, a + len(text_norm)) - a
            words.append((s, e, text_norm[s:e], flag))
    else:
        at = 0
        for word, flag in pos_cut(text_norm):
            words.append((at, at + len(word), word, flag))
            at += len(word)
    for s, e, word, flag in words:
        if person_like(word, flag):
            persons.append((s, e))
        elif _org_like(word, flag):
            orgs.append((s, e))
        elif flag == "ns" and len(word) >= 2:
            places.append((s, e))
        elif flag == "nz" and len(word) >= 2:
            others.append((s, e))
    heading = _is_heading(layout_heading, span, raw)
    person_names = frozenset(text_norm[s:e] for s, e in persons)
    last = norm(span.text.split()[-1]) if span.text.split() else ""
    # A name line: a bare 2-4 character name, a title + name of at most 12 characters (市长 孙弘),
    # or a short (<= 20) line holding a person name: longer headings are titles.
    name_line = heading and bool(_NAME_LINE_RE.fullmatch(text_norm)
                                 or (len(text_norm) <= 12 and _NAME_LINE_RE.fullmatch(last))
                                 or (len(text_norm) <= 20 and person_names))
    if name_line and not persons:
        # A by-line is a name (``刘立新``, ``市长 孙弘``): its last part is the person.
        name = text_norm if _NAME_LINE_RE.fullmatch(text_norm) else last
        if name and text_norm.endswith(name):
            persons.append((len(text_norm) - len(name), len(text_norm)))
            person_names = frozenset([name])
    mentions = find_mentions(text_norm, persons, orgs, places, others)
    byline = heading and bool(_BYLINE_RE.search(text_norm) or name_line or person_names)
    word_list = tuple(w for _, _, w, _ in words)
    return SentenceFacts(
        norm=text_norm, words=word_list, word_set=frozenset(word_list), persons=person_names,
        mentions=mentions, clause_ends=_clause_ends(text_norm), heading=heading, byline=byline,
        name_line=name_line, terminal=span.text.rstrip()[-1:] in _TERMINAL,
        fragment=not heading and _is_fragment(span, raw), item=bool(_ITEM_RE.match(text_norm)),
        announces=bool(_ANNOUNCE_END_RE.search(text_norm)),
        bigrams=frozenset(text_norm[i:i + 2] for i in range(len(text_norm) - 1)) or frozenset([text_norm]))


def section_mentions(section_norm: str) -> tuple[Mention, ...]:
    """Slot mentions (persons, organisations, places, titles, ...) of a heading block in matching
    form, tagged with jieba like a sentence."""
    persons, orgs, places = [], [], []
    at = 0
    for word, flag in pos_cut(section_norm):
        span = (at, at + len(word))
        at += len(word)
        if person_like(word, flag):
            persons.append(span)
        elif _org_like(word, flag):
            orgs.append(span)
        elif flag == "ns" and len(word) >= 2:
            places.append(span)
    return find_mentions(section_norm, persons, orgs, places)


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()

    def get(self, key):
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class FactsCache:
    """Thread-safe caches of :class:`DocumentWords` (per document text) and
    :class:`SentenceFacts` (per span), bounded LRU.

    Args:
        max_documents: Documents kept tagged (each costs about 20 bytes per character).
        max_sentences: Sentences kept analysed.
    """

    def __init__(self, max_documents: int = 256, max_sentences: int = 200_000):
        self._docs = _LRU(max_documents)
        self._sents = _LRU(max_sentences)
        self._lock = threading.Lock()

    def document(self, doc_id: str, raw: str) -> DocumentWords:
        """The tagged document (tagging it on first use)."""
        key = (doc_id, len(raw), hash(raw))
        with self._lock:
            found = self._docs.get(key)
        if found is None:
            found = DocumentWords.of(raw)
            with self._lock:
                self._docs.put(key, found)
        return found

    def section(self, section_norm: str) -> tuple[Mention, ...]:
        """Slot mentions of a section heading block (matching form), tagged once per block: the
        by-line under a proposal title names who wrote it (``九三学社…副主委 刘卫平``)."""
        if not section_norm:
            return ()
        key = ("section", section_norm)
        with self._lock:
            found = self._sents.get(key)
        if found is None:
            found = section_mentions(section_norm)
            with self._lock:
                self._sents.put(key, found)
        return found

    def sentence(self, span: Span, layout_heading: bool, doc_id: str, raw: str) -> SentenceFacts:
        """The facts of ``span`` in document ``doc_id`` whose text is ``raw``."""
        key = (doc_id, len(raw), hash(raw), span.start, span.end, layout_heading)
        with self._lock:
            found = self._sents.get(key)
        if found is None:
            found = analyse_sentence(span, layout_heading, raw, self.document(doc_id, raw))
            with self._lock:
                self._sents.put(key, found)
        return found
