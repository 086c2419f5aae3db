"""Document ids and the files of a corpus folder.

An id is the file's path relative to the corpus root without its extension, with ``/``
between folders (``seeds/000_f5ea1269c607c469.txt`` -> ``000_f5ea1269c607c469``,
``reports/2021/june.pdf`` -> ``reports/2021/june``). A file added from outside the corpus root
takes its stem, or the id given with ``--id``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rag.errors import BadDocumentIdError, CorpusError

from .readers import FORMATS

#: Longest id, in characters.
MAX_ID_CHARS = 255
#: One path segment of an id: no leading dot, no separators, ``%`` or control characters.
_SEGMENT = re.compile(r"[^./\\%\x00-\x1f\x7f][^/\\%\x00-\x1f\x7f]*")


def check_doc_id(doc_id: object) -> str:
    """Return ``doc_id`` if it is a usable id, else raise.

    Usable: a non-empty string of at most :data:`MAX_ID_CHARS` characters made of ``/``-separated
    segments, none empty, none starting with ``.`` (so no ``..``), without ``\\``, ``%`` or
    control characters, and without leading or trailing whitespace.

    Raises:
        BadDocumentIdError: anything else.
    """
    if not isinstance(doc_id, str) or not doc_id or len(doc_id) > MAX_ID_CHARS \
            or doc_id != doc_id.strip() or not all(_SEGMENT.fullmatch(s) for s in doc_id.split("/")):
        raise BadDocumentIdError(f"unusable document id {doc_id!r}",
                                 hint="ids are relative paths without extension, e.g. reports/2021/june")
    return doc_id


def doc_id_for(path: Path, root: Path | None) -> str:
    """The id of ``path``: relative to ``root`` when it lies inside it, else its stem.

    Raises:
        BadDocumentIdError: the resulting id is not usable (see :func:`check_doc_id`).
    """
    path = Path(path).absolute()
    if root is not None:
        try:
            rel = path.relative_to(Path(root).absolute())
            return check_doc_id(str(PurePosixPath(*rel.parts).with_suffix("")))
        except ValueError:
            pass
    return check_doc_id(path.stem)


@dataclass
class FolderScan:
    """What a corpus folder holds.

    Attributes:
        files: ``doc_id -> path`` of every readable-format file, in id order.
        problems: ``(path, reason)`` for files that cannot be taken (unknown format, an id clash,
            a symbolic link leading outside the folder, an unusable name).
    """

    files: dict[str, Path] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def scan_folder(root: Path | str) -> FolderScan:
    """Every file of ``root``, recursively, with its id.

    Hidden files and folders (name starting with ``.``) are skipped silently. A symbolic link
    is followed only when its target lies inside ``root`` (like ``/sources``, nothing outside
    the corpus is ever read); otherwise it is reported and refused.

    Raises:
        CorpusError: ``root`` does not exist or is not a folder.
    """
    root = Path(root).expanduser()
    hint = "set RAG_CORPUS_DIR or pass --corpus / a DIR to a folder of documents"
    if not root.exists():
        raise CorpusError(f"corpus folder {str(root)!r} does not exist", hint)
    if not root.is_dir():
        raise CorpusError(f"corpus path {str(root)!r} is not a directory", hint)
    real_root = root.resolve()
    scan = FolderScan()
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            sub = here / d
            if sub.is_symlink():
                target = sub.resolve()
                if not target.is_relative_to(real_root):
                    scan.problems.append((str(sub), f"symbolic link to {target}, outside the corpus folder; refused"))
                # A link inside the folder points at files scanned under their own path.
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = here / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                scan.problems.append((str(path), f"symbolic link to {path.resolve()}, outside the corpus folder; refused"))
                continue
            if not path.is_file():
                continue
            if path.suffix.lower() not in FORMATS:
                scan.problems.append((str(path), f"unknown format {path.suffix or '(no extension)'!r}; skipped"))
                continue
            try:
                found.append((doc_id_for(path, root), path))
            except BadDocumentIdError as err:
                scan.problems.append((str(path), err.message))
    for doc_id, path in sorted(found, key=lambda pair: (pair[0], str(pair[1]))):
        if doc_id in scan.files:
            scan.problems.append((str(path), f"same id {doc_id!r} as {scan.files[doc_id].name}; skipped"))
            continue
        scan.files[doc_id] = path
    return scan
