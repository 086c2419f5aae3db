"""Milvus store measurements: the choices behind :mod:`rag.store.milvus` and its speed on Milvus
Lite beside the embedded store, in the same run.

``quality`` (real model, the bundled archive, dev + held-out gold questions):

* **tokenisation**: token multisets of our :func:`rag.tokenize.tokenize` (jieba search mode, our
  user dictionary, NFKC, punctuation dropped) against Milvus Lite's ``jieba`` analyzer (jieba's
  default dictionary, search mode), on every chunk and question;
* **lexical search**: top-10 overlap with the embedded store's BM25 and bm25-only recall@5 /
  MRR@10 for the engine's BM25 function with the ``jieba`` analyzer, with our user dictionary's
  words added, client-side tokens indexed through Lite's ``standard`` (``\\w+``) analyzer (the
  stand-in for a server's ``whitespace`` tokenizer), our sparse vectors without re-scoring, and
  the store's lexical search (sparse candidates re-scored exactly);
* **fusion**: ``rag eval`` figures (recall@5, MRR@10, key recall) on Milvus Lite with our
  client-side fusion against the engine's ``hybrid_search`` with ``RRFRanker(60)`` and
  ``WeightedRanker(0.5, 0.5)``, and the embedded store.

``scale`` (synthetic archive of ``eval/bench_store.py``, fake hash embedder, no model): store
write rate (chunks/s, preparation and embedding excluded, both stores fed the same prepared
documents) and warm hybrid retrieval p50/p95 (``Retriever.search``; questions interleaved between
the stores) at ``--chunks`` (default 10^4). These are **Milvus Lite** figures: Lite is a
pure-Python engine inside the calling process and says nothing about a Milvus server.

Usage::

    .venv/bin/python eval/bench_milvus.py quality [--out eval/reports/milvus]
    .venv/bin/python eval/bench_milvus.py scale --chunks 10000 [--queries 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))


# --- quality --------------------------------------------------------------------------------

def _jaccard(a: list[str], b: list[str]) -> float:
    ca, cb = Counter(a), Counter(b)
    union = sum((ca | cb).values())
    return sum((ca & cb).values()) / union if union else 1.0


def _relevant(doc_id: str, text: str, gold) -> int:
    from rag.metrics import hit_is_relevant

    if gold.doc_prefixes and not any(doc_id.startswith(p) for p in gold.doc_prefixes):
        return 0
    return int(hit_is_relevant(text, gold.evidence))


def _rank_metrics(ranked: dict[str, list[str]], gold, texts: dict[str, str]) -> dict:
    from rag.metrics import mrr_at_k, recall_at_k

    recall, mrr = [], []
    for q in gold:
        if q.unanswerable:
            continue
        rel = [_relevant(c.rpartition("#")[0], texts[c], q) for c in ranked[q.id][:10]]
        recall.append(recall_at_k(rel, 5))
        mrr.append(mrr_at_k(rel, 10))
    return {"recall@5": float(np.mean(recall)), "mrr@10": float(np.mean(mrr))}


class EngineFusion:
    """A retriever whose hybrid ranking is the engine's ``hybrid_search`` (same ``search``
    signature as :class:`rag.retriever.Retriever`). The answerer reads a hit's fused score on
    [0, 1] and its dense cosine, so the engine's scores are min-max normalised over the returned
    hits and each hit carries its chunk's cosine, as a deployment using the engine's ranker would
    have to do."""

    def __init__(self, store, ranker: str):
        self.store, self.ranker = store, ranker

    def search(self, question, query_vector, top_k=5, mode="hybrid"):
        from rag.tokenize import tokenize
        from rag.types import Hit

        pairs = self.store.engine_hybrid_search(query_vector, tokenize(question), top_k, ranker=self.ranker)
        stored = self.store.fetch_chunks([c for c, _ in pairs])
        vectors = self.store.vectors([c for c, _ in pairs])
        lo, hi = min((s for _, s in pairs), default=0.0), max((s for _, s in pairs), default=1.0)
        hits = []
        for chunk_id, score in pairs:
            item = stored.get(chunk_id)
            if item is None:
                continue
            c = item.chunk
            cosine = float(vectors[chunk_id][0] @ np.asarray(query_vector, np.float32))
            hits.append(Hit(rank=len(hits) + 1, chunk_id=chunk_id, doc_id=c.doc_id, start=c.start, end=c.end,
                            score=(score - lo) / (hi - lo) if hi > lo else 1.0, text=c.text, title=c.title,
                            scores={"dense": cosine}, page=item.page))
        return hits


def quality(args) -> dict:
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from milvus_lite.analyzer.jieba_analyzer import JiebaAnalyzer
    from rag.config import Settings
    from rag.evaluation import run_gold, score
    from rag.gold import load_gold
    from rag.pipeline import Pipeline
    from rag.store.lexical import B, K1
    from rag.store.milvus import LEXICAL_POOL, term_dim
    from rag.tokenize import USER_DICT_PATH, tokenize

    settings = Settings.from_env()
    workdir = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    uri = args.milvus_uri or str(workdir / "quality.db")
    embedded = Pipeline(settings).warm_up()
    milvus = Pipeline(settings.replace(backend="milvus", milvus_uri=uri), embedder=embedded.embedder).warm_up()
    splits = {"dev": load_gold(ROOT / "eval" / "gold.jsonl"), "held-out": load_gold(ROOT / "eval" / "heldout.jsonl")}
    questions = [q for gold in splits.values() for q in gold]
    store_e, store_m = embedded.store, milvus.store
    chunk_ids = [f"{i.doc_id}#{k}" for i in store_e.list_documents() for k in range(i.chunks)]
    chunks = store_e.fetch_chunks(chunk_ids)
    texts = {c: chunks[c].chunk.text for c in chunk_ids}
    retrieval = {c: chunks[c].chunk.retrieval_text for c in chunk_ids}
    out: dict = {"chunks": len(chunk_ids), "questions": len(questions)}

    # Tokenisation.
    lite_jieba = JiebaAnalyzer(mode="search")
    out["tokens"] = {
        "chunk_jaccard_mean": float(np.mean([_jaccard(tokenize(t), lite_jieba.tokenize(t)) for t in retrieval.values()])),
        "question_jaccard_mean": float(np.mean([_jaccard(tokenize(q.question), lite_jieba.tokenize(q.question))
                                                for q in questions])),
        "questions_identical": sum(tokenize(q.question) == lite_jieba.tokenize(q.question) for q in questions),
    }

    # Lexical variants.
    client = store_m._client

    def bm25_collection(name: str, analyzer: dict, rows: dict[str, str]) -> None:
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema()
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=200)
        schema.add_field("text", DataType.VARCHAR, max_length=60000, enable_analyzer=True, analyzer_params=analyzer)
        schema.add_field("sp", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sp"]))
        params = client.prepare_index_params()
        params.add_index("sp", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                         params={"bm25_k1": K1, "bm25_b": B})
        client.create_collection(name, schema=schema, index_params=params)
        client.insert(name, [{"pk": pk, "text": text} for pk, text in rows.items()])

    def engine_bm25(name: str, query: str) -> list[str]:
        found = client.search(name, data=[query], anns_field="sp", limit=10, search_params={"metric_type": "BM25"})
        return [h["pk"] for h in found[0]]  # Lite returns negated BM25 scores, best first

    words = [line.split()[0] for line in USER_DICT_PATH.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    bm25_collection("q_lex_jieba", {"tokenizer": "jieba"}, retrieval)
    bm25_collection("q_lex_standard", {"tokenizer": "standard"}, {c: " ".join(tokenize(t)) for c, t in retrieval.items()})
    # Last: the user dictionary's words are added to the process-wide jieba of Milvus Lite.
    bm25_collection("q_lex_jieba_dict", {"tokenizer": {"type": "jieba", "mode": "search", "dict": words}}, retrieval)

    def sparse_only(question: str) -> list[str]:
        tokens = tokenize(question)
        vector, _ = store_m._bm25_query(tokens)
        if not vector:
            return []
        kept = store_m._search("sparse", vector, 10, [], lambda limit: {})
        return [f"{h['entity']['doc_id']}#{h['entity']['ordinal']}" for h, _ in kept]

    variants = {
        "embedded store BM25 (reference)": lambda q: [c for c, _ in store_e.lexical_search(tokenize(q), 10)],
        "engine BM25, jieba analyzer": lambda q: engine_bm25("q_lex_jieba", q),
        "engine BM25, jieba analyzer + our user dictionary words": lambda q: engine_bm25("q_lex_jieba_dict", q),
        "engine BM25 over our tokens, standard (\\w+) analyzer": lambda q: engine_bm25("q_lex_standard",
                                                                                      " ".join(tokenize(q))),
        "our sparse vectors, no re-scoring": sparse_only,
        f"our sparse vectors, best {LEXICAL_POOL} re-scored (the store)":
            lambda q: [c for c, _ in store_m.lexical_search(tokenize(q), 10)],
    }
    reference = {q.id: variants["embedded store BM25 (reference)"](q.question) for q in questions}
    lexical = {}
    for name, fn in variants.items():
        ranked = {q.id: fn(q.question) for q in questions}
        overlap = [len(set(ranked[q.id]) & set(reference[q.id])) / len(reference[q.id])
                   for q in questions if reference[q.id]]
        row = {"top10_overlap": float(np.mean(overlap))}
        for split, gold in splits.items():
            row[split] = _rank_metrics(ranked, gold, texts)
        lexical[name] = row
        print(f"lexical: {name}: overlap {row['top10_overlap']:.3f}", file=sys.stderr)
    out["lexical"] = lexical
    for name in ("q_lex_jieba", "q_lex_jieba_dict", "q_lex_standard"):
        client.drop_collection(name)

    # Fusion.
    fusion = {}
    for name, pipeline, retriever in (("embedded store, client-side fusion (default)", embedded, None),
                                      ("Milvus Lite, client-side fusion (default)", milvus, None),
                                      ("Milvus Lite, engine RRFRanker(60)", milvus, EngineFusion(store_m, "rrf")),
                                      ("Milvus Lite, engine WeightedRanker(0.5, 0.5)", milvus,
                                       EngineFusion(store_m, "weighted"))):
        saved = pipeline._retriever
        if retriever is not None:
            pipeline._retriever = retriever
        row = {}
        for split, gold in splits.items():
            summary = score(pipeline, gold, run_gold(pipeline, gold, top_k=10))
            row[split] = {k: summary.get(k) for k in ("recall@5", "mrr@10", "key_recall", "citation_validity")}
        pipeline._retriever = saved
        fusion[name] = row
        print(f"fusion: {name}: {row}", file=sys.stderr)
    out["fusion"] = fusion
    if not args.milvus_uri:
        milvus.store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# --- scale ----------------------------------------------------------------------------------

def scale(args) -> dict:
    from multiprocessing import Pool

    import bench_store as bs
    from rag.retriever import Retriever
    from rag.store.embedded import EmbeddedStore
    from rag.store.milvus import MilvusStore
    from rag.tokenize import user_dict_hash

    meta = {"model_id": bs.HashEmbedder.model_id, "model_fingerprint": "", "dim": bs.DIM,
            "chunk_size": bs.CHUNK_SIZE, "chunk_overlap": bs.CHUNK_OVERLAP, "section_context": 1,
            "user_dict_hash": user_dict_hash()}
    sentences = bs._seed_sentences()
    bs._init_worker(sentences)
    docs, chunks, prepare_s = [], 0, 0.0
    started = time.perf_counter()
    with Pool(args.workers, initializer=bs._init_worker, initargs=(sentences,)) as pool:
        for prepared, vectors, seconds in pool.imap(bs._prepare, range(10**9), chunksize=4):
            docs.append((prepared, vectors))
            chunks += len(prepared.chunks)
            prepare_s += seconds
            if chunks >= args.chunks:
                pool.terminate()
                break
    print(f"prepared {len(docs)} documents, {chunks} chunks in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="bench-milvus-scale-"))
    stores = {"embedded": EmbeddedStore(workdir / "embedded", meta),
              "milvus_lite": MilvusStore(str(workdir / "lite.db"), prefix="bench", expect=meta, index=args.index)}
    out: dict = {"documents": len(docs), "chunks": chunks, "preparation_chunks_per_s_one_core": chunks / prepare_s,
                 "milvus_index": args.index, "stores": {}}
    for name, store in stores.items():
        t = time.perf_counter()
        with store.writer():
            for prepared, vectors in docs:
                n = len(prepared.chunks)
                store.upsert(prepared, vectors[:n], vectors[n:])
        seconds = time.perf_counter() - t
        out["stores"][name] = {"write_s": seconds, "write_chunks_per_s": chunks / seconds}
        print(f"{name}: wrote {chunks} chunks in {seconds:.1f} s", file=sys.stderr)
    for store in stores.values():
        store.warm_caches()
    rng = random.Random(7)
    questions = []
    for _ in range(args.queries):
        text = bs.synthetic_document(rng.randrange(len(docs)))
        pieces = [p for p in text.split("。") if len(p) > 10]
        q = rng.choice(pieces)
        questions.append(q[:rng.randint(10, min(40, len(q)))])
    embedder = bs.HashEmbedder()
    vectors = [embedder.embed_queries([q])[0] for q in questions]
    retrievers = {name: Retriever(store) for name, store in stores.items()}
    times: dict[str, list[float]] = {name: [] for name in stores}
    same = 0
    for i, (q, v) in enumerate(zip(questions, vectors)):
        ranked = {}
        for name in (list(stores) if i % 2 == 0 else list(stores)[::-1]):  # alternate who goes first
            t = time.perf_counter()
            ranked[name] = [h.chunk_id for h in retrievers[name].search(q, v, top_k=5)]
            if i >= 20:  # the first 20 warm up
                times[name].append((time.perf_counter() - t) * 1000)
        same += ranked["embedded"] == ranked["milvus_lite"]
    for name in stores:
        out["stores"][name].update(hybrid_p50_ms=float(np.percentile(times[name], 50)),
                                   hybrid_p95_ms=float(np.percentile(times[name], 95)))
    out["identical_top5"] = same / len(questions)
    out["ratio_lite_vs_embedded"] = {
        "write_rate": out["stores"]["milvus_lite"]["write_chunks_per_s"] / out["stores"]["embedded"]["write_chunks_per_s"],
        "hybrid_p50": out["stores"]["milvus_lite"]["hybrid_p50_ms"] / out["stores"]["embedded"]["hybrid_p50_ms"],
        "hybrid_p95": out["stores"]["milvus_lite"]["hybrid_p95_ms"] / out["stores"]["embedded"]["hybrid_p95_ms"]}
    out["load_average"] = os.getloadavg()
    for store in stores.values():
        store.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality", help="tokenisation, lexical and fusion measurements (real model)")
    q.add_argument("--milvus-uri", help="reuse this Milvus Lite file (default: a temporary one)")
    q.add_argument("--out", type=Path)
    s = sub.add_parser("scale", help="write rate and hybrid latency, Milvus Lite vs embedded (no model)")
    s.add_argument("--chunks", type=int, default=10_000)
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--index", default="HNSW", help="Milvus dense index (default HNSW)")
    s.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = quality(args) if args.command == "quality" else scale(args)
    text = json.dumps(result, ensure_ascii=False, indent=1)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.command}.json").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
