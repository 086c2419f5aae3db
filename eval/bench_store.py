"""Scale benchmark of the document store: a synthetic archive at 10^4, 10^5 and 10^6 chunks.

Prints, per size (every figure of issue "An archive that grows", item 6):

* ingest throughput excluding the model (chunks/s through the real path: generate the text, then
  ``prepare_document`` = layout, chunking, tokenising, term counts, in worker processes, and the
  store's one transaction per document in the main process; the fake embedder's time is excluded);
* store size on disk, cold start time (open the store and load its checksummed caches) and RSS
  after that load, in a fresh process; the one-off cache build from the store is shown too;
* warm hybrid retrieval p50/p95 (``Retriever.search``: dense ANN + best-sentence re-scoring +
  BM25 + fusion + reading the hits; the question's embedding excluded), and its dense and lexical
  parts measured separately on the same questions;
* ANN recall@10 of the dense index against exact search on the same questions, at the setting the
  store chose (``nprobe`` calibrated at build, see :mod:`rag.store.dense`) and a sweep;
* time to add one document (``rag add`` path, embedding excluded) and to remove one, and the time
  a running reader takes to see the change;
* realism of the synthetic archive (``--realism``): term and vector statistics of a synthetic
  archive of the seeds' size beside the seeds' (real model), and vocabulary/postings figures at
  each size.

The archive (``--generator topics``, default) and the fake embedder are :mod:`synth` (topics,
names, Zipfian vocabulary; topic-clustered vectors shaped like the real model's). ``--generator
legacy`` is the first round's archive (recombined seed sentences, hashed n-gram vectors).

Usage: ``.venv/bin/python eval/bench_store.py --chunks 10000 100000 1000000 --keep DIR`` (10^6
takes about an hour here: run it with nohup); ``--reuse`` measures kept stores again;
``--realism`` prints the realism tables only.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

import synth  # noqa: E402

DIM = synth.DIM
CHUNK_SIZE, CHUNK_OVERLAP = 400, 80


class HashEmbedder:
    """The first round's fake embedder (with ``--generator legacy``): signed hashed character
    uni/bigrams, L2-normalised float32."""

    model_id = "bench-hash-384"
    dim = DIM
    path = None

    def warm_up(self) -> None:
        pass

    def _one(self, text: str) -> np.ndarray:
        cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        grams = np.concatenate([cp, cp[:-1] * np.uint64(1_000_003) + cp[1:]]) if len(cp) > 1 else cp
        h = (grams * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
        vec = np.bincount((h % np.uint64(DIM)).astype(np.int64),
                          weights=np.where((h >> np.uint64(20)) & np.uint64(1), 1.0, -1.0), minlength=DIM)
        norm = np.linalg.norm(vec)
        return (vec / norm if norm else vec).astype(np.float32)

    def embed_passages(self, texts, threads=None, show_progress=False) -> np.ndarray:
        return np.stack([self._one(t) for t in texts]) if len(texts) else np.zeros((0, DIM), np.float32)

    embed_queries = embed_passages


_WORKER: dict = {}


def _init_worker(generator: str) -> None:
    from rag.ingest.tokens import BlockTokenizer

    archive = synth.make_archive(generator)
    _WORKER.update(archive=archive, embedder=make_embedder(archive), tokenizer=BlockTokenizer())


def make_embedder(archive):
    return HashEmbedder() if archive.name == "legacy" else synth.TopicEmbedder(archive)


def _prepare(index: int):
    """Worker: generate -> prepare -> fake-embed one synthetic document; returns timings too."""
    from rag.ingest.prepare import make_document, prepare_document
    from rag.ingest.readers import StoredText

    started = time.perf_counter()
    text = _WORKER["archive"].document(index)
    doc = make_document(f"synthetic/{index:07d}", StoredText(text, "txt"), "")
    prepared = prepare_document(doc, f"{index:064x}", CHUNK_SIZE, CHUNK_OVERLAP, tokenizer=_WORKER["tokenizer"])
    prepare_s = time.perf_counter() - started
    vectors = _WORKER["embedder"].embed_passages(prepared.embedding_texts())
    return prepared, vectors, prepare_s


def store_meta(embedder) -> dict:
    from rag.tokenize import user_dict_hash

    return {"model_id": embedder.model_id, "model_fingerprint": "", "dim": DIM, "chunk_size": CHUNK_SIZE,
            "chunk_overlap": CHUNK_OVERLAP, "section_context": 1, "user_dict_hash": user_dict_hash()}


def build(directory: Path, n_chunks: int, workers: int, generator: str) -> dict:
    """Ingest documents 0, 1, ... until ``n_chunks`` chunks, through the real path (see the
    module docstring), one transaction per document. A store left by a stopped build resumes
    after its last committed document (documents are committed in index order); the figures
    then cover the resumed part only."""
    from rag.store.embedded import EmbeddedStore

    archive = synth.make_archive(generator)
    store = EmbeddedStore(directory, store_meta(make_embedder(archive)))
    docs = first = store.count_documents()
    chunks = store.count_chunks()
    resumed_chunks = chunks
    prepare_s = upsert_s = 0.0
    started = time.perf_counter()
    with store.writer(), Pool(workers, initializer=_init_worker, initargs=(generator,)) as pool:
        for prepared, vectors, seconds in pool.imap(_prepare, range(first, 10**9), chunksize=8):
            t = time.perf_counter()
            n = len(prepared.chunks)
            store.upsert(prepared, vectors[:n], vectors[n:])
            upsert_s += time.perf_counter() - t
            prepare_s += seconds
            chunks += n
            docs += 1
            if chunks >= n_chunks:
                pool.terminate()
                break
            if docs % 1000 == 0:
                print(f"  {time.strftime('%H:%M:%S')} {chunks} chunks, "
                      f"{(chunks - resumed_chunks) / (time.perf_counter() - started):.0f} chunks/s",
                      file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    store.close()
    new = chunks - resumed_chunks
    return {"documents": docs, "chunks": chunks, "resumed_from_chunks": resumed_chunks, "ingest_wall_s": wall,
            "ingest_chunks_per_s_wall": new / wall, "ingest_workers": workers,
            "ingest_chunks_per_s_one_core": new / max(prepare_s + upsert_s, 1e-9),
            "prepare_s": prepare_s, "store_commit_s": upsert_s}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values, q) -> float:
    return float(np.percentile(values, q))


def measure(directory: Path, queries: int, generator: str) -> dict:
    """Run in a fresh process: cold start, RSS, retrieval latency (hybrid, dense, lexical), ANN recall."""
    from rag.retriever import Retriever
    from rag.store.embedded import EmbeddedStore

    started = time.perf_counter()
    store = EmbeddedStore(directory)
    store.warm_caches()
    cold_s = time.perf_counter() - started
    rss = _rss_mb()
    stats = store.cache_stats()
    archive = synth.make_archive(generator)
    embedder = make_embedder(archive)
    rng = random.Random(7)
    n_docs = store.count_documents()
    questions = [archive.question(rng, n_docs)[1] for _ in range(queries)]
    vectors = [embedder.embed_queries([q])[0] for q in questions]
    retriever = Retriever(store)
    for q, v in zip(questions[:20], vectors[:20]):
        retriever.search(q, v, top_k=5)
    # Baseline measured in the same run, interleaved with the queries (the 2 cores are shared, so
    # absolute times swing several-fold with the load): one fixed exact search over 2*10^4 random
    # float32 vectors of this dimension, a workload that does not depend on the store's size.
    reference = np.random.default_rng(0).standard_normal((20_000, DIM)).astype(np.float32)
    hybrid, dense_ms, lexical_ms, baseline_ms = [], [], [], []
    for q, v in zip(questions, vectors):
        t = time.perf_counter()
        np.argpartition(-(reference @ v), 10)[:10]
        baseline_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        retriever.search(q, v, top_k=5)
        hybrid.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        retriever.dense_scores(v, retriever.candidate_k)
        dense_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        retriever.lexical_scores(q, retriever.candidate_k)
        lexical_ms.append((time.perf_counter() - t) * 1000)
    out = {"chunks": store.count_chunks(), "documents": n_docs, "cold_start_s": cold_s, "rss_after_load_mb": rss, "rss_after_queries_mb": _rss_mb(), "cache": stats,
           "hybrid_p50_ms": _pct(hybrid, 50), "hybrid_p95_ms": _pct(hybrid, 95),
           "dense_p50_ms": _pct(dense_ms, 50), "dense_p95_ms": _pct(dense_ms, 95),
           "lexical_p50_ms": _pct(lexical_ms, 50), "lexical_p95_ms": _pct(lexical_ms, 95),
           "baseline_p50_ms": _pct(baseline_ms, 50), "baseline_p95_ms": _pct(baseline_ms, 95),
           "hybrid_p95_over_baseline_p95": _pct(hybrid, 95) / _pct(baseline_ms, 95),
           "vocabulary": int(store._conn().execute("SELECT count(*) FROM terms WHERE units > 0").fetchone()[0])}
    with open("/proc/loadavg") as fh:
        out["load_average"] = fh.read().split()[:3]  # 2 cores: above 2, queries wait for a core
    out.update(_recall(store, vectors))
    return out


def _recall(store, vectors) -> dict:
    """ANN recall@10 of the store's dense index against exact inner-product search over the same
    stored vectors (exact search in this process only, for the comparison)."""
    import faiss

    dense = store._dense
    keys, mats = [], []
    for key, blob in store._conn().execute("SELECT id, vector FROM chunks ORDER BY id"):
        keys.append(key)
        mats.append(np.frombuffer(blob, dtype=np.float16))
    exact = faiss.IndexFlatIP(DIM)
    exact.add(np.stack(mats).astype(np.float32))
    del mats
    keys = np.asarray(keys)
    queries = np.stack(vectors).astype(np.float32)
    scores, ids = exact.search(queries, 10)
    truths = [set(keys[row].tolist()) for row in ids]
    out = {"query_top1_cos_p50": _pct(scores[:, 0], 50), "query_top10_cos_p50": _pct(scores[:, 9], 50)}
    if dense.kind != "ivf":
        out["ann_recall_at_10"] = 1.0  # exact (flat) search at this size
        return out

    def recall(nprobe=None):
        got, lat = [], []
        for v, truth in zip(vectors, truths):
            t = time.perf_counter()
            found = {k for k, _ in dense.search(v, 10, nprobe=nprobe)}
            lat.append((time.perf_counter() - t) * 1000)
            got.append(len(truth & found) / 10)
        return float(np.mean(got)), _pct(lat, 50), _pct(lat, 95)

    r, p50, p95 = recall()
    out.update({"ann_recall_at_10": r, "ann_search_p50_ms": p50, "ann_search_p95_ms": p95,
                "ann_nprobe": int(dense.index.nprobe), "ann_nlist": int(dense.index.nlist),
                "ann_calibration": store.cache_stats().get("dense_calibration")})
    sweep = {}
    for nprobe in sorted({max(1, int(dense.index.nprobe * f)) for f in (0.5, 1, 2, 4)}):
        r, p50, p95 = recall(nprobe)
        sweep[nprobe] = {"recall_at_10": r, "p50_ms": p50, "p95_ms": p95}
    out["ann_sweep"] = sweep
    return out


def add_remove(directory: Path, generator: str) -> dict:
    """Fresh process, as `rag add` / `rag remove`: open the store (no caches), add one document,
    then a warm reader sees it; remove it again."""
    from rag.store.embedded import EmbeddedStore

    _init_worker(generator)
    reader = EmbeddedStore(directory)
    reader.warm_caches()
    started = time.perf_counter()
    writer = EmbeddedStore(directory)
    prepared, vectors, _ = _prepare(10**8 + 1)
    embed_started = time.perf_counter()
    vectors = _WORKER["embedder"].embed_passages(prepared.embedding_texts())
    embed_s = time.perf_counter() - embed_started
    n = len(prepared.chunks)
    with writer.writer():
        writer.upsert(prepared, vectors[:n], vectors[n:])
    add_s = time.perf_counter() - started - embed_s
    t = time.perf_counter()
    reader.refresh()
    see_add_s = time.perf_counter() - t
    t = time.perf_counter()
    with writer.writer():
        writer.delete(prepared.document.doc_id)
    remove_s = time.perf_counter() - t
    t = time.perf_counter()
    reader.refresh()
    see_remove_s = time.perf_counter() - t
    return {"chunks": reader.count_chunks(), "add_one_doc_s_excl_embedding": add_s, "add_doc_chunks": n, "reader_sees_add_s": see_add_s,
            "remove_one_doc_s": remove_s, "reader_sees_remove_s": see_remove_s}


def realism(generator: str) -> dict:
    """Term and vector statistics of a synthetic archive of the seeds' size beside the seeds'
    (real model), see :func:`synth.text_statistics` and :func:`synth.vector_statistics`."""
    from rag.ingest.prepare import load_documents, prepare_document

    archive = synth.make_archive(generator)
    embedder = make_embedder(archive)
    seeds = [prepare_document(d, "", CHUNK_SIZE, CHUNK_OVERLAP) for d in load_documents(ROOT / "seeds")]
    gold = [json.loads(line)["question"] for line in (ROOT / "eval" / "gold.jsonl").read_text().splitlines()
            if line.strip()]
    n_chunks = sum(len(p.chunks) for p in seeds)
    sample = synth.seed_size_sample(archive, n_chunks, CHUNK_SIZE, CHUNK_OVERLAP)
    rng = random.Random(3)
    questions = [archive.question(rng, len(sample))[1] for _ in range(len(gold))]
    ref = synth.reference_vectors()
    chunks = embedder.embed_passages([c.retrieval_text for p in sample for c in p.chunks])
    sentences = embedder.embed_passages([s.span.clean for p in sample for s in p.sentences][:len(ref["sentences"])])
    return {"text": {"seeds": synth.text_statistics(seeds, gold), "synthetic": synth.text_statistics(sample, questions)},
            "vectors": {"seeds_real_model": synth.vector_statistics(ref["chunks"], ref["questions"], ref["sentences"]),
                        "synthetic_fake_embedder": synth.vector_statistics(chunks, embedder.embed_queries(questions),
                                                                           sentences)},
            "embedder_params": getattr(embedder, "params", None), "generator": generator}


def _print_realism(result: dict) -> None:
    for part in ("text", "vectors"):
        left, right = list(result[part])
        print(f"| {part} statistic | {left} | {right} |\n|---|---|---|")
        for key in result[part][left]:
            print(f"| {key} | {result[part][left][key]:.4g} | {result[part][right].get(key, float('nan')):.4g} |")
        print()


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run_size(n_chunks: int, workers: int, queries: int, keep: Path | None, reuse: bool, generator: str,
             resume: bool = False) -> dict:
    directory = (keep or Path(tempfile.mkdtemp(prefix="bench-store-"))) / f"store-{generator}-{n_chunks}"
    result = {"target_chunks": n_chunks, "generator": generator}
    if reuse and (directory / "store.sqlite").is_file():
        result["reused_store"] = True  # ingest figures come from the run that built it
        shutil.rmtree(directory / "cache", ignore_errors=True)
    else:
        if not resume:
            shutil.rmtree(directory, ignore_errors=True)
        result.update(build(directory, n_chunks, workers, generator))
    me = [sys.executable, __file__, "--generator", generator]
    t = time.perf_counter()
    subprocess.run(me + ["--step", "caches", str(directory)], check=True)
    result["cache_build_s"] = time.perf_counter() - t
    result["store_mb"] = _du_mb(directory)
    for step in ("measure", "addremove"):
        out = subprocess.run(me + ["--step", step, str(directory), "--queries", str(queries)], check=True,
                             capture_output=True, text=True).stdout
        result.update(json.loads(out.strip().splitlines()[-1]))
    with open("/proc/loadavg") as fh:
        result["load_average"] = fh.read().split()[:3]
    if keep is None:
        shutil.rmtree(directory.parent, ignore_errors=True)
    return result


#: (label, key, format, target as (comparison, limit) or None) of the markdown table, issue item 6.
TABLE = [
    ("chunks", "chunks", "{:,}", None),
    ("documents", "documents", "{:,}", None),
    ("ingest excl. model, chunks/s (wall, 2 workers)", "ingest_chunks_per_s_wall", "{:.0f}", None),
    ("ingest excl. model, chunks/s per core", "ingest_chunks_per_s_one_core", "{:.0f}", None),
    ("store on disk, MB", "store_mb", "{:.0f}", None),
    ("cache build from the store (once), s", "cache_build_s", "{:.1f}", None),
    ("cold start (open + load caches), s", "cold_start_s", "{:.2f}", ("<=", 10)),
    ("RSS after load, MB", "rss_after_load_mb", "{:.0f}", ("<=", 4096)),
    ("RSS after the queries, MB", "rss_after_queries_mb", "{:.0f}", ("<=", 4096)),
    ("hybrid retrieval p50, ms (excl. question embedding)", "hybrid_p50_ms", "{:.1f}", None),
    ("hybrid retrieval p95, ms (excl. question embedding)", "hybrid_p95_ms", "{:.1f}", ("<=", 50)),
    ("baseline (fixed 2*10^4-vector exact search, same run) p50 / p95, ms", ("baseline_p50_ms", "baseline_p95_ms"),
     "{:.1f} / {:.1f}", None),
    ("hybrid p95 / baseline p95", "hybrid_p95_over_baseline_p95", "{:.1f}", None),
    ("dense part p50 / p95, ms", ("dense_p50_ms", "dense_p95_ms"), "{:.1f} / {:.1f}", None),
    ("lexical part p50 / p95, ms", ("lexical_p50_ms", "lexical_p95_ms"), "{:.1f} / {:.1f}", None),
    ("ANN recall@10 vs exact (same queries)", "ann_recall_at_10", "{:.3f}", (">=", 0.95)),
    ("ANN nlist / nprobe", ("ann_nlist", "ann_nprobe"), "{} / {}", None),
    ("add one document, s (excl. its embedding)", "add_one_doc_s_excl_embedding", "{:.2f}", ("<=", 2)),
    ("chunks of that document", "add_doc_chunks", "{}", None),
    ("remove one document, s", "remove_one_doc_s", "{:.3f}", None),
    ("a warm reader sees the add / the remove, s", ("reader_sees_add_s", "reader_sees_remove_s"),
     "{:.3f} / {:.3f}", None),
    ("load average (1, 5, 15 min) at the end of the queries", "load_average", "{}", None),
]


def markdown(results: list[dict]) -> str:
    """The item-6 figures of ``results`` (one dict per size, as printed) as a markdown table,
    each target marked met or MISSED."""
    lines = ["| figure | " + " | ".join(f"{r.get('chunks') or r.get('target_chunks'):,} chunks" for r in results)
             + " | target |", "|---" * (len(results) + 2) + "|"]
    for label, key, fmt, target in TABLE:
        cells = []
        for r in results:
            keys = key if isinstance(key, tuple) else (key,)
            if any(r.get(k) is None for k in keys):
                cells.append("n/a")
                continue
            values = [r[k] for k in keys]
            cell = fmt.format(*[" ".join(v) if isinstance(v, list) else v for v in values])
            if target:
                ok = values[0] <= target[1] if target[0] == "<=" else values[0] >= target[1]
                cell += " (met)" if ok else " (MISSED)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target[0] + ' ' + str(target[1]) if target else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2, help="processes preparing documents")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--generator", choices=("topics", "legacy"), default="topics")
    parser.add_argument("--keep", type=Path, help="keep the stores under this folder")
    parser.add_argument("--reuse", action="store_true", help="with --keep: measure a kept store again "
                                                             "(caches rebuilt) instead of ingesting anew")
    parser.add_argument("--resume", action="store_true", help="with --keep: continue a stopped build")
    parser.add_argument("--build-only", action="store_true", help="ingest only (measure later with --reuse)")
    parser.add_argument("--realism", action="store_true", help="print the realism tables and stop")
    parser.add_argument("--markdown", type=Path, nargs="+", help="print the table of files of printed results "
                        "(lines of one store, keyed by its chunk count, merged in order) and stop")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("directory", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown:
        merged: dict = {}
        for path in args.markdown:
            for line in path.read_text().splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    merged.setdefault(row.get("chunks") or row.get("target_chunks"), {}).update(row)
        print(markdown([merged[k] for k in sorted(merged)]))
        return
    if args.realism:
        result = realism(args.generator)
        _print_realism(result)
        print(json.dumps(result, ensure_ascii=False))
        return
    if args.step == "caches":
        from rag.store.embedded import EmbeddedStore

        EmbeddedStore(args.directory).warm_caches()
        return
    if args.step == "measure":
        print(json.dumps(measure(args.directory, args.queries, args.generator)))
        return
    if args.step == "addremove":
        print(json.dumps(add_remove(args.directory, args.generator)))
        return
    for n in args.chunks:
        if args.build_only:
            directory = args.keep / f"store-{args.generator}-{n}"
            if not args.resume:
                shutil.rmtree(directory, ignore_errors=True)
            result = build(directory, n, args.workers, args.generator)
        else:
            result = run_size(n, args.workers, args.queries, args.keep, args.reuse, args.generator, args.resume)
        print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
