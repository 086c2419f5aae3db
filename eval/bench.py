"""Benchmark of the main job, beside a BM25-only baseline measured in the same run.

Prints index build time and characters/second (model load included), retrieval and end-to-end
latency p50/p95 over the gold questions, and peak memory (RSS), for

* ours: the shared pipeline (offline e5 model + store with FAISS and BM25, fused, extractive
  answer), built into a temporary store folder (the converted model is reused from ``RAG_HOME``);
* baseline: rank_bm25 ``BM25Okapi`` over plain jieba tokens of the same chunks, no answerer.

Each side runs in its own subprocess so peak memory is its own. Targets (issue "main job"): warm
end-to-end p50 <= 80 ms per question; indexing the five files, model load included, <= 60 s.

Usage: ``.venv/bin/python eval/bench.py [--json] [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _pct(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase_ours(repeat: int) -> dict:
    from rag.config import Settings
    from rag.gold import load_gold
    from rag.pipeline import Pipeline

    questions = [q.question for q in load_gold(ROOT / "eval" / "gold.jsonl")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(index_dir=Path(tmp) / "store")
        started = time.perf_counter()
        pipeline = Pipeline(settings, notify=lambda m: None)
        pipeline.embedder.warm_up()
        load_s = time.perf_counter() - started
        pipeline.warm_up()
        build_s = time.perf_counter() - started
        infos = pipeline.documents()
        chars = sum(i.chars for i in infos)
        for q in questions[:3]:  # warm caches (jieba, torch kernels)
            pipeline.ask(q)
        retrieve, embed, total = [], [], []
        for _ in range(repeat):
            for q in questions:
                answer = pipeline.ask(q)
                retrieve.append(answer.timings_ms["retrieve"])
                embed.append(answer.timings_ms["embed"])
                total.append(answer.timings_ms["total"])
        return {"side": "ours", "model_load_s": load_s, "index_build_s": build_s, "chars": chars,
                "chars_per_s": chars / build_s, "chunks": sum(i.chunks for i in infos),
                "embed_p50_ms": _pct(embed, 50), "retrieve_p50_ms": _pct(retrieve, 50),
                "retrieve_p95_ms": _pct(retrieve, 95), "e2e_p50_ms": _pct(total, 50),
                "e2e_p95_ms": _pct(total, 95), "questions": len(total), "peak_rss_mb": _peak_rss_mb()}


def phase_baseline(repeat: int) -> dict:
    import jieba
    from rank_bm25 import BM25Okapi

    from rag.chunking import chunk_corpus
    from rag.config import Settings
    from rag.gold import load_gold
    from rag.ingest.prepare import load_documents

    jieba.setLogLevel(60)
    questions = [q.question for q in load_gold(ROOT / "eval" / "gold.jsonl")]
    settings = Settings.from_env()
    started = time.perf_counter()
    docs = load_documents(settings.corpus_dir)
    chunks, _ = chunk_corpus(docs, settings.chunk_size, settings.chunk_overlap)
    bm25 = BM25Okapi([list(jieba.cut_for_search(c.clean)) or [""] for c in chunks])
    build_s = time.perf_counter() - started
    chars = sum(len(d.text) for d in docs)
    retrieve = []
    for _ in range(repeat):
        for q in questions:
            t0 = time.perf_counter()
            scores = bm25.get_scores(list(jieba.cut_for_search(q)))
            sorted(range(len(scores)), key=lambda i: -scores[i])[:5]
            retrieve.append((time.perf_counter() - t0) * 1000)
    return {"side": "baseline", "model_load_s": 0.0, "index_build_s": build_s, "chars": chars,
            "chars_per_s": chars / build_s, "chunks": len(chunks), "embed_p50_ms": 0.0,
            "retrieve_p50_ms": _pct(retrieve, 50), "retrieve_p95_ms": _pct(retrieve, 95),
            "e2e_p50_ms": _pct(retrieve, 50), "e2e_p95_ms": _pct(retrieve, 95),
            "questions": len(retrieve), "peak_rss_mb": _peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the gold questions")
    parser.add_argument("--phase", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = phase_ours(args.repeat) if args.phase == "ours" else phase_baseline(args.repeat)
        print(json.dumps(result))
        return 0
    results = {}
    for phase in ("ours", "baseline"):
        proc = subprocess.run([sys.executable, __file__, "--phase", phase, "--repeat", str(args.repeat)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        results[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    ours, base = results["ours"], results["baseline"]
    print(f"{'metric':<20}{'ours':>12}{'bm25 baseline':>16}{'ratio':>10}")
    for key in ("model_load_s", "index_build_s", "chars_per_s", "chunks", "embed_p50_ms", "retrieve_p50_ms",
                "retrieve_p95_ms", "e2e_p50_ms", "e2e_p95_ms", "peak_rss_mb"):
        a, b = ours[key], base[key]
        ratio = f"{a / b:.1f}x" if b else "–"
        print(f"{key:<20}{a:>12.2f}{b:>16.2f}{ratio:>10}")
    print(f"questions per side: {ours['questions']}; corpus {ours['chars']} characters")
    print(f"targets: warm e2e p50 <= 80 ms -> {'met' if ours['e2e_p50_ms'] <= 80 else 'MISSED'}; "
          f"index build (model load included) <= 60 s -> {'met' if ours['index_build_s'] <= 60 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
