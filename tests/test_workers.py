"""``rag serve --workers N``: real processes on loopback. The fast tests run the same
:func:`server.run.serve` with the FakeEmbedder (``tests/serve_fake.py``); the slow one runs the
installed ``rag serve`` with the real model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rag.config import PROJECT_ROOT, Settings
from server.run import settings_env

from .conftest import write_corpus

QUESTION = "梅花鹿存栏量有多少"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out |= {int(p) for p in text}
    return out


def _ready_pids(url: str, count: int, timeout: float, proc: subprocess.Popen) -> set[int]:
    """Poll ``/readyz`` until ``count`` different worker pids have answered 200."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert proc.poll() is None, proc.stderr.read().decode("utf-8", "replace")
        assert time.monotonic() < deadline, f"only {seen} ready"
        try:
            with httpx.Client(trust_env=False, timeout=5) as c:  # new connections reach other workers
                resp = c.get(url + "/readyz")
            if resp.status_code == 200:
                seen.add(resp.json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return seen


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture
def fake_server_env(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    env = {**os.environ, **settings_env(Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus,
                                                          chunk_size=60, chunk_overlap=0)),
           "PYTHONPATH": str(PROJECT_ROOT)}
    return env


def _start_fake(env: dict, workers: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.serve_fake", str(port), str(workers)], env=env,
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def test_settings_round_trip_through_the_environment(tmp_path):
    settings = Settings.from_env(env={}, home=tmp_path / "h", corpus_dir=tmp_path / "c", top_k=7,
                                 dense_weight=0.3, api_key="k", workers=3, index_dir=None)
    assert Settings.from_env(env=settings_env(settings)) == settings
    with_dir = settings.replace(index_dir=tmp_path / "idx")
    assert Settings.from_env(env=settings_env(with_dir)) == with_dir


def test_two_workers_build_the_index_once_answer_and_survive_a_kill(fake_server_env):
    """Two workers share the port; the index is built once, by the preparing child, before any
    worker starts. Crash safety: after SIGKILL of one worker the supervisor starts a new one,
    which loads (never builds) the index. A second start rebuilds nothing."""
    proc, url = _start_fake(fake_server_env, workers=2)
    try:
        pids = _ready_pids(url, 2, timeout=120, proc=proc)
        assert pids <= _children(proc.pid) and os.getpid() not in pids and proc.pid not in pids
        for _ in range(6):
            with httpx.Client(trust_env=False, timeout=10) as c:
                resp = c.post(url + "/api/ask", json={"question": QUESTION})
            assert resp.status_code == 200 and resp.json()["hits"]
        health = httpx.get(url + "/healthz", timeout=5, trust_env=False).json()
        assert health["status"] == "ok" and health["pid"] in pids

        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while victim in _children(proc.pid) or not (_children(proc.pid) - pids):
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.1)
        ready = _ready_pids(url, 2, timeout=120, proc=proc)
        assert victim not in ready
        resp = httpx.post(url + "/api/ask", json={"question": QUESTION}, timeout=10, trust_env=False)
        assert resp.status_code == 200
    finally:
        status = _stop(proc)
    stderr = proc.stderr.read().decode("utf-8", "replace")
    assert stderr.count("building the store of") == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert status == 0

    proc, url = _start_fake(fake_server_env, workers=2)
    try:
        _ready_pids(url, 2, timeout=120, proc=proc)
    finally:
        _stop(proc)
    assert "building the store of" not in proc.stderr.read().decode("utf-8", "replace")


def test_a_bad_corpus_stops_serve_before_any_worker_starts(tmp_path, fake_server_env):
    env = {**fake_server_env, "RAG_CORPUS_DIR": str(tmp_path / "missing")}
    proc, _ = _start_fake(env, workers=2)
    status = proc.wait(timeout=120)
    stderr = proc.stderr.read().decode("utf-8", "replace")
    assert status == 2 and "error:" in stderr and "missing" in stderr, stderr
    assert "Traceback" not in stderr


def _per_worker(url: str, pids: set[int], path: str, params: dict) -> dict[int, dict]:
    """``GET path`` answered by each worker: one new connection per try, its pid read from
    ``/healthz`` on the same (kept-alive) connection."""
    out: dict[int, dict] = {}
    deadline = time.monotonic() + 60
    while set(out) != pids:
        assert time.monotonic() < deadline, f"only {set(out)} of {pids} answered"
        with httpx.Client(trust_env=False, timeout=10) as c:
            pid = c.get(url + "/healthz").json()["pid"]
            resp = c.get(url + path, params=params)
            assert resp.status_code == 200 and c.get(url + "/healthz").json()["pid"] == pid
            out[pid] = resp.json()
    return out


def test_workers_see_cli_changes_without_restart_and_answer_during_an_ingest(fake_server_env, tmp_path):
    """Review of issue 10: every worker process of ``serve --workers 2`` keeps answering while a
    separate ``rag add`` process writes, then sees its documents, and later their removal by
    ``rag remove``, without a restart."""
    more = tmp_path / "more"
    more.mkdir()
    for i in range(4):
        (more / f"late{i}.txt").write_text(f"补充{i}\n\n第{i}号补充材料说明鹿苑新建{i + 2}处。\n", encoding="utf-8")
    late = {f"late{i}" for i in range(4)}
    proc, url = _start_fake(fake_server_env, workers=2)
    cli = [sys.executable, "-m", "tests.fake_cli"]
    try:
        pids = _ready_pids(url, 2, timeout=120, proc=proc)
        writer = subprocess.Popen(cli + ["add", str(more)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env={**fake_server_env, "RAG_TEST_PAUSE_S": "0.6"})
        answered = set()
        while writer.poll() is None:
            with httpx.Client(trust_env=False, timeout=10) as c:
                pid = c.get(url + "/healthz").json()["pid"]
                resp = c.post(url + "/api/ask", json={"question": QUESTION})
            assert resp.status_code == 200 and resp.json()["hits"]
            answered.add(pid)
        assert writer.wait(60) == 0, writer.stderr.read()
        assert answered, "no question was answered during the ingest"
        seen = _per_worker(url, pids, "/api/search", {"q": "鹿苑新建", "mode": "bm25"})
        assert all({h["doc_id"] for h in body["hits"]} == late for body in seen.values()), seen
        listed = _per_worker(url, pids, "/api/documents", {})
        assert all(late <= {d["doc_id"] for d in body} for body in listed.values())
        done = subprocess.run(cli + ["remove", *sorted(late)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              env=fake_server_env, timeout=120)
        assert done.returncode == 0, done.stderr
        gone = _per_worker(url, pids, "/api/search", {"q": "鹿苑新建", "mode": "bm25"})
        assert all(not {h["doc_id"] for h in body["hits"]} & late for body in gone.values()), gone
    finally:
        _stop(proc)


@pytest.mark.slow
def test_rag_serve_two_workers_with_the_real_model():
    """The installed ``rag serve --workers 2``: both workers load the real model and answer the
    product card's example with citations; each worker's memory is printed."""
    rag = PROJECT_ROOT / ".venv" / "bin" / "rag"
    cmd = [str(rag)] if rag.exists() else [sys.executable, "-m", "rag"]
    port = _free_port()
    proc = subprocess.Popen(cmd + ["serve", "--workers", "2", "--port", str(port), "--log-level", "warning"],
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        pids = _ready_pids(url, 2, timeout=900, proc=proc)
        resp = httpx.post(url + "/api/ask", json={"question": "委员对职业教育提了什么建议"}, timeout=60,
                          trust_env=False)
        assert resp.status_code == 200
        body = resp.json()
        assert body["citations"] and not body["abstained"]
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
            print(f"worker {pid}: RSS {int(rss) / 1024:.0f} MiB")
    finally:
        status = _stop(proc)
    assert status == 0, proc.stderr.read().decode("utf-8", "replace")
