"""Bounded loopback load test of ``rag serve``: throughput and latency for 1 and N worker
processes in the same run, ``/healthz`` latency under that load, memory per worker, and the
cost of abandoned requests.

For each worker count it starts the server (``rag serve --workers N``, or with ``--fake`` the
same serving code with the FakeEmbedder) on 127.0.0.1 and a free port, waits until every worker
reports ready on ``/readyz``, and then:

1. sends ``--requests`` POSTs to ``/api/ask`` (questions of ``eval/gold.jsonl``, cycled) with
   ``--concurrency`` in flight, each on a new connection (so the kernel spreads them over the
   workers, as it does for separate clients), stopping after ``--time-limit`` seconds at the
   latest; meanwhile a prober GETs ``/healthz`` every ``--probe-interval`` seconds;
2. reads each worker's RSS and PSS (``/proc/<pid>/status``, ``smaps_rollup``; PSS shares pages
   that workers have in common, such as library code, between them);
3. measures one idle request, then opens ``--abandon`` connections that each send a question and
   hang up after ``--abandon-after`` seconds, and times the next real request (and counts, from
   the workers' ``/readyz`` counters, how many of those were computed and how many skipped).

The configurations run side by side and the load is sent in ``--rounds`` interleaved rounds, so
background load on a shared machine falls on each alike. The report also gives the CPU the
workers used (cores busy on average, CPU ms per request) and, after the run, how many cores one
and two busy-looping processes get: on a machine shared with other jobs that is the ceiling
for the worker-count ratio.

Usage::

    .venv/bin/python eval/load_test.py                          # real model, 1 vs 2 workers, c=8
    .venv/bin/python eval/load_test.py --fake -n 100            # FakeEmbedder (tests/serve_fake.py)
    .venv/bin/python eval/load_test.py --url http://127.0.0.1:8000 --json   # load only, running server

The load generator runs on the same machine as the server: on a 2-core machine it takes CPU from
it, so compare ratios measured in one run.

Exit status: 0 when every request got a 200, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
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


def _summary(latencies_ms: Sequence[float]) -> dict:
    lat = sorted(latencies_ms)
    return {"n": len(lat), "p50": round(_percentile(lat, 50), 1), "p95": round(_percentile(lat, 95), 1),
            "max": round(lat[-1], 1) if lat else 0.0,
            "mean": round(sum(lat) / len(lat), 1) if lat else 0.0}


async def run_load(url: str, questions: Sequence[str], requests: int = 200, concurrency: int = 8,
                   time_limit: float = 300.0, request_timeout: float = 60.0, path: str = "/api/ask",
                   keep_alive: bool = True) -> dict:
    """Send ``requests`` POSTs of ``{"question": q}`` to ``url + path``, ``concurrency`` at once.

    Stops issuing requests once ``time_limit`` seconds have passed (requests not sent count as
    ``not_sent``); in-flight ones are cancelled at ``time_limit + request_timeout`` at the latest.

    Args:
        keep_alive: Reuse connections; False opens a new connection per request.

    Returns:
        ``{"url", "requests", "completed", "errors", "not_sent", "status_counts", "concurrency",
        "wall_s", "throughput_rps", "latency_ms": {"n", "p50", "p95", "max", "mean"}}``;
        ``errors`` counts non-200 responses and transport failures.
    """
    import httpx

    latencies: list[float] = []
    status_counts: dict[str, int] = {}
    counter = iter(range(requests))
    started = time.perf_counter()
    cpu_started = time.process_time()  # this process: load generator and /healthz prober
    deadline = started + time_limit
    limits = httpx.Limits(max_connections=concurrency,
                          max_keepalive_connections=concurrency if keep_alive else 0)

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
    client_cores = (time.process_time() - cpu_started) / wall if wall > 0 else 0.0
    not_sent = status_counts.pop("not_sent", 0)
    completed = sum(status_counts.values())
    ok = status_counts.get("200", 0)
    return {"url": url + path, "requests": requests, "concurrency": concurrency,
            "completed": completed, "errors": completed - ok + (requests - completed - not_sent),
            "not_sent": not_sent, "status_counts": status_counts, "wall_s": round(wall, 3),
            "throughput_rps": round(completed / wall, 2) if wall > 0 else 0.0,
            "latency_ms": _summary(latencies), "samples_ms": latencies,
            "client_cpu_cores": round(client_cores, 2)}


async def probe_health(url: str, stop: asyncio.Event, interval: float = 0.05) -> dict:
    """GET ``/healthz`` on a new connection every ``interval`` seconds until ``stop`` is set,
    as a liveness probe does. Returns the latency summary (ms) and the non-200 count."""
    import httpx

    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits, trust_env=False) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = (await client.get("/healthz")).status_code == 200
            except Exception:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000.0)
            failures += not ok
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
    return {**_summary(latencies), "failures": failures, "samples_ms": latencies}


async def load_with_probe(url: str, questions: Sequence[str], requests: int, concurrency: int,
                          time_limit: float, probe_interval: float, keep_alive: bool = False) -> dict:
    """:func:`run_load` with :func:`probe_health` running alongside; adds ``"healthz_ms"``."""
    stop = asyncio.Event()
    probe = asyncio.create_task(probe_health(url, stop, probe_interval))
    try:
        report = await run_load(url, questions, requests, concurrency, time_limit, keep_alive=keep_alive)
    finally:
        stop.set()
    report["healthz_ms"] = await probe
    return report


async def _one_request_ms(url: str, question: str) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:
        t0 = time.perf_counter()
        resp = await client.post("/api/ask", json={"question": question})
        resp.raise_for_status()
        return (time.perf_counter() - t0) * 1000.0


async def abandoned_requests(url: str, questions: Sequence[str], count: int = 100,
                             hold_s: float = 0.5) -> dict:
    """Idle latency of one request, then ``count`` clients that send a question and hang up
    after ``hold_s`` seconds, then the latency of the next real request.

    Returns:
        ``{"abandoned", "hold_s", "idle_ms", "next_ms", "next_over_idle"}`` (idle: median of 5).
    """
    host, port = url.rsplit("//", 1)[1].split(":")
    idle = sorted([await _one_request_ms(url, questions[i % len(questions)]) for i in range(5)])[2]
    writers = []
    for i in range(count):
        body = json.dumps({"question": questions[i % len(questions)]}, ensure_ascii=False).encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/ask HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers))
    await asyncio.sleep(hold_s)
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    after = await _one_request_ms(url, questions[0])
    return {"abandoned": count, "hold_s": hold_s, "idle_ms": round(idle, 1), "next_ms": round(after, 1),
            "next_over_idle": round(after / idle, 2) if idle > 0 else None}


# --- server processes -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _kib(path: str, field: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time used so far by ``pids`` (``/proc/<pid>/stat`` fields 14 and 15)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cores_available(processes: int, seconds: float = 2.0) -> float:
    """CPU cores that ``processes`` busy-looping processes get together right now (CPU time /
    wall time): on a shared machine the ceiling for ``processes`` workers."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_burn, args=(seconds,)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    pids = [proc.pid for proc in procs]
    time.sleep(0.2)  # past interpreter start-up
    t0, c0 = time.perf_counter(), cpu_seconds(pids)
    time.sleep(seconds - 0.6)
    used, wall = cpu_seconds(pids) - c0, time.perf_counter() - t0
    for proc in procs:
        proc.join()
    return round(used / wall, 2)


