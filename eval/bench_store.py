"""Scale benchmark of the document store: a synthetic archive at 10^4, 10^5 and 10^6 chunks.

Prints, per size (every figure of issue "An archive that grows", item 6):

* ingest throughput excluding the model (chunks/s; preparation = layout, chunking, tokenising,
  and the store's transactions; the fake embedder's time is excluded);
* store size on disk, cold start time (open the store and load its checksummed caches) and RSS
  after that load, in a fresh process; the one-off cache build from the store is shown too;
* warm hybrid retrieval p50/p95 (``Retriever.search``: dense ANN + best-sentence re-scoring +
  BM25 + fusion + reading the hits; the question's embedding excluded);
* ANN recall@10 of the dense index against exact search on the same queries;
* time to add one document (``rag add`` path, embedding excluded) and to remove one, and the time
  a running reader takes to see the change.

The synthetic archive recombines sentences of the bundled seeds (numbers and one invented
two-character word varied per sentence), ~25 chunks per document; the fake embedder hashes
character uni- and bigrams with random signs into 384 dimensions (feature hashing, Weinberger
et al., ICML 2009), so texts sharing characters are near and ANN recall is meaningful.

Usage: ``.venv/bin/python eval/bench_store.py --chunks 10000 100000 [--workers 2] [--keep DIR]``
(10^6 takes about an hour here; run it with nohup).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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

DIM = 384
CHUNK_SIZE, CHUNK_OVERLAP = 400, 80


class HashEmbedder:
    """Fast deterministic embedder: signed hashed character uni/bigrams, L2-normalised float32."""

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


def _seed_sentences() -> list[str]:
    from rag.ingest.prepare import load_documents
    from rag.text import document_spans

    out = []
    for doc in load_documents(ROOT / "seeds"):
        for span in document_spans(doc.doc_id, doc.text).sentences:
            if 12 <= len(span.clean) <= 120 and span.clean[-1] in "。！？":
                out.append(span.clean)
    return out


_SENTENCES: list[str] = []
_CJK = [chr(c) for c in range(0x4E00, 0x9FA5)]


def synthetic_document(index: int) -> str:
    """Document ``index`` of the synthetic archive (deterministic), about 10k characters."""
    rng = random.Random(index)
    lines = [f"第{index}号综合报告"]
    for _ in range(rng.randint(14, 22)):
        paragraph = []
        for _ in range(rng.randint(4, 9)):
            s = rng.choice(_SENTENCES)
            s = "".join(str(rng.randint(0, 9)) if ch.isdigit() else ch for ch in s)
            cut = rng.randrange(len(s) - 1)
            paragraph.append(s[:cut] + rng.choice(_CJK) + rng.choice(_CJK) + s[cut:])
        lines.append("".join(paragraph))
    return "\n\n".join(lines) + "\n"


def _prepare(index: int):
    """Worker: read -> prepare -> fake-embed one synthetic document; returns timings too."""
    from rag.ingest.prepare import make_document, prepare_document
    from rag.ingest.readers import StoredText

    started = time.perf_counter()
    text = synthetic_document(index)
    doc = make_document(f"synthetic/{index:07d}", StoredText(text, "txt"), "")
    prepared = prepare_document(doc, f"{index:064x}", CHUNK_SIZE, CHUNK_OVERLAP)
    prepare_s = time.perf_counter() - started
    vectors = HashEmbedder().embed_passages(prepared.embedding_texts())
    return prepared, vectors, prepare_s


def _init_worker(sentences):
    _SENTENCES[:] = sentences


def build(directory: Path, n_chunks: int, workers: int) -> dict:
    from rag.store.embedded import EmbeddedStore
    from rag.tokenize import user_dict_hash

    meta = {"model_id": HashEmbedder.model_id, "model_fingerprint": "", "dim": DIM, "chunk_size": CHUNK_SIZE,
            "chunk_overlap": CHUNK_OVERLAP, "section_context": 1, "user_dict_hash": user_dict_hash()}
    store = EmbeddedStore(directory, meta)
    sentences = _seed_sentences()
    _init_worker(sentences)
    chunks = docs = 0
    prepare_s = upsert_s = 0.0
    started = time.perf_counter()
    with store.writer(), Pool(workers, initializer=_init_worker, initargs=(sentences,)) as pool:
        for prepared, vectors, seconds in pool.imap(_prepare, range(10**9), chunksize=4):
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
    wall = time.perf_counter() - started
    store.close()
    return {"documents": docs, "chunks": chunks, "ingest_wall_s": wall,
            "ingest_chunks_per_s_wall": chunks / wall,
            "ingest_chunks_per_s_one_core": chunks / (prepare_s + upsert_s),
            "prepare_s": prepare_s, "store_commit_s": upsert_s}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(directory: Path, queries: int) -> dict:
    """Run in a fresh process: cold start, RSS, retrieval latency, ANN recall."""
    from rag.retriever import Retriever
    from rag.store.embedded import EmbeddedStore

    started = time.perf_counter()
    store = EmbeddedStore(directory)
    store.warm_caches()
    cold_s = time.perf_counter() - started
    rss = _rss_mb()
    stats = store.cache_stats()
    _SENTENCES[:] = _seed_sentences()
    rng = random.Random(7)
    n_docs = store.count_documents()
    questions = []
    for _ in range(queries):
        text = synthetic_document(rng.randrange(n_docs))
        pieces = [p for p in text.split("。") if len(p) > 10]
        q = rng.choice(pieces)
        questions.append(q[:rng.randint(10, min(40, len(q)))])
    embedder = HashEmbedder()
    vectors = [embedder.embed_queries([q])[0] for q in questions]
    retriever = Retriever(store)
    for q, v in zip(questions[:20], vectors[:20]):
        retriever.search(q, v, top_k=5)
    times = []
    for q, v in zip(questions, vectors):
        t = time.perf_counter()
        retriever.search(q, v, top_k=5)
        times.append((time.perf_counter() - t) * 1000)
    out = {"cold_start_s": cold_s, "rss_after_load_mb": rss, "cache": stats,
           "hybrid_p50_ms": float(np.percentile(times, 50)), "hybrid_p95_ms": float(np.percentile(times, 95))}
    dense = store._dense
    if dense.kind == "ivf":
        import faiss

        # Exact search over the same stored vectors, in this process only for the comparison.
        keys, mats = [], []
        conn = store._conn()
        for key, blob in conn.execute("SELECT id, vector FROM chunks ORDER BY id"):
            keys.append(key)
            mats.append(np.frombuffer(blob, dtype=np.float16))
        exact = faiss.IndexFlatIP(DIM)
        exact.add(np.stack(mats).astype(np.float32))
        del mats
        keys = np.asarray(keys)
        recalls, truths = [], []
        for v in vectors:
            _, ids = exact.search(v.reshape(1, -1), 10)
            truth = set(keys[ids[0]].tolist())
            truths.append(truth)
            got = {k for k, _ in dense.search(v, 10)}
            recalls.append(len(truth & got) / 10)
        out["ann_recall_at_10"] = float(np.mean(recalls))
        out["ann_nprobe"] = int(dense.index.nprobe)
        out["ann_nlist"] = int(dense.index.nlist)
        sweep = {}
        for nprobe in sorted({max(1, dense.index.nlist // d) for d in (32, 16, 8, 4, 2)}):
            got, lat = [], []
            for v, truth in zip(vectors, truths):
                t = time.perf_counter()
                found = {k for k, _ in dense.search(v, 10, nprobe=nprobe)}
                lat.append((time.perf_counter() - t) * 1000)
                got.append(len(truth & found) / 10)
            sweep[nprobe] = {"recall_at_10": float(np.mean(got)), "p50_ms": float(np.percentile(lat, 50)),
                             "p95_ms": float(np.percentile(lat, 95))}
        out["ann_sweep"] = sweep
    else:
        out["ann_recall_at_10"] = 1.0  # exact (flat) search at this size
    return out


def add_remove(directory: Path) -> dict:
    """Fresh process, as `rag add` / `rag remove`: open the store (no caches), add one document,
    then a warm reader sees it; remove it again."""
    from rag.store.embedded import EmbeddedStore

    _SENTENCES[:] = _seed_sentences()
    reader = EmbeddedStore(directory)
    reader.warm_caches()
    started = time.perf_counter()
    writer = EmbeddedStore(directory)
    prepared, vectors, _ = _prepare(10**8 + 1)
    embed_started = time.perf_counter()
    vectors = HashEmbedder().embed_passages(prepared.embedding_texts())
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
    return {"add_one_doc_s_excl_embedding": add_s, "add_doc_chunks": n, "reader_sees_add_s": see_add_s,
            "remove_one_doc_s": remove_s, "reader_sees_remove_s": see_remove_s}


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run_size(n_chunks: int, workers: int, queries: int, keep: Path | None, reuse: bool = False) -> dict:
    directory = (keep or Path(tempfile.mkdtemp(prefix="bench-store-"))) / f"store-{n_chunks}"
    result = {"target_chunks": n_chunks}
    if reuse and (directory / "store.sqlite").is_file():
        result["reused_store"] = True  # ingest figures come from the run that built it
        shutil.rmtree(directory / "cache", ignore_errors=True)
    else:
        shutil.rmtree(directory, ignore_errors=True)
        result.update(build(directory, n_chunks, workers))
    me = [sys.executable, __file__]
    t = time.perf_counter()
    subprocess.run(me + ["--step", "caches", str(directory)], check=True)
    result["cache_build_s"] = time.perf_counter() - t
    result["store_mb"] = _du_mb(directory)
    for step in ("measure", "addremove"):
        out = subprocess.run(me + ["--step", step, str(directory), "--queries", str(queries)], check=True,
                             capture_output=True, text=True).stdout
        result.update(json.loads(out.strip().splitlines()[-1]))
    if keep is None:
        shutil.rmtree(directory.parent, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2, help="processes preparing documents")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="keep the stores under this folder")
    parser.add_argument("--reuse", action="store_true", help="with --keep: measure a kept store again "
                                                             "(caches rebuilt) instead of ingesting anew")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("directory", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "caches":
        from rag.store.embedded import EmbeddedStore

        EmbeddedStore(args.directory).warm_caches()
        return
    if args.step == "measure":
        print(json.dumps(measure(args.directory, args.queries)))
        return
    if args.step == "addremove":
        print(json.dumps(add_remove(args.directory)))
        return
    for n in args.chunks:
        result = run_size(n, args.workers, args.queries, args.keep, args.reuse)
        print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
