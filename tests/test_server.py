"""HTTP server tests: endpoints, streaming, multi-turn, source viewer, errors, CORS and a small
load run. FakeEmbedder over a tiny inline corpus; loopback only."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.config import PROJECT_ROOT, Settings
from rag.errors import ModelUnavailableError
from rag.pipeline import Pipeline
from server.app import (FOLLOW_UP_MAX_CHARS, MAX_BODY_BYTES, BackgroundServer, create_app,
                        format_content, is_follow_up, retrieval_question, split_for_stream)
from server.schemas import ChatMessage
from tests.fakes import FakeEmbedder

DOCS = {
    "edu_2022": "政协委员建议加快发展职业教育\n\n2022年1月10日\n\n市政协委员张明在会上建议，加快发展现代职业教育。\n"
                "他提出优化职业院校专业设置，打造“双师型”教师队伍。\n委员们还建议加大职业教育宣传力度，吸引更多学生报考职业院校。\n",
    "farm_2021": "乡村振兴开新局\n\n2021年3月2日\n\n2021年全市脱贫人口人均收入达到11473元，同比提高26.7%。\n"
                 "全市创建省级美丽乡村59个。\n农业农村局表示，将继续推进高标准农田建设，今年新建农田5万亩。\n",
    "odd_chars": "标记测试 <b>粗体</b> & 符号\n\n这份文件包含<script>alert(1)</script>这样的文字，用来检查转义。\n"
                 "另一行写着 a < b && c > d 的比较。\n",
}
QUESTION = "委员对职业教育提了什么建议"
NO_ANSWER = "火星上有没有水？"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("server")
    folder = root / "corpus"
    folder.mkdir()
    for doc_id, text in DOCS.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    # A file next to the corpus that traversal must never reach.
    (root / "secret.txt").write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def settings(corpus: Path) -> Settings:
    return Settings.from_env(env={}, home=corpus.parent / "home", corpus_dir=corpus)


@pytest.fixture(scope="module")
def pipeline(settings: Settings) -> Pipeline:
    return Pipeline(settings, embedder=FakeEmbedder(), notify=lambda msg: None)


@pytest.fixture(scope="module")
def client(settings: Settings, pipeline: Pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as c:
        yield c


def raw(doc_id: str) -> str:
    return DOCS[doc_id]


def assert_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str)
    return body["error"]


def sse_events(text: str) -> list:
    """``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


# --- start-up, health, pages -----------------------------------------------------------------

def test_warm_up_once_at_start_and_stays_warm(client, pipeline):
    assert pipeline._warm and pipeline._store is not None  # loaded by the lifespan, before any request
    store, warm_calls = pipeline._store, pipeline.embedder.warm_calls
    for _ in range(3):
        assert client.post("/api/ask", json={"question": QUESTION}).status_code == 200
    assert pipeline._store is store and pipeline.embedder.warm_calls == warm_calls


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["model_id"] == "fake-hash-embedder"
    assert body["chunks"] > 0 and body["documents"] == len(DOCS)
    assert body["index"]["model_id"] == "fake-hash-embedder"


def test_index_page_and_static_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="viewport"' in page.text and "辽源档案问答" in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/v1/chat/completions" in js.text
    assert client.get("/static/style.css").status_code == 200


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/api/ask", "/api/search", "/sources/{doc_id}", "/healthz"} <= set(paths)


# --- /api/ask and /api/search ------------------------------------------------------------------

def test_api_ask_returns_cli_schema_with_exact_spans(client, pipeline):
    body = client.post("/api/ask", json={"question": QUESTION, "top_k": 3}).json()
    assert body == pipeline.ask(QUESTION, top_k=3).to_dict() | {"timings_ms": body["timings_ms"]}
    assert {"question", "answer", "abstained", "citations", "hits", "timings_ms"} <= set(body)
    assert not body["abstained"] and body["citations"]
    assert len(body["hits"]) <= 3
    for c in body["citations"]:
        assert set(c) >= {"id", "doc_id", "title", "date", "start", "end", "text", "url", "line"}
        assert raw(c["doc_id"])[c["start"]:c["end"]] == c["text"]
        assert f"[{c['id']}]" in body["answer"]
        assert c["url"].endswith(f"/sources/{c['doc_id']}?start={c['start']}&end={c['end']}")


def test_api_ask_ignores_unknown_fields(client):
    assert client.post("/api/ask", json={"question": QUESTION, "temperature": 0.2}).status_code == 200


def test_api_search(client):
    body = client.get("/api/search", params={"q": "脱贫人口人均收入", "top_k": 2}).json()
    assert body["question"] == "脱贫人口人均收入"
    assert 1 <= len(body["hits"]) <= 2
    assert body["hits"][0]["doc_id"] == "farm_2021"
    for h in body["hits"]:
        assert raw(h["doc_id"])[h["start"]:h["end"]] == h["text"]


