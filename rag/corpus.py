"""Read a folder of UTF-8 ``.txt`` files into :class:`~rag.types.Document` objects.

Offsets everywhere in the project address the text returned by :func:`read_raw` (bytes decoded
as UTF-8, nothing else: no newline translation, a BOM would be kept as ``\\ufeff``), so every
reader of archive files must go through it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import unicodedata
import warnings
from pathlib import Path

from rag.errors import CorpusError, UnknownDocumentError
from rag.text import is_heading_line, split_lines
from rag.types import Document

log = logging.getLogger(__name__)

_ID_HINT = "a doc_id is the file stem of a .txt file in the corpus folder"

#: A full date such as ``2021年1月27日`` (digits may be full-width; NFKC is applied first).
_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")
#: A plain file stem: word characters, ``-`` and ``.``, not starting with ``.``.
# Any file stem without separators, "%", control characters or a leading dot.
_STEM = re.compile(r"[^./\\%\x00-\x1f][^/\\%\x00-\x1f]*")


def read_raw(path: Path | str) -> str:
    """Return the raw text of an archive file: its bytes decoded as strict UTF-8.

    No newline translation (``\\r\\n`` is kept verbatim), so offsets computed on this string are
    the offsets everyone else sees.

    Raises:
        UnicodeDecodeError: the file is not valid UTF-8.
        OSError: the file cannot be read.
    """
    return Path(path).read_bytes().decode("utf-8")


def extract_title(raw: str) -> str:
    """First heading-like line that is not page furniture, stripped; ``""`` if the text starts
    with running prose (no heading before the first body line).

    Args:
        raw: Raw document text.
    """
    lines, _ = split_lines(raw)
    for line in lines[:1]:
        if is_heading_line(line.text):
            return line.text
    return ""


def extract_date(raw: str) -> str | None:
    """ISO date (``YYYY-MM-DD``) stated in the document's head, else ``None``.

    The head is the masthead/furniture plus the heading lines before the first body line
    (e.g. ``2021年1月27日 星期三`` in a masthead, ``(2020年1月6日在…会议上)`` under a title).
    Dates inside the body are events, not the document date, and are ignored; a year alone
    (``2023年工作纪实``) is not a date.

    Args:
        raw: Raw document text.
    """
    lines, dropped = split_lines(raw)
    head_end = len(raw)
    for line in lines:
        if not is_heading_line(line.text):
            head_end = line.start
            break
    pieces = [(s, raw[s:e]) for s, e, _ in dropped if s < head_end]
    pieces += [(ln.start, ln.text) for ln in lines if ln.start < head_end]
    for _, piece in sorted(pieces):
        for m in _DATE.finditer(unicodedata.normalize("NFKC", piece)):
            try:
                return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
            except ValueError:
                continue
    return None


def load_corpus(folder: Path | str, skipped: list[tuple[str, str]] | None = None) -> list[Document]:
    """Load every ``*.txt`` file of ``folder`` (not recursive), sorted by file name.

    Files that are not valid UTF-8, cannot be read, or hold only whitespace are skipped with a
    :func:`warnings.warn` (``UserWarning``) and a log warning naming the file.

    Args:
        folder: Corpus directory.
        skipped: If given, ``(file name, reason)`` is appended for every skipped file.

    Returns:
        Documents in file-name order; ``doc_id`` is the file stem, ``text`` the raw text
        (:func:`read_raw`), ``title``/``date`` from :func:`extract_title`/:func:`extract_date`.

    Raises:
        CorpusError: ``folder`` does not exist, is not a directory, or yields no usable file.
    """
    root = Path(folder).expanduser()
    hint = "set RAG_CORPUS_DIR or pass --corpus to a folder of UTF-8 .txt files"
    if not root.exists():
        raise CorpusError(f"corpus folder {str(root)!r} does not exist", hint)
    if not root.is_dir():
        raise CorpusError(f"corpus path {str(root)!r} is not a directory", hint)
    docs: list[Document] = []
    for path in sorted(p for p in root.glob("*.txt") if p.is_file()):
        reason = None
        try:
            raw = read_raw(path)
            if not raw.strip():
                reason = "empty file"
        except UnicodeDecodeError as err:
            reason = f"not valid UTF-8 ({err.reason} at byte {err.start})"
        except OSError as err:
            reason = f"unreadable ({err.strerror or err})"
        if reason is not None:
            msg = f"skipping corpus file {path.name}: {reason}"
            warnings.warn(msg, UserWarning, stacklevel=2)
            log.warning(msg)
            if skipped is not None:
                skipped.append((path.name, reason))
            continue
        docs.append(Document(doc_id=path.stem, path=str(path.resolve()), title=extract_title(raw),
                             date=extract_date(raw), text=raw))
    if not docs:
        raise CorpusError(f"corpus folder {str(root)!r} holds no usable .txt file", hint)
    return docs


def safe_doc_path(folder: Path | str, doc_id: str) -> Path:
    """Resolve ``doc_id`` to ``folder/<doc_id>.txt``, refusing anything but a known plain stem.

    Rejected (URL-decoding is the caller's job; decoded forms like ``../x`` are caught here):
    empty or non-string ids, path separators ``/`` ``\\``, ``..``, a leading ``.``, absolute
    paths, drive letters, NUL/control characters, ``%``, and any id whose file does not exist
    directly inside ``folder``.

    Returns:
        The resolved path of the document file.

    Raises:
        UnknownDocumentError: the id is not a plain stem or no such document exists.
    """
    if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 255 or ".." in doc_id \
            or not _STEM.fullmatch(doc_id):
        raise UnknownDocumentError(f"unknown document id {doc_id!r}",
                                   _ID_HINT)
    root = Path(folder).expanduser().resolve()
    path = (root / f"{doc_id}.txt").resolve()
    if path.parent != root or not path.is_file():
        raise UnknownDocumentError(f"unknown document id {doc_id!r}",
                                   _ID_HINT)
    return path
