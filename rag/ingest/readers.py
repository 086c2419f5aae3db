"""One reader per file format, each returning the document's *stored text*: the string every
offset, chunk and citation of the document addresses (``citation.text == stored[start:end]``).

| format | library (licence) | stored text |
|---|---|---|
| ``.txt``, ``.md`` | stdlib; charset-normalizer (MIT) for legacy encodings | the decoded file, unchanged |
| ``.html``, ``.htm`` | trafilatura (Apache-2.0) | main text only (no navigation, ads, footer) |
| ``.pdf`` | pypdf (BSD-3-Clause) | text layer per page, radicals folded, wrap breaks joined |
| ``.docx`` | python-docx (MIT) | paragraphs and table rows (cells joined by `` | ``) in body order |

For ``.txt`` the stored text is exactly the decoded file (UTF-8 as it is, a UTF-8 BOM kept as
``\\ufeff``), so the offsets of the bundled archive never change. Text extracted from the other
formats has its CJK radical code points folded (:func:`rag.ingest.normalize.fold_cjk_variants`);
PDF pages also have their line-wrap breaks joined.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from rag.errors import (EncryptedDocumentError, IngestError, NoTextError, UndecodableTextError,
                        UnsupportedFormatError)

from .normalize import fold_cjk_variants, rejoin_wrapped_lines

#: File extension (lower case) -> format name.
FORMATS: dict[str, str] = {".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html",
                           ".htm": "html", ".pdf": "pdf", ".docx": "docx"}

#: Encodings charset-normalizer may name for Chinese text; decoded as GB18030, their superset.
_GB_FAMILY = {"gb2312", "gbk", "gb18030", "hz", "cp936", "euc_cn"}


@dataclass(frozen=True)
class StoredText:
    """What a reader extracted from one file.

    Attributes:
        text: The stored text (offsets address it).
        format: ``txt``, ``md``, ``html``, ``pdf`` or ``docx``.
        title: Title from the file's own metadata (HTML ``<title>``, PDF or DOCX properties),
            ``""`` when absent.
        pages: For PDFs, the start offset of each page in ``text`` (``pages[0] == 0``); empty
            for other formats.
        encoding: The text encoding used for ``txt``/``md`` (``utf-8``, ``utf-16``, ``gb18030``,
            ...), ``""`` otherwise.
    """

    text: str
    format: str
    title: str = ""
    pages: tuple[int, ...] = ()
    encoding: str = ""


def format_of(name: str) -> str:
    """The format name for a file name.

    Raises:
        UnsupportedFormatError: the extension is not in :data:`FORMATS`.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise UnsupportedFormatError(f"{name}: unknown format {suffix or '(no extension)'!r}",
                                     hint=f"readable formats: {known}")
    return FORMATS[suffix]


def read_file(path: Path | str) -> StoredText:
    """Read one file into its stored text.

    Raises:
        UnsupportedFormatError, NoTextError, EncryptedDocumentError, UndecodableTextError: this file
            cannot be ingested (the message names the file and the reason).
        IngestError: the file cannot be read (permissions, vanished).
    """
    path = Path(path)
    fmt = format_of(path.name)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise IngestError(f"{path}: cannot read ({err.strerror or err})") from err
    return read_bytes(data, path.name, fmt)


def read_bytes(data: bytes, name: str, fmt: str | None = None) -> StoredText:
    """Read the bytes of a file called ``name`` (an upload, or :func:`read_file`).

    Raises:
        See :func:`read_file`.
    """
    fmt = fmt or format_of(name)
    reader = {"txt": _read_text, "md": _read_text, "html": _read_html, "pdf": _read_pdf,
              "docx": _read_docx}[fmt]
    stored = reader(data, name)
    if not stored.text.strip():
        raise NoTextError(f"{name}: no text found" + (" (no text layer: a scanned PDF?)" if fmt == "pdf" else ""),
                          hint="run OCR on a scanned PDF first" if fmt == "pdf" else "")
    return StoredText(stored.text, fmt, stored.title, stored.pages, stored.encoding)


