"""Pydantic request models of the HTTP API.

Responses are plain dicts built from :meth:`rag.types.Answer.to_dict` (the CLI JSON schema) or
the OpenAI chat-completion shapes, so only requests are modelled here. Unknown request fields are
ignored (OpenAI clients send ``temperature``, ``max_tokens``, ...), wrong types are rejected
(pydantic lax mode does not turn numbers into strings).
"""

from __future__ import annotations

from typing import Literal, Union

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


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions`` body (OpenAI-compatible subset).

    Attributes:
        model: Echoed back; the server always answers with its one pipeline.
        messages: The conversation; the last ``user`` message is answered.
        stream: Server-sent events of ``chat.completion.chunk`` objects when true.
        top_k: Retrieved passages (extension; default ``Settings.top_k``).
        mode: Retriever (extension; default ``hybrid``).
    """

    model: str = "liaoyuan-rag"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"


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
