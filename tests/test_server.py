"""HTTP server tests: endpoints, streaming, multi-turn, source viewer, errors, CORS, probes,
abandoned requests, OpenAI interop and a small load run. FakeEmbedder over a tiny inline corpus;
loopback only."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.config import PROJECT_ROOT, Settings
from rag.errors import ModelUnavailableError
from rag.pipeline import Pipeline
from server.app import MAX_BODY_BYTES, BackgroundServer, create_app
from server.chat import format_content, is_follow_up, retrieval_question, split_for_stream
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


def wait_ready(client, timeout: float = 30.0) -> dict:
    """Poll ``/readyz`` until it answers 200 (the warm-up runs in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get("/readyz")
        if resp.status_code == 200:
            return resp.json()
        assert resp.status_code == 503 and resp.json()["status"] == "loading", resp.text
        assert time.monotonic() < deadline, "the app did not become ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(settings: Settings, pipeline: Pipeline):
    with TestClient(create_app(settings, pipeline=pipeline)) as c:
        wait_ready(c)
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
    assert pipeline._warm and pipeline._store is not None  # loaded by the lifespan's background warm-up
    store, warm_calls = pipeline._store, pipeline.embedder.warm_calls
    for _ in range(3):
        assert client.post("/api/ask", json={"question": QUESTION}).status_code == 200
    assert pipeline._store is store and pipeline.embedder.warm_calls == warm_calls


def test_readyz_reports_model_and_index(client):
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["model_id"] == "fake-hash-embedder"
    assert body["chunks"] > 0 and body["documents"] == len(DOCS)
    assert body["index"]["model_id"] == "fake-hash-embedder"
    assert body["questions"]["answered"] >= 0 and body["pid"] == os.getpid()


def _absolute_paths(value) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _absolute_paths(v)]
    return [value] if isinstance(value, str) and (value.startswith("/") or re.match(r"[A-Za-z]:\\", value)) else []


def test_healthz_and_readyz_show_no_server_paths(client, settings):
    """Defect 10: /healthz showed the index directory (an absolute path)."""
    for url in ("/healthz", "/readyz"):
        resp = client.get(url)
        assert resp.status_code == 200
        assert not _absolute_paths(resp.json()), resp.text
        for secret in (str(settings.home), str(settings.corpus_dir), str(PROJECT_ROOT)):
            assert secret not in resp.text
    assert client.get("/healthz").json() == {"status": "ok", "ready": True, "version": client.get("/healthz").json()["version"],
                                            "pid": os.getpid()}


def test_head_on_page_and_probes(client):
    """Defect 4: HEAD on / and /healthz returned 405."""
    for url in ("/", "/healthz", "/readyz", "/static/app.js"):
        resp = client.head(url)
        assert resp.status_code == 200, (url, resp.status_code)
        assert resp.content == b""
    assert client.head("/").headers["content-type"].startswith("text/html")


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
        "model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 4000,
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


FOLLOW_UPS = ["那农田呢？", "新建农田呢？", "还有别的建议吗", "还有呢", "他们是谁", "它的作用是什么",
              "其中女性占多少", "这个建议是谁提的", "这些建议落实了吗", "该市GDP是多少", "上述提案的办复率是多少",
              "此外还有哪些措施", "另外呢", "那么多少人参加", "农业呢", "具体内容呢", "为什么", "谁提的",
              "多少亩", "有哪些", "情况怎么样"]
SELF_CONTAINED = ["人均收入多少", "2021年辽源全市脱贫人口人均收入达到多少元？", "委员对职业教育提了什么建议",
                  "辽源的美丽乡村建设情况怎么样呢？", "新建农田多少亩", "职业教育", "火星上有没有水？",
                  "该如何发展职业教育", "梅花鹿存栏量有多少", "政协收到多少件提案", "60岁以上老人有多少",
                  "再就业补贴是多少", "全市还有多少贫困人口", "和平区有多少人"]


@pytest.mark.parametrize("question", FOLLOW_UPS)
def test_follow_up_detected(question):
    """Pronouns, demonstratives, continuations, X呢 and topic-less turns lean on the last turn."""
    assert is_follow_up(question)


@pytest.mark.parametrize("question", SELF_CONTAINED)
def test_self_contained_question_is_not_a_follow_up(question):
    """Defect 3: any turn of 8 characters or fewer was glued to the previous question."""
    assert not is_follow_up(question)


