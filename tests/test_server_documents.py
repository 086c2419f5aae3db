"""HTTP document routes: list, upload, delete; the Bearer key; limits and bad uploads; ids with
folders; a running server seeing changes another process made."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.config import Settings
from rag.pipeline import Pipeline
from server.app import create_app

from .conftest import write_corpus
from .fakes import FakeEmbedder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEY = "test-key-123"


def make_client(tmp_path, api_key: str = KEY, **kw):
    corpus = write_corpus(tmp_path / "corpus")
    settings = Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus, chunk_size=60,
                                 chunk_overlap=0, api_key=api_key, **kw)
    pipeline = Pipeline(settings, embedder=FakeEmbedder(), notify=lambda m: None)
    # With a key set every route needs it (reads too), so the client sends it by default.
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return TestClient(create_app(settings, pipeline=pipeline), headers=headers), settings


@pytest.fixture
def client(tmp_path):
    c, _ = make_client(tmp_path)
    with c:
        yield c


AUTH = {"Authorization": f"Bearer {KEY}"}


def upload(client, name, data, headers=AUTH, **form):
    return client.post("/api/documents", files={"file": (name, data)}, data=form, headers=headers)


def test_list_upload_show_ask_delete(client):
    listed = client.get("/api/documents").json()
    assert {d["doc_id"] for d in listed} == {"a_edu", "b_deer", "c_report"}
    assert {"doc_id", "title", "date", "format", "chunks", "added"} <= set(listed[0])
    resp = upload(client, "notice.docx", (FIXTURES / "notice.docx").read_bytes())
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["added"] == ["notice"] and body["document"]["format"] == "docx"
    source = client.get("/api/sources/notice").json()
    assert "鹿茸深加工企业 | 37家" in source["text"]
    hits = client.get("/api/search", params={"q": "鹿茸深加工企业", "mode": "bm25"}).json()["hits"]
    assert hits[0]["doc_id"] == "notice" and source["text"][hits[0]["start"]:hits[0]["end"]] == hits[0]["text"]
    assert client.get("/api/documents/notice").json()["chunks"] > 0
    assert upload(client, "notice.docx", (FIXTURES / "notice.docx").read_bytes()).status_code == 200  # same
    resp = client.delete("/api/documents/notice", headers=AUTH)
    assert resp.status_code == 200 and resp.json() == {"removed": "notice"}
    assert client.get("/api/sources/notice").status_code == 404
    assert client.delete("/api/documents/notice", headers=AUTH).status_code == 404


def test_writes_need_the_key(client, tmp_path):
    data = "备忘\n\n内容。\n".encode("utf-8")
    keyless = TestClient(client.app)  # same running app, no default Authorization header
    for c, headers in ((keyless, {}), (client, {"Authorization": "Bearer wrong"}),
                       (client, {"Authorization": f"Basic {KEY}"})):
        resp = upload(c, "memo.txt", data, headers=headers)
        assert resp.status_code == 401 and resp.headers.get("www-authenticate") == "Bearer"
        assert c.delete("/api/documents/a_edu", headers=headers).status_code == 401
        assert c.get("/api/documents", headers=headers).status_code == 401  # reads too, with a key set
    assert client.get("/api/sources/a_edu").status_code == 200
    assert client.get("/api/documents/a_edu").status_code == 200


def test_writes_are_disabled_without_a_configured_key(tmp_path):
    c, _ = make_client(tmp_path, api_key="")
    with c:
        resp = upload(c, "memo.txt", "备忘\n\n内容。\n".encode("utf-8"))
        assert resp.status_code == 403 and "RAG_API_KEY" in resp.json()["error"]["message"]
        assert c.delete("/api/documents/a_edu", headers=AUTH).status_code == 403
        assert c.get("/api/documents").status_code == 200


def test_bad_uploads(tmp_path):
    c, _ = make_client(tmp_path, max_upload_bytes=5000)
    with c:
        assert upload(c, "big.txt", "字".encode("utf-8") * 2000).status_code == 413
        resp = upload(c, "photo.png", b"\x89PNG\r\n")
        assert resp.status_code == 415 and "unknown format" in resp.json()["error"]["message"]
        resp = upload(c, "scan.pdf", (FIXTURES / "scan.pdf").read_bytes())
        assert resp.status_code == 422 and "no text layer" in resp.json()["error"]["message"]
        resp = upload(c, "locked.pdf", (FIXTURES / "locked.pdf").read_bytes())
        assert resp.status_code == 422 and "encrypted" in resp.json()["error"]["message"]
        assert c.post("/api/documents", data={"doc_id": "x"}, headers=AUTH).status_code == 422
        assert c.post("/api/documents", content=b"garbage", headers=dict(AUTH, **{"content-type": "multipart/form-data; boundary=zz"})).status_code in (400, 422)
        resp = upload(c, "memo.txt", "备忘\n\n内容。\n".encode("utf-8"), doc_id="../etc/passwd")
        assert resp.status_code == 422
        first = upload(c, "memo.txt", "备忘\n\n第一版。\n".encode("utf-8"))
        assert first.status_code == 201
        clash = upload(c, "memo.txt", "备忘\n\n第二版。\n".encode("utf-8"))
        assert clash.status_code == 409 and "replace" in clash.json()["error"]["hint"]
        again = upload(c, "memo.txt", "备忘\n\n第二版。\n".encode("utf-8"), replace="true")
        assert again.status_code == 201 and again.json()["replaced"] == ["memo"]


def test_ids_with_folders_and_changes_from_another_process(tmp_path):
    c, settings = make_client(tmp_path)
    with c:
        resp = upload(c, "june.txt", "六月报告\n\n六月新建鹿苑两处。\n".encode("utf-8"), doc_id="reports/2021/june")
        assert resp.status_code == 201
        assert c.get("/api/sources/reports/2021/june").json()["doc_id"] == "reports/2021/june"
        page = c.get("/sources/reports%2F2021%2Fjune", params={"start": 0, "end": 4})
        assert page.status_code == 200 and "六月报告" in page.text
        # Another process (here: another pipeline with its own store handle) adds a document.
        other = Pipeline(settings, embedder=FakeEmbedder(), auto_index=False, notify=lambda m: None)
        other.add_upload("late.txt", "补充材料\n\n图书馆藏书达到九十万册。\n".encode("utf-8"))
        hits = c.get("/api/search", params={"q": "图书馆藏书", "mode": "bm25"}).json()["hits"]
        assert hits and hits[0]["doc_id"] == "late"
        assert "late" in {d["doc_id"] for d in c.get("/api/documents").json()}
        other.remove(["late"])
        hits = c.get("/api/search", params={"q": "图书馆藏书", "mode": "bm25"}).json()["hits"]
        assert all(h["doc_id"] != "late" for h in hits)
