"""Chat helpers of the OpenAI-compatible endpoint: which question a conversation asks, how the
answer is rendered as assistant text, and how OpenAI's ``max_tokens`` / ``stop`` cut that text.

Nothing here retrieves or answers; :mod:`server.app` hands the chosen question to the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from rag.errors import BadQuestionError
from rag.types import Answer

from .schemas import ChatMessage

# --- follow-up detection --------------------------------------------------------------------
#
# A follow-up leans on an earlier turn: it points back (pronouns, demonstratives, 其中), carries
# on (还有, 另外, 那…), asks "what about X" (X呢 without a question word), or names no topic of
# its own (为什么, 谁提的, 多少亩). A question with its own topic words and none of these signals
# is answered alone, however short (人均收入多少).

#: Pronouns and anaphoric words, matched as whole jieba tokens.
ANAPHORA = frozenset({
    "他", "她", "它", "他们", "她们", "它们", "他的", "她的", "它的", "其", "其中", "其余",
    "前者", "后者", "上述", "此", "该", "这", "那",
})

#: A token starting with one of these demonstratives points back (这个, 那些, 该市, 此次, 此外).
DEMONSTRATIVE_HEADS = ("这", "那", "该", "此")

#: First tokens that continue the previous question (还有哪些, 另外呢, 那么…). Matched
#: as whole tokens, so 和平区 does not count (再 is left out: 再就业).
CONTINUATION_OPENERS = frozenset({"还有", "还", "另外", "此外", "那么", "那", "以及", "和", "同时",
                                  "除此之外", "而"})

#: Interrogative words: a 呢 after one of them is a tone particle, not "what about X?".
QUESTION_WORDS = frozenset({
    "什么", "多少", "怎么", "怎样", "怎么样", "如何", "哪", "哪些", "哪个", "哪里", "哪儿", "哪年",
    "为什么", "为何", "是否", "是不是", "有没有", "几", "几个", "几年", "多久", "多大", "多长", "谁",
    "吗", "何时", "什么时候",
})

#: Words that carry no topic of their own (so 情况怎么样 or 具体说说 still needs the last turn).
GENERIC_WORDS = QUESTION_WORDS | frozenset({
    "的", "了", "是", "有", "在", "对", "和", "与", "及", "把", "被", "从", "给", "呢", "吧", "啊",
    "呀", "还", "还有", "都", "也", "又", "就", "请问", "请", "告诉", "一下", "说说", "介绍",
    "具体", "详细", "情况", "内容", "方面", "问题", "东西", "一些", "别的", "其他", "其它", "我",
    "你", "我们", "你们", "知道", "提", "提了", "说", "说了", "讲",
})

#: 该 followed by one of these is the modal "should" (该如何…), not the demonstrative "that".
_MODAL_AFTER_GAI = frozenset({"如何", "怎么", "怎样", "怎么办", "不该", "是", "有", "做"})

_TRAILING_PUNCT = "？?！!。.，,；;～~… \t\r\n"


def _tokens(text: str) -> list[str]:
    from rag.tokenize import jieba_tokenizer

    return [t for t in jieba_tokenizer().lcut(text) if t.strip() and any(c.isalnum() for c in t)]


def _has_topic(tokens: Sequence[str]) -> bool:
    """A token that names something: two or more characters and not generic, or a number / Latin
    word (2021年, GDP)."""
    for t in tokens:
        if any(c.isascii() and c.isalnum() for c in t):
            return True
        if len(t) >= 2 and t not in GENERIC_WORDS:
            return True
    return False


def is_follow_up(question: str) -> bool:
    """True when ``question`` leans on an earlier turn, False for a self-contained question.

    Follow-ups: a pronoun or demonstrative anywhere (他们是谁, 这个建议是谁提的, 其中女性占多少,
    该市GDP是多少); a continuation opener (还有呢, 另外呢, 那农田呢); an elliptical ``X呢``
    with no question word (新建农田呢？); or no topic word at all (为什么, 谁提的, 多少亩).
    Self-contained: everything else, e.g. 人均收入多少 or 辽源的美丽乡村建设情况怎么样呢？
    (its 呢 follows a question word).

    Args:
        question: One user turn.

    Returns:
        Whether the turn should be read together with the turn before it.
    """
    q = question.strip()
    if not q:
        return False
    tokens = _tokens(q)
    if tokens and tokens[0] in CONTINUATION_OPENERS:
        return True
    for i, t in enumerate(tokens):
        if t == "该" and i + 1 < len(tokens) and tokens[i + 1] in _MODAL_AFTER_GAI:
            continue  # 该如何… = "how should …"
        if t in ANAPHORA or t.startswith(DEMONSTRATIVE_HEADS):
            return True
    core = q.rstrip(_TRAILING_PUNCT)
    if core.endswith("呢") and not any(t in QUESTION_WORDS for t in tokens):
        return True  # 农业呢 = "and what about agriculture?"
    return not _has_topic(tokens)


def retrieval_question(messages: Sequence[ChatMessage], max_chars: int) -> tuple[str, str]:
    """Pick what to answer from a conversation.

    The last ``user`` message is answered. When it is a follow-up (:func:`is_follow_up`), the
    question sent to the pipeline is the earlier user turns back to the nearest self-contained
    one, then the last turn, joined by spaces (``农业农村局有什么计划 那农田呢？``). When that is
    longer than ``max_chars`` characters, the nearest self-contained turn and the last turn are
    tried, then the last turn alone.

    Returns:
        ``(last user message stripped, question for the pipeline)``.

    Raises:
        BadQuestionError (422): there is no user message.
    """
    users = [m.text().strip() for m in messages if m.role == "user"]
    if not users:
        raise BadQuestionError("the conversation has no user message",
                               hint='send messages: [{"role": "user", "content": "..."}]')
    last = users[-1]
    if not last or not is_follow_up(last):
        return last, last
    chain: list[str] = []
    for earlier in reversed(users[:-1]):
        if not earlier:
            continue
        chain.insert(0, earlier)
        if not is_follow_up(earlier):
            break
    if not chain:
        return last, last
    for parts in (chain + [last], [chain[0], last]):
        combined = " ".join(parts)
        if len(combined) <= max_chars:
            return last, combined
    return last, last


# --- assistant text -------------------------------------------------------------------------

#: A citation marker in the answer text.
CITATION_MARKER = re.compile(r"\[\d+\]")

#: Heading of the source list under the answer.
SOURCES_HEAD = "来源："

_SOURCE_LINE = re.compile(r"^\[\d+\] \[《.*$", re.MULTILINE)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def format_content(answer: Answer) -> str:
    """Assistant message text: the answer with ``[n]`` markers, then a ``来源`` list of markdown
    links ``[n] [《title》](url)`` (also when abstaining with low-confidence snippets)."""
    text = answer.answer
    if answer.citations:
        lines = []
        for c in answer.citations:
            url = f"<{c.url}>" if " " in c.url else c.url
            line = f"[{c.id}] [《{_md_escape(c.title or c.doc_id)}》]({url})"
            lines.append(line + (f" {c.date}" if c.date else ""))
        text = f"{text}\n\n{SOURCES_HEAD}\n" + "\n".join(lines)
    return text


@dataclass(frozen=True)
class Completion:
    """The assistant text after OpenAI's limits.

    Attributes:
        content: The text sent to the client (a prefix of the composed text).
        finish_reason: ``"length"`` when ``max_tokens`` cut it, else ``"stop"`` (a stop string
            or the natural end).
        cited_ids: Citation ids whose ``[n]`` marker is still in ``content``.
    """

    content: str
    finish_reason: str
    cited_ids: frozenset[int]


def _atomic_spans(text: str) -> list[tuple[int, int]]:
    """Spans a cut must not enter: each ``[n]`` marker and each source-list line."""
    spans = [(m.start(), m.end()) for m in CITATION_MARKER.finditer(text)]
    spans += [(m.start(), m.end()) for m in _SOURCE_LINE.finditer(text)]
    return spans


def _safe_cut(spans: Sequence[tuple[int, int]], pos: int) -> int:
    """``pos``, moved back to the start of any atomic span it falls strictly inside."""
    moved = True
    while moved:
        moved = False
        for start, end in spans:
            if start < pos < end:
                pos, moved = start, True
    return pos


def apply_limits(content: str, max_chars: int | None = None, stop: Sequence[str] = ()) -> Completion:
    """Cut ``content`` at the first ``stop`` string and at ``max_chars`` characters, never inside a
    citation marker ``[n]`` or a source-list line (the cut moves back to its start).

    OpenAI semantics: the stop string itself is not returned; ``finish_reason`` is ``"length"``
    when the length limit cut the text, else ``"stop"``. Tokens are counted as characters (this
    bot has no tokenizer of its own; a Chinese character is about one token in OpenAI's
    tokenizers).

    Args:
        content: Composed assistant text (:func:`format_content`).
        max_chars: ``max_tokens`` / ``max_completion_tokens`` of the request (>= 1), or None.
        stop: Up to 4 stop strings; empty strings are ignored.

    Returns:
        A :class:`Completion`.
    """
    spans = _atomic_spans(content)
    end = len(content)
    for s in stop:
        if s:
            i = content.find(s)
            if 0 <= i < end:
                end = i
    end = _safe_cut(spans, end)
    finish = "stop"
    if max_chars is not None and max_chars < end:
        end = _safe_cut(spans, max_chars)
        finish = "length"
    text = content[:end]
    cited = frozenset(int(m.group(0)[1:-1]) for m in CITATION_MARKER.finditer(text))
    return Completion(text, finish, cited)


def split_for_stream(content: str) -> list[str]:
    """Split ``content`` after sentence ends (with their ``[n]`` markers) and line breaks;
    ``"".join(result) == content``."""
    pieces = [p for p in re.findall(r"[^。！？；!?\n]*(?:[。！？；!?]+(?:\[\d+\])*\n*|\n+|$)", content) if p]
    return pieces or [""]


def usage(prompt: str, completion: str) -> dict[str, int]:
    """OpenAI ``usage`` with characters standing in for tokens."""
    return {"prompt_tokens": len(prompt), "completion_tokens": len(completion),
            "total_tokens": len(prompt) + len(completion)}
