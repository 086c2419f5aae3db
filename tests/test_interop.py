"""Chat-UI interop over real HTTP: the ``openai`` Python client, and the exact calls Open WebUI
makes to an OpenAI-compatible connection (``GET {base}/models``, ``POST {base}/chat/completions``
with its headers and fields). FakeEmbedder over a tiny corpus; loopback only."""

from __future__ import annotations

import json

import httpx
import pytest

from rag.config import Settings
from rag.pipeline import Pipeline
from server.app import MODEL_ID, BackgroundServer, create_app
from server.chat import format_content
from tests.fakes import FakeEmbedder

openai = pytest.importorskip("openai")

DOCS = {
    "edu_2022": "政协委员建议加快发展职业教育\n\n2022年1月10日\n\n市政协委员张明在会上建议，加快发展现代职业教育。\n"
                "他提出优化职业院校专业设置，打造“双师型”教师队伍。\n",
    "farm_2021": "乡村振兴开新局\n\n2021年3月2日\n\n2021年全市脱贫人口人均收入达到11473元，同比提高26.7%。\n"
                 "农业农村局表示，将继续推进高标准农田建设，今年新建农田5万亩。\n",
}
QUESTION = "委员对职业教育提了什么建议"
API_KEY = "sk-interop-test"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    root = tmp_path_factory.mktemp("interop")
    corpus = root / "corpus"
    corpus.mkdir()
    for doc_id, text in DOCS.items():
        (corpus / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    settings = Settings.from_env(env={}, home=root / "home", corpus_dir=corpus)
    return Pipeline(settings, embedder=FakeEmbedder(), notify=lambda msg: None).warm_up()


@pytest.fixture(scope="module", params=["open", "keyed"])
def server(request, pipeline):
    """The server without a key, and with ``RAG_API_KEY`` set (clients then send it)."""
    key = API_KEY if request.param == "keyed" else ""
    app = create_app(pipeline.settings.replace(api_key=key), pipeline=pipeline)
    with BackgroundServer(app) as srv:
        yield srv.url, key


def _client(server) -> "openai.OpenAI":
    url, key = server
    return openai.OpenAI(base_url=url + "/v1", api_key=key or "sk-unused", max_retries=0, timeout=20,
                         http_client=httpx.Client(trust_env=False))


# --- the openai client -------------------------------------------------------------------------

def test_openai_models_list(server):
    client = _client(server)
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_openai_chat_plain(server, pipeline):
    reply = _client(server).chat.completions.create(
        model=MODEL_ID, messages=[{"role": "system", "content": "你是档案助手"}, {"role": "user", "content": QUESTION}])
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content == format_content(pipeline.ask(QUESTION))
    assert "[1]" in choice.message.content
    assert reply.usage.completion_tokens == len(choice.message.content)
    extra = reply.model_extra or {}
    assert extra["abstained"] is False and extra["citations"]


def test_openai_chat_streaming_with_usage(server, pipeline):
    stream = _client(server).chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == format_content(pipeline.ask(QUESTION))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text)


def test_openai_content_parts(server):
    reply = _client(server).chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": [
        {"type": "text", "text": "委员对职业教育"}, {"type": "text", "text": "提了什么建议"}]}])
    assert reply.model_extra["question"] == QUESTION
    assert "[1]" in reply.choices[0].message.content


def test_openai_follow_up(server):
    messages = [{"role": "user", "content": "农业农村局有什么计划"},
                {"role": "assistant", "content": "农业农村局表示，将继续推进高标准农田建设。[1]"},
                {"role": "user", "content": "那农田呢？"}]
    reply = _client(server).chat.completions.create(model=MODEL_ID, messages=messages)
    assert reply.model_extra["question"] == "农业农村局有什么计划 那农田呢？"
    alone = _client(server).chat.completions.create(model=MODEL_ID, messages=[
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": "……[1]"},
        {"role": "user", "content": "人均收入多少"}])
    assert alone.model_extra["question"] == "人均收入多少"
    assert "11473元" in alone.choices[0].message.content


def test_openai_limits_and_errors(server):
    client = _client(server)
    short = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=8)
    assert short.choices[0].finish_reason == "length" and len(short.choices[0].message.content) <= 8
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], n=2)
    assert "n=2" in str(err.value)


def test_openai_wrong_key(server):
    """A wrong key is an AuthenticationError when the server has a key, and ignored otherwise."""
    url, key = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0,
                           http_client=httpx.Client(trust_env=False))
    if key:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    else:
        assert [m.id for m in client.models.list()] == [MODEL_ID]


# --- Open WebUI's calls ------------------------------------------------------------------------

def _open_webui_headers(key: str) -> dict:
    """Headers Open WebUI sends to an OpenAI connection: the Bearer key (only when one is
    configured) and, with ENABLE_FORWARD_USER_INFO_HEADERS, the user's details."""
    headers = {"Content-Type": "application/json", "X-OpenWebUI-User-Name": "Test User",
               "X-OpenWebUI-User-Id": "8a6c2a9e-user", "X-OpenWebUI-User-Email": "user@example.org",
               "X-OpenWebUI-User-Role": "user", "X-OpenWebUI-Chat-Id": "0f3c1e52-chat"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def test_open_webui_model_list_and_streamed_chat(server, pipeline):
    url, key = server
    http = httpx.Client(base_url=url + "/v1", timeout=20, trust_env=False)
    # 1. Model discovery: GET {base}/models; Open WebUI reads response["data"][*]["id"].
    models = http.get("/models", headers={k: v for k, v in _open_webui_headers(key).items()
                                          if k != "Content-Type"})
    assert models.status_code == 200
    ids = [m["id"] for m in models.json()["data"]]
    assert ids == [MODEL_ID]
    # 2. A chat turn: stream true with stream_options.include_usage forced on, the model's
    #    params, and the last message reshaped into text parts with cache_control.
    payload = {
        "model": ids[0], "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0.8, "top_p": 0.9, "max_tokens": 2048, "seed": 42,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}}]},
        ],
    }
    with http.stream("POST", "/chat/completions", content=json.dumps(payload),
                     headers=_open_webui_headers(key)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == format_content(pipeline.ask(QUESTION))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(text)
    # 3. A follow-up turn in the same chat (history as plain strings, last turn as parts).
    payload["messages"] = [
        {"role": "user", "content": "农业农村局有什么计划"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": [{"type": "text", "text": "那农田呢？", "cache_control": {"type": "ephemeral"}}]},
    ]
    payload["stream"] = False
    payload.pop("stream_options")
    reply = http.post("/chat/completions", content=json.dumps(payload), headers=_open_webui_headers(key))
    assert reply.status_code == 200 and reply.json()["question"] == "农业农村局有什么计划 那农田呢？"
