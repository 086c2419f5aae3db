"""Title and date of a document, read from its stored text."""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata

from rag.text import is_heading_line, split_lines

#: A full date such as ``2021年1月27日`` (digits may be full-width; NFKC is applied first).
_DATE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日")


def extract_title(raw: str) -> str:
    """First heading-like line that is not page furniture, stripped; ``""`` if the text starts
    with running prose (no heading before the first body line).

    Args:
        raw: Stored document text.
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
        raw: Stored document text.
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
