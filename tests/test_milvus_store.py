"""The Milvus store on Milvus Lite: the conformance suite, plus what only it has (the engine's
errors, schema and model checks, the writer lease, recovery of unfinished writes, BM25 equal to
the embedded store's, pagination, rebuilds into a new set of collections)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest

# Only skipped when the [milvus] extra is missing (setup.sh installs it, so CI runs these).
for _module in ("pymilvus", "milvus_lite"):
    pytest.importorskip(_module, reason="the Milvus tests need the [milvus] extra: "
                                        "pip install -e '.[milvus]' (setup.sh installs it)")

from rag.errors import (ConfigError, IndexMismatchError, IngestError, StoreBusyError, StoreUnavailableError)
from rag.store import milvus as milvus_module
from rag.store.embedded import EmbeddedStore
from rag.store.milvus import MilvusStore
from rag.tokenize import tokenize

from .store_conformance import *  # noqa: F401,F403 (the shared suite)
from .store_conformance import EMBEDDER, STORE_META, TEXTS, prepared, put


@pytest.fixture(scope="session")
def lite_uri(tmp_path_factory):
    """One Milvus Lite file for the session (opening one costs ~0.1 s, a store's collections
    ~0.1 s each); every store gets its own collection prefix."""
    return str(tmp_path_factory.mktemp("milvus") / "conformance.db")


def _drop(store: MilvusStore) -> None:
    for name in store._client.list_collections():
        if name.startswith(f"{store.prefix}_"):
            store._client.drop_collection(name)


@pytest.fixture
def store_factory(lite_uri):
    made = []

    def make(**kwargs):
        store = MilvusStore(lite_uri, prefix=f"t_{uuid.uuid4().hex[:12]}", expect=STORE_META, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        _drop(store)
        store.close()


@pytest.fixture
def reopen(lite_uri):
    return lambda store: MilvusStore(lite_uri, prefix=store.prefix)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_clear_error_naming_the_setting():
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(StoreUnavailableError) as err:
        MilvusStore(uri, prefix="x", timeout=2)
    assert uri in err.value.message and "RAG_MILVUS_URI" in err.value.hint


def test_unreachable_server_from_the_command_line_has_no_traceback(tmp_path):
    from rag.config import PROJECT_ROOT

    uri = f"http://127.0.0.1:{closed_port()}"
    env = {"RAG_HOME": str(tmp_path / "home"), "PYTHONPATH": str(PROJECT_ROOT), "RAG_MILVUS_TIMEOUT": "2",
           "PATH": "/usr/bin:/bin"}
    for args in (["ask", "梅花鹿"], ["docs"], ["remove", "x"]):
        done = subprocess.run([sys.executable, "-m", "tests.fake_cli", *args, "--backend", "milvus",
                               "--milvus-uri", uri], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr and "cannot reach Milvus" in done.stderr
        assert "RAG_MILVUS_URI" in done.stderr


def test_bad_settings_name_themselves():
    from rag.config import Settings

    with pytest.raises(ConfigError, match="RAG_MILVUS_URI"):
        Settings.from_env(env={"RAG_BACKEND": "milvus", "RAG_MILVUS_URI": "milvus"})
    with pytest.raises(ConfigError, match="RAG_BACKEND"):
        Settings.from_env(env={"RAG_BACKEND": "elastic"})
    with pytest.raises(ConfigError, match="RAG_MILVUS_PREFIX"):
        Settings.from_env(env={"RAG_MILVUS_PREFIX": "9-lives"})


def test_a_collection_with_another_schema_names_the_prefix_setting(lite_uri, store_factory):
    store = store_factory()
    prefix = f"t_{uuid.uuid4().hex[:12]}"
    store._client.create_collection(f"{prefix}_root", dimension=8)  # someone else's collection
    try:
        with pytest.raises(IndexMismatchError) as err:
            MilvusStore(lite_uri, prefix=prefix)
        assert "RAG_MILVUS_PREFIX" in err.value.hint and f"{prefix}_root" in err.value.message
    finally:
        store._client.drop_collection(f"{prefix}_root")


def test_another_model_or_chunking_is_refused_with_the_fix(lite_uri, store_factory):
    store = store_factory()
    put(store, "deer")
    with pytest.raises(IndexMismatchError, match="rag index --rebuild") as err:
        MilvusStore(lite_uri, prefix=store.prefix, expect=dict(STORE_META, model_id="another-model"))
    assert "model_id" in err.value.message
    with pytest.raises(IndexMismatchError, match="chunk_size"):
        MilvusStore(lite_uri, prefix=store.prefix, expect=dict(STORE_META, chunk_size=999))


def test_an_empty_store_adopts_another_dimension(lite_uri, store_factory):
    store = store_factory()
    wider = dict(STORE_META, dim=EMBEDDER.dim * 2, model_id="wider")
    again = MilvusStore(lite_uri, prefix=store.prefix, expect=wider)
    assert again.meta["dim"] == EMBEDDER.dim * 2 and again._vector_dim("chunks") == EMBEDDER.dim * 2


def test_no_store_without_create_is_a_clear_error(lite_uri):
    from rag.errors import CorruptIndexError

    with pytest.raises(CorruptIndexError, match="rag sync"):
        MilvusStore(lite_uri, prefix=f"t_{uuid.uuid4().hex[:12]}", create=False)


def test_lexical_scores_equal_the_embedded_store(tmp_path, store_factory):
    """Our sparse vectors re-scored exactly give the embedded store's BM25 scores (bm25s's), after
    adds, a replace and a removal that move N, df and avgdl away from the sparse weights' avgdl."""
    milvus = store_factory()
    embedded = EmbeddedStore(tmp_path / "e", STORE_META)
    steps = [("put", "edu", None), ("put", "deer", None), ("put", "extra", "补充\n\n梅花鹿建议梅花鹿。梅花鹿品牌。\n"),
             ("put", "reports/2020/work", None), ("put", "deer", "梅花鹿产业调研\n\n今年东丰县新建鹿苑两处，梅花鹿存栏量稳定。\n"),
             ("delete", "edu", None)]
    for op, doc_id, text in steps:
        for store in (milvus, embedded):
            put(store, doc_id, text) if op == "put" else store.delete(doc_id)
    for question in ("梅花鹿存栏量", "政协提案建议", "梅花鹿 梅花鹿 品牌", "鹿苑", "营商环境专题协商"):
        tokens = tokenize(question)
        got, want = milvus.lexical_search(tokens, 20), embedded.lexical_search(tokens, 20)
        assert [c for c, _ in got] == [c for c, _ in want], question
        assert np.allclose([s for _, s in got], [s for _, s in want], rtol=1e-4)
    for term in ("梅花鹿", "建议", "从未出现的词"):
        assert milvus.idf(term) == pytest.approx(embedded.idf(term))
        assert milvus.mentions(term) == embedded.mentions(term)
    embedded.close()


