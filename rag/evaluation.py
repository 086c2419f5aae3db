"""Evaluation harness: run the shared pipeline over a gold question set and score retrieval,
answers, citations, abstention and latency (metric definitions in :mod:`rag.metrics`).

``rag eval`` prints a summary (or ``--json``), ``--out DIR`` writes ``report.json`` and
``report.md``; ``--ablation`` compares retrievers, fusion weights and chunk sizes in one table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import PROJECT_ROOT, Settings
from .errors import GoldSetError
from .gold import GoldQuestion, load_gold
from .metrics import format_markdown_report, format_per_type, score_records

DEFAULT_GOLD = PROJECT_ROOT / "eval" / "gold.jsonl"

#: Metrics shown in summaries and ablation tables, in this order.
HEADLINE = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "key_recall",
            "answer_chars_median", "citation_validity", "abstention_precision", "abstention_recall",
            "false_abstention_rate")


def run_gold(pipeline, gold: Sequence[GoldQuestion], mode: str = "hybrid", top_k: int = 10,
             query_vectors: dict[str, Any] | None = None) -> list[dict]:
    """Ask every gold question through ``pipeline`` and return the ``rag ask --json`` records.

    Args:
        pipeline: A warmed or lazy :class:`rag.pipeline.Pipeline`.
        gold: Questions, answered in order.
        mode: Retriever (``hybrid``, ``dense``, ``bm25``).
        top_k: Hits retrieved per question (metrics look at up to 10).
        query_vectors: Optional cache question -> query vector, filled as questions are embedded
            (lets an ablation embed each question once).
    """
    records = []
    for q in gold:
        vector = None
        if query_vectors is not None:
            vector = query_vectors.get(q.question)
            if vector is None:
                vector = query_vectors[q.question] = pipeline.embed_question(q.question.strip())
        records.append(pipeline.ask(q.question, top_k=top_k, mode=mode, query_vector=vector).to_dict())
    return records


def score(pipeline, gold: Sequence[GoldQuestion], records: list[dict]) -> dict:
    """:func:`rag.metrics.score_records` with the stored texts for citation validity."""
    raw = {info.doc_id: pipeline.document(info.doc_id).text for info in pipeline.documents()}
    return score_records(list(gold), records, raw_texts=raw)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1.0 else f"{value:.1f}"
    return str(value)


def format_summary(summary: dict, title: str) -> str:
    """A short plain-text summary of the headline metrics and per-stage latency."""
    lines = [title, f"  questions: {summary['n']} ({summary['n_answerable']} answerable, "
                    f"{summary['n_unanswerable']} unanswerable)"]
    for key in HEADLINE:
        lines.append(f"  {key:<24}{_fmt(summary.get(key))}")
    lines.append(f"  {'answer_chars_p90':<24}{_fmt(summary.get('answer_chars_p90'))}")
    for stage, values in (summary.get("latency_ms") or {}).items():
        lines.append(f"  latency {stage:<16}p50 {_fmt(values.get('p50'))} ms, p95 {_fmt(values.get('p95'))} ms")
    if summary.get("per_type"):
        lines.append("  per question type:")
        lines += ["  " + line for line in format_per_type(summary["per_type"]).splitlines()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: a retriever and the settings it runs with."""

    name: str
    mode: str
    chunk_size: int
    chunk_overlap: int
    dense_weight: float
    fusion: str
    sentence_weight: float = 0.5
    section_context: int = 1


def default_variants(settings: Settings) -> list[Variant]:
    """Each retriever alone, the hybrid's parts switched off one at a time, fusion variants
    (equal-weight RRF as in Langchain-Chatchat, weighted RRF, score fusion at several weights),
    and other chunk sizes."""
    size, overlap, w, sw = settings.chunk_size, settings.chunk_overlap, settings.dense_weight, settings.sentence_weight

    def row(name: str, mode: str, **kw) -> Variant:
        base = dict(chunk_size=size, chunk_overlap=overlap, dense_weight=w, fusion="score",
                    sentence_weight=sw, section_context=settings.section_context)
        base.update(kw)
        return Variant(name, mode, **base)

    rows = [row("bm25", "bm25"),
            row("dense (chunk vectors only)", "dense", sentence_weight=0.0),
            row("dense (chunk + best sentence)", "dense"),
            row("hybrid rrf w=0.5 (equal weights)", "hybrid", fusion="rrf", dense_weight=0.5),
            row("hybrid rrf w=0.3", "hybrid", fusion="rrf", dense_weight=0.3)]
    for weight in (0.3, 0.5, 0.7):
        rows.append(row(f"hybrid score w={weight}" + (" (default)" if weight == w else ""), "hybrid",
                        dense_weight=weight))
    rows.append(row("hybrid default, chunk vectors only", "hybrid", sentence_weight=0.0))
    rows.append(row("hybrid default, no section context", "hybrid", section_context=0))
    rows.append(row("bm25, no section context", "bm25", section_context=0))
    for other_size, other_overlap in ((240, 60), (600, 120), (750, 150)):
        if other_size != size:
            rows.append(row(f"hybrid default, chunk {other_size}/{other_overlap}", "hybrid",
                            chunk_size=other_size, chunk_overlap=other_overlap))
            rows.append(row(f"bm25, chunk {other_size}/{other_overlap}", "bm25",
                            chunk_size=other_size, chunk_overlap=other_overlap))
    return rows


