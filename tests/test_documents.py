"""``rag add | remove | sync | docs`` and the pipeline behind them, in-process with the fake
embedder: ids, collisions, replace, sync by content hash, formats answerable with citations and
PDF pages, writability checked before any embedding."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from rag import cli
from rag.config import Settings
from rag.errors import CacheDirError
from rag.pipeline import Pipeline

from .conftest import write_corpus
from .fakes import FakeEmbedder

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class CountingEmbedder(FakeEmbedder):
    def __init__(self):
        super().__init__()
        self.passages = 0

    def embed_passages(self, texts, *, show_progress=False, threads=None):
        self.passages += len(texts)
        return super().embed_passages(texts)


@pytest.fixture
def embedder(monkeypatch):
    import rag.embedding

    emb = CountingEmbedder()
    monkeypatch.setattr(rag.embedding, "Embedder", lambda settings: emb)
    return emb


@pytest.fixture
def corpus(tmp_path, monkeypatch, embedder):
    folder = write_corpus(tmp_path / "corpus")
    monkeypatch.setenv("RAG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(folder))
    monkeypatch.setenv("RAG_CHUNK_SIZE", "60")
    monkeypatch.setenv("RAG_CHUNK_OVERLAP", "0")
    return folder


def run(capsys, *args) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def docs(capsys) -> dict[str, dict]:
    status, out, _ = run(capsys, "docs", "--json")
    assert status == 0
    return {d["doc_id"]: d for d in json.loads(out)}


def test_formats_become_answerable_with_citations_and_pages_then_unanswerable(corpus, capsys, tmp_path):
    """The issue's done-when, with the fake embedder (the real-model run is in test_formats_e2e)."""
    assert run(capsys, "ask", "梅花鹿存栏量")[0] == 0
    files = [FIXTURES / n for n in ("report.pdf", "notice.docx", "page.html", "gb18030.txt")]
    status, out, err = run(capsys, "add", *map(str, files))
    assert status == 0, err
    listed = docs(capsys)
    assert {"report", "notice", "page", "gb18030"} <= set(listed)
    assert listed["report"]["format"] == "pdf" and listed["report"]["pages"] == 2
    cases = {"全市民生实事项目共计多少项": ("report", "二十六项", 2),
             "东辽县鹿茸深加工企业有多少家": ("notice", "37家", None),
             "辽源市图书馆新馆藏书多少册": ("page", "86万册", None),
             "西安区新增城市绿地面积多少": ("gb18030", "12公顷", None)}
    for question, (doc_id, fact, page) in cases.items():
        status, out, _ = run(capsys, "ask", "--json", question)
        answer = json.loads(out)
        assert answer["hits"][0]["doc_id"] == doc_id, question
        holding = [h for h in answer["hits"][:3] if h["doc_id"] == doc_id and fact in h["text"]]
        assert holding and holding[0]["page"] == page, question
        status, shown, _ = run(capsys, "docs", doc_id, "--json")
        stored, starts = json.loads(shown)["text"], json.loads(shown)["page_starts"]
        for c in answer["citations"] + answer["hits"]:
            if c["doc_id"] == doc_id:
                assert stored[c["start"]:c["end"]] == c["text"]
                assert c["page"] == (sum(1 for s in starts if s <= c["start"]) if starts else None)
        # The fake embedder's answers may abstain; the real model must answer (test_formats_e2e).
        assert answer["abstained"] or any(fact in c["text"] for c in answer["citations"])
    status, out, _ = run(capsys, "ask", "--top-k", "1", "全市民生实事项目共计多少项")
    assert "report.pdf p.2" in out or "1. report [" in out
    assert run(capsys, "remove", "report", "notice", "page", "gb18030")[0] == 0
    for question, (doc_id, fact, _) in cases.items():
        answer = json.loads(run(capsys, "ask", "--json", question)[1])
        assert not any(doc_id == c["doc_id"] for c in answer["citations"] + answer["hits"])


def test_add_ids_collisions_replace_and_unchanged(corpus, capsys, tmp_path, embedder):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    note = outside / "note.md"
    note.write_text("会议纪要\n\n会议决定新建鹿苑两处。\n", encoding="utf-8")
    assert run(capsys, "add", str(note))[0] == 0
    assert docs(capsys)["note"]["format"] == "txt" or docs(capsys)["note"]["format"] == "md"
    before = embedder.passages
    status, out, _ = run(capsys, "add", str(note))
    assert status == 0 and "unchanged" in out and embedder.passages == before
    note.write_text("会议纪要\n\n会议决定新建鹿苑三处。\n", encoding="utf-8")
    status, _, err = run(capsys, "add", str(note))
    assert status == 2 and "--replace" in err and "note" in err
    assert run(capsys, "add", "--replace", str(note))[0] == 0
    _, shown, _ = run(capsys, "docs", "note", "--json")
    assert "三处" in json.loads(shown)["text"]
    assert run(capsys, "add", "--id", "minutes/2021", str(note))[0] == 0
    assert "minutes/2021" in docs(capsys)
    status, _, err = run(capsys, "add", "--id", "../x", str(note))
    assert status == 2 and "unusable document id" in err
    status, _, err = run(capsys, "add", str(tmp_path / "missing.pdf"), str(FIXTURES / "scan.pdf"),
                         str(FIXTURES / "locked.pdf"), str(FIXTURES / "make_fixtures.py"))
    assert status == 2
    assert "no such file" in err and "no text layer" in err and "encrypted" in err and "unknown format" in err


