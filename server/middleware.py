"""ASGI middleware of the server: request bodies (size, read timeout, text validity) and the
optional API key.

Both are plain ASGI callables (not ``BaseHTTPMiddleware``), so they add no task per request
and see the raw ``receive`` channel.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Iterator
from urllib.parse import unquote

import anyio
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Largest accepted request body in bytes (checked on Content-Length and on the bytes read). A
#: chat request with a 500-character question and a few turns of history is under 8 KiB.
MAX_BODY_BYTES = 64 * 1024

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                405: "invalid_request_error", 408: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 422: "invalid_request_error",
                503: "service_unavailable"}


def error_response(status: int, message: str, *, code: str = "", hint: str = "",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: ``{"error": {"message", "type", "code", "hint"}}`` (OpenAI's, plus
    ``hint``)."""
    err_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": err_type, "code": code or None, "hint": hint or None}}
    return JSONResponse(body, status_code=status, headers=headers)


def is_json_content_type(value: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters such as charset
    ignored); the types FastAPI parses as JSON."""
    if not value:
        return False
    main = value.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(path, string)`` for every string (keys included) in a decoded JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}" if path else str(k), k
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def describe_bad_text(body: bytes) -> str | None:
    """Why a JSON body is not valid Unicode text, or None when it is (or is not JSON at all,
    which FastAPI reports itself).

    Catches what ``json.loads`` lets through: bytes that are not UTF-8 (``json.loads`` decodes
    bytes with ``surrogatepass``, so ``ED A0 80`` becomes U+D800) and ``\\ud800``-style escapes
    of lone UTF-16 surrogates. Either would later fail to encode and end as a 500.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return (f"the request body is not valid UTF-8 (byte 0x{body[err.start]:02X} at offset "
                f"{err.start}); send JSON encoded as UTF-8")
    try:
        value = json.loads(text)
    except ValueError:
        return None  # malformed JSON: FastAPI answers 400 "not valid JSON"
    for path, s in _strings(value):
        for i, ch in enumerate(s):
            if 0xD800 <= ord(ch) <= 0xDFFF:
                where = f" in {path}" if path else ""
                return (f"the request body has a lone UTF-16 surrogate \\u{ord(ch):04x}{where} at "
                        f"character {i}, which is not valid Unicode text")
    return None


class BodyMiddleware:
    """Read each request body up front, bounded in size and time, then replay it to the app.

    * Over ``max_bytes`` (by Content-Length, or by the bytes read when the body is chunked or
      the header lies): 413.
    * Not complete within ``timeout`` seconds of the request's start (a slow or stalled
      sender): 408 and the connection is closed. uvicorn's ``timeout_keep_alive`` only covers
      idle connections between requests, so this is the one bound on a slow body.
    * A JSON body (by Content-Type) that is not valid UTF-8 or holds lone surrogates: 400 with
      the place of the bad text (see :func:`describe_bad_text`).
    * The client left while sending: nothing runs.

    ``path_limits`` gives some paths (document uploads) their own ``(max_bytes, timeout)``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, timeout: float = 10.0,
                 path_limits: dict[str, tuple[int, float]] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, timeout = self.path_limits.get(scope.get("path", ""), (self.max_bytes, self.timeout))
        content_type = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "invalid Content-Length")(scope, receive, send)
                    return
                if declared > max_bytes:
                    await self._too_big(max_bytes, scope, receive, send)
                    return
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(timeout) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                size += len(body)
                if size > max_bytes:
                    await self._too_big(max_bytes, scope, receive, send)
                    return
                chunks.append(body)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            await error_response(
                408, f"the request body did not arrive within {timeout:g} s",
                code="body_timeout", hint="send the whole body at once (RAG_BODY_TIMEOUT sets the limit)",
                headers={"Connection": "close"})(scope, receive, send)
            return
        data = b"".join(chunks)
        if data and is_json_content_type(content_type):
            problem = describe_bad_text(data)
            if problem:
                await error_response(400, problem, code="invalid_text")(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_big(self, max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(413, f"the request body exceeds {max_bytes} bytes", code="body_too_large",
                             headers={"Connection": "close"})(scope, receive, send)


#: Paths that stay open when an API key is set: liveness/readiness probes, the chat page shell
#: and its assets (no archive data), and the API description.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)

#: Cookie the chat page sets with the key, so that citation links (plain navigations, which
#: cannot carry an Authorization header) open ``/sources/...`` pages. Read on GET of source
#: pages only.
KEY_COOKIE = "rag_api_key"


def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    from http.cookies import SimpleCookie

    for k, v in headers:
        if k == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(v.decode("latin-1"))
            except Exception:  # a malformed cookie header is no key
                continue
            if name in jar:
                return unquote(jar[name].value)  # the page stores encodeURIComponent(key)
    return None


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every route except :data:`OPEN_PATHS`, when a key is
    set (``RAG_API_KEY``). A missing or wrong key gets 401 with ``WWW-Authenticate: Bearer``
    before the body is read. Keys are compared in constant time (``hmac.compare_digest``).
    """

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.api_key = api_key.encode("utf-8")

    def _allowed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        headers = scope.get("headers", [])
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key):
                    return True
        if scope.get("method") in ("GET", "HEAD") and path.startswith("/sources/"):
            cookie = _cookie(headers, KEY_COOKIE)
            if cookie is not None and hmac.compare_digest(cookie.encode("utf-8"), self.api_key):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        has_header = any(name == b"authorization" for name, _ in scope.get("headers", []))
        message = "wrong API key" if has_header else "this server needs an API key"
        await error_response(401, message, code="invalid_api_key",
                             hint="send the header Authorization: Bearer <key>, where <key> is the server's RAG_API_KEY",
                             headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
