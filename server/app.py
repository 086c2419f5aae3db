"""FastAPI app: an OpenAI-compatible chat endpoint, a JSON API, a source viewer, a web chat page
and health probes.

Endpoints (questions go to one warm :class:`rag.pipeline.Pipeline` per process)::

    POST /v1/chat/completions     OpenAI chat completion (``stream: true`` -> SSE chunks)
    GET  /v1/models               OpenAI model list (one model, :data:`MODEL_ID`)
    GET  /v1/models/{model_id}    one model card (404 for other ids)
    POST /api/ask                 {question, top_k, mode} -> the CLI JSON object (Answer.to_dict())
    GET  /api/search?q=&top_k=    {"question", "hits": [...]}
    GET  /sources/{doc_id}        HTML page of a document, ``?start=&end=`` highlights a span
    GET  /api/sources/{doc_id}    {doc_id, title, date, text, chars}
    GET|POST /api/documents, DELETE /api/documents/{doc_id}   the document store (server/documents.py)
    GET  /healthz                 liveness: answers at once, never waits for the model or questions
    GET  /readyz                  readiness: 200 with model and index facts once loaded, else 503
    GET  /                        the chat page (server/static/index.html)
    GET  /docs                    OpenAPI docs (FastAPI default)

``/``, ``/healthz`` and ``/readyz`` also answer HEAD. Errors are JSON ``{"error": {"message",
"type", "code", "hint"}}``: 400 for malformed JSON, bad text (invalid UTF-8, lone surrogates) or
unsupported OpenAI options, 401 for a missing or wrong API key (when ``RAG_API_KEY`` is set), 404
for unknown documents and models, 408 for a body that does not arrive in time, 413 for bodies
over :data:`MAX_BODY_BYTES`, 415 for a body that is not sent as JSON, 422 for invalid fields
and questions, 503 while the model and index are loading (after :data:`READY_WAIT_S`) or when
they failed to load; library errors (:class:`rag.errors.RagError`) map through ``http_status``.

Question work runs in worker threads, at most ``Settings.server_threads`` at once per process;
a request whose client has gone is skipped before its pipeline call starts.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, AsyncIterator, Callable, Sequence

import anyio
import anyio.lowlevel
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from rag import __version__
from rag.config import Settings
from rag.errors import ConfigError, RagError
from rag.text import line_of
from rag.types import Answer

from .chat import apply_limits, format_content, retrieval_question, split_for_stream, usage
from .middleware import (MAX_BODY_BYTES, ApiKeyMiddleware, BodyMiddleware, error_response,
                         is_json_content_type)
from .documents import router as documents_router
from .schemas import MAX_TOP_K, AskRequest, ChatCompletionRequest, Mode

#: The one model id this server lists at ``/v1/models`` (any requested ``model`` is answered).
MODEL_ID = "liaoyuan-rag"

#: Seconds a question waits for the model and index to finish loading before a 503 with
#: Retry-After: a worker loads in a few seconds once ``rag serve`` has built the index, and
#: OpenAI clients retry a 503 on their own.
READY_WAIT_S = 60.0

#: Most stop strings in one request (OpenAI's limit).
MAX_STOP_STRINGS = 4

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(__name__)

__all__ = ["MAX_BODY_BYTES", "MODEL_ID", "BackgroundServer", "create_app", "public_facts", "render_source"]


class ServiceNotReady(Exception):
    """The model and index are not loaded (yet, or failed to load): 503."""

    def __init__(self, message: str, code: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client disconnected before its pipeline call started; the call was skipped."""


