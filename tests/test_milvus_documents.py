"""``rag add | remove | sync | docs | ask`` on Milvus Lite behave as on the embedded store: the
same tests as ``tests/test_documents.py`` (ids, collisions, replace, sync by content hash, formats
with citations and pages, errors), run with ``RAG_BACKEND=milvus``; plus a rebuild after a
settings change, which on Milvus fills a new set of collections."""

from __future__ import annotations

import pytest

# Only skipped when the [milvus] extra is missing (setup.sh installs it, so CI runs these).
for _module in ("pymilvus", "milvus_lite"):
    pytest.importorskip(_module, reason="the Milvus tests need the [milvus] extra: "
                                        "pip install -e '.[milvus]' (setup.sh installs it)")

from rag.config import Settings
from rag.errors import IndexMismatchError
from rag.pipeline import Pipeline

from .conftest import write_corpus
from .test_documents import (docs, embedder, run, test_add_ids_collisions_replace_and_unchanged,  # noqa: F401
                             test_ask_picks_up_corpus_changes_without_flags, test_docs_show_and_errors,
                             test_formats_become_answerable_with_citations_and_pages_then_unanswerable,
                             test_sync_embeds_only_what_changed)


@pytest.fixture
def corpus(tmp_path, monkeypatch, embedder):  # noqa: F811 (the embedded store's fixture, on Milvus Lite)
    folder = write_corpus(tmp_path / "corpus")
    monkeypatch.setenv("RAG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(folder))
    monkeypatch.setenv("RAG_CHUNK_SIZE", "60")
    monkeypatch.setenv("RAG_CHUNK_OVERLAP", "0")
    monkeypatch.setenv("RAG_BACKEND", "milvus")
    monkeypatch.setenv("RAG_MILVUS_URI", str(tmp_path / "lite.db"))
    return folder


def test_the_store_is_milvus_and_lists_the_same_documents(corpus, capsys):
    assert run(capsys, "ask", "梅花鹿")[0] == 0
    status, out, _ = run(capsys, "index")
    assert status == 0 and "lite.db" in out and "collections rag_corpus_" in out
    assert set(docs(capsys)) == {"a_edu", "b_deer", "c_report"}


def test_rebuild_keeps_uploaded_documents_on_milvus(tmp_path, embedder):  # noqa: F811
    corpus = write_corpus(tmp_path / "corpus")
    settings = Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus, chunk_size=60, chunk_overlap=0,
                                 backend="milvus", milvus_uri=str(tmp_path / "lite.db"))
    p = Pipeline(settings, embedder=embedder, notify=lambda m: None).warm_up()
    p.add_upload("memo.txt", "备忘\n\n上传的文件说鹿苑新建两处。\n".encode("utf-8"))
    first_set = p.store._set
    messages = []
    changed = Pipeline(settings.replace(chunk_size=80), embedder=embedder, notify=messages.append).warm_up()
    assert any("rebuilding the store" in m for m in messages)
    assert {i.doc_id for i in changed.documents()} == {"a_edu", "b_deer", "c_report", "memo"}
    assert changed.store.meta["chunk_size"] == 80 and changed.store._set != first_set
    assert changed.ask("鹿苑新建几处").hits[0].doc_id == "memo"
    assert p.store.refresh() is True and p.store.meta["chunk_size"] == 80  # an open handle follows
    strict = Pipeline(settings, embedder=embedder, auto_index=False)
    with pytest.raises(IndexMismatchError, match="rag index --rebuild"):
        strict.warm_up()