def test_retrieval_question_joins_follow_ups_to_their_anchor():
    def users(*texts):
        out = []
        for t in texts:
            out += [ChatMessage(role="user", content=t), ChatMessage(role="assistant", content="……[1]")]
        return out[:-1]

    msgs = users("农业农村局有什么计划", " 那农田呢？ ")
    assert retrieval_question(msgs, 500) == ("那农田呢？", "农业农村局有什么计划 那农田呢？")
    assert retrieval_question(msgs, 10) == ("那农田呢？", "那农田呢？")  # too long combined: alone
    # A chain of follow-ups goes back to the last self-contained turn ...
    chain = users("农业农村局有什么计划", "那农田呢？", "多少亩")
    assert retrieval_question(chain, 500)[1] == "农业农村局有什么计划 那农田呢？ 多少亩"
    assert retrieval_question(chain, 16)[1] == "农业农村局有什么计划 多少亩"
    # ... and no further.
    older = users("火星上有没有水？", "农业农村局有什么计划", "那农田呢？")
    assert retrieval_question(older, 500)[1] == "农业农村局有什么计划 那农田呢？"
    standalone = users("农业农村局有什么计划", "2021年全市脱贫人口人均收入达到多少元？")
    assert retrieval_question(standalone, 500)[1] == "2021年全市脱贫人口人均收入达到多少元？"
    assert retrieval_question(users("那农田呢？"), 500)[1] == "那农田呢？"  # no earlier turn


def test_short_self_contained_question_is_answered_alone(client, pipeline):
    """Defect 3, the issue's example: after a vocational-education question, 人均收入多少 is
    answered on its own (it used to get the vocational-education answer)."""
    body = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "市政协委员张明在会上建议，加快发展现代职业教育。[1]"},
        {"role": "user", "content": "人均收入多少"}]}).json()
    assert body["question"] == "人均收入多少"
    assert body["choices"][0]["message"]["content"] == format_content(pipeline.ask("人均收入多少"))
    assert "11473元" in body["choices"][0]["message"]["content"]
    assert {c["doc_id"] for c in body["citations"]} == {"farm_2021"}


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
    assert stub.threads[0] == "warm:rag-warm-up"  # loading runs in its own background thread
    assert all("AnyIO worker thread" in t for t in stub.threads[1:])


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


# --- bad text and content types (defects 1 and 5) ----------------------------------------------

def _chat_body(content: bytes, extra: bytes = b"") -> bytes:
    return b'{"messages": [{"role": "user", "content": "' + content + b'"}]' + extra + b"}"


BAD_TEXT = {
    "escaped lone surrogate": b"\\ud800\\u804c\\u4e1a",
    "escaped low surrogate": b"\\udfff",
    "raw bytes ED A0 80": b"\xed\xa0\x80\xe8\x81\x8c",
    "GBK, not UTF-8": "坏文件".encode("gbk"),
}


@pytest.mark.parametrize("kind", list(BAD_TEXT))
def test_bad_text_in_a_question_is_400_with_a_message(client, kind):
    """Defect 1: a lone surrogate (escaped or as raw bytes ED A0 80) returned 500."""
    text = BAD_TEXT[kind]
    cases = [("/api/ask", b'{"question": "' + text + b'"}'), ("/v1/chat/completions", _chat_body(text)),
             ("/v1/chat/completions", _chat_body(text, b', "stream": true')),
             ("/v1/chat/completions", b'{"model": "' + text + b'", "messages": [{"role": "user", "content": "x"}]}'),
             ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "'
              + text + b'"}]}]}')]
    for url, body in cases:
        resp = client.post(url, content=body, headers={"content-type": "application/json"})
        err = assert_error(resp, 400)
        assert err["code"] == "invalid_text"
        assert "surrogate" in err["message"] or "UTF-8" in err["message"]


def test_bad_text_in_a_query_string_is_not_a_500(client):
    for q in ("%ED%A0%80", "%ED%A0%80%E8%81%8C", "%FF"):
        assert client.get(f"/api/search?q={q}").status_code in (200, 422)