def test_docs_show_and_errors(corpus, capsys):
    assert run(capsys, "ask", "梅花鹿")[0] == 0
    status, out, _ = run(capsys, "docs", "b_deer", "--json")
    shown = json.loads(out)
    assert shown["text"] == (corpus / "b_deer.txt").read_text(encoding="utf-8")
    assert {"doc_id", "title", "date", "format", "chunks", "added"} <= set(shown)
    status, out, _ = run(capsys, "docs")
    assert status == 0 and "b_deer" in out
    for bad in ("nope", "../secret", ""):
        assert run(capsys, "docs", bad)[0] == 2
    assert run(capsys, "remove", "nope")[0] == 2


def test_sync_embeds_only_what_changed(corpus, capsys, embedder, tmp_path):
    assert run(capsys, "sync")[0] == 0
    first = embedder.passages
    assert first > 0
    status, out, _ = run(capsys, "sync", "--json")
    report = json.loads(out)
    assert report["added"] == report["replaced"] == report["removed"] == [] and embedder.passages == first
    (corpus / "sub").mkdir()
    (corpus / "sub" / "d_new.txt").write_text("新文件\n\n辽源市新建图书馆一座，藏书五十万册。\n", encoding="utf-8")
    (corpus / "a_edu.txt").write_text("职业教育\n\n张三委员建议扩大职业院校招生。\n", encoding="utf-8")
    (corpus / "c_report.txt").unlink()
    (corpus / "b_deer.txt").touch()  # same content, new mtime: hashed, not embedded
    status, out, _ = run(capsys, "sync", "--json")
    report = json.loads(out)
    assert report["added"] == ["sub/d_new"] and report["replaced"] == ["a_edu"]
    assert report["removed"] == ["c_report"] and "b_deer" in report["unchanged"]
    assert set(docs(capsys)) == {"a_edu", "b_deer", "sub/d_new"}
    # An upload-like document added from elsewhere survives syncs of the corpus folder.
    outside = tmp_path / "x.txt"
    outside.write_text("外部\n\n外部文件。\n", encoding="utf-8")
    assert run(capsys, "add", str(outside))[0] == 0
    assert run(capsys, "sync")[0] == 0 and "x" in docs(capsys)


def test_ask_picks_up_corpus_changes_without_flags(corpus, capsys):
    """`rag ask` syncs the corpus folder when its size/mtime signature changed (cheap: stat only)."""
    assert run(capsys, "ask", "梅花鹿")[0] == 0
    (corpus / "d_new.txt").write_text("新文件\n\n辽源市新建图书馆一座，藏书五十万册。\n", encoding="utf-8")
    status, out, err = run(capsys, "ask", "--json", "辽源市新建图书馆藏书多少册")
    assert status == 0 and "changed" in err
    assert any(h["doc_id"] == "d_new" for h in json.loads(out)["hits"])
    status, _, err = run(capsys, "ask", "梅花鹿")
    assert "changed" not in err and "building" not in err


def test_unwritable_home_fails_before_any_embedding(tmp_path, monkeypatch, embedder, capsys):
    """Defect: with a read-only RAG_HOME the whole corpus was embedded before the write failed."""
    corpus = write_corpus(tmp_path / "corpus")
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("RAG_HOME", str(blocker / "sub"))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(corpus))
    status, _, err = run(capsys, "add", str(corpus))
    assert status == 4 and "RAG_HOME" in err
    assert embedder.passages == 0
    # An existing store that became read-only: the writer check fails first too.
    monkeypatch.setenv("RAG_HOME", str(tmp_path / "home"))
    assert run(capsys, "add", str(corpus / "a_edu.txt"))[0] == 0
    done = embedder.passages
    real_connect = sqlite3.connect

    def read_only(path, *args, **kwargs):
        return real_connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    status, _, err = run(capsys, "add", str(corpus))
    assert status == 4 and "cannot write" in err
    assert embedder.passages == done


def test_rebuild_keeps_uploaded_and_outside_documents(tmp_path, embedder):
    corpus = write_corpus(tmp_path / "corpus")
    settings = Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus, chunk_size=60, chunk_overlap=0)
    p = Pipeline(settings, embedder=embedder, notify=lambda m: None).warm_up()
    p.add_upload("memo.txt", "备忘\n\n上传的文件说鹿苑新建两处。\n".encode("utf-8"))
    messages = []
    changed = Pipeline(settings.replace(chunk_size=80), embedder=embedder, notify=messages.append).warm_up()
    assert any("rebuilding the store" in m for m in messages)
    assert {i.doc_id for i in changed.documents()} == {"a_edu", "b_deer", "c_report", "memo"}
    assert changed.store.meta["chunk_size"] == 80
    strict = Pipeline(settings, embedder=embedder, auto_index=False)
    from rag.errors import IndexMismatchError

    with pytest.raises(IndexMismatchError, match="rag index --rebuild"):
        strict.warm_up()