def run_ablation(settings: Settings, gold: Sequence[GoldQuestion], variants: Iterable[Variant],
                 embedder=None, notify=None) -> list[tuple[Variant, dict]]:
    """Score every variant on ``gold``; one store per chunk setting (built once, kept next to the
    default store as ``<store>-ablation-*`` for non-default chunking), one embedder and one query
    vector per question for the whole run."""
    from .pipeline import Pipeline

    pipelines: dict[tuple[int, int, int], Pipeline] = {}
    vectors: dict[str, Any] = {}
    out = []
    for variant in variants:
        key = (variant.chunk_size, variant.chunk_overlap, variant.section_context)
        base = settings.replace(chunk_size=variant.chunk_size, chunk_overlap=variant.chunk_overlap,
                                section_context=variant.section_context)
        if key != (settings.chunk_size, settings.chunk_overlap, settings.section_context):
            base = base.for_variant(f"ablation-{'-'.join(map(str, key))}")
        if key not in pipelines:
            pipelines[key] = Pipeline(base, embedder=embedder, notify=notify).warm_up()
            embedder = pipelines[key].embedder
        pipeline = pipelines[key]
        pipeline.configure_retriever(dense_weight=variant.dense_weight, fusion=variant.fusion,
                                     sentence_weight=variant.sentence_weight)
        records = run_gold(pipeline, gold, mode=variant.mode, top_k=10, query_vectors=vectors)
        out.append((variant, score(pipeline, gold, records)))
    return out


def format_ablation(rows: list[tuple[Variant, dict]]) -> str:
    """Markdown table of an ablation run."""
    keys = ("recall@1", "recall@5", "mrr@10", "ndcg@10", "key_recall", "answer_chars_median",
            "false_abstention_rate", "abstention_recall")
    lines = ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for variant, summary in rows:
        lines.append(f"| {variant.name} | " + " | ".join(_fmt(summary.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def run_eval_command(args, settings: Settings) -> int:
    """Implementation of ``rag eval`` (see ``rag eval --help``)."""
    from .pipeline import Pipeline

    gold_path = Path(args.gold) if args.gold else DEFAULT_GOLD
    try:
        gold = load_gold(gold_path)
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise GoldSetError(f"cannot read gold file {gold_path}: {err}",
                           hint="one JSON object per line, see eval/gold.jsonl") from err
    if not gold:
        raise GoldSetError(f"gold file {gold_path} holds no question")
    if args.ablation:
        rows = run_ablation(settings, gold, default_variants(settings))
        table = format_ablation(rows)
        if args.json:
            print(json.dumps([{"variant": v.__dict__, **{k: s.get(k) for k in HEADLINE}} for v, s in rows],
                             ensure_ascii=False, indent=1))
        else:
            print(table)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "ablation.md").write_text(f"# Ablation on {gold_path.name}\n\n{table}\n", encoding="utf-8")
        return 0
    pipeline = Pipeline(settings).warm_up()
    started = time.perf_counter()
    records = run_gold(pipeline, gold, mode=args.retriever, top_k=args.top_k)
    summary = score(pipeline, gold, records)
    summary["retriever"] = args.retriever
    summary["gold"] = str(gold_path)
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "per_question"}, ensure_ascii=False))
    else:
        print(format_summary(summary, f"rag eval: {gold_path.name}, retriever {args.retriever}"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        (args.out / "report.md").write_text(
            format_markdown_report(summary, f"rag eval: {gold_path.name} ({args.retriever})"), encoding="utf-8")
    return 0