# --- chat completions --------------------------------------------------------------------------

def test_chat_completion_non_streaming(client):
    resp = client.post("/v1/chat/completions", json={
        "model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 99,
        "messages": [{"role": "system", "content": "你是助手"}, {"role": "user", "content": QUESTION}]})
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-mini" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert "[1]" in content and "\n\n来源：\n" in content
    assert body["abstained"] is False and body["citations"]
    for c in body["citations"]:
        assert f"[{c['id']}] [《{c['title']}》]({c['url']})" in content
        assert raw(c["doc_id"])[c["start"]:c["end"]] == c["text"]
    assert body["usage"]["completion_tokens"] == len(content)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + len(content)


def test_chat_completion_streaming(client):
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.post("/v1/chat/completions", json={"messages": messages}).json()
    with client.stream("POST", "/v1/chat/completions", json={"messages": messages, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode("utf-8")
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert sum(1 for d in deltas if d) >= 3  # split into several pieces
    assert "".join(deltas) == plain["choices"][0]["message"]["content"]
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    assert final["citations"] == plain["citations"] and final["abstained"] is False
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_chat_content_parts(client):
    resp = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": [{"type": "text", "text": "委员对职业教育"}, {"type": "image_url"},
                                     {"type": "text", "text": "提了什么建议"}]}]})
    assert resp.status_code == 200
    assert resp.json()["question"] == QUESTION


def test_chat_abstains(client):
    for stream in (False, True):
        resp = client.post("/v1/chat/completions",
                           json={"messages": [{"role": "user", "content": NO_ANSWER}], "stream": stream})
        assert resp.status_code == 200
        if stream:
            events = sse_events(resp.text)
            final = events[-2]
            content = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1])
        else:
            final = resp.json()
            content = final["choices"][0]["message"]["content"]
        assert final["abstained"] is True
        assert content.startswith("未找到相关内容")


def test_follow_up_rule():
    assert is_follow_up("那农田呢？") and is_follow_up("还有别的建议吗") and is_follow_up("他们是谁")
    assert is_follow_up("x" * FOLLOW_UP_MAX_CHARS)
    assert is_follow_up("辽源的美丽乡村建设情况怎么样呢？")
    assert not is_follow_up("2021年辽源全市脱贫人口人均收入达到多少元？")
    msgs = [ChatMessage(role="user", content="农业农村局有什么计划"),
            ChatMessage(role="assistant", content="……"), ChatMessage(role="user", content=" 那农田呢？ ")]
    assert retrieval_question(msgs, 500) == ("那农田呢？", "农业农村局有什么计划 那农田呢？")
    assert retrieval_question(msgs, 10) == ("那农田呢？", "那农田呢？")  # too long combined: alone
    standalone = msgs[:2] + [ChatMessage(role="user", content="2021年全市脱贫人口人均收入达到多少元？")]
    assert retrieval_question(standalone, 500)[1] == "2021年全市脱贫人口人均收入达到多少元？"
    assert retrieval_question(msgs[2:], 500)[1] == "那农田呢？"  # no earlier turn


def test_multi_turn_follow_up_uses_previous_question(client, pipeline):
    resp = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": "农业农村局有什么计划"},
        {"role": "assistant", "content": "农业农村局表示……[1]"},
        {"role": "user", "content": [{"type": "text", "text": "新建农田呢？"}]}]})
    body = resp.json()
    combined = "农业农村局有什么计划 新建农田呢？"
    assert body["question"] == combined
    assert body["choices"][0]["message"]["content"] == format_content(pipeline.ask(combined))


# --- sources -----------------------------------------------------------------------------------

