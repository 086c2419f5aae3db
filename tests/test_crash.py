"""Crash safety with real processes killed by SIGKILL mid-add, mid-sync and mid-remove; resuming
without re-embedding committed documents; readers answering during an ingest; a second writer
waiting then reporting "busy"; leftovers of killed rebuilds removed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.config import PROJECT_ROOT, Settings
from rag.store.embedded import EmbeddedStore

pytestmark = pytest.mark.crash

DOCS = {f"doc{i}": f"第{i}号文件\n\n这是第{i}号文件的正文，记录了第{i}项工作的进展情况。\n"
                   f"全市第{i}批项目共计{i * 7}个，已经全部开工建设。\n" for i in range(8)}


@pytest.fixture
def env(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for doc_id, text in DOCS.items():
        (corpus / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    log = tmp_path / "embed.log"
    variables = dict(os.environ, RAG_HOME=str(tmp_path / "home"), RAG_CORPUS_DIR=str(corpus),
                     RAG_CHUNK_SIZE="60", RAG_CHUNK_OVERLAP="0", RAG_TEST_EMBED_LOG=str(log),
                     PYTHONPATH=str(PROJECT_ROOT))
    for key in ("RAG_TEST_CRASH", "RAG_TEST_PAUSE_S", "RAG_INDEX_DIR"):
        variables.pop(key, None)
    settings = Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus)
    return {"corpus": corpus, "log": log, "env": variables, "store_dir": settings.resolved_index_dir}


def rag(env, *args, extra=None, wait=True, timeout=120):
    variables = dict(env["env"], **(extra or {}))
    cmd = [sys.executable, "-m", "tests.fake_cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=variables, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=variables, capture_output=True, text=True, timeout=timeout)


def embedded_docs(env) -> list[str]:
    """Documents embedded so far, from the first text of each embedding call (one per document)."""
    if not env["log"].exists():
        return []
    out = []
    for line in env["log"].read_text(encoding="utf-8").splitlines():
        first = json.loads(line)["first"]
        out.append(next(d for d in DOCS if f"第{d[3:]}号文件" in first))
    return out


def check_store(env) -> EmbeddedStore:
    store = EmbeddedStore(env["store_dir"])
    assert store.integrity_problems() == []
    for info in store.list_documents():
        assert store.document(info.doc_id).text == DOCS[info.doc_id]
    return store


@pytest.mark.parametrize("stage", ["upsert:3", "committed:3"])
def test_kill_mid_add_then_rerun_resumes_without_re_embedding(env, stage):
    proc = rag(env, "add", str(env["corpus"]), extra={"RAG_TEST_CRASH": stage})
    assert proc.returncode == -signal.SIGKILL
    store = check_store(env)
    committed = [i.doc_id for i in store.list_documents()]
    assert len(committed) == (2 if stage == "upsert:3" else 3)
    before = embedded_docs(env)
    proc = rag(env, "add", str(env["corpus"]))
    assert proc.returncode == 0, proc.stderr
    again = embedded_docs(env)[len(before):]
    assert not set(again) & set(committed), "a committed document was embedded again"
    assert sorted(set(before + again)) == sorted(DOCS)
    assert [i.doc_id for i in check_store(env).list_documents()] == sorted(DOCS)


def test_kill_mid_sync_at_random_moments_never_corrupts(env):
    rng = random.Random(11)
    kills = 0
    for _ in range(4):
        proc = rag(env, "sync", extra={"RAG_TEST_PAUSE_S": "0.15"}, wait=False)
        time.sleep(rng.uniform(0.3, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        check_store(env)
    proc = rag(env, "sync")
    assert proc.returncode == 0, proc.stderr
    store = check_store(env)
    assert [i.doc_id for i in store.list_documents()] == sorted(DOCS)
    # Each kill can cost at most the one document being embedded at that moment.
    assert len(embedded_docs(env)) <= len(DOCS) + kills


def test_kill_mid_add_at_random_moments_never_corrupts_and_resumes(env):
    rng = random.Random(5)
    kills = 0
    for _ in range(4):
        proc = rag(env, "add", str(env["corpus"]), extra={"RAG_TEST_PAUSE_S": "0.15"}, wait=False)
        time.sleep(rng.uniform(0.3, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        check_store(env)
    proc = rag(env, "add", str(env["corpus"]))
    assert proc.returncode == 0, proc.stderr
    assert [i.doc_id for i in check_store(env).list_documents()] == sorted(DOCS)
    assert kills and len(embedded_docs(env)) <= len(DOCS) + kills


def test_kill_mid_remove_at_random_moments_removes_whole_documents(env):
    assert rag(env, "add", str(env["corpus"])).returncode == 0
    rng = random.Random(9)
    kills = 0
    for _ in range(3):
        left = [i.doc_id for i in check_store(env).list_documents()]
        proc = rag(env, "remove", *left, extra={"RAG_TEST_PAUSE_S": "0.2"}, wait=False)
        time.sleep(rng.uniform(0.3, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        store = check_store(env)  # the documents left are whole, the removed ones wholly gone
        assert store.integrity_problems() == []
        assert store.count_chunks() == sum(i.chunks for i in store.list_documents())
        hits = {doc for doc, _ in (h.rpartition("#")[::2] for h, _ in store.lexical_search(["文件"], 100))}
        assert hits <= {i.doc_id for i in store.list_documents()}
        store.close()
    assert kills
    left = [i.doc_id for i in check_store(env).list_documents()]
    if left:
        assert rag(env, "remove", *left).returncode == 0
    assert check_store(env).list_documents() == []


def test_kill_mid_remove_leaves_the_document_whole(env):
    assert rag(env, "add", str(env["corpus"])).returncode == 0
    proc = rag(env, "remove", "doc1", "doc2", extra={"RAG_TEST_CRASH": "delete:2"})
    assert proc.returncode == -signal.SIGKILL
    store = check_store(env)
    assert {i.doc_id for i in store.list_documents()} == set(DOCS) - {"doc1"}
    assert rag(env, "remove", "doc2").returncode == 0
    assert {i.doc_id for i in check_store(env).list_documents()} == set(DOCS) - {"doc1", "doc2"}


def test_second_writer_gets_busy_and_readers_keep_answering(env):
    from rag.pipeline import Pipeline
    from tests.fakes import FakeEmbedder

    assert rag(env, "add", str(env["corpus"] / "doc0.txt")).returncode == 0
    extra_dir = env["corpus"].parent / "more"
    extra_dir.mkdir()
    for i in range(4):
        (extra_dir / f"late{i}.txt").write_text(f"补充{i}\n\n第{i}号补充材料说明鹿苑新建{i + 2}处。\n",
                                                encoding="utf-8")
    settings = Settings.from_env(env={}, home=Path(env["env"]["RAG_HOME"]), corpus_dir=env["corpus"],
                                 chunk_size=60, chunk_overlap=0)
    reader = Pipeline(settings, embedder=FakeEmbedder(), auto_index=False, notify=lambda m: None).warm_up()
    writer = rag(env, "add", str(extra_dir), extra={"RAG_TEST_PAUSE_S": "1.5"}, wait=False)
    try:
        deadline = time.monotonic() + 60
        while reader.store.count_documents() < 2:  # the writer committed one and holds the lock
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        busy = rag(env, "add", str(env["corpus"] / "doc1.txt"), extra={"RAG_WRITE_WAIT_S": "0.2"})
        assert busy.returncode == 5 and "busy" in busy.stderr and "pid" in busy.stderr
        answered = 0
        while writer.poll() is None:
            assert reader.ask("第0号文件记录了什么").citations
            answered += 1
        assert answered > 0
    finally:
        writer.wait(60)
    assert writer.returncode == 0, writer.stderr.read()
    hits = reader.retrieve("鹿苑新建", top_k=5, mode="bm25")
    assert {h.doc_id for h in hits} == {f"late{i}" for i in range(4)}  # seen without a restart


def test_concurrent_first_builds_do_the_work_once(env):
    """Defect: two concurrent rebuilds both did the full work."""
    procs = [rag(env, "ask", "第3号文件", extra={"RAG_TEST_PAUSE_S": "0.05"}, wait=False) for _ in range(2)]
    for proc in procs:
        proc.wait(120)
        assert proc.returncode == 0, proc.stderr.read()
    assert sorted(embedded_docs(env)) == sorted(DOCS)


def test_killed_rebuild_leaves_nothing_behind(env):
    """Defect: killed builds left .tmp-* / .old-* folders for ever."""
    assert rag(env, "sync").returncode == 0
    proc = rag(env, "index", "--rebuild", extra={"RAG_TEST_CRASH": "committed:3"})
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(env["store_dir"].parent.glob(f"{env['store_dir'].name}.*"))
    assert leftovers and all(".rebuild-" in p.name for p in leftovers)
    assert rag(env, "docs").returncode == 0  # any later run cleans up
    assert list(env["store_dir"].parent.glob(f"{env['store_dir'].name}.*")) == []
    assert [i.doc_id for i in check_store(env).list_documents()] == sorted(DOCS)
