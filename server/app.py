"""FastAPI app: an OpenAI-compatible chat endpoint, a JSON API, a source viewer and a web chat page.

Endpoints (all answers come from one shared, warm :class:`rag.pipeline.Pipeline`)::

    POST /v1/chat/completions     OpenAI chat completion (``stream: true`` -> SSE chunks)
    POST /api/ask                 {question, top_k} -> the CLI JSON object (Answer.to_dict())
    GET  /api/search?q=&top_k=    {"question", "hits": [...]}
    GET  /sources/{doc_id}        HTML page of a document, ``?start=&end=`` highlights a span
    GET  /api/sources/{doc_id}    {doc_id, title, date, text, chars}
    GET  /healthz                 pipeline.health()
    GET  /                        the chat page (server/static/index.html)
    GET  /docs                    OpenAPI docs (FastAPI default)

Errors are JSON ``{"error": {"message", "type", "code", "hint"}}`` with a 4xx status for bad
input (413 for bodies over :data:`MAX_BODY_BYTES`, 404 for unknown documents, 422 for invalid
fields); library errors (:class:`rag.errors.RagError`) map through their ``http_status``.
"""

from __future__ import annotations

import html
import json
import logging
import re
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag import __version__
from rag.config import Settings
from rag.errors import BadQuestionError, RagError
from rag.text import line_of
from rag.types import Answer

from .documents import router as documents_router
from .schemas import MAX_TOP_K, AskRequest, ChatCompletionRequest, ChatMessage, Mode

#: Largest accepted request body in bytes (checked on Content-Length and on the bytes read).
MAX_BODY_BYTES = 64 * 1024

#: Default number of pipeline calls running at once in worker threads.
DEFAULT_WORKERS = 4

#: A follow-up is a user turn of at most this many characters ...
FOLLOW_UP_MAX_CHARS = 8
#: ... or one starting with one of these words ...
FOLLOW_UP_PREFIXES = ("那么", "那", "还有", "它", "他们", "她们", "另外")
#: ... or one ending with 呢 (before an optional question mark).
FOLLOW_UP_SUFFIXES = ("呢？", "呢?", "呢")

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(__name__)

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
                413: "request_too_large", 422: "invalid_request_error", 503: "service_unavailable"}


# --- errors ---------------------------------------------------------------------------------

