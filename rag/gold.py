"""The dev gold set: loading and validating ``eval/gold.jsonl``.

Each line of the file is one JSON object::

    {"id": "q001", "question": "...", "doc": "000|001", "evidence": ["..."],
     "keys": ["..."], "type": "factoid", "unanswerable": false}

* ``doc``: ``|``-separated document-id prefixes (the 3-digit file prefix); ``""`` when
  unanswerable.
* ``evidence``: verbatim substrings of the named documents; a retrieved passage counts as
  relevant when it contains any of them (see :mod:`rag.metrics`).
* ``keys``: short strings that must *all* appear in a correct answer.

Matching is whitespace-insensitive and NFKC-normalised on both sides, because the archive
contains layout line breaks and mixes full-width and half-width punctuation.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["GoldQuestion", "load_gold", "validate_gold", "norm_ws", "TYPES", "ANSWERABLE_TYPES",
           "UNANSWERABLE_TYPES"]

#: Question types that the archive answers: a fact (number, date, name), a list (suggestions,
#: problems), a paraphrase (no source words: 结婚前体检 for 婚检), and a two-part question (two
#: facts, possibly from two documents).
ANSWERABLE_TYPES = ("factoid", "list", "paraphrase", "two_part")
#: Question types the archive cannot answer: near-domain (right people and topic, the fact is
#: absent) and out-of-domain (chit-chat, other cities, English, code).
UNANSWERABLE_TYPES = ("near_domain", "out_of_domain")
#: Every question type, in report order.
TYPES = ANSWERABLE_TYPES + UNANSWERABLE_TYPES


@dataclass(frozen=True)
class GoldQuestion:
    """One gold question.

    Attributes:
        id: Unique id, e.g. ``"q001"``.
        question: The question as a user would type it.
        doc_prefixes: Document-id prefixes holding the answer (empty when unanswerable).
        evidence: Verbatim substrings of those documents; any one marks a passage relevant.
        keys: Strings that must all occur in a correct answer.
        unanswerable: True when the archive cannot answer the question.
        type: One of :data:`TYPES` (``factoid``, ``list``, ``paraphrase``, ``two_part``,
            ``near_domain``, ``out_of_domain``); ``""`` when not labelled.
    """

    id: str
    question: str
    doc_prefixes: tuple[str, ...]
    evidence: tuple[str, ...]
    keys: tuple[str, ...]
    unanswerable: bool = False
    type: str = ""

    def to_dict(self) -> dict:
        """The JSONL representation (inverse of :func:`load_gold` for one line)."""
        return {"id": self.id, "question": self.question, "doc": "|".join(self.doc_prefixes),
                "evidence": list(self.evidence), "keys": list(self.keys), "type": self.type,
                "unanswerable": self.unanswerable}


def norm_ws(s: str) -> str:
    """NFKC-normalise ``s`` and drop all whitespace (the gold set's matching normal form)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", s) if not ch.isspace())


def _str_tuple(value: object, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise TypeError(f"{field_name!r} must be a list of strings, not a string")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{field_name!r} must be a list of strings")
    return tuple(value)


def _parse_doc(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    elif isinstance(value, str):
        parts = value.split("|")
    else:
        raise TypeError("'doc' must be a string like '000|001'")
    return tuple(p.strip() for p in parts if p.strip())


def _parse_line(obj: object) -> GoldQuestion:
    if not isinstance(obj, dict):
        raise TypeError("line is not a JSON object")
    for name in ("id", "question"):
        if not isinstance(obj.get(name), str):
            raise KeyError(f"missing or non-string field {name!r}")
    unanswerable = obj.get("unanswerable", False)
    if not isinstance(unanswerable, bool):
        raise TypeError("'unanswerable' must be true or false")
    qtype = obj.get("type", "")
    if not isinstance(qtype, str):
        raise TypeError("'type' must be a string")
    return GoldQuestion(
        id=obj["id"],
        question=obj["question"],
        doc_prefixes=_parse_doc(obj.get("doc", "")),
        evidence=_str_tuple(obj.get("evidence", []), "evidence"),
        keys=_str_tuple(obj.get("keys", []), "keys"),
        unanswerable=unanswerable,
        type=qtype,
    )


def load_gold(path: str | Path) -> list[GoldQuestion]:
    """Read a gold JSONL file. Blank lines are skipped.

    Args:
        path: The ``.jsonl`` file.

    Returns:
        The questions in file order.

    Raises:
        ValueError: A line is not valid JSON or lacks/mistypes a field; the message names the
            file and the 1-based line number.
        OSError: The file cannot be read.
    """
    path = Path(path)
    out: list[GoldQuestion] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(_parse_line(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: malformed gold line: {exc}") from exc
    return out


def _load_corpus(corpus_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.txt"))}


def _docs_for(prefix: str, stems: Iterable[str]) -> list[str]:
    return [s for s in stems if s.startswith(prefix)]


def validate_gold(questions: list[GoldQuestion], corpus_dir: str | Path) -> list[str]:
    """Check a gold set against a corpus folder.

    Reported problems: duplicate ids; empty questions; a type outside :data:`TYPES` or one that
    contradicts ``unanswerable``; answerable questions without evidence or keys; unanswerable questions that carry evidence/keys/docs; doc prefixes matching no
    ``*.txt`` file stem in ``corpus_dir``; evidence or key strings absent from every named
    document. Presence is tested after :func:`norm_ws` on both sides (NFKC, no whitespace).

    Args:
        questions: Parsed gold questions.
        corpus_dir: Folder of the archive's ``.txt`` files.

    Returns:
        Human-readable problem descriptions, one per problem; ``[]`` means valid.
    """
    corpus = _load_corpus(Path(corpus_dir))
    normed = {stem: norm_ws(text) for stem, text in corpus.items()}
    problems: list[str] = []
    seen: set[str] = set()
    for q in questions:
        tag = q.id or "<no id>"
        if not q.id.strip():
            problems.append("question with empty id")
        elif q.id in seen:
            problems.append(f"{tag}: duplicate id")
        seen.add(q.id)
        if not q.question.strip():
            problems.append(f"{tag}: empty question")
        if q.type and q.type not in TYPES:
            problems.append(f"{tag}: unknown type {q.type!r} (one of {', '.join(TYPES)})")
        elif q.type and (q.type in UNANSWERABLE_TYPES) != q.unanswerable:
            problems.append(f"{tag}: type {q.type!r} contradicts unanswerable={q.unanswerable}")
        if q.unanswerable:
            if q.evidence or q.keys or q.doc_prefixes:
                problems.append(f"{tag}: unanswerable question must have no doc, evidence or keys")
            continue
        if not q.doc_prefixes:
            problems.append(f"{tag}: answerable question has no doc prefix")
        if not q.evidence:
            problems.append(f"{tag}: answerable question has no evidence")
        if not q.keys:
            problems.append(f"{tag}: answerable question has no keys")
        docs: list[str] = []
        for prefix in q.doc_prefixes:
            matched = _docs_for(prefix, corpus)
            if not matched:
                problems.append(f"{tag}: doc prefix {prefix!r} matches no file in {corpus_dir}")
            docs.extend(matched)
        if not docs:
            continue
        for kind, strings in (("evidence", q.evidence), ("key", q.keys)):
            for s in strings:
                ns = norm_ws(s)
                if not ns:
                    problems.append(f"{tag}: empty {kind} string")
                elif not any(ns in normed[d] for d in docs):
                    problems.append(f"{tag}: {kind} {s!r} not found in {'|'.join(q.doc_prefixes)}")
    return problems
