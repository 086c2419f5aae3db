"""Pydantic request models of the HTTP API.

Responses are plain dicts built from :meth:`rag.types.Answer.to_dict` (the CLI JSON schema) or
the OpenAI chat-completion shapes, so only requests are modelled here. Unknown request fields are
ignored (OpenAI clients send ``temperature``, ``top_p``, ``seed``, ...: an extractive answer
has nothing to sample), wrong types are rejected (pydantic lax mode does not turn numbers into
strings). The OpenAI fields that change a reply (``n``, ``max_tokens``, ``stop``,
``stream_options``) are modelled and honoured or rejected with a clear 400.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

#: Retrieval modes accepted by :meth:`rag.pipeline.Pipeline.retrieve`.
Mode = Literal["hybrid", "dense", "bm25"]

#: Largest ``top_k`` a request may ask for.
MAX_TOP_K = 50


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    """One OpenAI content part; only ``type == "text"`` parts carry question text."""

    type: str = "text"
    text: str = ""


class ChatMessage(_Request):
    """One chat turn.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` (others are ignored).
        content: A string or a list of OpenAI content parts (``[{"type": "text", "text": ...}]``).
    """

    role: str
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        """The message text; text parts are joined with no separator, other parts dropped."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if p.type == "text")


class StreamOptions(_Request):
    """OpenAI ``stream_options``: ``include_usage`` adds a last chunk with ``usage`` and no
    choices before ``data: [DONE]``."""

    include_usage: bool = False


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions`` body (OpenAI-compatible subset).

    Attributes:
        model: Echoed back; the server always answers with its one pipeline.
        messages: The conversation; the last ``user`` message is answered.
        stream: Server-sent events of ``chat.completion.chunk`` objects when true.
        stream_options: ``{"include_usage": true}`` adds a usage chunk to a stream.
        n: Number of choices; only 1 is supported (larger values get a 400).
        max_tokens: Longest reply in characters (a character stands for a token); the cut never
            splits a citation marker ``[n]`` and sets ``finish_reason: "length"``.
        max_completion_tokens: Newer OpenAI name of ``max_tokens`` (wins when both are given).
        stop: A string or up to 4 strings; the reply ends before the first one found.
        top_k: Retrieved passages (extension; default ``Settings.top_k``).
        mode: Retriever (extension; default ``hybrid``).
    """

    model: str = "liaoyuan-rag"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: Union[str, list[str], None] = None
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"

    def stop_strings(self) -> list[str]:
        """``stop`` as a list (empty when not given)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def max_chars(self) -> int | None:
        """The length limit in characters, or None."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class AskRequest(_Request):
    """``POST /api/ask`` body.

    Attributes:
        question: The question (at most ``Settings.max_question_chars`` characters).
        top_k: Retrieved passages (default ``Settings.top_k``).
        mode: Retriever (default ``hybrid``).
    """

    question: str
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"
