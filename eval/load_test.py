"""Bounded loopback load test of ``POST /api/ask``.

Starts the server (the same app as ``rag serve``) in a subprocess on 127.0.0.1 and a free port,
or targets ``--url``; sends ``--requests`` questions (from ``eval/gold.jsonl``, cycled) with at
most ``--concurrency`` in flight using an httpx async client; stops by itself after
``--time-limit`` seconds at the latest; prints throughput, p50/p95 latency and the error count.

Usage::

    .venv/bin/python eval/load_test.py                        # real model, 200 requests, 16 at once
    .venv/bin/python eval/load_test.py --fake -n 100 -c 8     # FakeEmbedder (tests/fakes.py)
    .venv/bin/python eval/load_test.py --url http://127.0.0.1:8000 --json

Exit status: 0 when every request got a 200, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Used when no gold file is found.
FALLBACK_QUESTIONS = (
    "委员对职业教育提了什么建议",
    "2021年辽源全市脱贫人口人均收入达到多少元？",
    "政协委员如何推动乡村振兴？",
    "市政协九届一次会议期间秦勇说了什么？",
    "火星上有没有水？",
)


def load_questions(gold: Path | None = None) -> list[str]:
    """Questions of a gold JSONL file (field ``question``), else :data:`FALLBACK_QUESTIONS`."""
    path = gold or ROOT / "eval" / "gold.jsonl"
    questions: list[str] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                q = json.loads(line).get("question")
                if isinstance(q, str) and q.strip():
                    questions.append(q)
    return questions or list(FALLBACK_QUESTIONS)


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 100]) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(round(p / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1]


async def run_load(url: str, questions: Sequence[str], requests: int = 200, concurrency: int = 16,
                   time_limit: float = 300.0, request_timeout: float = 60.0,
                   path: str = "/api/ask") -> dict:
    """Send ``requests`` POSTs of ``{"question": q}`` to ``url + path``, ``concurrency`` at once.

    Stops issuing requests once ``time_limit`` seconds have passed (requests not sent count as
    ``not_sent``); in-flight ones are cancelled at ``time_limit + request_timeout`` at the latest.

    Returns:
        ``{"requests", "completed", "errors", "not_sent", "status_counts", "concurrency",
        "wall_s", "throughput_rps", "latency_ms": {"p50", "p95", "max", "mean"}}``; ``errors``
        counts non-200 responses and transport failures.
    """
    import httpx

    latencies: list[float] = []
    status_counts: dict[str, int] = {}
    counter = iter(range(requests))
    started = time.perf_counter()
    deadline = started + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                status_counts["not_sent"] = status_counts.get("not_sent", 0) + 1
                continue
            q = questions[i % len(questions)]
            t0 = time.perf_counter()
            try:
                resp = await client.post(path, json={"question": q})
                key = str(resp.status_code)
                if resp.status_code == 200:
                    resp.json()  # the whole body arrived and parses
            except Exception as err:  # transport errors are counted, not raised
                key = type(err).__name__
            latencies.append((time.perf_counter() - t0) * 1000.0)
            status_counts[key] = status_counts.get(key, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=request_timeout, limits=limits,
                                 trust_env=False) as client:
        tasks = [asyncio.create_task(worker(client)) for _ in range(max(1, concurrency))]
        done, pending = await asyncio.wait(tasks, timeout=time_limit + request_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - started
    not_sent = status_counts.pop("not_sent", 0)
    completed = sum(status_counts.values())
    ok = status_counts.get("200", 0)
    lat = sorted(latencies)
    return {"url": url + path, "requests": requests, "concurrency": concurrency,
            "completed": completed, "errors": completed - ok + (requests - completed - not_sent),
            "not_sent": not_sent, "status_counts": status_counts, "wall_s": round(wall, 3),
            "throughput_rps": round(completed / wall, 2) if wall > 0 else 0.0,
            "latency_ms": {"p50": round(_percentile(lat, 50), 1), "p95": round(_percentile(lat, 95), 1),
                           "max": round(lat[-1], 1) if lat else 0.0,
                           "mean": round(sum(lat) / len(lat), 1) if lat else 0.0}}


def format_report(report: dict) -> str:
    """One human-readable block."""
    lat = report["latency_ms"]
    return (f"{report['url']}: {report['completed']}/{report['requests']} requests at concurrency "
            f"{report['concurrency']} in {report['wall_s']:.2f} s\n"
            f"  throughput {report['throughput_rps']:.1f} req/s, latency p50 {lat['p50']:.0f} ms, "
            f"p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms\n"
            f"  errors {report['errors']} (status counts {report['status_counts']}, "
            f"not sent {report['not_sent']})")


# --- server subprocess ----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int, fake: bool) -> None:
    """Child process: the ``rag serve`` app (optionally with the FakeEmbedder) on ``port``."""
    import dataclasses
    import tempfile

    import uvicorn

    from rag.config import Settings
    from rag.pipeline import Pipeline
    from server.app import create_app

    settings = Settings.from_env()
    embedder = None
    with tempfile.TemporaryDirectory(prefix="rag-load-") as tmp:
        if fake:
            from tests.fakes import FakeEmbedder

            embedder = FakeEmbedder()
            # Keep the fake index away from the real one.
            settings = dataclasses.replace(settings, home=Path(tmp), index_dir=None)
        app = create_app(settings, pipeline=Pipeline(settings, embedder=embedder))
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_server(fake: bool, startup_timeout: float) -> tuple[subprocess.Popen, str]:
    """Start :func:`_serve` in a subprocess and wait until ``/healthz`` answers.

    Raises:
        RuntimeError: the server exited or did not answer within ``startup_timeout`` seconds.
    """
    import httpx

    port = _free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_serve", str(port)] + (["--fake"] if fake else [])
    proc = subprocess.Popen(cmd, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=5, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError(f"the server did not start within {startup_timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate the server subprocess (kill after 10 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="target this running server instead of starting one")
    parser.add_argument("-n", "--requests", type=int, default=200)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds; stop sending after it")
    parser.add_argument("--startup-timeout", type=float, default=900.0,
                        help="seconds to wait for the started server (the first run builds the index)")
    parser.add_argument("--fake", action="store_true", help="serve with the FakeEmbedder (no model)")
    parser.add_argument("--gold", type=Path, help="questions from this JSONL (default eval/gold.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--_serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._serve:
        _serve(args._serve, args.fake)
        return 0
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    questions = load_questions(args.gold)
    proc = None
    url = args.url
    if not url:
        proc, url = start_server(args.fake, args.startup_timeout)
    try:
        report = asyncio.run(run_load(url.rstrip("/"), questions, args.requests, args.concurrency,
                                      args.time_limit))
    finally:
        if proc is not None:
            stop_server(proc)
    report["server"] = "fake embedder" if args.fake and proc else ("started" if proc else "external")
    print(json.dumps(report, ensure_ascii=False, indent=1) if args.json else format_report(report))
    return 0 if report["errors"] == 0 and report["not_sent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