# --- errors ---------------------------------------------------------------------------------

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


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
        return error_response(exc.status_code, message, code=_HTTP_CODES.get(exc.status_code, ""),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(ServiceNotReady)
    async def _not_ready(request: Request, exc: ServiceNotReady) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return error_response(503, exc.message, code=exc.code, headers=headers,
                              hint="see GET /readyz and the server log")

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody receives it

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error", code=type(exc).__name__)


def _sse(obj: Any) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


def _is_abs_path(value: str) -> bool:
    return PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() \
        or value.startswith("~")


def _without_paths(value: Any) -> Any:
    """``value`` with every absolute path string replaced by its last component."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_paths(v) for v in value]
    if isinstance(value, str) and _is_abs_path(value):
        return PurePosixPath(value.replace("\\", "/")).name
    return value


def public_facts(pipeline) -> dict:
    """Model and index facts safe to show to anyone: ``pipeline.health()`` without the index
    directory, and with every other absolute path (corpus folder, a model given as a local
    path) cut to its last component."""
    health = pipeline.health() if hasattr(pipeline, "health") else {}
    health = {k: v for k, v in health.items() if k not in ("index_dir", "status")}
    return _without_paths(health)


# --- readiness and question calls -----------------------------------------------------------

class Readiness:
    """Load state of the pipeline in this process: ``loading`` -> ``ready`` | ``failed``.

    The warm-up runs in a daemon thread started by the app's lifespan, so the server answers
    ``/healthz`` (and ``/readyz`` with 503) while the model and index load.
    """

    def __init__(self) -> None:
        self.status = "loading"
        self.error: BaseException | None = None
        self.facts: dict = {}
        self.event = asyncio.Event()
        self.counts = {"answered": 0, "skipped_client_gone": 0, "running": 0, "waiting": 0}

    def start(self, pipeline, loop: asyncio.AbstractEventLoop) -> None:
        def warm() -> None:
            try:
                pipeline.warm_up()
                self.facts = public_facts(pipeline)
                self.status = "ready"
            except BaseException as err:  # reported by /readyz and question routes
                self.error = err
                self.status = "failed"
                log.error("loading the model and index failed: %s", err, exc_info=err)
            try:
                loop.call_soon_threadsafe(self.event.set)
            except RuntimeError:
                pass  # the server stopped while loading

        threading.Thread(target=warm, name="rag-warm-up", daemon=True).start()

    def mark_ready(self) -> None:
        """Ready without a warm-up (the pipeline loads on first use; no facts to show)."""
        self.status = "ready"
        self.event.set()

    async def wait(self) -> None:
        """Return once ready; raise :class:`ServiceNotReady` when loading failed or did not finish
        within :data:`READY_WAIT_S`."""
        if self.status == "loading":
            with anyio.move_on_after(READY_WAIT_S):
                await self.event.wait()
        if self.status == "failed":
            raise ServiceNotReady(f"the model or index could not be loaded ({type(self.error).__name__})",
                                  "not_ready_failed")
        if self.status != "ready":
            raise ServiceNotReady("the model and index are still loading; retry shortly", "not_ready_loading",
                                  retry_after=5)


async def run_question(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking pipeline call in a worker thread once the pipeline is ready, at most
    ``server_threads`` at once, skipping it when the client disconnects while it waits.

    A watcher reads the request's ``receive`` channel while the call waits for a thread; on
    ``http.disconnect`` the wait is cancelled and :class:`ClientGone` raised. A call that has
    started runs to the end (a thread cannot be interrupted); its response is dropped.

    Raises:
        ServiceNotReady: the model and index are not loaded.
        ClientGone: the client left before the call started.
    """
    state: Readiness = request.app.state.readiness
    limiter: anyio.CapacityLimiter = request.app.state.limiter
    await state.wait()
    counts = state.counts
    ran = False
    result: Any = None
    error: Exception | None = None
    receive = request.receive

    def call() -> Any:
        nonlocal ran
        ran = True
        return fn(*args)

    async def watch(scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    counts["waiting"] += 1
    waiting = True
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            async with limiter:
                counts["waiting"] -= 1
                waiting = False
                counts["running"] += 1
                try:
                    result = await anyio.to_thread.run_sync(call)
                except Exception as exc:  # re-raised below, unwrapped from the task group
                    error = exc
                finally:
                    counts["running"] -= 1
            tg.cancel_scope.cancel()
    finally:
        if waiting:
            counts["waiting"] -= 1
    if not ran:
        counts["skipped_client_gone"] += 1
        raise ClientGone()
    if error is not None:
        raise error
    counts["answered"] += 1
    return result


async def run_light(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """A short blocking call (a document lookup) in a worker thread, outside the question
    limit, once the pipeline is ready."""
    await request.app.state.readiness.wait()
    return await anyio.to_thread.run_sync(fn, *args)


async def require_json(request: Request) -> None:
    """415 unless the body is sent as JSON (``application/json`` or ``application/*+json``).

    ``curl -d`` sends ``application/x-www-form-urlencoded``, some clients ``text/plain`` or no
    type at all; FastAPI would then not parse the JSON and report a misleading 422.
    """
    content_type = request.headers.get("content-type")
    if is_json_content_type(content_type):
        return
    main = (content_type or "").split(";", 1)[0].strip()
    got = f"not {main}" if main else "and this request has no Content-Type"
    hint = " (curl -d sends that type: add -H 'Content-Type: application/json')" \
        if main.lower() == "application/x-www-form-urlencoded" else ""
    raise StarletteHTTPException(415, f"send the body as JSON with Content-Type: application/json, {got}{hint}")


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

def create_app(settings: Settings | None = None, pipeline=None, cors_origins: Sequence[str] | None = None,
               *, warm: bool = True, threads: int | None = None) -> FastAPI:
    """Build the app around one pipeline (one per process).

    Args:
        settings: Settings (default: ``pipeline.settings`` or ``Settings.from_env()``). Used here:
            ``max_question_chars``, ``api_key``, ``body_timeout``, ``server_threads``,
            ``cors_origins``.
        pipeline: A :class:`rag.pipeline.Pipeline` (default: one built from ``settings``).
        cors_origins: Origins allowed by CORS (default: ``settings.cors_origins``, comma-separated);
            CORS is off when empty.
        warm: Load model and index in a background thread at start-up; ``/readyz`` answers 503
            until that finishes and questions wait for it (up to :data:`READY_WAIT_S`). With
            False the app counts as ready at once and the pipeline loads on first use.
        threads: Pipeline calls running at once (default ``settings.server_threads``); more
            requests wait for a thread, and are skipped if their client leaves meanwhile.

    Returns:
        The FastAPI application.
    """
    if pipeline is None:
        from rag.pipeline import Pipeline

        pipeline = Pipeline(settings or Settings.from_env())
    settings = settings or pipeline.settings
    threads = settings.server_threads if threads is None else threads
    if threads < 1:
        raise ConfigError(f"server threads must be >= 1, got {threads}", hint="set RAG_SERVER_THREADS to 1 or more")
    if settings.body_timeout <= 0:
        raise ConfigError(f"RAG_BODY_TIMEOUT must be > 0 seconds, got {settings.body_timeout}",
                          hint="unset it (default 10) or give a positive number")
    if cors_origins is None:
        cors_origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    created = int(time.time())
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace(
        "__MAX_QUESTION_CHARS__", str(settings.max_question_chars))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(threads)
        app.state.readiness = state = Readiness()
        if warm:
            state.start(pipeline, asyncio.get_running_loop())
        else:
            state.mark_ready()
        yield

    app = FastAPI(title="辽源档案问答 (liaoyuan-rag)", version=__version__, lifespan=lifespan,
                  description="Extractive, cited answers from the 辽源 archive. "
                              "Answers quote archive sentences; `未找到相关内容` when it has none.")
    app.state.pipeline = pipeline
    app.state.settings = settings
    _install_error_handlers(app)
    # Uploads get their own size limit (plus room for the multipart envelope) and a time limit
    # for that size at 256 KiB/s, a slow but working uplink.
    upload_bytes = settings.max_upload_bytes + 64 * 1024
    app.add_middleware(BodyMiddleware, max_bytes=MAX_BODY_BYTES, timeout=settings.body_timeout,
                       path_limits={"/api/documents": (upload_bytes, max(settings.body_timeout,
                                                                         upload_bytes / (256 * 1024)))})
    app.include_router(documents_router)
    if settings.api_key.strip():
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.strip())
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"], allow_headers=["*"])

    model_card = {"id": MODEL_ID, "object": "model", "created": created, "owned_by": "liaoyuan-rag"}

    # --- OpenAI-compatible chat ---------------------------------------------------------------

    @app.post("/v1/chat/completions", tags=["chat"], dependencies=[Depends(require_json)])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """Answer the last user message; a follow-up (他们/这个/还有呢/那…呢/X呢, or no topic
        of its own) is read together with the earlier user turns back to the last self-contained
        one (see ``server.chat.retrieval_question``). ``max_tokens``/``max_completion_tokens`` and
        ``stop`` cut the reply without splitting a citation marker; ``n`` > 1 is refused.
        ``stream: true`` returns SSE chunks whose last one carries ``citations`` and
        ``abstained``, then a usage chunk if ``stream_options.include_usage``, then
        ``data: [DONE]``."""
        if body.n is not None and body.n > 1:
            return error_response(400, f"n={body.n} is not supported: this bot gives one extractive answer "
                                       "per question", code="unsupported_parameter", hint="leave n out or send n=1")
        stops = body.stop_strings()
        if len(stops) > MAX_STOP_STRINGS:
            return error_response(400, f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}",
                                  code="invalid_stop")
        last, question = retrieval_question(body.messages, settings.max_question_chars)
        pipeline.validate_question(last)  # 422 for an empty or too long last turn
        answer: Answer = await run_question(request, pipeline.ask, question, body.top_k, body.mode)
        completion = apply_limits(format_content(answer), body.max_chars(), stops)
        content = completion.content
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created_at = int(time.time())
        citations = [c.to_dict() for c in answer.citations if c.id in completion.cited_ids]
        prompt = "".join(m.text() for m in body.messages)
        if not body.stream:
            return {"id": completion_id, "object": "chat.completion", "created": created_at,
                    "model": body.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": completion.finish_reason}],
                    "usage": usage(prompt, content), "citations": citations,
                    "abstained": answer.abstained, "question": answer.question}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created_at,
                    "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        async def events() -> AsyncIterator[str]:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            for piece in split_for_stream(content):
                # A checkpoint per piece lets a client disconnect cancel the rest of the stream.
                await anyio.lowlevel.checkpoint()
                yield _sse(chunk({"content": piece}))
            yield _sse(chunk({}, completion.finish_reason, citations=citations, abstained=answer.abstained,
                             question=answer.question))
            if include_usage:
                yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created_at,
                            "model": body.model, "choices": [], "usage": usage(prompt, content)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/models", tags=["chat"])
    async def list_models() -> dict:
        """OpenAI model list: the one model this server answers with."""
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}", tags=["chat"])
    async def get_model(model_id: str):
        """One model card; 404 for any id but :data:`MODEL_ID`."""
        if model_id != MODEL_ID:
            return error_response(404, f"the model {model_id!r} does not exist; this server has {MODEL_ID!r}",
                                  code="model_not_found")
        return model_card

    # --- JSON API -----------------------------------------------------------------------------

    @app.post("/api/ask", tags=["api"], dependencies=[Depends(require_json)])
    async def api_ask(body: AskRequest, request: Request) -> dict:
        """The CLI JSON object (``rag ask --json``) for one question."""
        pipeline.validate_question(body.question)
        answer: Answer = await run_question(request, pipeline.ask, body.question, body.top_k, body.mode)
        return answer.to_dict()

    @app.get("/api/search", tags=["api"])
    async def api_search(request: Request, q: str = Query(..., description="the question"),
                         top_k: int | None = Query(None, ge=1, le=MAX_TOP_K),
                         mode: Mode = Query("hybrid")) -> dict:
        """Retrieved passages only: ``{"question", "hits": [Hit.to_dict(), ...]}``."""
        question = pipeline.validate_question(q)
        hits = await run_question(request, pipeline.retrieve, question, top_k, mode)
        return {"question": question, "hits": [h.to_dict() for h in hits]}

    @app.get("/api/sources/{doc_id:path}", tags=["sources"])
    async def api_source(doc_id: str, request: Request) -> dict:
        """``{doc_id, title, date, text, chars}`` of one corpus document (404 when unknown)."""
        doc = await run_light(request, pipeline.document, doc_id)
        return {"doc_id": doc.doc_id, "title": doc.title, "date": doc.date, "text": doc.text,
                "chars": len(doc.text)}

    @app.get("/sources/{doc_id:path}", response_class=HTMLResponse, tags=["sources"])
    async def source_page(doc_id: str, request: Request, start: int | None = Query(None),
                          end: int | None = Query(None)) -> HTMLResponse:
        """HTML view of a document; ``start``/``end`` (code points, half-open) highlight a span."""
        doc = await run_light(request, pipeline.document, doc_id)
        if (start is None) != (end is None):
            return error_response(422, "give both start and end, or neither", code="BadSpanError")
        if start is not None and end is not None:
            pipeline.span(doc_id, start, end)  # BadSpanError (422) when outside or reversed
        return HTMLResponse(render_source(doc.doc_id, doc.title, doc.date, doc.text, start, end))

    # --- probes ---------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    @app.head("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> dict:
        """Liveness: the process serves HTTP. Answers at once from the event loop (never waits
        for the model, the index or questions) and shows no server paths."""
        state: Readiness = request.app.state.readiness
        return {"status": "ok", "ready": state.status == "ready", "version": __version__, "pid": os.getpid()}

    @app.get("/readyz", tags=["ops"])
    @app.head("/readyz", include_in_schema=False)
    async def readyz(request: Request):
        """Readiness: 200 with model and index facts (no server paths) and question counters once
        model and index are loaded in this process; 503 while loading or after a failed load."""
        state: Readiness = request.app.state.readiness
        body = {"status": state.status, "version": __version__, "pid": os.getpid(), "threads": threads,
                "questions": dict(state.counts)}
        if state.status == "ready":
            return {**body, **state.facts}
        if state.status == "failed":
            body["error"] = {"code": type(state.error).__name__,
                             "message": "the model or index could not be loaded; see the server log"}
            return JSONResponse(body, status_code=503)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    # --- web page -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    @app.head("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(index_html)

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