def memory_mib(pid: int) -> dict:
    """RSS and PSS of one process in MiB (Linux ``/proc``)."""
    rss, pss = _kib(f"/proc/{pid}/status", "VmRSS"), _kib(f"/proc/{pid}/smaps_rollup", "Pss")
    return {"pid": pid, "rss_mib": round(rss / 1024, 1) if rss else None,
            "pss_mib": round(pss / 1024, 1) if pss else None}


def _ready_pids(url: str, count: int, timeout: float, proc: subprocess.Popen) -> set[int]:
    """Poll ``/readyz`` on new connections until ``count`` worker pids answered 200."""
    import httpx

    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {count} workers were ready after {timeout:.0f} s")
        try:
            with httpx.Client(timeout=5, trust_env=False) as client:
                resp = client.get(url + "/readyz")
            if resp.status_code == 200:
                seen.add(resp.json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return seen


def start_server(workers: int, fake: bool, startup_timeout: float, home: Path | None = None,
                 server_nice: int = 0) -> tuple[subprocess.Popen, str, set[int]]:
    """Start ``rag serve --workers N`` (or the fake-embedder equivalent) and wait until every
    worker is ready.

    ``server_nice`` > 0 runs the server at that lower scheduling priority (``os.nice`` in the
    child), so a load generator sharing the machine's cores is served first and behaves more
    like a client on another machine.

    Returns:
        ``(process, base url, worker pids)``.

    Raises:
        RuntimeError: the server exited or was not ready within ``startup_timeout`` seconds.
    """
    port = _free_port()
    env = dict(os.environ)
    if fake:
        cmd = [sys.executable, "-m", "tests.serve_fake", str(port), str(workers)]
        env["RAG_HOME"] = str(home)  # keep the fake index away from the real one
        env.pop("RAG_INDEX_DIR", None)
        env["PYTHONPATH"] = str(ROOT)
    else:
        cmd = [sys.executable, "-m", "rag", "serve", "--workers", str(workers), "--port", str(port),
               "--log-level", "warning"]
    preexec = (lambda: os.nice(server_nice)) if server_nice > 0 else None
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, preexec_fn=preexec)
    url = f"http://127.0.0.1:{port}"
    try:
        pids = _ready_pids(url, workers, startup_timeout, proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url, pids


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server (SIGINT, then kill after 20 s)."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def question_counts(url: str, pids: set[int], tries: int = 60) -> dict:
    """Sum of the ``/readyz`` question counters over the workers in ``pids`` (polled on new
    connections until each worker has answered, at most ``tries`` times)."""
    import httpx

    latest: dict[int, dict] = {}
    for _ in range(tries):
        try:
            with httpx.Client(timeout=5, trust_env=False) as client:
                body = client.get(url + "/readyz").json()
            latest[body["pid"]] = body["questions"]
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if set(latest) >= pids:
            break
    keys = ("answered", "skipped_client_gone")
    return {k: sum(c.get(k, 0) for c in latest.values()) for k in keys} | {"workers_seen": len(latest)}


def merge_rounds(rounds: Sequence[dict]) -> dict:
    """One report from several :func:`load_with_probe` rounds against the same server:
    throughput = all completed requests / summed wall time; percentiles over all samples."""
    first = rounds[0]
    samples = [x for r in rounds for x in r["samples_ms"]]
    probes = [x for r in rounds for x in r["healthz_ms"]["samples_ms"]]
    status: dict[str, int] = {}
    for r in rounds:
        for k, v in r["status_counts"].items():
            status[k] = status.get(k, 0) + v
    wall = sum(r["wall_s"] for r in rounds)
    completed = sum(r["completed"] for r in rounds)
    return {"url": first["url"], "concurrency": first["concurrency"], "rounds": len(rounds),
            "requests": sum(r["requests"] for r in rounds), "completed": completed,
            "errors": sum(r["errors"] for r in rounds), "not_sent": sum(r["not_sent"] for r in rounds),
            "status_counts": status, "wall_s": round(wall, 3),
            "throughput_rps": round(completed / wall, 2) if wall > 0 else 0.0,
            "round_throughput_rps": [r["throughput_rps"] for r in rounds],
            "client_cpu_cores": round(sum(r["client_cpu_cores"] * r["wall_s"] for r in rounds) / wall, 2)
            if wall > 0 else 0.0,
            "latency_ms": _summary(samples),
            "healthz_ms": {**_summary(probes), "failures": sum(r["healthz_ms"]["failures"] for r in rounds)}}


def measure(args: argparse.Namespace, questions: Sequence[str], home: Path) -> list[dict]:
    """Start one server per worker count (all kept running, idle ones use no CPU), then send the
    load in ``--rounds`` interleaved rounds (1 worker, 2 workers, 1 worker, ...), so that load
    from other processes on a shared machine falls on every configuration alike. Then memory
    and the abandoned-request test, one server at a time."""
    servers = []
    try:
        for workers in args.workers:  # one after the other: the first start builds the index
            proc, url, pids = start_server(workers, args.fake, args.startup_timeout, home, args.server_nice)
            servers.append((workers, proc, url, pids))
        for workers, _, url, _ in servers:  # warm-up: every worker has answered a few questions
            asyncio.run(run_load(url, questions, requests=4 * workers * args.concurrency,
                                 concurrency=args.concurrency, time_limit=60, keep_alive=False))
        per_round = max(1, args.requests // args.rounds)
        rounds: dict[int, list[dict]] = {w: [] for w, *_ in servers}
        cpu: dict[int, float] = {w: 0.0 for w, *_ in servers}
        for _ in range(args.rounds):
            for workers, _, url, pids in servers:
                before = cpu_seconds(sorted(pids))
                rounds[workers].append(asyncio.run(load_with_probe(
                    url, questions, per_round, args.concurrency, args.time_limit / args.rounds,
                    args.probe_interval, keep_alive=args.keep_alive)))
                cpu[workers] += cpu_seconds(sorted(pids)) - before
        reports = []
        for workers, proc, url, pids in servers:
            report = merge_rounds(rounds[workers])
            report["workers"] = workers
            # How much CPU the workers got: on a shared machine throughput follows this.
            report["cpu"] = {"seconds": round(cpu[workers], 2),
                             "cores_used": round(cpu[workers] / report["wall_s"], 2) if report["wall_s"] else None,
                             "ms_per_request": round(1000 * cpu[workers] / report["completed"], 1)
                             if report["completed"] else None}
            report["memory"] = {"workers": [memory_mib(pid) for pid in sorted(pids)],
                                "supervisor": memory_mib(proc.pid) if workers > 1 else None}
            if args.abandon:
                before = question_counts(url, pids)
                report["abandon"] = asyncio.run(abandoned_requests(url, questions, args.abandon,
                                                                   args.abandon_after))
                after = question_counts(url, pids)
                # The idle and next requests (6) are answered too.
                report["abandon"]["computed"] = after["answered"] - before["answered"] - 6
                report["abandon"]["skipped"] = after["skipped_client_gone"] - before["skipped_client_gone"]
            reports.append(report)
        return reports
    finally:
        for _, proc, _, _ in servers:
            stop_server(proc)


def format_report(report: dict) -> str:
    """One human-readable block for one configuration."""
    lat = report["latency_ms"]
    head = f"workers={report['workers']}: " if "workers" in report else ""
    rounds = (f" (rounds: {', '.join(f'{x:.1f}' for x in report['round_throughput_rps'])})"
              if "round_throughput_rps" in report else "")
    lines = [f"{head}{report['completed']}/{report['requests']} requests at concurrency {report['concurrency']} "
             f"in {report['wall_s']:.2f} s: throughput {report['throughput_rps']:.1f} req/s{rounds}, "
             f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms",
             f"  errors {report['errors']} (status counts {report['status_counts']}, not sent {report['not_sent']})"]
    if "healthz_ms" in report:
        h = report["healthz_ms"]
        lines.append(f"  /healthz under load: p50 {h['p50']:.1f} ms, p95 {h['p95']:.1f} ms, max {h['max']:.1f} ms "
                     f"({h['n']} probes, {h['failures']} failed)")
    if "cpu" in report:
        c = report["cpu"]
        lines.append(f"  server CPU: {c['cores_used']} cores busy on average, {c['ms_per_request']} ms CPU per request;"
                     f" load generator {report.get('client_cpu_cores', '?')} cores")
    if "memory" in report:
        mem = report["memory"]
        per = ", ".join(f"RSS {m['rss_mib']:.0f} MiB / PSS {m['pss_mib']:.0f} MiB" for m in mem["workers"])
        sup = mem.get("supervisor")
        lines.append(f"  memory per worker: {per}"
                     + (f"; supervisor RSS {sup['rss_mib']:.0f} MiB" if sup else ""))
    if "abandon" in report:
        a = report["abandon"]
        lines.append(f"  {a['abandoned']} abandoned requests (hang up after {a['hold_s']} s): next request "
                     f"{a['next_ms']:.0f} ms vs idle {a['idle_ms']:.0f} ms ({a['next_over_idle']}x); "
                     f"{a.get('computed', '?')} computed, {a.get('skipped', '?')} skipped")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="only the load run, against this running server")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("-n", "--requests", type=int, default=200, help="measured requests per configuration")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the requests are split into")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds; stop sending after it")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between /healthz probes")
    parser.add_argument("--abandon", type=int, default=100, help="abandoned requests (0: skip that part)")
    parser.add_argument("--abandon-after", type=float, default=0.5, help="seconds before those clients hang up")
    parser.add_argument("--keep-alive", action="store_true", help="reuse connections (default: one per request)")
    parser.add_argument("--startup-timeout", type=float, default=900.0,
                        help="seconds to wait for the workers (the first run builds the index)")
    parser.add_argument("--server-nice", type=int, default=0,
                        help="run the server at this nice level (>0: the load generator on the same "
                             "cores is scheduled first, like a client on another machine)")
    parser.add_argument("--fake", action="store_true", help="serve with the FakeEmbedder (no model)")
    parser.add_argument("--gold", type=Path, help="questions from this JSONL (default eval/gold.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.rounds, *args.workers) < 1:
        parser.error("--requests, --concurrency, --rounds and --workers must be >= 1")
    questions = load_questions(args.gold)
    if args.url:
        reports = [asyncio.run(load_with_probe(args.url.rstrip("/"), questions, args.requests, args.concurrency,
                                               args.time_limit, args.probe_interval, args.keep_alive))]
    else:
        with tempfile.TemporaryDirectory(prefix="rag-load-") as tmp:
            reports = measure(args, questions, Path(tmp))
    summary: dict = {"configurations": reports, "fake": args.fake,
                     "command": " ".join([Path(sys.argv[0]).name] + list(argv if argv is not None else sys.argv[1:]))}
    if not args.url:
        summary["cores_available"] = {str(n): cores_available(n) for n in sorted(set(args.workers))}
    by_workers = {r.get("workers"): r for r in reports}
    base = by_workers.get(min(args.workers)) if not args.url else None
    if base and len(reports) > 1:
        summary["throughput_ratio"] = {str(w): round(r["throughput_rps"] / base["throughput_rps"], 2)
                                       for w, r in by_workers.items() if base["throughput_rps"]}
    for r in reports:  # raw samples are for merging only
        r.pop("samples_ms", None)
        r.get("healthz_ms", {}).pop("samples_ms", None)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=1))
    else:
        print("\n".join(format_report(r) for r in reports))
        if "cores_available" in summary:
            print("CPU available after the run (busy-loop processes): " + ", ".join(
                f"{n} process(es) {c} cores" for n, c in summary["cores_available"].items()))
        if "throughput_ratio" in summary:
            print("throughput ratio vs {} worker(s): {}".format(
                min(args.workers), ", ".join(f"{w} workers {x}x" for w, x in summary["throughput_ratio"].items())))
    failed = any(r["errors"] or r["not_sent"] for r in reports)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