def test_dense_and_fetch_agree_with_the_embedded_store(tmp_path, store_factory):
    milvus = store_factory()
    embedded = EmbeddedStore(tmp_path / "e", STORE_META)
    for doc_id in TEXTS:
        put(milvus, doc_id)
        put(embedded, doc_id)
    query = EMBEDDER.embed_queries(["职业院校办学水平"])[0]
    got, want = milvus.dense_search(query, 5), embedded.dense_search(query, 5)
    assert [c for c, _ in got] == [c for c, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=2e-3)  # float16 in the embedded store
    ids = [c for c, _ in want]
    a, b = milvus.fetch_chunks(ids, with_sentences=True), embedded.fetch_chunks(ids, with_sentences=True)
    for chunk_id in ids:
        assert a[chunk_id].chunk == b[chunk_id].chunk
        assert [s.span for s in a[chunk_id].sentences] == [s.span for s in b[chunk_id].sentences]
        assert [(s.paragraph, s.heading, s.section) for s in a[chunk_id].sentences] == \
            [(s.paragraph, s.heading, s.section) for s in b[chunk_id].sentences]
    embedded.close()


def test_a_writer_holds_the_lease_and_a_second_one_gets_busy(lite_uri, store_factory):
    first = store_factory()
    second = MilvusStore(lite_uri, prefix=first.prefix, write_wait_s=0.3)
    with first.writer():
        with pytest.raises(StoreBusyError, match="busy"):
            with second.writer():
                pass
    with second.writer():  # released
        pass


def test_a_dead_writers_lease_is_taken_over(lite_uri, store_factory):
    store = store_factory()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store._upsert("root", [store._kv("lease", "lease", {"owner": "gone", "host": socket.gethostname(),
                                                        "pid": dead.pid, "expires": 4e9})])
    store.write_wait_s = 0.0
    with store.writer():
        assert store._lease_row()["owner"] == store._owner