def error_response(status: int, message: str, *, code: str = "", hint: str = "",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: ``{"error": {"message", "type", "code", "hint"}}``."""
    err_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": err_type, "code": code or None, "hint": hint or None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(errors: Sequence[dict[str, Any]]) -> tuple[int, str]:
    """(status, one-line message) for pydantic/FastAPI validation errors."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "the request body is not valid JSON"
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",)) or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return 422, "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def _rag_error(request: Request, exc: RagError) -> JSONResponse:
        return error_response(exc.http_status, exc.message, code=type(exc).__name__, hint=exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc.errors())
        return error_response(status, message, code="json_invalid" if status == 400 else "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        return error_response(500, "internal server error", code=type(exc).__name__)


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413, by Content-Length and by bytes read.

    The whole body is read (up to the limit) before the app runs and then replayed, so chunked
    uploads without a Content-Length are bounded too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES,
                 path_limits: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        too_big = error_response(413, f"the request body exceeds {max_bytes} bytes",
                                 code="body_too_large")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "invalid Content-Length")(scope, receive, send)
                    return
                if declared > max_bytes:
                    await too_big(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > max_bytes:
                await too_big(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --- chat helpers ---------------------------------------------------------------------------

def is_follow_up(question: str) -> bool:
    """True for a short or elliptical follow-up turn (see ``FOLLOW_UP_*``), e.g. ``那农业呢？``."""
    q = question.strip()
    return len(q) <= FOLLOW_UP_MAX_CHARS or q.startswith(FOLLOW_UP_PREFIXES) or q.endswith(FOLLOW_UP_SUFFIXES)


def retrieval_question(messages: Sequence[ChatMessage], max_chars: int) -> tuple[str, str]:
    """Pick what to answer from a conversation.

    The last ``user`` message is answered. If it is a follow-up (:func:`is_follow_up`) and an
    earlier user message exists, the question sent to the pipeline is
    ``previous_user_message.strip() + " " + last.strip()`` (only the one turn before, not a chain),
    unless that would exceed ``max_chars``; then the last message alone is used.

    Returns:
        ``(last user message stripped, question for the pipeline)``.

    Raises:
        BadQuestionError (422): there is no user message.
    """
    users = [m.text() for m in messages if m.role == "user"]
    if not users:
        raise BadQuestionError("the conversation has no user message",
                             hint='send messages: [{"role": "user", "content": "..."}]')
    last = users[-1].strip()
    if len(users) >= 2 and last and is_follow_up(last):
        previous = users[-2].strip()
        combined = f"{previous} {last}" if previous else last
        if len(combined) <= max_chars:
            return last, combined
    return last, last


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def format_content(answer: Answer) -> str:
    """Assistant message text: the answer with ``[n]`` markers, then a ``来源`` list of markdown
    links ``[n] [《title》](url)`` (also when abstaining with low-confidence snippets)."""
    text = answer.answer
    if answer.citations:
        head = "来源："
        lines = []
        for c in answer.citations:
            url = f"<{c.url}>" if " " in c.url else c.url
            line = f"[{c.id}] [《{_md_escape(c.title or c.doc_id)}》]({url})"
            lines.append(line + (f" {c.date}" if c.date else ""))
        text = f"{text}\n\n{head}\n" + "\n".join(lines)
    return text


def split_for_stream(content: str) -> list[str]:
    """Split ``content`` after sentence ends (with their ``[n]`` markers) and line breaks;
    ``"".join(result) == content``."""
    pieces = [p for p in re.findall(r"[^。！？；!?\n]*(?:[。！？；!?]+(?:\[\d+\])*\n*|\n+|$)", content) if p]
    return pieces or [""]


def _usage(prompt: str, completion: str) -> dict[str, int]:
    # Character counts stand in for tokens.
    return {"prompt_tokens": len(prompt), "completion_tokens": len(completion),
            "total_tokens": len(prompt) + len(completion)}


def _sse(obj: Any) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


# --- source page ----------------------------------------------------------------------------

_SOURCE_CSS = """
*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,"PingFang SC","Noto Sans CJK SC",
"Microsoft YaHei",sans-serif;background:#f6f7f9;color:#1d2129;line-height:1.7}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #e5e6eb;padding:.6rem 1rem}
header a{color:#165dff;text-decoration:none;font-size:.9rem}h1{font-size:1.1rem;margin:.3rem 0}
.meta{color:#86909c;font-size:.8rem;margin:0;overflow-wrap:anywhere}
.doc{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;margin:0;padding:1rem;
font-size:1rem;max-width:48rem}
mark{background:#ffe58f;padding:.1em 0;border-radius:2px;box-shadow:0 0 0 2px #ffd666}
"""


def render_source(doc_id: str, title: str, date: str | None, text: str,
                  start: int | None, end: int | None) -> str:
    """HTML page of one document; ``text[start:end]`` is wrapped in ``<mark id="hit">`` and
    scrolled into view on load. All text is HTML-escaped; line breaks are kept (pre-wrap)."""
    esc = html.escape
    heading = title or doc_id
    meta = [date or "", doc_id, f"{len(text)} 字"]
    if start is not None and end is not None:
        meta.append(f"第 {line_of(text, start)} 行 · 字符 {start}–{end}")
        body = (esc(text[:start]) + '<mark id="hit">' + esc(text[start:end]) + "</mark>"
                + esc(text[end:]))
        script = ("<script>window.addEventListener('load',function(){var m=document.getElementById('hit');"
                  "if(m)m.scrollIntoView({block:'center'});});</script>")
    else:
        body, script = esc(text), ""
    return (
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>《{esc(heading)}》 · 来源</title><style>{_SOURCE_CSS}</style></head><body>"
        f"<header><a href=\"/\">← 返回问答</a><h1>《{esc(heading)}》</h1>"
        f"<p class=\"meta\">{esc(' · '.join(m for m in meta if m))}</p></header>"
        f"<div class=\"doc\" id=\"doc\" data-doc-id=\"{esc(doc_id)}\">{body}</div>{script}</body></html>"
    )


# --- app ------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, pipeline=None, cors_origins: Sequence[str] = (),
               *, warm: bool = True, workers: int = DEFAULT_WORKERS) -> FastAPI:
    """Build the app around one shared pipeline.

    Args:
        settings: Settings (default: ``pipeline.settings`` or ``Settings.from_env()``).
        pipeline: A :class:`rag.pipeline.Pipeline` (default: one built from ``settings``).
        cors_origins: Origins allowed by CORS; CORS is off when empty.
        warm: Load model and index at start-up (lifespan, in a worker thread; warm-up also
            primes jieba and the first inference). Start-up fails with the pipeline's error (e.g.
            ``ModelError``) when model or index cannot load.
        workers: Pipeline calls running at once (extra requests wait for a worker thread).

    Returns:
        The FastAPI application.
    """
    if pipeline is None:
        from rag.pipeline import Pipeline

        pipeline = Pipeline(settings or Settings.from_env())
    settings = settings or pipeline.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(max(1, workers))
        if warm:
            await anyio.to_thread.run_sync(pipeline.warm_up)
        yield

    app = FastAPI(title="辽源档案问答 (liaoyuan-rag)", version=__version__, lifespan=lifespan,
                  description="Extractive, cited answers from the 辽源 archive. "
                              "Answers quote archive sentences; `未找到相关内容` when it has none.")
    app.state.pipeline = pipeline
    app.state.settings = settings
    _install_error_handlers(app)
    # Uploads get their own limit (plus room for the multipart envelope).
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES,
                       path_limits={"/api/documents": settings.max_upload_bytes + 64 * 1024})
    app.include_router(documents_router)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"], allow_headers=["*"])

    async def run(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking pipeline work in a worker thread (never on the event loop)."""
        limiter = getattr(request.app.state, "limiter", None)
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    # --- OpenAI-compatible chat ---------------------------------------------------------------

    @app.post("/v1/chat/completions", tags=["chat"])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """Answer the last user message (short follow-ups are joined with the previous user turn
        for retrieval, see ``retrieval_question``). ``stream: true`` returns SSE chunks whose last
        one carries ``citations`` and ``abstained``; the stream ends with ``data: [DONE]``."""
        last, question = retrieval_question(body.messages, settings.max_question_chars)
        pipeline.validate_question(last)  # 422 for an empty or too long last turn
        answer: Answer = await run(request, pipeline.ask, question, body.top_k, body.mode)
        content = format_content(answer)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        citations = [c.to_dict() for c in answer.citations]
        prompt = "".join(m.text() for m in body.messages)
        if not body.stream:
            return {"id": completion_id, "object": "chat.completion", "created": created,
                    "model": body.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": _usage(prompt, content), "citations": citations,
                    "abstained": answer.abstained, "question": answer.question}

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        async def events() -> AsyncIterator[str]:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            for piece in split_for_stream(content):
                yield _sse(chunk({"content": piece}))
            yield _sse(chunk({}, "stop", citations=citations, abstained=answer.abstained,
                             question=answer.question, usage=_usage(prompt, content)))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- JSON API -----------------------------------------------------------------------------

    @app.post("/api/ask", tags=["api"])
    async def api_ask(body: AskRequest, request: Request) -> dict:
        """The CLI JSON object (``rag ask --json``) for one question."""
        pipeline.validate_question(body.question)
        answer: Answer = await run(request, pipeline.ask, body.question, body.top_k, body.mode)
        return answer.to_dict()

    @app.get("/api/search", tags=["api"])
    async def api_search(request: Request, q: str = Query(..., description="the question"),
                         top_k: int | None = Query(None, ge=1, le=MAX_TOP_K),
                         mode: Mode = Query("hybrid")) -> dict:
        """Retrieved passages only: ``{"question", "hits": [Hit.to_dict(), ...]}``."""
        question = pipeline.validate_question(q)
        hits = await run(request, pipeline.retrieve, question, top_k, mode)
        return {"question": question, "hits": [h.to_dict() for h in hits]}

    @app.get("/api/sources/{doc_id:path}", tags=["sources"])
    async def api_source(doc_id: str, request: Request) -> dict:
        """``{doc_id, title, date, text, chars}`` of one corpus document (404 when unknown)."""
        doc = await run(request, pipeline.document, doc_id)
        return {"doc_id": doc.doc_id, "title": doc.title, "date": doc.date, "text": doc.text,
                "chars": len(doc.text)}

    @app.get("/sources/{doc_id:path}", response_class=HTMLResponse, tags=["sources"])
    async def source_page(doc_id: str, request: Request, start: int | None = Query(None),
                          end: int | None = Query(None)) -> HTMLResponse:
        """HTML view of a document; ``start``/``end`` (code points, half-open) highlight a span."""
        doc = await run(request, pipeline.document, doc_id)
        if (start is None) != (end is None):
            return error_response(422, "give both start and end, or neither", code="BadSpanError")
        if start is not None and end is not None:
            pipeline.span(doc_id, start, end)  # BadSpanError (422) when outside or reversed
        return HTMLResponse(render_source(doc.doc_id, doc.title, doc.date, doc.text, start, end))

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict:
        """Model id, index metadata and chunk count."""
        return await run(request, pipeline.health)

    # --- web page -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# --- running in a background thread (tests, load test) --------------------------------------

class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread on a free loopback port.

    Use as a context manager; ``url`` is ``http://127.0.0.1:<port>``. Start-up (including the
    app's lifespan, i.e. pipeline warm-up) must finish within ``startup_timeout`` seconds.

    Raises:
        RuntimeError: the server did not start in time or its start-up failed.
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", startup_timeout: float = 60.0):
        self.app = app
        self.host = host
        self.startup_timeout = startup_timeout
        self.url = ""
        self._server = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "BackgroundServer":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, host=self.host, port=port, log_level="warning",
                                lifespan="on", access_log=False)
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name=f"uvicorn-{port}")
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the server on port {port} did not start")
            time.sleep(0.02)
        self.url = f"http://{self.host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