@pytest.mark.parametrize("question", ["\ud800", "职业\udcff教育", "\udced\udca0\udc80建议"])
def test_pipeline_rejects_lone_surrogates(pipeline, question):
    from rag.errors import BadQuestionError

    with pytest.raises(BadQuestionError) as err:
        pipeline.validate_question(question)
    message = err.value.message
    assert "surrogate" in message or "not valid UTF-8" in message
    message.encode("utf-8")  # printable: the bad character itself is not echoed


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/xml"])
def test_json_sent_with_another_content_type_is_415(client, content_type):
    """Defect 5: JSON sent as text/plain or form-encoded got a misleading 422."""
    bodies = {"/api/ask": {"question": QUESTION},
              "/v1/chat/completions": {"messages": [{"role": "user", "content": QUESTION}]}}
    for url, body in bodies.items():
        resp = client.post(url, content=json.dumps(body), headers={"content-type": content_type})
        err = assert_error(resp, 415)
        assert "application/json" in err["message"] and content_type.split(";")[0] in err["message"]
        assert err["code"] == "unsupported_media_type"
    form = client.post("/api/ask", content=json.dumps(bodies["/api/ask"]),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert "curl -d" in form.json()["error"]["message"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json",
                                          "Application/JSON"])
def test_json_content_types_are_accepted(client, content_type):
    resp = client.post("/api/ask", content=json.dumps({"question": QUESTION}).encode(),
                       headers={"content-type": content_type})
    assert resp.status_code == 200, resp.text


def test_body_without_content_type_is_415(client):
    resp = client.post("/api/ask", content=json.dumps({"question": QUESTION}).encode())
    assert "no Content-Type" in assert_error(resp, 415)["message"]


# --- OpenAI interop: models, n, max_tokens, stop, usage (defects 2 and 6) ----------------------