def decode_text(data: bytes, name: str = "") -> tuple[str, str]:
    """Decode a text file: UTF-16 with a BOM, else strict UTF-8, else the encoding
    charset-normalizer detects (GB2312/GBK decoded as their superset GB18030).

    Returns:
        ``(text, encoding)``. A UTF-8 BOM is kept as ``\\ufeff`` (the file's code points as they
        are); a UTF-16 BOM is dropped.

    Raises:
        UndecodableTextError: no encoding decodes the bytes.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as err:
            raise UndecodableTextError(f"{name}: starts with a UTF-16 byte-order mark but is not "
                                       f"UTF-16 ({err.reason} at byte {err.start})") from err
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        utf8_error = err
    from charset_normalizer import from_bytes

    # Short texts decode without "chaos" in several CJK encodings; among the least chaotic
    # candidates the archive's own family (GB2312/GBK/GB18030, mainland simplified Chinese) wins.
    # UTF-16/32 are taken only with a byte-order mark (above): without one, any even-length bytes
    # "decode" as UTF-16 without chaos, which beat GB18030 on texts using CJK Extension A.
    matches = [m for m in from_bytes(data) if not m.encoding.lower().startswith(("utf_16", "utf_32"))]
    encoding = None
    if matches:
        least = min(m.chaos for m in matches)
        tied = [m.encoding.lower() for m in matches if m.chaos <= least + 0.01]
        encoding = next((e for e in tied if e in _GB_FAMILY), tied[0])
    if encoding in _GB_FAMILY:
        encoding = "gb18030"
    for candidate in ([encoding] if encoding is not None else []) + ["gb18030"]:
        try:
            return data.decode(candidate), candidate
        except (UnicodeDecodeError, LookupError):
            pass
    raise UndecodableTextError(
        f"{name}: not UTF-8 ({utf8_error.reason} at byte {utf8_error.start}) and no other encoding "
        "was detected", hint="convert the file to UTF-8")


def _read_text(data: bytes, name: str) -> StoredText:
    text, encoding = decode_text(data, name)
    return StoredText(text, "txt", encoding=encoding)


def _read_html(data: bytes, name: str) -> StoredText:
    import trafilatura

    # trafilatura detects the page's charset from bytes (meta tag, then charset detection).
    text = trafilatura.extract(data, include_comments=False, include_tables=True,
                               include_images=False, include_links=False, output_format="txt",
                               deduplicate=False, favor_precision=True) or ""
    meta = trafilatura.extract_metadata(data)
    title = (meta.title or "") if meta is not None else ""
    return StoredText(fold_cjk_variants(text.strip()), "html", title=fold_cjk_variants(title.strip()))


def _read_pdf(data: bytes, name: str) -> StoredText:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError) as err:
                raise EncryptedDocumentError(f"{name}: encrypted PDF ({err})",
                                             hint="save an unencrypted copy and add that") from err
            if not opened:
                raise EncryptedDocumentError(f"{name}: the PDF is encrypted with a password",
                                             hint="save an unencrypted copy and add that")
        pages: list[int] = []
        parts: list[str] = []
        offset = 0
        for page in reader.pages:
            text = rejoin_wrapped_lines(fold_cjk_variants(page.extract_text() or "")).strip()
            if parts:
                parts.append("\n\n")
                offset += 2
            pages.append(offset)
            parts.append(text)
            offset += len(text)
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = fold_cjk_variants(str(reader.metadata.title).strip())
    except FileNotDecryptedError as err:
        raise EncryptedDocumentError(f"{name}: the PDF is encrypted ({err})",
                                     hint="save an unencrypted copy and add that") from err
    except (PdfReadError, ValueError, KeyError, TypeError) as err:
        raise IngestError(f"{name}: not a readable PDF ({err})") from err
    return StoredText("".join(parts), "pdf", title=title, pages=tuple(pages))


def _read_docx(data: bytes, name: str) -> StoredText:
    import zipfile

    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise IngestError(f"{name}: not a readable .docx file ({err})",
                          hint="save it as .docx (Word 2007 or later)") from err
    lines: list[str] = []
    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            text = Paragraph(element, document).text.strip()
            if text:
                lines.append(text)
        elif tag == "tbl":
            for row in Table(element, document).rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = " ".join(cell.text.split())
                    if text and (not cells or cells[-1] != text):  # merged cells repeat
                        cells.append(text)
                if cells:
                    lines.append(" | ".join(cells))
    title = (document.core_properties.title or "").strip()
    return StoredText(fold_cjk_variants("\n".join(lines)), "docx", title=fold_cjk_variants(title))