@pytest.mark.parametrize("stage", ["upsert", "milvus-committed", "milvus-stats"])
def test_an_interrupted_replace_is_rolled_back_or_finished_by_the_next_writer(lite_uri, store_factory,
                                                                             monkeypatch, stage):
    """A writer dying at each step of a replace (here: an exception at the crash-test hook; the
    real SIGKILL runs are in test_milvus_crash.py) leaves the old document or the new one,
    never a mix, and the next writer leaves no trace of the interruption."""
    store = store_factory()
    for doc_id in TEXTS:
        put(store, doc_id)
    new_text = "梅花鹿产业调研\n\n今年东丰县新建鹿苑两处，存栏量保持稳定。\n"

    def boom(at):
        if at == stage:
            raise KeyboardInterrupt(at)

    monkeypatch.setattr(milvus_module, "crash_test_hook", boom)
    with pytest.raises(KeyboardInterrupt):
        put(store, "deer", new_text)
    monkeypatch.undo()
    reader = MilvusStore(lite_uri, prefix=store.prefix)
    shown = reader.document("deer").text
    assert shown == (TEXTS["deer"] if stage == "upsert" else new_text)
    query = EMBEDDER.embed_queries(["东丰县新建鹿苑两处"])[0]
    found = reader.lexical_search(tokenize("梅花鹿 存栏量"), 10) + reader.dense_search(query, 10)
    assert any(c.startswith("deer#") for c, _ in found)
    for chunk_id, _ in found:  # every hit is a chunk of the version its document row names
        chunk = reader.fetch_chunks([chunk_id])[chunk_id].chunk
        assert chunk.text == reader.document(chunk.doc_id).text[chunk.start:chunk.end]
    for chunk_id, score in reader.dense_search(query, 10):  # scored with that version's vector
        assert score == pytest.approx(float(reader.vectors([chunk_id])[chunk_id][0] @ query), abs=1e-5)
    if stage == "milvus-stats":
        assert reader.lexical_search(tokenize("鹿苑"), 5)
    with reader.writer():  # recovery
        pass
    assert reader.integrity_problems() == []
    assert reader.document("deer").text == shown
    # Terms new to the archive count once the statistics step ran (at the latest, on recovery).
    assert bool(reader.lexical_search(tokenize("鹿苑"), 5)) == (stage != "upsert")


def test_an_interrupted_removal_is_finished_by_the_next_writer(lite_uri, store_factory, monkeypatch):
    store = store_factory()
    for doc_id in TEXTS:
        put(store, doc_id)

    def boom(at):
        if at == "delete":
            raise KeyboardInterrupt(at)

    monkeypatch.setattr(milvus_module, "crash_test_hook", boom)
    with pytest.raises(KeyboardInterrupt):
        store.delete("deer")
    monkeypatch.undo()
    reader = MilvusStore(lite_uri, prefix=store.prefix)
    assert reader.document("deer") is None
    assert not any(c.startswith("deer#") for c, _ in reader.lexical_search(tokenize("梅花鹿"), 10))
    put(reader, "new", "新文件\n\n东丰县新建鹿苑两处。\n")  # a write recovers first
    assert reader.integrity_problems() == [] and not reader.mentions("梅花鹿")


def test_over_long_text_is_refused_for_that_document(store_factory):
    store = store_factory()
    with pytest.raises(IngestError, match="VARCHAR"):
        put(store, "wide", "标题\n\n" + "长" * 30_000 + "\n")
    assert store.list_documents() == [] and store.integrity_problems() == []


def test_documents_over_several_payload_pieces_and_query_pages(store_factory, monkeypatch):
    """Texts longer than one VARCHAR piece, key lists over several ``in`` expressions and listings
    over several query-iterator pages."""
    monkeypatch.setattr(milvus_module, "PIECE_CHARS", 50)
    monkeypatch.setattr(milvus_module, "IN_BATCH", 2)
    monkeypatch.setattr(milvus_module, "ITERATOR_BATCH", 2)
    store = store_factory()
    for doc_id in TEXTS:
        put(store, doc_id)
    assert [i.doc_id for i in store.list_documents()] == sorted(TEXTS)
    for doc_id, text in TEXTS.items():
        assert store.document(doc_id).text == text
    ids = [f"{d}#{k}" for d in TEXTS for k in range(store.document_info(d).chunks)]
    assert set(store.fetch_chunks(ids, with_sentences=True)) == set(ids)
    assert store.integrity_problems() == []


def test_rebuild_fills_a_new_set_and_readers_follow(lite_uri, store_factory):
    store = store_factory()
    for doc_id in TEXTS:
        put(store, doc_id)
    reader = MilvusStore(lite_uri, prefix=store.prefix)
    old_set = store._set
    with store.writer():
        fresh = store.new_set(dict(STORE_META, chunk_size=80))
        for doc_id in ("edu", "deer"):
            p = prepared(doc_id)
            vectors = EMBEDDER.embed_passages(p.embedding_texts())
            fresh.upsert(p, vectors[:len(p.chunks)], vectors[len(p.chunks):])
        store.activate(fresh)
    assert store._set != old_set and store.meta["chunk_size"] == 80
    assert [i.doc_id for i in store.list_documents()] == ["deer", "edu"]
    assert not any(n.startswith(f"{store.prefix}_{old_set}_") for n in store._client.list_collections())
    assert reader.refresh() is True
    assert [i.doc_id for i in reader.list_documents()] == ["deer", "edu"]
    assert reader.lexical_search(tokenize("梅花鹿"), 3)[0][0].startswith("deer#")


