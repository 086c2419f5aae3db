"""Benchmark the embedding backends in one run: torch vs ONNX fp32 vs ONNX int8.

Not a test: it prints numbers and ratios (ONNX over torch, measured in the same run, because the
shared 2-core machine is noisy). Measures:

* load: fresh subprocesses per backend (export already cached), import + model load + first
  query, and resident memory (VmRSS after one query, VmHWM peak);
* single-query latency p50/p95 (ms) over ``--queries`` archive sentences, variants interleaved
  query by query so they share the noise, with the other core idle and then busy (a
  ``while True: pass`` process): torch 1 thread, ONNX fp32 with 1 and 2 intra-op threads
  (spinning off; 2 threads also with spinning on), ONNX int8 1 thread;
* index-build throughput (texts/s, chars/s): the index's own texts (chunks with section context
  and sentences of ``seeds/``) embedded exactly as ``rag.index.build_index`` does it (longest
  first, slices of 128, ``threads=index_threads``), for torch with 1 and 2 threads and ONNX with
  1 and 2 concurrent batches and with 2 intra-op threads;
* parity with torch on those texts: cosine min/mean, top-10 neighbour overlap among the
  passages, and top-10 chunk overlap for the gold questions (``eval/gold.jsonl``);
* optionally (``--export``) the one-off export times, into a temporary folder;
* optionally (``--batch-tokens 512,1024,...``) ONNX throughput per padded-token budget;
* optionally (``--pipeline eval/heldout.jsonl``) warm ``rag ask`` latency (``timings_ms`` embed and
  total) with torch and with ONNX, interleaved question by question.

Usage: ``.venv/bin/python eval/bench_model.py [--json] [--queries 60] [--no-busy] [--export]
[--repeat 2] [--build-only] [--skip-build] [--batch-tokens 128,256,512] [--skip-int8]
[--pipeline eval/heldout.jsonl]`` (uses ``RAG_HOME``; the first run converts and
exports there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
import json, sys, time
t0 = time.perf_counter()
from rag.config import Settings
from rag.embedding import load_embedder
e = load_embedder(Settings.from_env())
t1 = time.perf_counter()
e.embed_queries(["委员对职业教育提了什么建议"])
t2 = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
mb = lambda key: int(status[key].split()[0]) / 1024
print(json.dumps({"backend": e.backend, "precision": e.precision, "load_ms": e.load_ms,
                  "export_ms": e.export_ms, "ready_ms": (t1 - t0) * 1000, "first_query_ms": (t2 - t1) * 1000,
                  "torch_imported": "torch" in sys.modules,
                  "rss_mb": mb("VmRSS"), "peak_rss_mb": mb("VmHWM")}))
"""


def child_load(backend: str, precision: str = "fp32") -> dict:
    """Fresh interpreter: load the embedder for ``backend``/``precision``, embed one query."""
    env = {**os.environ, "RAG_EMBED_BACKEND": backend, "RAG_EMBED_PRECISION": precision}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_ms"] = (time.perf_counter() - started) * 1000
    return result


def index_texts(settings: Settings) -> tuple[list[str], int]:
    """The texts ``build_index`` embeds (chunks, then sentences) and the number of chunks."""
    from rag.chunking import chunk_corpus
    from rag.corpus import load_corpus

    docs = load_corpus(settings.corpus_dir)
    chunks, layouts = chunk_corpus(docs, settings.chunk_size, settings.chunk_overlap)
    chunk_texts = [c.retrieval_text if settings.section_context else c.clean for c in chunks]
    sentences = [span.clean for d in docs for span in layouts[d.doc_id].sentences]
    return chunk_texts + sentences, len(chunk_texts)


