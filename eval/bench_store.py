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

Usage: ``.venv/bin/python eval/bench_store.py --chunks 10000 100000 [--workers 2] [--keep DIR]``;
10^6: ``--chunks 1000000 --clone-from DIR/store-100000 --keep DIR`` (see :func:`clone`), with nohup.
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


def clone(source: Path, target: Path, factor: int, noise: float = 0.5, seed: int = 0) -> dict:
    """A ``factor`` times larger store: the source store plus ``factor - 1`` near-duplicate copies
    of every document (ids suffixed ``~k``, same text and term counts, vectors perturbed:
    ``normalize(v + noise * g / sqrt(dim))`` with ``g`` standard normal, cosine ~0.9 to the
    original), written straight into the tables in one transaction per copied document (as
    ``upsert`` does), with the change log, unit totals and checksums kept consistent.

    Used for 10^6 chunks: ingesting 10^6 synthetic chunks through the full path takes ~3 hours on
    this shared 2-core machine (jieba tokenisation is most of it); its per-chunk rate is the one
    measured at 10^4 and 10^5.
    """
    import sqlite3
    import zlib

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("cache", "*.lock"))
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(target / "store.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    doc_cols = [r[1] for r in conn.execute("PRAGMA table_info(documents)")][1:]
    chunk_cols = [r[1] for r in conn.execute("PRAGMA table_info(chunks)")][1:]
    sent_cols = [r[1] for r in conn.execute("PRAGMA table_info(sentences)")][1:]
    source_docs = [r[0] for r in conn.execute("SELECT id FROM documents ORDER BY id")]
    started = time.perf_counter()

    def perturb(blob: bytes) -> bytes:
        v = np.frombuffer(blob, dtype=np.float16).astype(np.float32).reshape(-1, DIM)
        v = v + noise * rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(DIM)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float16).tobytes()

    def insert(table: str, cols: list[str], row: dict) -> int:
        return conn.execute(f"INSERT INTO {table}({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                            [row[c] for c in cols]).lastrowid

    for k in range(1, factor):
        for doc_row in source_docs:
            conn.execute("BEGIN IMMEDIATE")
            doc = dict(zip(doc_cols, conn.execute(f"SELECT {','.join(doc_cols)} FROM documents WHERE id=?",
                                                  (doc_row,)).fetchone()))
            doc["doc_id"] = f"{doc['doc_id']}~{k}"
            new_doc = insert("documents", doc_cols, doc)
            s_lo = c_lo = None
            for row in conn.execute(f"SELECT {','.join(sent_cols)} FROM sentences WHERE id BETWEEN ? AND ? ORDER BY id",
                                    (doc["sentence_lo"], doc["sentence_lo"] + doc["n_sentences"] - 1)).fetchall():
                sid = insert("sentences", sent_cols, dict(zip(sent_cols, row), doc=new_doc))
                s_lo = sid if s_lo is None else s_lo
            for row in conn.execute(f"SELECT {','.join(chunk_cols)} FROM chunks WHERE id BETWEEN ? AND ? ORDER BY id",
                                    (doc["chunk_lo"], doc["chunk_lo"] + doc["n_chunks"] - 1)).fetchall():
                row = dict(zip(chunk_cols, row), doc=new_doc)
                row["vector"] = perturb(row["vector"])
                row["vector_crc"] = zlib.crc32(row["vector"])
                row["sentence_vectors"] = perturb(row["sentence_vectors"]) if row["sentence_vectors"] else b""
                row["sentence_vectors_crc"] = zlib.crc32(row["sentence_vectors"])
                cid = insert("chunks", chunk_cols, row)
                c_lo = cid if c_lo is None else c_lo
            conn.execute("UPDATE documents SET chunk_lo=?, sentence_lo=? WHERE id=?", (c_lo or 0, s_lo or 0, new_doc))
            conn.execute("INSERT INTO changes(op, doc_id, chunk_lo, chunk_hi) VALUES ('add', ?, ?, ?)",
                         (doc["doc_id"], c_lo or 0, (c_lo or 0) + doc["n_chunks"] - 1))
            conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE terms SET units = units * ?", (factor,))
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) * ? WHERE key = 'n_units'", (factor,))
    conn.execute("COMMIT")
    chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    docs = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    conn.close()
    return {"documents": docs, "chunks": chunks, "cloned_from": str(source), "clone_factor": factor,
            "clone_s": time.perf_counter() - started}


def _count_chunks(directory: Path) -> int:
    from rag.store.embedded import EmbeddedStore

    return EmbeddedStore(directory).count_chunks()


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


def run_size(n_chunks: int, workers: int, queries: int, keep: Path | None, reuse: bool = False,
             clone_from: Path | None = None) -> dict:
    directory = (keep or Path(tempfile.mkdtemp(prefix="bench-store-"))) / f"store-{n_chunks}"
    result = {"target_chunks": n_chunks}
    if clone_from is not None and not (reuse and (directory / "store.sqlite").is_file()):
        result.update(clone(clone_from, directory, max(2, round(n_chunks / _count_chunks(clone_from)))))
    elif reuse and (directory / "store.sqlite").is_file():
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
    parser.add_argument("--clone-from", type=Path, help="build each size by cloning this store (see clone())")
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
        result = run_size(n, args.workers, args.queries, args.keep, args.reuse, args.clone_from)
        print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