def test_source_page_highlights_span(client):
    doc = raw("farm_2021")
    start = doc.index("全市创建")
    end = doc.index("59个") + 3
    resp = client.get(f"/sources/farm_2021?start={start}&end={end}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert f'<mark id="hit">{doc[start:end]}</mark>' in page
    assert "scrollIntoView" in page and 'name="viewport"' in page
    assert "white-space:pre-wrap" in page


def test_source_page_escapes_html(client):
    doc = raw("odd_chars")
    start = doc.index("<script>")
    end = doc.index("</script>") + len("</script>")
    page = client.get(f"/sources/odd_chars?start={start}&end={end}").text
    assert "<script>alert(1)</script>" not in page and "<b>粗体</b>" not in page
    assert '<mark id="hit">&lt;script&gt;alert(1)&lt;/script&gt;</mark>' in page
    assert "a &lt; b &amp;&amp; c &gt; d" in page


def test_source_page_without_span(client):
    page = client.get("/sources/edu_2022").text
    assert "<mark" not in page and "张明" in page


def test_api_source(client):
    body = client.get("/api/sources/edu_2022").json()
    assert body == {"doc_id": "edu_2022", "title": "政协委员建议加快发展职业教育", "date": "2022-01-10",
                    "text": raw("edu_2022"), "chars": len(raw("edu_2022"))}


@pytest.mark.parametrize("query", ["start=0&end=100000", "start=-1&end=3", "start=10&end=5",
                                   "start=0", "end=4", "start=a&end=3", "start=1.5&end=3"])
def test_source_bad_span(client, query):
    assert_error(client.get(f"/sources/edu_2022?{query}"), 422)


def test_unknown_document(client):
    assert_error(client.get("/sources/nope"), 404)
    assert_error(client.get("/api/sources/nope"), 404)
    assert_error(client.get("/sources/nope?start=0&end=1"), 404)


TRAVERSALS = ["/sources/..%2Fsecret", "/sources/..%2fsecret", "/sources/%2e%2e%2fsecret",
              "/sources/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/sources/%2Fetc%2Fpasswd",
              "/sources/%2e%2e", "/sources/..%5Csecret", "/sources/.hidden",
              "/sources/%00", "/sources/secret", "/api/sources/..%2Fsecret", "/api/sources/%2e%2e",
              "/api/sources/%2Fetc%2Fpasswd", "/sources/C:%5Cwindows"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_rejected(client, path):
    resp = client.get(path)
    assert resp.status_code in (400, 404), resp.text
    assert "TOP-SECRET" not in resp.text and "root:" not in resp.text
    assert_error(resp, resp.status_code)


def test_path_traversal_raw_http(settings, pipeline):
    """Unnormalised ``../`` paths sent over a real socket (clients usually normalise them)."""
    with BackgroundServer(create_app(settings, pipeline=pipeline)) as srv:
        host, port = srv.url.rsplit("//", 1)[1].split(":")
        for path in ["/sources/..", "/sources/../secret", "/sources/../../../../etc/passwd", "/sources/..%2F..%2Fsecret",
                     "/api/sources/../../secret", "/sources//etc/passwd"]:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status = int(head.split()[1])
            assert status in (400, 404), (path, head)
            assert b"TOP-SECRET" not in body and b"root:" not in body


# --- bad input ---------------------------------------------------------------------------------

def test_invalid_json(client):
    for url in ("/v1/chat/completions", "/api/ask"):
        err = assert_error(client.post(url, content=b'{"question": "x",', headers={"content-type": "application/json"}), 400)
        assert "JSON" in err["message"]


@pytest.mark.parametrize("body", [
    {"question": 42}, {"question": None}, {"question": ["a"]}, {}, {"question": "x", "top_k": 0},
    {"question": "x", "top_k": "many"}, {"question": "x", "top_k": 1000}, {"question": "x", "mode": "magic"},
    [QUESTION], "just a string"])
def test_api_ask_wrong_types(client, body):
    assert_error(client.post("/api/ask", json=body), 422)


@pytest.mark.parametrize("body", [
    {"messages": []}, {"messages": "hi"}, {"messages": [{"content": "hi"}]},
    {"messages": [{"role": "user", "content": 5}]}, {"messages": [{"role": "user", "content": QUESTION}], "stream": "yes please"},
    {"model": "m"}, {"messages": [{"role": "system", "content": "只有系统消息"}]},
    {"messages": [{"role": "assistant", "content": "你好"}]},
    {"messages": [{"role": "user", "content": "   "}]}, {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    {"messages": [{"role": "user", "content": None}]}])
def test_chat_bad_requests(client, body):
    assert_error(client.post("/v1/chat/completions", json=body), 422)
    if "stream" not in body:
        assert_error(client.post("/v1/chat/completions", json={**body, "stream": True}), 422)


def test_empty_and_too_long_questions(client, settings):
    for q in ("", "   \n"):
        assert assert_error(client.post("/api/ask", json={"question": q}), 422)["code"] == "EmptyQuestionError"
        assert_error(client.get("/api/search", params={"q": q}), 422)
    long_q = "问" * (settings.max_question_chars + 1)
    err = assert_error(client.post("/api/ask", json={"question": long_q}), 422)
    assert err["code"] == "QuestionTooLongError" and err["hint"]
    assert_error(client.get("/api/search", params={"q": long_q}), 422)
    assert_error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": long_q}]}), 422)
    assert_error(client.get("/api/search"), 422)


def test_body_over_limit_by_content_length(client):
    big = json.dumps({"question": "问" * (MAX_BODY_BYTES // 3 + 10)}).encode()
    assert len(big) > MAX_BODY_BYTES
    for url in ("/api/ask", "/v1/chat/completions"):
        assert_error(client.post(url, content=big, headers={"content-type": "application/json"}), 413)


def test_body_over_limit_without_content_length(client):
    """Chunked upload with no Content-Length: the bytes read are counted."""
    def chunks():
        yield b'{"question": "'
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b"a" * 1000
        yield b'"}'
    resp = client.post("/api/ask", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert_error(resp, 413)


def test_body_with_lying_content_length(settings, pipeline):
    """A Content-Length under the limit followed by more bytes never reaches the app as a big body."""
    with BackgroundServer(create_app(settings, pipeline=pipeline)) as srv:
        host, port = srv.url.rsplit("//", 1)[1].split(":")
        body = b'{"question": "' + b"a" * (MAX_BODY_BYTES + 100) + b'"}'
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /api/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 20\r\nConnection: close\r\n\r\n" + body)
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
        status = int(data.split()[1]) if data else 400
        assert 400 <= status < 500


def test_body_just_under_limit_is_read(client, settings):
    q = "问" * (settings.max_question_chars + 5)
    body = json.dumps({"question": q, "pad": "x" * (MAX_BODY_BYTES - 3000)}, ensure_ascii=False).encode()
    assert len(body) < MAX_BODY_BYTES
    assert client.post("/api/ask", content=body, headers={"content-type": "application/json"}).status_code == 422


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/v1/chat/completions"), 405)


# --- error mapping, threads, CORS ---------------------------------------------------------------

class _StubPipeline:
    """Pipeline stand-in that records the calling thread and can raise."""

    def __init__(self, settings, error=None):
        self.settings = settings
        self.error = error
        self.threads: list[str] = []

    def warm_up(self):
        self.threads.append("warm:" + threading.current_thread().name)
        return self

    def validate_question(self, question):
        return Pipeline.validate_question(self, question)

    def ask(self, question, top_k=None, mode="hybrid"):
        self.threads.append(threading.current_thread().name)
        if self.error:
            raise self.error
        raise AssertionError("not reached")


def test_rag_errors_map_to_http_status(settings):
    stub = _StubPipeline(settings, ModelUnavailableError("model gone", hint="run rag model check"))
    with TestClient(create_app(settings, pipeline=stub)) as c:
        err = assert_error(c.post("/api/ask", json={"question": QUESTION}), 503)
        assert err["code"] == "ModelUnavailableError" and err["hint"] == "run rag model check"
        assert_error(c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}],
                                                           "stream": True}), 503)
    # Blocking work runs in worker threads, never on the event loop.
    loop_thread = threading.current_thread().name
    assert stub.threads and all(loop_thread not in t for t in stub.threads)
    assert all("AnyIO worker thread" in t for t in stub.threads)


def test_cors_off_by_default(client):
    resp = client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in resp.headers
    pre = client.options("/api/ask", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_configurable(settings, pipeline):
    app = create_app(settings, pipeline=pipeline, cors_origins=["http://ok.example"])
    with TestClient(app) as c:
        pre = c.options("/api/ask", headers={"Origin": "http://ok.example", "Access-Control-Request-Method": "POST"})
        assert pre.headers["access-control-allow-origin"] == "http://ok.example"
        other = c.get("/healthz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# --- helpers -----------------------------------------------------------------------------------

def test_split_for_stream_round_trips():
    for text in ["", "一句。", "根据资料：\n1. 甲。[1]\n2. 乙！[2]\n\n来源：\n[1] [《t》](/s)", "没有标点"]:
        assert "".join(split_for_stream(text)) == text
    assert len(split_for_stream("甲。乙。\n丙")) == 3


def test_format_content_markdown_links(pipeline):
    answer = pipeline.ask(QUESTION)
    content = format_content(answer)
    assert content.startswith(answer.answer)
    for c in answer.citations:
        assert f"[{c.id}] [《{c.title}》]({c.url})" in content


# --- load --------------------------------------------------------------------------------------

def _load_module():
    spec = importlib.util.spec_from_file_location("load_test", PROJECT_ROOT / "eval" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_load_run_has_no_errors(settings, pipeline):
    load = _load_module()
    questions = [QUESTION, "全市脱贫人口人均收入达到多少元？", NO_ANSWER, "新建农田多少亩？"]
    with BackgroundServer(create_app(settings, pipeline=pipeline)) as srv:
        report = asyncio.run(load.run_load(srv.url, questions, requests=40, concurrency=8, time_limit=60))
    assert report["errors"] == 0 and report["not_sent"] == 0
    assert report["completed"] == 40 and report["status_counts"] == {"200": 40}
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["max"]
    assert "throughput" in load.format_report(report)
