"""The embedded store: the conformance suite, plus what only it has (caches on disk, checksums,
writer lock, format and model checks)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.errors import CorruptIndexError, IndexMismatchError, StoreBusyError
from rag.store.embedded import EmbeddedStore

from .store_conformance import *  # noqa: F401,F403 (the shared suite)
from .store_conformance import EMBEDDER, STORE_META, TEXTS, put


@pytest.fixture
def store_factory(tmp_path):
    made = []

    def make():
        store = EmbeddedStore(tmp_path / f"store{len(made)}", STORE_META)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def reopen():
    return lambda store: EmbeddedStore(store.directory)


def test_caches_are_saved_and_reused_and_replayed(tmp_path):
    store = EmbeddedStore(tmp_path / "s", STORE_META)
    for doc_id in TEXTS:
        put(store, doc_id)
    store.warm_caches()
    snapshots = list((tmp_path / "s" / "cache").glob("snap-*"))
    assert len(snapshots) == 1
    put(store, "late", "后来的文件\n\n新建鹿苑两处。\n")
    fresh = EmbeddedStore(tmp_path / "s")
    fresh.warm_caches()  # loads the snapshot, then replays the one change since
    assert fresh.cache_stats()["generation"] == fresh.generation()
    assert fresh.lexical_search(["鹿苑"], 1)[0][0] == "late#0"


@pytest.mark.parametrize("damage", ["empty", "garbage", "postings", "truncate", "manifest"])
def test_a_damaged_cache_is_detected_and_rebuilt_never_used(tmp_path, damage):
    """Defects: an empty .npy gave an EOFError traceback; garbage in the middle of a binary
    index file silently changed answers."""
    messages = []
    store = EmbeddedStore(tmp_path / "s", STORE_META)
    for doc_id in TEXTS:
        put(store, doc_id)
    store.warm_caches()
    query = EMBEDDER.embed_queries(["梅花鹿存栏量"])[0]
    expected = (store.dense_search(query, 5), store.lexical_search(["梅花鹿"], 5))
    snap = next((tmp_path / "s" / "cache").glob("snap-*"))
    if damage == "empty":
        (snap / "lex_tf.npy").write_bytes(b"")
    elif damage == "garbage":
        target = snap / "dense.faiss"
        data = bytearray(target.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 64] = b"\x7f" * 64
        target.write_bytes(bytes(data))
    elif damage == "postings":  # the lazily checked postings of the very term the query uses
        term = store._conn().execute("SELECT id FROM terms WHERE term = '梅花鹿'").fetchone()[0]
        indptr = np.load(snap / "lex_indptr.npy")
        slots = np.load(snap / "lex_slots.npy", mmap_mode="r+")
        slots[indptr[term]:indptr[term + 1]] = 0
        slots.flush()
        del slots
    elif damage == "truncate":
        target = snap / "lex_indptr.npy"
        target.write_bytes(target.read_bytes()[:40])
    else:
        (snap / "manifest.json").write_text("{not json", encoding="utf-8")
    fresh = EmbeddedStore(tmp_path / "s", notify=messages.append)
    assert (fresh.dense_search(query, 5), fresh.lexical_search(["梅花鹿"], 5)) == expected
    assert any("rebuilding the search caches" in m or "building the search caches" in m for m in messages), messages


def test_stored_vectors_and_texts_carry_checksums(tmp_path):
    store = EmbeddedStore(tmp_path / "s", STORE_META)
    put(store, "deer")
    conn = store._conn()
    blob = bytearray(conn.execute("SELECT sentence_vectors FROM chunks LIMIT 1").fetchone()[0])
    blob[3] ^= 0xFF
    conn.execute("UPDATE chunks SET sentence_vectors = ? WHERE id = (SELECT min(id) FROM chunks)", (bytes(blob),))
    with pytest.raises(CorruptIndexError, match="checksum"):
        store.vectors(["deer#0"])
    conn.execute("UPDATE documents SET text = replace(text, '梅花鹿', '梅花狗')")
    store._docs.clear()
    with pytest.raises(CorruptIndexError, match="checksum"):
        store.document("deer")


def test_metadata_mismatch_names_the_fix(tmp_path):
    store = EmbeddedStore(tmp_path / "s", STORE_META)
    put(store, "deer")
    with pytest.raises(IndexMismatchError, match="rag index --rebuild") as err:
        EmbeddedStore(tmp_path / "s", dict(STORE_META, chunk_size=999))
    assert "chunk_size" in str(err.value)
    with pytest.raises(IndexMismatchError, match="model_id"):
        EmbeddedStore(tmp_path / "s", dict(STORE_META, model_id="another-model"))
    # An empty store simply adopts new settings.
    empty = EmbeddedStore(tmp_path / "e", STORE_META)
    EmbeddedStore(tmp_path / "e", dict(STORE_META, chunk_size=999))
    assert EmbeddedStore(empty.directory).meta["chunk_size"] == 999


def test_not_a_store_is_refused(tmp_path):
    from rag.errors import CacheDirError

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(CacheDirError):
        EmbeddedStore(folder, STORE_META)
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "keep me"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptIndexError):
        EmbeddedStore(bad)


def test_second_writer_waits_then_gets_a_clear_busy_error(tmp_path):
    store = EmbeddedStore(tmp_path / "s", STORE_META)
    other = EmbeddedStore(tmp_path / "s", write_wait_s=0.2)
    import multiprocessing

    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold_writer, args=(str(tmp_path / "s"), ready, release))
    holder.start()
    try:
        assert ready.wait(20)
        with pytest.raises(StoreBusyError, match="busy") as err:
            with other.writer():
                pass
        assert str(holder.pid) in err.value.message
    finally:
        release.set()
        holder.join(20)
    with store.writer():  # free again
        pass


def test_second_writer_waits_for_the_first_then_writes(tmp_path):
    import multiprocessing

    EmbeddedStore(tmp_path / "s", STORE_META)
    other = EmbeddedStore(tmp_path / "s", write_wait_s=20)
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold_writer, args=(str(tmp_path / "s"), ready, release))
    holder.start()
    try:
        assert ready.wait(20)
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
        put(other, "edu")  # waits for the holder, then commits
        assert time.monotonic() - started >= 0.4
        assert other.document("edu") is not None
    finally:
        release.set()
        holder.join(20)


def _hold_writer(directory, ready, release):
    store = EmbeddedStore(directory)
    with store.writer():
        ready.set()
        release.wait(20)


def test_lexical_scores_equal_bm25s(filled):
    """Our incremental BM25 scores match bm25s (the library the index used before) on the same
    tokens, after adds and removes."""
    import bm25s

    put(filled, "extra", "补充\n\n梅花鹿建议梅花鹿。\n")
    filled.delete("edu")
    keys, docs = [], []
    for info in filled.list_documents():
        for i in range(info.chunks):
            chunk_id = f"{info.doc_id}#{i}"
            item = filled.fetch_chunks([chunk_id])[chunk_id]
            from rag.tokenize import tokenize as tok

            keys.append(chunk_id)
            docs.append(tok(item.chunk.retrieval_text) or [""])
    reference = bm25s.BM25()
    reference.index(docs, show_progress=False)
    for question in ("梅花鹿存栏量", "政协提案建议", "梅花鹿 梅花鹿 品牌"):
        from rag.tokenize import tokenize as tok

        tokens = tok(question)
        expected = reference.get_scores(tokens)
        got = dict(filled.lexical_search(tokens, len(keys)))
        for key, score in zip(keys, expected):
            assert got.get(key, 0.0) == pytest.approx(float(score), rel=1e-4, abs=1e-5)


def test_bm25_pruning_is_exact():
    """MaxScore pruning returns exactly the unpruned top k (random Zipf postings, with chunks
    added after the base and some removed)."""
    from rag.store.lexical import LexicalIndex

    rng = np.random.default_rng(3)
    rows = []
    for key in range(1, 3001):
        terms = np.unique(np.minimum(rng.zipf(1.3, size=rng.integers(5, 60)), 5000))
        rows.append((key * 2, terms, rng.integers(1, 4, size=len(terms))))
    index = LexicalIndex.build(rows[:2500])
    for key, terms, counts in rows[2500:]:
        index.add(key, terms, counts)
    index.remove_range(100, 400)
    for _ in range(50):
        query = np.minimum(rng.zipf(1.3, size=rng.integers(1, 9)), 5000).tolist()
        for top_k in (1, 10, 30):
            fast = index.search(query, top_k)
            slow = index.search(query, top_k, prune=False)
            assert [k for k, _ in fast] == [k for k, _ in slow]
            assert np.allclose([s for _, s in fast], [s for _, s in slow], rtol=1e-5)


@pytest.mark.parametrize("head", [4, 64])
def test_bm25_heads_and_tails_are_exact(head):
    import math
    from collections import Counter

    """Two-tier postings (a term's highest-impact postings first, the rest scored only when they
    can matter): the same top k and scores as scoring every posting, with short heads so that
    most terms are split, after adds and removes, and after a compaction."""
    from rag.store.lexical import LexicalIndex

    rng = np.random.default_rng(5)
    rows = []
    for key in range(1, 2001):
        terms = np.unique(np.minimum(rng.zipf(1.2, size=rng.integers(3, 80)), 3000))
        rows.append((key, terms, rng.integers(1, 6, size=len(terms))))
    index = LexicalIndex.build(rows[:1700], head=head)
    assert len(index.tail_terms) > 10
    for key, terms, counts in rows[1700:]:
        index.add(key, terms, counts)
    index.remove_range(50, 300)
    index.remove_range(1750, 1760)
    live = [(k, dict(zip(t.tolist(), c.tolist()))) for k, t, c in rows if not (50 <= k <= 300 or 1750 <= k <= 1760)]
    avgdl = np.mean([sum(d.values()) for _, d in live])

    def brute(query):  # BM25 as bm25s scores it, from the rows themselves
        scores = {}
        for term, mult in Counter(query).items():
            df = sum(term in d for _, d in live)
            if not df:
                continue
            idf = math.log(1 + (len(live) - df + 0.5) / (df + 0.5))
            for key, d in live:
                if term in d:
                    tf = d[term]
                    scores[key] = scores.get(key, 0.0) + mult * idf * tf / (tf + 1.5 * (0.25 + 0.75 * sum(d.values()) / avgdl))
        return scores

    for current in (index, index.compacted(head=head)):
        for _ in range(60):
            query = np.minimum(rng.zipf(1.2, size=rng.integers(1, 10)), 3000).tolist()
            for top_k in (1, 5, 30):
                fast = current.search(query, top_k)
                slow = current.search(query, top_k, prune=False)
                assert [k for k, _ in fast] == [k for k, _ in slow]
                assert np.allclose([s for _, s in fast], [s for _, s in slow], rtol=1e-5)
            expected = brute(query)
            for key, score in current.search(query, 30):
                assert score == pytest.approx(expected[key], rel=1e-4)


def test_dense_queries_run_the_blas_on_one_thread():
    """The BLAS under numpy (the retriever's sentence re-scoring) is limited to one thread once a
    dense search has run: two threads were ~10x slower with the other core busy."""
    import rag.store.dense as dense_module
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(2, user_api="blas")
    dense_module._BLAS_LIMITED = False
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = dense_module.DenseIndex.build(8, np.arange(50, dtype=np.int64), vectors, kind="flat")
    index.search(vectors[0], 3)
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == dense_module.QUERY_THREADS for pool in blas)