def test_models_list_and_retrieve(client):
    """Defect 2: GET /v1/models returned 404, so chat UIs could not find the bot."""
    from server.app import MODEL_ID

    body = client.get("/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [MODEL_ID]
    card = body["data"][0]
    assert card["object"] == "model" and isinstance(card["created"], int) and card["owned_by"]
    assert client.get(f"/v1/models/{MODEL_ID}").json() == card
    assert assert_error(client.get("/v1/models/gpt-4o"), 404)["code"] == "model_not_found"


def _chat(client, **fields):
    body = {"messages": [{"role": "user", "content": QUESTION}], **fields}
    return client.post("/v1/chat/completions", json=body)


def test_n_above_one_is_rejected(client):
    """Defect 6: n was silently ignored."""
    for n in (2, 8):
        err = assert_error(_chat(client, n=n), 400)
        assert f"n={n}" in err["message"] and err["code"] == "unsupported_parameter"
    assert _chat(client, n=1).status_code == 200
    assert_error(_chat(client, n=0), 422)


def test_max_tokens_cuts_the_reply_without_breaking_a_citation_marker(client):
    """Defect 6: max_tokens was silently ignored."""
    full = _chat(client).json()["choices"][0]["message"]["content"]
    marker = full.index("[1]")
    for field in ("max_tokens", "max_completion_tokens"):
        for limit in (marker + 1, marker + 2):  # inside "[1]": the cut moves before the marker
            choice = _chat(client, **{field: limit}).json()["choices"][0]
            assert choice["message"]["content"] == full[:marker]
            assert choice["finish_reason"] == "length"
        choice = _chat(client, **{field: marker + 3}).json()["choices"][0]
        assert choice["message"]["content"] == full[:marker + 3] and choice["finish_reason"] == "length"
    body = _chat(client, max_tokens=len(full)).json()
    assert body["choices"][0]["message"]["content"] == full and body["choices"][0]["finish_reason"] == "stop"
    assert _chat(client, max_tokens=marker).json()["citations"] == []  # no marker left, no citation
    assert_error(_chat(client, max_tokens=0), 422)


def test_max_tokens_applies_to_the_stream(client):
    full = _chat(client).json()["choices"][0]["message"]["content"]
    limit = full.index("[1]") + 2
    events = sse_events(_chat(client, stream=True, max_tokens=limit).text)
    chunks = events[:-1]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == full[:limit - 2]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stop_strings_end_the_reply(client):
    full = _chat(client).json()["choices"][0]["message"]["content"]
    choice = _chat(client, stop="。").json()["choices"][0]
    assert choice["message"]["content"] == full[:full.index("。")] and choice["finish_reason"] == "stop"
    # A stop string inside a marker cuts before the whole marker.
    assert _chat(client, stop=["]"]).json()["choices"][0]["message"]["content"] == full[:full.index("[1]")]
    assert _chat(client, stop=["来源", "不存在的词"]).json()["choices"][0]["message"]["content"] \
        == full[:full.index("来源")]
    assert _chat(client, stop=[""]).json()["choices"][0]["message"]["content"] == full
    assert "at most 4" in assert_error(_chat(client, stop=["a", "b", "c", "d", "e"]), 400)["message"]
    assert_error(_chat(client, stop=5), 422)


def test_apply_limits_never_splits_markers_or_source_lines():
    from server.chat import CITATION_MARKER, apply_limits

    content = "甲说了一句。[1][12]乙又说。[2]\n\n来源：\n[1] [《标题一》](/sources/a?start=0&end=5) 2021-01-02\n[12] [《二》](/sources/b)"
    marker_spans = [(m.start(), m.end()) for m in CITATION_MARKER.finditer(content)]
    for limit in range(1, len(content) + 2):
        done = apply_limits(content, max_chars=limit)
        cut = len(done.content)
        assert content.startswith(done.content) and cut <= limit
        assert not any(s < cut < e for s, e in marker_spans)
        if cut > content.index("[1] ["):  # inside the source list: only whole lines
            assert content[cut - 1] == "\n" or content[cut:cut + 1] in ("\n", "")
        assert done.finish_reason == ("length" if limit < len(content) else "stop")
        assert done.cited_ids == {int(m.group(0)[1:-1]) for m in CITATION_MARKER.finditer(done.content)}


def test_usage_chunk_when_stream_options_include_usage(client):
    plain = _chat(client).json()
    events = sse_events(_chat(client, stream=True, stream_options={"include_usage": True}).text)
    assert events[-1] == "[DONE]"
    usage_chunk, final = events[-2], events[-3]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert usage_chunk["id"] == final["id"]
    assert final["choices"][0]["finish_reason"] == "stop" and final["citations"] == plain["citations"]
    no_usage = sse_events(_chat(client, stream=True, stream_options={"include_usage": False}).text)
    assert not any("usage" in e for e in no_usage[:-1])


# --- slow bodies (defect 7) ------------------------------------------------------------------

def _raw_http(url: str, data: bytes, *, pause_after: float = 0.0, rest: bytes = b"", timeout: float = 20.0):
    """Send ``data`` (then ``rest`` after ``pause_after`` seconds) over a raw socket; return
    ``(status, headers+body bytes, seconds until the response ended)``."""
    host, port = url.rsplit("//", 1)[1].split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        if pause_after:
            time.sleep(pause_after)
            try:
                s.sendall(rest)
            except OSError:
                pass
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    status = int(received.split()[1]) if received else 0
    return status, received, time.monotonic() - started


def test_slow_body_is_timed_out_with_408(settings, pipeline):
    """Defect 7: a slow body was never timed out (it held a connection for ever)."""
    app = create_app(settings.replace(body_timeout=0.5), pipeline=pipeline)
    body = json.dumps({"question": QUESTION}, ensure_ascii=False).encode()
    head = (b"POST /api/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with BackgroundServer(app) as srv:
        # Half the body, then silence: the server answers 408 by itself and closes the
        # connection (the client asked for keep-alive; reading until EOF proves the close).
        status, data, _ = _raw_http(srv.url, head.replace(b"Connection: close\r\n", b"") + body[:10])
        assert status == 408, data[:300]
        payload = json.loads(data.partition(b"\r\n\r\n")[2])
        assert payload["error"]["code"] == "body_timeout" and "0.5 s" in payload["error"]["message"]
        assert b"connection: close" in data.lower()
        # The same body in two quick parts is read normally.
        status, data, _ = _raw_http(srv.url, head + body[:10], pause_after=0.05, rest=body[10:] + b"")
        assert status == 200, data[:300]


# --- probes, loading, busy threads, abandoned requests ------------------------------------------

class _BlockingPipeline:
    """Pipeline stand-in: ``ask`` blocks until released; warm-up can block or fail."""

    def __init__(self, settings, warm_error=None, block_warm=False):
        self.settings = settings
        self.warm_error = warm_error
        self.warm_gate = threading.Event()
        if not block_warm:
            self.warm_gate.set()
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls: list[str] = []
        self._index = None

    def warm_up(self):
        self.warm_gate.wait(30)
        if self.warm_error:
            raise self.warm_error
        return self

    def health(self):
        return {"status": "ok", "model_id": "/opt/models/secret-model", "index_dir": "/srv/rag/index",
                "index": {"corpus_dir": "/srv/data/seeds", "chunks": 3}}

    def validate_question(self, question):
        return Pipeline.validate_question(self, question)

    def ask(self, question, top_k=None, mode="hybrid"):
        self.calls.append(question)
        self.started.set()
        assert self.release.wait(30), "never released"
        from rag.types import Answer

        return Answer(question=question, answer="未找到相关内容。", abstained=True, citations=(), hits=(),
                      timings_ms={})


def _post_in_thread(url: str, question: str, results: list) -> threading.Thread:
    import httpx

    def go():
        try:
            results.append(httpx.post(url + "/api/ask", json={"question": question}, timeout=30,
                                      trust_env=False).status_code)
        except Exception as err:  # recorded for the assertion
            results.append(repr(err))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _readyz(url: str) -> dict:
    import httpx

    return httpx.get(url + "/readyz", timeout=10, trust_env=False).json()


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_healthz_answers_while_every_question_thread_is_busy(settings):
    """The issue: /healthz waited in the question queue (p50 2.0 s under load). Here the only
    question thread is blocked for as long as the test wants, with two more questions queued;
    the probes still answer."""
    import httpx

    stub = _BlockingPipeline(settings)
    results: list = []
    with BackgroundServer(create_app(settings, pipeline=stub, threads=1)) as srv:
        threads = [_post_in_thread(srv.url, f"问题{i}", results) for i in range(3)]
        assert stub.started.wait(10)
        _wait_for(lambda: _readyz(srv.url)["questions"]["waiting"] == 2)
        health = httpx.get(srv.url + "/healthz", timeout=5, trust_env=False)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = _readyz(srv.url)
        assert ready["questions"]["running"] == 1 and ready["questions"]["waiting"] == 2
        assert len(stub.calls) == 1
        stub.release.set()
        for t in threads:
            t.join(20)
    assert results == [200, 200, 200] and len(stub.calls) == 3


def test_readyz_is_503_while_loading_and_questions_wait(settings):
    import httpx

    stub = _BlockingPipeline(settings, block_warm=True)
    stub.release.set()
    results: list = []
    with BackgroundServer(create_app(settings, pipeline=stub)) as srv:
        resp = httpx.get(srv.url + "/readyz", timeout=5, trust_env=False)
        assert resp.status_code == 503 and resp.json()["status"] == "loading"
        assert resp.headers["retry-after"] == "5"
        live = httpx.get(srv.url + "/healthz", timeout=5, trust_env=False).json()
        assert live["status"] == "ok" and live["ready"] is False
        waiting = _post_in_thread(srv.url, QUESTION, results)
        time.sleep(0.2)
        assert results == [] and stub.calls == []  # the question waits for the load
        stub.warm_gate.set()
        waiting.join(20)
        assert results == [200]
        ready = httpx.get(srv.url + "/readyz", timeout=5, trust_env=False)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert not _absolute_paths(ready.json())
        assert "secret-model" in ready.text and "/opt/models" not in ready.text and "/srv" not in ready.text


def test_failed_load_is_503_for_questions_and_readyz(settings):
    stub = _BlockingPipeline(settings, warm_error=ModelUnavailableError("cannot load /opt/models/x"))
    with TestClient(create_app(settings, pipeline=stub)) as c:
        _wait_for(lambda: c.get("/readyz").json()["status"] != "loading")
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert ready.json()["error"]["code"] == "ModelUnavailableError" and "/opt" not in ready.text
        err = assert_error(c.post("/api/ask", json={"question": QUESTION}), 503)
        assert err["code"] == "not_ready_failed"
        assert c.get("/healthz").json() == {**c.get("/healthz").json(), "status": "ok", "ready": False}
    assert stub.calls == []


def test_abandoned_queued_request_is_skipped(settings):
    """The issue: 100 abandoned requests were still computed. A request whose client leaves
    while it waits for the question thread never reaches the pipeline."""
    stub = _BlockingPipeline(settings)
    results: list = []
    body = json.dumps({"question": "被放弃的问题"}, ensure_ascii=False).encode()
    request = (b"POST /api/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    with BackgroundServer(create_app(settings, pipeline=stub, threads=1)) as srv:
        first = _post_in_thread(srv.url, "第一个问题", results)
        assert stub.started.wait(10)
        host, port = srv.url.rsplit("//", 1)[1].split(":")
        abandoned = [socket.create_connection((host, int(port)), timeout=10) for _ in range(5)]
        for s in abandoned:
            s.sendall(request)
        _wait_for(lambda: _readyz(srv.url)["questions"]["waiting"] == 5)
        for s in abandoned:
            s.close()
        _wait_for(lambda: _readyz(srv.url)["questions"]["skipped_client_gone"] == 5)
        stub.release.set()
        first.join(20)
        later = _post_in_thread(srv.url, "后来的问题", results)
        later.join(20)
        counts = _readyz(srv.url)["questions"]
    assert results == [200, 200]
    assert stub.calls == ["第一个问题", "后来的问题"]
    assert counts["answered"] == 2 and counts["skipped_client_gone"] == 5 and counts["waiting"] == 0


def test_stream_stops_when_the_client_leaves(settings, pipeline):
    """A streamed reply stops at the next piece once the client disconnects."""
    app = create_app(settings, pipeline=pipeline, warm=False)
    body = json.dumps({"messages": [{"role": "user", "content": QUESTION}], "stream": True},
                      ensure_ascii=False).encode()
    full_pieces = len(split_for_stream(format_content(pipeline.ask(QUESTION))))
    assert full_pieces >= 4
    sent: list[dict] = []

    async def scenario() -> None:
        import anyio

        gone = anyio.Event()
        first = True

        async def receive():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if sum(1 for m in sent if m["type"] == "http.response.body") >= 2:
                gone.set()  # the client leaves after the first content piece

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
                 "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"x"), (b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(scenario())
    bodies = [m.get("body", b"") for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["status"] == 200
    assert not any(b"[DONE]" in b for b in bodies)
    assert len(bodies) < full_pieces


# --- API key ---------------------------------------------------------------------------------

API_KEY = "sk-test/key+=;,guess"


@pytest.fixture(scope="module")
def keyed_client(settings, pipeline):
    with TestClient(create_app(settings.replace(api_key=API_KEY), pipeline=pipeline)) as c:
        wait_ready(c)
        yield c


def _bearer(key: str) -> dict:
    return {"Authorization": "Bearer " + key}


KEYED_ROUTES = [("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
                ("POST", "/api/ask", {"question": QUESTION}), ("GET", "/api/search?q=职业教育", None),
                ("GET", "/v1/models", None), ("GET", "/v1/models/liaoyuan-rag", None),
                ("GET", "/api/sources/edu_2022", None), ("GET", "/sources/edu_2022", None),
                ("GET", "/nope", None)]


def test_api_key_guards_every_route_but_probes_and_page(keyed_client):
    client = keyed_client
    key = API_KEY
    for method, url, body in KEYED_ROUTES:
        kwargs = {"json": body} if body is not None else {}
        missing = client.request(method, url, **kwargs)
        err = assert_error(missing, 401)
        assert err["code"] == "invalid_api_key" and missing.headers["www-authenticate"] == "Bearer"
        assert "needs an API key" in err["message"]
        wrong = client.request(method, url, headers=_bearer("wrong"), **kwargs)
        assert "wrong API key" in assert_error(wrong, 401)["message"]
        assert client.request(method, url, headers={"Authorization": "Basic " + key}, **kwargs).status_code == 401
        right = client.request(method, url, headers=_bearer(key), **kwargs)
        assert right.status_code == (404 if url == "/nope" else 200), (url, right.text)
    for url in ("/healthz", "/readyz", "/", "/static/app.js", "/static/style.css", "/docs", "/openapi.json"):
        assert client.get(url).status_code == 200, url
    assert client.head("/healthz").status_code == 200


def test_api_key_cookie_opens_source_pages_only(keyed_client):
    """Citation links are plain navigations: the chat page stores the key in a cookie scoped to
    /sources, which the server accepts there and nowhere else."""
    from urllib.parse import quote

    cookie = {"Cookie": "rag_api_key=" + quote(API_KEY)}
    assert keyed_client.get("/sources/edu_2022?start=0&end=4", headers=cookie).status_code == 200
    assert keyed_client.get("/sources/edu_2022", headers={"Cookie": "rag_api_key=wrong"}).status_code == 401
    assert keyed_client.get("/api/sources/edu_2022", headers=cookie).status_code == 401
    assert keyed_client.post("/api/ask", json={"question": QUESTION}, headers=cookie).status_code == 401


def test_without_a_key_any_authorization_header_is_accepted(client):
    assert client.get("/v1/models", headers=_bearer("sk-anything")).status_code == 200
    assert client.post("/api/ask", json={"question": QUESTION}, headers=_bearer("")).status_code == 200


@pytest.mark.parametrize("changes", [{"server_threads": 0}, {"body_timeout": 0.0}, {"body_timeout": -1.0}])
def test_bad_serving_settings_are_clear_errors(settings, pipeline, changes):
    from rag.errors import ConfigError

    with pytest.raises(ConfigError):
        create_app(settings.replace(**changes), pipeline=pipeline)