def seed_queries(count: int) -> list[str]:
    """``count`` archive sentences of 8-30 characters, evenly spread (question-like lengths)."""
    import re

    found = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        found += [s.strip() for s in re.split(r"[。！？\n]", path.read_text(encoding="utf-8"))
                  if 8 <= len(s.strip()) <= 30]
    return found[:: max(1, len(found) // count)][:count]


def gold_questions() -> list[str]:
    from rag.gold import load_gold

    return [q.question for q in load_gold(ROOT / "eval" / "gold.jsonl")]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class BusyCore:
    """A separate process spinning in a loop: the "other core busy" condition."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def make_variants(skip_int8: bool) -> dict:
    """Name -> (embed one query callable). Each variant is its own Embedder/session."""
    from rag import onnx_encoder
    from rag.embedding import Embedder

    base = Settings.from_env()
    torch1 = Embedder(base.replace(embed_backend="torch", torch_threads=1))
    onnx1 = Embedder(base.replace(embed_backend="onnx", embed_precision="fp32", onnx_threads=1))
    onnx2 = Embedder(base.replace(embed_backend="onnx", embed_precision="fp32", onnx_threads=2))
    variants = {"torch 1 thread": torch1, "onnx fp32 1 thread": onnx1, "onnx fp32 2 threads": onnx2}
    if not skip_int8:
        variants["onnx int8 1 thread"] = Embedder(base.replace(embed_backend="onnx", embed_precision="int8",
                                                               onnx_threads=1))
    for e in variants.values():
        e.warm_up()
    calls = {name: e.embed_queries for name, e in variants.items()}
    # Same graph, 2 threads with spinning on.
    spin = onnx_encoder.OnnxEncoder(onnx1.onnx_path, Path(onnx1.path) / "tokenizer.json", 512, threads=2,
                                    spinning=True)
    prompt = onnx1.query_prompt
    calls["onnx fp32 2 threads, spinning"] = lambda texts: spin.encode([prompt + t for t in texts])
    return variants, calls


def bench_queries(calls: dict, queries: list[str]) -> dict:
    """Interleaved single-query latencies: for each query, every variant once."""
    for call in calls.values():
        for q in queries[:5]:
            call([q])
    times: dict[str, list[float]] = {name: [] for name in calls}
    for q in queries:
        for name, call in calls.items():
            started = time.perf_counter()
            call([q])
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: {"p50_ms": pct(v, 50), "p95_ms": pct(v, 95), "mean_ms": float(np.mean(v))}
            for name, v in times.items()}


def bench_build(embedder, texts: list[str], threads: int) -> tuple[dict, np.ndarray]:
    """Embed ``texts`` the way rag.index.build_index does; returns timings and vectors."""
    from rag.index import _embed_with_progress

    embedder.embed_passages(texts[:4], threads=threads)  # first-call allocations
    started = time.perf_counter()
    vectors = _embed_with_progress(embedder, texts, None, threads=threads)
    seconds = time.perf_counter() - started
    chars = sum(map(len, texts))
    return {"seconds": seconds, "texts_per_s": len(texts) / seconds, "chars_per_s": chars / seconds}, vectors


def neighbour_overlap(a: np.ndarray, b: np.ndarray, queries_a: np.ndarray | None = None,
                      queries_b: np.ndarray | None = None, top_k: int = 10) -> dict:
    """Mean share of common top-k neighbours and share of identical top-k sets.

    Without queries, each row of ``a``/``b`` is a query against the others (itself excluded)."""
    self_query = queries_a is None
    qa, qb = (a, b) if self_query else (queries_a, queries_b)
    sa, sb = qa @ a.T, qb @ b.T
    if self_query:
        np.fill_diagonal(sa, -np.inf)
        np.fill_diagonal(sb, -np.inf)
    ta = np.argsort(-sa, axis=1)[:, :top_k]
    tb = np.argsort(-sb, axis=1)[:, :top_k]
    shares = np.array([len(set(x) & set(y)) / top_k for x, y in zip(ta, tb)])
    return {"overlap_mean": float(shares.mean()), "identical_sets": float(np.mean(shares == 1.0))}


def parity(ref: np.ndarray, other: np.ndarray, n_chunks: int, q_ref: np.ndarray, q_other: np.ndarray) -> dict:
    cos = np.sum(ref * other, axis=1)
    return {
        "chunk_cosine_min": float(cos[:n_chunks].min()), "chunk_cosine_mean": float(cos[:n_chunks].mean()),
        "sentence_cosine_min": float(cos[n_chunks:].min()), "sentence_cosine_mean": float(cos[n_chunks:].mean()),
        "question_cosine_min": float(np.sum(q_ref * q_other, axis=1).min()),
        "passage_top10": neighbour_overlap(ref, other),
        "sentence_top10": neighbour_overlap(ref[n_chunks:], other[n_chunks:]),
        "question_chunk_top10": neighbour_overlap(ref[:n_chunks], other[:n_chunks], q_ref, q_other),
    }


def bench_export(skip_int8: bool) -> dict:
    """Export fp32 (and int8) from the cached converted model into a temporary folder."""
    from rag import onnx_encoder
    from rag.embedding import default_model_dir, provision_default_model, resolve_model, weights_fingerprint

    settings = Settings.from_env()
    provision_default_model(settings)
    source = default_model_dir(settings)
    fingerprint = weights_fingerprint(resolve_model(settings))
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        model_dir = Path(tmp) / source.name
        model_dir.symlink_to(source, target_is_directory=True)
        out = {}
        for precision in ("fp32",) if skip_int8 else ("fp32", "int8"):
            _, ms = onnx_encoder.ensure_export(model_dir, fingerprint, precision)
            out[f"{precision}_export_ms"] = ms
            out[f"{precision}_file_mb"] = onnx_encoder.model_file(model_dir, precision).stat().st_size / 2**20
        shutil.rmtree(onnx_encoder.export_dir(model_dir))
    return out


def bench_pipeline(gold: Path) -> dict:
    """Warm ``Pipeline.ask`` on each backend over ``gold``'s questions, interleaved question by
    question; ``timings_ms`` embed and total p50/p95. Both pipelines answer from one index (the
    torch and ONNX fp32 vectors agree to cosine 1.000000)."""
    from rag.gold import load_gold
    from rag.pipeline import Pipeline

    questions = [q.question for q in load_gold(gold)]
    pipelines = {b: Pipeline(Settings.from_env(embed_backend=b, embed_precision="fp32"), notify=lambda m: None).warm_up()
                 for b in ("torch", "onnx")}
    for p in pipelines.values():
        for q in questions[:3]:
            p.ask(q)
    times: dict = {b: {"embed": [], "total": []} for b in pipelines}
    for q in questions:
        for b, p in pipelines.items():
            t = p.ask(q).timings_ms
            times[b]["embed"].append(t["embed"])
            times[b]["total"].append(t["total"])
    return {b: {stage: {"p50_ms": pct(v, 50), "p95_ms": pct(v, 95)} for stage, v in d.items()}
            for b, d in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--queries", type=int, default=60, help="single queries timed per variant and condition")
    parser.add_argument("--no-busy", action="store_true", help="skip the 'other core busy' latency run")
    parser.add_argument("--export", action="store_true", help="also time a fresh export (minutes)")
    parser.add_argument("--skip-int8", action="store_true", help="leave ONNX int8 out")
    parser.add_argument("--skip-build", action="store_true", help="skip the index-build throughput runs")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of index-build runs (best is kept)")
    parser.add_argument("--build-only", action="store_true", help="skip load and query latency")
    parser.add_argument("--pipeline", type=Path, default=None, metavar="GOLD",
                        help="also time warm Pipeline.ask per backend over this gold file (e.g. eval/heldout.jsonl)")
    parser.add_argument("--batch-tokens", default="", help="comma-separated ONNX batch budgets to compare")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    results: dict = {"cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
                     "index_threads": settings.index_threads}
    if args.export:
        results["export"] = bench_export(args.skip_int8)
    variants, calls = make_variants(args.skip_int8)  # exports/loads once in this process
    results["load"], results["queries"] = {}, {}
    if not args.build_only:
        results["load"] = {"torch": child_load("torch"), "onnx fp32": child_load("onnx")}
        if not args.skip_int8:
            results["load"]["onnx int8"] = child_load("onnx", "int8")
        queries = seed_queries(args.queries)
        results["queries"]["idle"] = bench_queries(calls, queries)
        if not args.no_busy:
            with BusyCore():
                results["queries"]["busy"] = bench_queries(calls, queries)

    texts, n_chunks = index_texts(settings)
    results["texts"] = {"count": len(texts), "chunks": n_chunks, "chars": sum(map(len, texts))}
    if not args.skip_build:
        build: dict = {}
        vectors: dict = {}
        questions = gold_questions()
        q_vectors = {}
        plan = [("torch", variants["torch 1 thread"], 1), ("torch", variants["torch 1 thread"], 2),
                ("onnx fp32", variants["onnx fp32 1 thread"], 1), ("onnx fp32", variants["onnx fp32 1 thread"], 2),
                ("onnx fp32 intra-op 2", variants["onnx fp32 2 threads"], 1)]
        if not args.skip_int8:
            plan.append(("onnx int8", variants["onnx int8 1 thread"], 2))
        # Variants take turns in every round; the best (least disturbed) round is reported.
        for _ in range(args.repeat):
            for name, embedder, threads in plan:
                label = f"{name}, threads={threads}"
                timing, vecs = bench_build(embedder, texts, threads)
                build.setdefault(label, []).append(timing)
                vectors.setdefault(name, vecs)
                q_vectors.setdefault(name, embedder.embed_queries(questions))
        results["build"] = {label: {**min(runs, key=lambda r: r["seconds"]),
                                    "all_seconds": [r["seconds"] for r in runs]}
                            for label, runs in build.items()}
        ref = vectors["torch"]
        results["parity"] = {name: parity(ref, vecs, n_chunks, q_vectors["torch"], q_vectors[name])
                             for name, vecs in vectors.items() if name != "torch"}
    if args.batch_tokens:
        onnx1 = variants["onnx fp32 1 thread"]
        encoder = onnx1.model
        default_budget = encoder.batch_tokens
        runs: dict = {}
        for _ in range(args.repeat):
            for budget in [int(b) for b in args.batch_tokens.split(",") if b.strip()]:
                encoder.batch_tokens = budget
                runs.setdefault(budget, []).append(bench_build(onnx1, texts, settings.index_threads)[0])
        encoder.batch_tokens = default_budget
        results["batch_tokens"] = {budget: {**min(r, key=lambda x: x["seconds"]),
                                            "all_seconds": [x["seconds"] for x in r]}
                                   for budget, r in runs.items()}
    if args.pipeline:
        results["pipeline"] = bench_pipeline(args.pipeline)
    results["loadavg_end"] = os.getloadavg()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    report(results)
    return 0


def report(results: dict) -> None:
    print(f"load average at start {results['loadavg_start']}, at end {results['loadavg_end']}; "
          f"{results['cpu_count']} CPUs")
    if "export" in results:
        print("export (one-off): " + ", ".join(f"{k} {v:.0f}" for k, v in results["export"].items()))
    if results["load"]:
        print("\nload in a fresh process (export cached): ready = imports + load; RSS after one query")
    for name, r in results["load"].items():
        print(f"  {name:<10} ready {r['ready_ms']:>6.0f} ms  (model load {r['load_ms']:.0f} ms)  first query "
              f"{r['first_query_ms']:>5.0f} ms  RSS {r['rss_mb']:>5.0f} MB  peak {r['peak_rss_mb']:>5.0f} MB  "
              f"torch imported: {r['torch_imported']}")
    if results["load"]:
        torch_ready = results["load"]["torch"]["ready_ms"]
        print(f"  ready-time ratio torch/onnx fp32: {torch_ready / results['load']['onnx fp32']['ready_ms']:.2f}x")
    for condition, rows in results["queries"].items():
        print(f"\nsingle query, other core {condition}: p50 / p95 ms (ratio = torch p50 / variant p50)")
        base = rows["torch 1 thread"]["p50_ms"]
        for name, r in rows.items():
            print(f"  {name:<32} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f}   {base / r['p50_ms']:.2f}x")
    if "build" in results:
        t = results["texts"]
        print(f"\nindex-build embedding: {t['count']} texts ({t['chunks']} chunks + sentences), {t['chars']} chars")
        base = results["build"]["torch, threads=2"]["seconds"]
        for name, r in results["build"].items():
            print(f"  {name:<34} {r['seconds']:>6.1f} s {r['texts_per_s']:>7.1f} texts/s {r['chars_per_s']:>7.0f} chars/s"
                  f"   {base / r['seconds']:.2f}x vs torch threads=2   (rounds: "
                  + ", ".join(f"{x:.1f}" for x in r["all_seconds"]) + " s)")
        print("\nparity with torch (same texts):")
        for name, p in results["parity"].items():
            print(f"  {name}: chunk cosine min {p['chunk_cosine_min']:.6f} mean {p['chunk_cosine_mean']:.6f}; "
                  f"sentence min {p['sentence_cosine_min']:.6f} mean {p['sentence_cosine_mean']:.6f}; "
                  f"question min {p['question_cosine_min']:.6f}")
            for key in ("passage_top10", "sentence_top10", "question_chunk_top10"):
                print(f"      {key:<22} overlap {p[key]['overlap_mean']:.3f}, identical sets {p[key]['identical_sets']:.3f}")
    if "pipeline" in results:
        print("\nwarm rag ask (Pipeline.ask timings_ms), interleaved per question: p50 / p95 ms")
        for b, d in results["pipeline"].items():
            print(f"  {b:<6} embed {d['embed']['p50_ms']:>6.1f} / {d['embed']['p95_ms']:>6.1f}   "
                  f"total {d['total']['p50_ms']:>6.1f} / {d['total']['p95_ms']:>6.1f}")
        t, o = results["pipeline"]["torch"], results["pipeline"]["onnx"]
        print(f"  torch/onnx p50 ratio: embed {t['embed']['p50_ms'] / o['embed']['p50_ms']:.2f}x, "
              f"total {t['total']['p50_ms'] / o['total']['p50_ms']:.2f}x")
    if "batch_tokens" in results:
        print("\nONNX batch token budget (index texts, threads=index_threads):")
        for budget, r in results["batch_tokens"].items():
            print(f"  {budget:>6} tokens  {r['seconds']:>6.1f} s  {r['texts_per_s']:>6.1f} texts/s   (rounds: "
                  + ", ".join(f"{x:.1f}" for x in r["all_seconds"]) + " s)")


if __name__ == "__main__":
    raise SystemExit(main())