def test_lite_file_open_in_another_process_is_a_clear_error(tmp_path):
    path = tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from rag.store.milvus import MilvusStore; "
        f"MilvusStore({str(path)!r}, prefix='x'); print('ready', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreBusyError) as err:
            MilvusStore(str(path), prefix="x")
        assert "another process" in err.value.message and "RAG_MILVUS_URI" in err.value.hint
    finally:
        holder.kill()
        holder.wait()


def test_serve_refuses_several_workers_on_one_lite_file(tmp_path):
    from rag.config import Settings
    from server.run import serve

    settings = Settings.from_env(env={}, home=tmp_path, backend="milvus")
    with pytest.raises(ConfigError, match="--workers 1"):
        serve(settings, workers=2)


def test_stored_rows_are_json_and_text_pieces(store_factory):
    """The key/value rows hold what the module docstring says (a format other tools can read)."""
    store = store_factory()
    put(store, "deer")
    row = store._by_keys("kv", ["d:deer"], ["body", "version"])["d:deer"]
    body = json.loads(row["body"])
    assert body["v"] == row["version"] and body["chunks"] == store.document_info("deer").chunks
    text = store._read_payload(body["v"], "text", body["parts"]["text"])
    assert text == TEXTS["deer"]


def test_a_collection_folder_left_by_a_killed_create_is_cleared_on_lite(tmp_path):
    """Defect: a process killed inside Lite's ``create_collection`` left a folder without a schema,
    and every later run failed with "File exists" (seen in the random-kill sync test)."""
    uri = str(tmp_path / "lite.db")
    (tmp_path / "lite.db" / "collections" / "t_left_root").mkdir(parents=True)
    store = MilvusStore(uri, prefix="t_left", expect=STORE_META)
    try:
        with store.writer():
            put(store, "deer")
        assert store.document("deer").text == TEXTS["deer"]
        assert store.integrity_problems() == []
    finally:
        store.close()


def test_a_replace_then_removal_in_one_interrupted_session_is_finished(lite_uri, store_factory, monkeypatch):
    """Defect: with statistics applied in batches, a writer killed after replacing then removing
    one document left two committed intents; recovery judged the replace uncommitted (no document
    row), dropped its rows, and the removal's replay then read them."""
    store = store_factory()
    for doc_id in TEXTS:
        put(store, doc_id)

    def boom(at):
        if at == "delete":
            raise KeyboardInterrupt(at)

    monkeypatch.setattr(milvus_module, "crash_test_hook", boom)
    with pytest.raises(KeyboardInterrupt):
        with store.writer():
            put(store, "deer", "梅花鹿产业调研\n\n今年东丰县新建鹿苑两处，存栏量保持稳定。\n")
            store.delete("deer")
    monkeypatch.undo()
    reader = MilvusStore(lite_uri, prefix=store.prefix)
    with reader.writer():  # recovery
        pass
    assert reader.integrity_problems() == []
    assert reader.document("deer") is None
    assert not reader.mentions("梅花鹿") and not reader.mentions("鹿苑")
    assert not any(c.startswith("deer#") for c, _ in reader.lexical_search(tokenize("梅花鹿 鹿苑"), 10))
    assert {i.doc_id for i in reader.list_documents()} == set(TEXTS) - {"deer"}


def test_a_document_row_over_the_varchar_limit_is_refused_before_anything_is_written(store_factory):
    from rag.ingest.prepare import prepare_document
    from rag.types import Document

    store = store_factory()
    doc = Document(doc_id="deep", path="/src/" + "d" * 70_000 + ".txt", title="深处", date=None,
                   text="深处\n\n正文一句。\n", format="txt", pages=())
    p = prepare_document(doc, "sha-deep", STORE_META["chunk_size"], STORE_META["chunk_overlap"])
    vectors = EMBEDDER.embed_passages(p.embedding_texts())
    with pytest.raises(IngestError, match="source path"):
        store.upsert(p, vectors[:len(p.chunks)], vectors[len(p.chunks):])
    assert store._query("kv", 'kind == "intent"', ["key"], limit=10, strong=True) == []
    assert store.list_documents() == [] and store.integrity_problems() == []
