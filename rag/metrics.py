"""Evaluation metrics for retrieval and extractive answers (pure functions, no pipeline).

Definitions used (binary relevance; ``rel`` is a 0/1 list in rank order, rank 1 first):

* **recall@k** (a.k.a. *success@k*, hit rate): 1 if any of the top ``k`` hits is relevant,
  else 0; averaged over questions. With one gold passage per question this equals the usual
  recall@k; the issue tracker calls it recall@k, so the name is kept.
* **MRR@k** (mean reciprocal rank, Voorhees, "The TREC-8 Question Answering Track Report",
  TREC-8, 1999): ``1 / rank`` of the first relevant hit if it is within the top ``k``, else 0;
  averaged over questions.
* **nDCG@k** (Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques",
  ACM TOIS 20(4), 2002), with the common ``log2(i + 1)`` discount and binary gains:
  ``DCG@k = sum_{i=1..k} rel_i / log2(i + 1)``. The archive has no exhaustive relevance
  judgements (several chunks may contain an evidence string, and which ones depends on the
  chunker), so the ideal ranking is taken from the hits themselves:
  ``IDCG@k = sum_{i=1..m} 1 / log2(i + 1)`` with ``m = min(k, max(1, R))`` where ``R`` is the
  number of relevant hits in the *whole* returned list. Hence a question with a single relevant
  passage scores ``1 / log2(r + 1)`` when it is found at rank ``r <= k``, and 0 when it is not
  retrieved at all.

Relevance of a hit: its text, normalised by :func:`normalize_for_match` (NFKC, whitespace
removed), contains any normalised gold evidence string.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from rag.gold import GoldQuestion, norm_ws

__all__ = [
    "normalize_for_match", "hit_is_relevant", "relevance_vector", "recall_at_k", "mrr_at_k",
    "ndcg_at_k", "first_relevant_rank", "answer_has_keys", "strip_citation_markers", "percentile", "score_records",
    "format_markdown_report", "format_per_type",
]

#: Citation markers the answerer inserts, e.g. ``[1]``, ``[12]``.
_MARKER_RE = re.compile(r"\[\d+\]")

#: Ranks used for the headline retrieval metrics.
_RECALL_KS = (1, 5, 10)
_K = 10


#: NFKC + all whitespace removed: the gold set's own matching form, so the validator and the
#: scorer can never disagree on whether a string is present.
normalize_for_match = norm_ws


def hit_is_relevant(hit_text: str, evidence: Sequence[str]) -> bool:
    """Whether a retrieved passage contains any gold evidence string (after normalisation).

    Args:
        hit_text: Text of the retrieved chunk.
        evidence: Gold evidence strings; empty strings are ignored.

    Returns:
        True when the normalised hit text contains at least one normalised evidence string.
    """
    text = normalize_for_match(hit_text)
    return any(e and e in text for e in (normalize_for_match(x) for x in evidence))


def relevance_vector(hit_texts: Sequence[str], evidence: Sequence[str]) -> list[int]:
    """0/1 relevance per rank (index 0 = rank 1), see :func:`hit_is_relevant`."""
    return [1 if hit_is_relevant(t, evidence) else 0 for t in hit_texts]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def first_relevant_rank(rel: Sequence[int]) -> int | None:
    """1-based rank of the first relevant hit, or ``None``."""
    for i, r in enumerate(rel, start=1):
        if r:
            return i
    return None


def recall_at_k(rel: Sequence[int], k: int) -> float:
    """Success@k: 1.0 if any of the top ``k`` hits is relevant, else 0.0."""
    _check_k(k)
    return 1.0 if any(rel[:k]) else 0.0


def mrr_at_k(rel: Sequence[int], k: int) -> float:
    """Reciprocal rank of the first relevant hit within the top ``k`` (Voorhees 1999), else 0."""
    _check_k(k)
    r = first_relevant_rank(rel[:k])
    return 0.0 if r is None else 1.0 / r


def _dcg(gains: Sequence[int]) -> float:
    return sum(g / math.log2(i + 1) for i, g in enumerate(gains, start=1))


def ndcg_at_k(rel: Sequence[int], k: int) -> float:
    """nDCG@k with binary gains (Järvelin & Kekäläinen 2002), IDCG as in the module docstring.

    ``IDCG@k`` is the DCG of ``m = min(k, max(1, sum(rel)))`` relevant hits at ranks ``1..m``,
    where ``sum(rel)`` counts relevant hits over the whole list (not only the top ``k``).
    Returns 0.0 when no hit is relevant.
    """
    _check_k(k)
    n_rel = sum(1 for r in rel if r)
    if n_rel == 0:
        return 0.0
    m = min(k, max(1, n_rel))
    return _dcg([1 if r else 0 for r in rel[:k]]) / _dcg([1] * m)


def answer_has_keys(answer_text: str, keys: Sequence[str]) -> bool:
    """Whether every key occurs in the answer, both sides normalised (NFKC, no whitespace).

    An empty ``keys`` list is vacuously satisfied.
    """
    text = normalize_for_match(answer_text)
    return all(normalize_for_match(k) in text for k in keys)


def strip_citation_markers(text: str) -> str:
    """Remove ``[n]`` citation markers."""
    return _MARKER_RE.sub("", text)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Same result as ``numpy.percentile(values, q)`` (its default ``method="linear"``): position
    ``(n - 1) * q / 100`` in the sorted values, interpolated. Returns ``nan`` for no values.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    xs = sorted(float(v) for v in values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pct_or_none(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def _ranked_hits(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    hits = list(record.get("hits") or [])
    if hits and all(isinstance(h.get("rank"), (int, float)) for h in hits):
        hits.sort(key=lambda h: h["rank"])
    return hits


def _hit_rel(hit: Mapping[str, Any], gold: GoldQuestion) -> int:
    # A hit must also come from one of the gold documents when its doc_id is known.
    doc_id = hit.get("doc_id")
    if doc_id and gold.doc_prefixes and not any(str(doc_id).startswith(p)
                                                 for p in gold.doc_prefixes):
        return 0
    return 1 if hit_is_relevant(str(hit.get("text", "")), gold.evidence) else 0


def score_records(gold: list[GoldQuestion], records: list[dict],
                  raw_texts: Mapping[str, str] | None = None, per_type: bool = True) -> dict:
    """Score the bot's JSON records against the gold set.

    Records are matched to gold questions by position. A record has the ``rag ask --json``
    schema: ``question``, ``answer``, ``abstained``, ``citations`` (``doc_id``, ``start``,
    ``end``, ``text``, ...), ``hits`` (``rank``, ``doc_id``, ``text``, ...) and ``timings_ms``.

    Retrieval relevance uses ``hits[*].text`` (see :func:`hit_is_relevant`); in addition a hit
    whose ``doc_id`` is given must start with one of the question's gold doc prefixes.

    Args:
        gold: Gold questions.
        records: One record per gold question, same order.
        raw_texts: Raw document texts by full doc id, for ``citation_validity``; ``None`` skips
            that metric.
        per_type: Also compute ``per_type`` (figures per question type).

    Returns:
        A dict with exactly these keys:

        * ``n``, ``n_answerable``, ``n_unanswerable``: counts.
        * ``recall@1``, ``recall@5``, ``recall@10``, ``mrr@10``, ``ndcg@10``: means over
          answerable questions (``None`` if there are none).
        * ``key_recall``: fraction of answerable questions answered (not abstained) with all
          keys present.
        * ``answer_chars_median``, ``answer_chars_p90``: length of non-abstained answers with
          ``[n]`` markers removed and outer whitespace stripped (``None`` if no answers).
        * ``citation_validity``: fraction of all citations with ``raw[start:end] == text``
          (``None`` without ``raw_texts`` or without citations).
        * ``abstention_precision``: abstained and unanswerable / abstained (``None`` if
          nothing abstained). ``abstention_recall``: abstained and unanswerable / unanswerable
          (``None`` if no unanswerable question). ``false_abstention_rate``: abstained
          answerable / answerable (``None`` if none).
        * ``latency_ms``: ``{stage: {"p50": ..., "p95": ...}}`` over records' ``timings_ms``.
        * ``per_type``: for each question type present (gold order of first appearance),
          ``{"n", "abstained", "key_recall", "false_abstention_rate", "recall@5",
          "citation_validity", "answer_chars_median"}`` computed as above on that type's
          questions; ``abstained`` is the share of the type's questions that abstained (for
          unanswerable types the abstention recall, for answerable ones the false abstention).
        * ``per_question``: one dict per question with ``id``, ``question``, ``type``,
          ``first_relevant_rank`` (1-based within the returned hits, or ``None``),
          ``key_hit``, ``abstained``, ``answer`` and ``failure`` (``""`` when fine).

    Raises:
        ValueError: ``len(records) != len(gold)``.
    """
    if len(records) != len(gold):
        raise ValueError(f"{len(records)} records for {len(gold)} gold questions")

    retr: dict[str, list[float]] = {f"recall@{k}": [] for k in _RECALL_KS}
    retr["mrr@10"] = []
    retr["ndcg@10"] = []
    key_hits: list[float] = []
    answer_lens: list[float] = []
    n_cit = n_cit_ok = 0
    abst_total = abst_unans = abst_ans = 0
    timings: dict[str, list[float]] = {}
    per_question: list[dict] = []

    for q, rec in zip(gold, records):
        abstained = bool(rec.get("abstained", False))
        answer = str(rec.get("answer") or "")
        clean_answer = strip_citation_markers(answer).strip()
        if not abstained:
            answer_lens.append(float(len(clean_answer)))
        else:
            abst_total += 1

        for stage, ms in (rec.get("timings_ms") or {}).items():
            if isinstance(ms, (int, float)) and not isinstance(ms, bool):
                timings.setdefault(stage, []).append(float(ms))

        if raw_texts is not None:
            for c in rec.get("citations") or []:
                n_cit += 1
                raw = raw_texts.get(str(c.get("doc_id")))
                try:
                    ok = raw is not None and raw[int(c["start"]):int(c["end"])] == c.get("text")
                except (KeyError, TypeError, ValueError):
                    ok = False
                n_cit_ok += int(ok)

        failures: list[str] = []
        if q.unanswerable:
            rank = None
            key_hit = False
            if abstained:
                abst_unans += 1
            else:
                failures.append("answered an unanswerable question")
        else:
            rel = [_hit_rel(h, q) for h in _ranked_hits(rec)]
            rank = first_relevant_rank(rel)
            for k in _RECALL_KS:
                retr[f"recall@{k}"].append(recall_at_k(rel, k))
            retr["mrr@10"].append(mrr_at_k(rel, _K))
            retr["ndcg@10"].append(ndcg_at_k(rel, _K))
            key_hit = (not abstained) and answer_has_keys(clean_answer, q.keys)
            key_hits.append(1.0 if key_hit else 0.0)
            if rank is None or rank > _K:
                failures.append(f"evidence not in top {_K}")
            if abstained:
                abst_ans += 1
                failures.append("false abstention")
            elif not key_hit:
                missing = [k for k in q.keys if normalize_for_match(k)
                           not in normalize_for_match(clean_answer)]
                failures.append("answer lacks keys: " + ", ".join(missing))
        per_question.append({
            "id": q.id, "question": q.question, "type": q.type, "first_relevant_rank": rank,
            "key_hit": key_hit, "abstained": abstained, "answer": answer,
            "failure": "; ".join(failures),
        })

    n_ans = sum(1 for q in gold if not q.unanswerable)
    n_unans = len(gold) - n_ans
    summary: dict[str, Any] = {"n": len(gold), "n_answerable": n_ans, "n_unanswerable": n_unans}
    for name, vals in retr.items():
        summary[name] = _mean(vals)
    summary["key_recall"] = _mean(key_hits)
    summary["answer_chars_median"] = _pct_or_none(answer_lens, 50)
    summary["answer_chars_p90"] = _pct_or_none(answer_lens, 90)
    summary["citation_validity"] = (n_cit_ok / n_cit) if (raw_texts is not None and n_cit) else None
    summary["abstention_precision"] = (abst_unans / abst_total) if abst_total else None
    summary["abstention_recall"] = (abst_unans / n_unans) if n_unans else None
    summary["false_abstention_rate"] = (abst_ans / n_ans) if n_ans else None
    summary["latency_ms"] = {stage: {"p50": percentile(v, 50), "p95": percentile(v, 95)}
                             for stage, v in timings.items()}
    summary["per_question"] = per_question
    if per_type:
        summary["per_type"] = _per_type(gold, records, raw_texts)
    return summary


def _per_type(gold: Sequence[GoldQuestion], records: list[dict],
              raw_texts: Mapping[str, str] | None) -> dict[str, dict]:
    types = list(dict.fromkeys(q.type or "(none)" for q in gold))
    out: dict[str, dict] = {}
    for t in types:
        idx = [i for i, q in enumerate(gold) if (q.type or "(none)") == t]
        sub = score_records([gold[i] for i in idx], [records[i] for i in idx], raw_texts, per_type=False)
        out[t] = {"n": sub["n"],
                  "abstained": sum(1 for i in idx if records[i].get("abstained")) / len(idx),
                  "key_recall": sub["key_recall"], "false_abstention_rate": sub["false_abstention_rate"],
                  "recall@5": sub["recall@5"], "citation_validity": sub["citation_validity"],
                  "answer_chars_median": sub["answer_chars_median"]}
    return out


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3f}" if pct else f"{v:.1f}"
    return str(v)


def _cell(s: Any, limit: int = 80) -> str:
    text = " ".join(str(s).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


_PER_TYPE_COLUMNS = ("n", "key_recall", "abstained", "false_abstention_rate", "recall@5",
                     "citation_validity", "answer_chars_median")


def format_per_type(per_type: Mapping[str, Mapping[str, Any]]) -> str:
    """The ``per_type`` part of a :func:`score_records` summary as a Markdown table ("–" where a
    figure does not apply, e.g. key recall of an unanswerable type)."""
    lines = ["| type | " + " | ".join(_PER_TYPE_COLUMNS) + " |", "|---|" + "---|" * len(_PER_TYPE_COLUMNS)]
    for t, row in per_type.items():
        cells = []
        for key in _PER_TYPE_COLUMNS:
            v = row.get(key)
            if v is None:
                cells.append("–")
            elif key == "n":
                cells.append(str(v))
            elif key == "answer_chars_median":
                cells.append(f"{v:.0f}")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown_report(summary: dict, title: str) -> str:
    """Render a :func:`score_records` summary as Markdown.

    Sections: a metrics table, a latency table (p50/p95 per stage) and a table of the
    questions with a non-empty failure reason.

    Args:
        summary: The dict returned by :func:`score_records`.
        title: Level-1 heading.

    Returns:
        The report, ending with a newline.
    """
    lines = [f"# {title}", ""]
    lines += [f"Questions: {summary.get('n', 0)} "
              f"({summary.get('n_answerable', 0)} answerable, "
              f"{summary.get('n_unanswerable', 0)} unanswerable).", ""]
    lines += ["| Metric | Value |", "|---|---|"]
    rate_keys = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "key_recall",
                 "citation_validity", "abstention_precision", "abstention_recall",
                 "false_abstention_rate")
    for key in rate_keys:
        lines.append(f"| {key} | {_fmt(summary.get(key), pct=True)} |")
    for key in ("answer_chars_median", "answer_chars_p90"):
        lines.append(f"| {key} | {_fmt(summary.get(key))} |")
    lines.append("")
    if summary.get("per_type"):
        lines += ["## Per question type", "", format_per_type(summary["per_type"]), ""]

    latency = summary.get("latency_ms") or {}
    if latency:
        lines += ["## Latency (ms)", "", "| Stage | p50 | p95 |", "|---|---|---|"]
        for stage, d in latency.items():
            lines.append(f"| {_cell(stage)} | {_fmt(d.get('p50'))} | {_fmt(d.get('p95'))} |")
        lines.append("")

    failed = [p for p in summary.get("per_question", []) if p.get("failure")]
    lines += [f"## Failures ({len(failed)})", ""]
    if failed:
        lines += ["| id | type | question | first relevant rank | answer | failure |",
                  "|---|---|---|---|---|---|"]
        for p in failed:
            rank = p.get("first_relevant_rank")
            answer = "(abstained)" if p.get("abstained") else p.get("answer", "")
            lines.append(f"| {_cell(p.get('id'))} | {_cell(p.get('type', ''))} | "
                         f"{_cell(p.get('question'))} | {'-' if rank is None else rank} | "
                         f"{_cell(answer)} | {_cell(p.get('failure'))} |")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
