"""HTTP routes for the archive's documents, included by :func:`server.app.create_app`::

    GET    /api/documents             [{doc_id, title, date, format, chunks, chars, pages, added, ...}]
    GET    /api/documents/{doc_id}    one row (the stored text is at /api/sources/{doc_id})
    POST   /api/documents             multipart: file, optional doc_id, optional replace -> 201
    DELETE /api/documents/{doc_id}    -> {"removed": doc_id}

Writes need ``Authorization: Bearer <RAG_API_KEY>``: with no key configured they are disabled
(403, saying how to enable them); a missing or wrong key is 401. Uploads larger than
``Settings.max_upload_bytes`` are refused with 413. Ingestion runs in a worker thread under the
store's writer lock, so a CLI ``rag add`` at the same moment waits or reports "busy" (503).
"""

from __future__ import annotations

import hmac

import anyio.to_thread
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

router = APIRouter(tags=["documents"])


def _pipeline(request: Request):
    return request.app.state.pipeline


async def _run(request: Request, fn, *args):
    return await anyio.to_thread.run_sync(fn, *args, limiter=getattr(request.app.state, "limiter", None))


def require_api_key(request: Request) -> None:
    """Check the Bearer token of a write request.

    Raises:
        HTTPException: 403 when no ``RAG_API_KEY`` is configured, 401 for a missing or wrong key.
    """
    key = request.app.state.settings.api_key
    if not key:
        raise HTTPException(403, "document writes are disabled: the server has no API key "
                                 "(start it with RAG_API_KEY set, then send Authorization: Bearer <key>)")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise HTTPException(401, "missing or wrong API key (send Authorization: Bearer <RAG_API_KEY>)",
                            headers={"WWW-Authenticate": "Bearer"})


@router.get("/api/documents")
async def list_documents(request: Request) -> list[dict]:
    """Every stored document, sorted by id."""
    infos = await _run(request, _pipeline(request).documents)
    return [info.to_dict() for info in infos]


@router.get("/api/documents/{doc_id:path}")
async def get_document(doc_id: str, request: Request) -> dict:
    """One document's row (404 when unknown)."""
    info = await _run(request, _pipeline(request).document_info, doc_id)
    return info.to_dict()


@router.post("/api/documents", status_code=201)
async def upload_document(request: Request, file: UploadFile = File(..., description=".txt .md .html .pdf .docx"),
                          doc_id: str | None = Form(None), replace: bool = Form(False)):
    """Ingest one uploaded file (id: ``doc_id`` or the file name's stem). 201 with the ingest
    report; 200 when the same content was already stored; 409 for an id holding other content
    without ``replace``; 413 over the size limit; 415 unknown format; 422 unreadable file."""
    require_api_key(request)
    limit = request.app.state.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the file exceeds the upload limit of {limit} bytes (RAG_MAX_UPLOAD_BYTES)")
    name = file.filename or "upload.txt"
    pipeline = _pipeline(request)
    report = await _run(request, pipeline.add_upload, name, data, doc_id or None, replace)
    body = report.to_dict()
    stored = (report.added + report.replaced + report.unchanged)[:1]
    if stored:
        body["document"] = (await _run(request, pipeline.document_info, stored[0])).to_dict()
    return JSONResponse(body, status_code=201 if report.changed else 200)


@router.delete("/api/documents/{doc_id:path}")
async def delete_document(doc_id: str, request: Request) -> dict:
    """Remove one document (404 when unknown)."""
    require_api_key(request)
    pipeline = _pipeline(request)
    await _run(request, pipeline.document, doc_id)  # 404 for an unknown or unusable id
    report = await _run(request, pipeline.remove, [doc_id])
    if not report.removed:
        raise HTTPException(404, f"unknown document {doc_id!r}")
    return {"removed": doc_id}
