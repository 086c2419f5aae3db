"""Crash safety of the Milvus store with real processes killed by SIGKILL (on Milvus Lite): at
each step of an upsert (rows written, document row committed, statistics applied, all done), at
random moments of a sync, and inside a removal. Readers see every document whole, old or new;
the next writer finishes or rolls back what was left, so the store checks clean; committed
documents are not embedded again."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

# Only skipped when the [milvus] extra is missing (setup.sh installs it, so CI runs these).
for _module in ("pymilvus", "milvus_lite"):
    pytest.importorskip(_module, reason="the Milvus tests need the [milvus] extra: "
                                        "pip install -e '.[milvus]' (setup.sh installs it)")

from rag.config import PROJECT_ROOT, Settings
from rag.store.milvus import MilvusStore

from .test_crash import DOCS, embedded_docs, rag

pytestmark = pytest.mark.crash


@pytest.fixture
def env(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for doc_id, text in DOCS.items():
        (corpus / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    log = tmp_path / "embed.log"
    uri = str(tmp_path / "lite.db")
    variables = dict(os.environ, RAG_HOME=str(tmp_path / "home"), RAG_CORPUS_DIR=str(corpus),
                     RAG_CHUNK_SIZE="60", RAG_CHUNK_OVERLAP="0", RAG_TEST_EMBED_LOG=str(log),
                     PYTHONPATH=str(PROJECT_ROOT), RAG_BACKEND="milvus", RAG_MILVUS_URI=uri)
    for key in ("RAG_TEST_CRASH", "RAG_TEST_PAUSE_S", "RAG_INDEX_DIR", "RAG_MILVUS_PREFIX"):
        variables.pop(key, None)
    settings = Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus)
    return {"corpus": corpus, "log": log, "env": variables, "uri": uri, "prefix": settings.resolved_milvus_prefix}


def open_store(env) -> MilvusStore:
    return MilvusStore(env["uri"], prefix=env["prefix"])


def check_readers(env) -> list[str]:
    """What a reader sees right after a kill: whole documents only (the process must close the
    Lite file before the next command runs)."""
    store = open_store(env)
    try:
        ids = [i.doc_id for i in store.list_documents()]
        for doc_id in ids:
            assert store.document(doc_id).text == DOCS[doc_id]
            for chunk in store.fetch_chunks([f"{doc_id}#0"]).values():
                assert chunk.chunk.text == DOCS[doc_id][chunk.chunk.start:chunk.chunk.end]
        return ids
    finally:
        store.close()


def check_clean(env) -> list[str]:
    store = open_store(env)
    try:
        with store.writer():  # what any next writer does first
            pass
        assert store.integrity_problems() == []
        return [i.doc_id for i in store.list_documents()]
    finally:
        store.close()


@pytest.mark.parametrize("stage, committed", [("upsert:3", 2), ("milvus-committed:3", 3), ("milvus-stats:1", len(DOCS)),
                                              ("committed:3", 3)])
def test_kill_at_each_step_of_an_add_then_rerun_resumes(env, stage, committed):
    proc = rag(env, "add", str(env["corpus"]), extra={"RAG_TEST_CRASH": stage})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seen = check_readers(env)
    assert len(seen) == committed
    before = embedded_docs(env)
    proc = rag(env, "add", str(env["corpus"]))
    assert proc.returncode == 0, proc.stderr
    again = embedded_docs(env)[len(before):]
    assert not set(again) & set(seen), "a committed document was embedded again"
    assert check_clean(env) == sorted(DOCS)


def test_kill_mid_sync_at_random_moments_never_corrupts(env):
    rng = random.Random(12)
    kills = 0
    for _ in range(3):
        proc = rag(env, "sync", extra={"RAG_TEST_PAUSE_S": "0.15"}, wait=False)
        time.sleep(rng.uniform(1.0, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        check_readers(env)
    proc = rag(env, "sync")
    assert proc.returncode == 0, proc.stderr
    assert check_clean(env) == sorted(DOCS)
    assert len(embedded_docs(env)) <= len(DOCS) + kills


def test_kill_mid_remove_leaves_the_document_whole(env):
    assert rag(env, "add", str(env["corpus"])).returncode == 0
    proc = rag(env, "remove", "doc1", "doc2", extra={"RAG_TEST_CRASH": "delete:2"})
    assert proc.returncode == -signal.SIGKILL
    assert set(check_readers(env)) == set(DOCS) - {"doc1", "doc2"}  # doc2's removal was committed
    assert rag(env, "remove", "doc3").returncode == 0
    assert set(check_clean(env)) == set(DOCS) - {"doc1", "doc2", "doc3"}


def test_a_second_process_on_the_lite_file_gets_a_clear_busy_error(env):
    writer = rag(env, "add", str(env["corpus"]), extra={"RAG_TEST_PAUSE_S": "1.0"}, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not embedded_docs(env):  # the writer has the file open
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        busy = rag(env, "docs")
        assert busy.returncode == 5 and "open in another process" in busy.stderr
        assert "RAG_MILVUS_URI" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        writer.wait(120)
    assert writer.returncode == 0
