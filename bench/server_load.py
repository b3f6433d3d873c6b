"""``keel serve`` under load: many SSE clients each following its own run, plus a steady rate
of API reads, on SQLite and on Postgres.

The server is a separate process (``python -m keel.cli serve bench.server_app:app``) on a
fresh store; this process is the clients (asyncio + httpx):

* ``--clients`` clients each start one run (``POST /v1/runs``, asynchronous) of the support
  agent ("where is order A1?": a tool call, then the answer; two model requests of
  ``--delay-ms`` each) and follow it (``GET /v1/runs/{id}/events``). Each notes when every
  journal event arrives; the delivery delay is that time minus the event's ``at`` (when the
  runtime created the journal entry, same machine clock). At the end each client checks that
  it got every entry of ``GET /v1/runs/{id}/timeline`` exactly once and in order, and a
  ``result`` event with status ``completed``.
* A reader sends ``--rate`` API reads per second, open loop (each on schedule, whether or not
  the previous one answered), cycling ``GET /v1/runs?limit=20``, ``GET /v1/runs/{id}`` and
  ``GET /v1/stats``. The same reader first runs for ``--idle-s`` seconds with no other load:
  that is the baseline its figures under load are compared with.
* The server's memory is sampled from ``/proc/<pid>/status`` (``VmRSS``) every 100 ms.

    python -m bench.server_load [--clients 200] [--rate 50] [--delay-ms 50]
                                [--backend sqlite|postgres|both] [--json PATH]

Exit status 1 if an event was dropped, duplicated or out of order, a run did not complete,
or a request failed; the figures are printed either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PG_URL = os.environ.get("KEEL_BENCH_POSTGRES_URL",
                        "postgresql://postgres@127.0.0.1:5432/test")
QUESTION = "where is order A1?"
ROOT = Path(__file__).resolve().parent.parent
_READS = ("/v1/runs?limit=20", "run", "/v1/stats")


# ---------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_status(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` size field in bytes (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _proc_cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (or of its thread ``tid``) so far."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``keel serve`` of bench.server_app in a child process, on a free port."""

    def __init__(self, store: str, delay_ms: float, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "KEEL_BENCH_DELAY_MS": str(delay_ms),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "bench.server_app:app",
             "--store", store, "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keel serve exited ({self.proc.returncode}): "
                                   + self.log.read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("keel serve did not become ready in time")

    def stop(self) -> int:
        """SIGTERM, then wait for the graceful shutdown; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode

    def errors_logged(self) -> list[str]:
        """Lines of the server's log that report an error or a traceback."""
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if "ERROR" in line or line.startswith("Traceback")]


@contextlib.contextmanager
def fresh_store(backend: str, tmp: Path) -> Iterator[str]:
    """The URL of an empty store: an SQLite file in ``tmp``, or a Postgres schema of its
    own (dropped afterwards)."""
    if backend == "sqlite":
        yield str(tmp / f"bench-{uuid.uuid4().hex[:8]}.db")
        return
    import psycopg

    schema = f"keel_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}schema={schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def operator_key(store: str) -> str:
    """A new operator key of tenant ``acme``. Made before the server starts: with SQLite, a
    server does not see keys made by another process after it started (see
    tests/server/test_sqlite_other_process.py)."""
    from keel.server import KeyStore

    async with KeyStore(store) as keys:
        _, secret = await keys.create_key("acme", "operator", name="load benchmark",
                                          by="bench")
    return secret


async def exchange(server_url: str, key: str) -> str:
    """The token for ``key``."""
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as c:
        r = await c.post("/v1/auth/token", headers={"Authorization": f"Bearer {key}"})
        r.raise_for_status()
        return str(r.json()["token"])


# --------------------------------------------------------------------------- the clients


@dataclass
class Followed:
    """What one client saw of its run."""

    run_id: str = ""
    started: float = 0.0  #: when the client sent POST /v1/runs (time.time())
    stream_open: float = 0.0  #: when the event stream's response arrived
    seqs: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)  #: seconds, per journal event
    live: list[bool] = field(default_factory=list)  #: created after the stream opened
    status: str | None = None  #: of the result event
    finished: float = 0.0
    expected: list[int] = field(default_factory=list)  #: the timeline's sequence numbers
    after_result: int = 0  #: messages after the result event (there should be none)
    error: str | None = None

    def faults(self) -> dict[str, int]:
        got = Counter(self.seqs)
        wrong_order = sum(1 for a, b in zip(self.seqs, self.seqs[1:], strict=False) if b <= a)
        gaps = sum(1 for a, b in zip(self.seqs, self.seqs[1:], strict=False) if b > a + 1)
        return {"dropped": sum(1 for s in self.expected if s not in got),
                "duplicated": sum(n - 1 for n in got.values() if n > 1),
                "out_of_order": wrong_order,
                "gaps": gaps,
                "unexpected": sum(1 for s in got if s not in set(self.expected)),
                "after_result": self.after_result}


def _sse_messages(lines: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:  # a comment (": keep-alive") has no field name
            fields[name] = value[1:] if value.startswith(" ") else value
    return fields


async def follow_one(client: httpx.AsyncClient, run_ids: list[str],
                     timeout_s: float) -> Followed:
    seen = Followed(started=time.time())
    try:
        async with asyncio.timeout(timeout_s):
            r = await client.post("/v1/runs", json={"agent": "support", "input": QUESTION})
            if r.status_code != 202:
                seen.error = f"POST /v1/runs: {r.status_code} {r.text[:200]}"
                return seen
            seen.run_id = r.json()["run_id"]
            run_ids.append(seen.run_id)
            await _read_stream(client, seen)
            r = await client.get(f"/v1/runs/{seen.run_id}/timeline")
            if r.status_code != 200:
                seen.error = f"GET timeline: {r.status_code} {r.text[:200]}"
                return seen
            seen.expected = [e["seq"] for e in r.json()["journal"]]
    except TimeoutError:
        seen.error = f"gave up after {timeout_s:.0f} s"
    except httpx.HTTPError as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    return seen


async def client_loop(url: str, token: str, run_ids: list[str], until: float,
                      timeout_s: float) -> list[Followed]:
    """One client: start a run and follow it, again and again until ``until``
    (perf_counter); at least once. Each client has its own connections (one httpx pool
    for all of them spends more CPU finding a connection than on the requests)."""
    async with _client(url, token, 2) as client:
        out = [await follow_one(client, run_ids, timeout_s)]
        while time.perf_counter() < until and out[-1].error is None:
            out.append(await follow_one(client, run_ids, timeout_s))
    return out


async def _read_stream(client: httpx.AsyncClient, seen: Followed) -> None:
    async with client.stream("GET", f"/v1/runs/{seen.run_id}/events") as r:
        seen.stream_open = time.time()
        if r.status_code != 200:
            seen.error = f"GET events: {r.status_code}"
            return
        pending: list[str] = []
        async for line in r.aiter_lines():
            if line:
                pending.append(line)
                continue
            message, pending = _sse_messages(pending), []
            if seen.status is not None and message:
                seen.after_result += 1  # the stream should have ended at the result
            elif "id" in message:
                now = time.time()
                data = json.loads(message["data"])
                seen.seqs.append(int(message["id"]))
                seen.delays.append(now - float(data["at"]))
                seen.live.append(float(data["at"]) >= seen.stream_open)
            elif message.get("event") == "result":
                seen.status = json.loads(message["data"])["status"]
                seen.finished = time.time()
        if seen.status is None:
            seen.error = "the stream ended without a result event"


@dataclass
class Reads:
    """The reader's requests: latency (seconds) per path kind, and status codes."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    codes: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def all(self) -> list[float]:
        return [x for values in self.latencies.values() for x in values]


async def read_load(client: httpx.AsyncClient, rate: float, run_ids: list[str],
                    stop: asyncio.Event) -> Reads:
    """``rate`` reads a second, each sent on schedule, until ``stop``; then the stragglers."""
    out = Reads()
    pending: set[asyncio.Task[None]] = set()
    rng = random.Random(7)

    async def one(kind: str) -> None:
        path = f"/v1/runs/{rng.choice(run_ids)}" if kind == "run" else kind
        begin = time.perf_counter()
        try:
            r = await client.get(path)
        except httpx.HTTPError as exc:
            out.failures.append(f"{kind}: {type(exc).__name__}")
            return
        out.latencies.setdefault(kind, []).append(time.perf_counter() - begin)
        out.codes[r.status_code] += 1
        if r.status_code != 200:
            out.failures.append(f"{kind}: {r.status_code} {r.text[:120]}")

    t0 = time.perf_counter()
    n = 0
    while not stop.is_set():
        task = asyncio.create_task(one(_READS[n % len(_READS)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        wait = t0 + n / rate - time.perf_counter()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    if pending:
        await asyncio.wait(pending)
    return out


async def loop_lag(stop: asyncio.Event, every: float = 0.01) -> list[float]:
    """How late this process's event loop wakes up (seconds), every ``every`` s."""
    lags = []
    while not stop.is_set():
        begin = time.perf_counter()
        await asyncio.sleep(every)
        lags.append(time.perf_counter() - begin - every)
    return lags


async def rss_sampler(pid: int, stop: asyncio.Event) -> list[int]:
    samples = []
    while not stop.is_set():
        samples.append(_proc_status(pid, "VmRSS"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return samples


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: httpx builds one per client otherwise (loading
    the CA bundle takes ~25 ms, which would stall this loop for seconds at start)."""
    return ssl.create_default_context()


def _client(url: str, token: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(60.0), verify=_tls(),
        limits=httpx.Limits(max_connections=connections,
                            max_keepalive_connections=connections))


# ------------------------------------------------------------------------------ figures


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _ms(values: list[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x * 1e3, 2)
    return {"n": len(values), "p50_ms": r(pct(values, 0.5)), "p99_ms": r(pct(values, 0.99)),
            "max_ms": r(max(values) if values else None)}


async def load(url: str, token: str, *, clients: int, rate: float, server_pid: int,
               duration_s: float = 0.0, idle_s: float = 3.0,
               timeout_s: float = 300.0) -> dict[str, Any]:
    """The benchmark's core against a running server: the reader alone for ``idle_s``,
    then ``clients`` followers (each following one run after another for ``duration_s``,
    at least one) with the reader going on; the figures, and the faults."""
    stop_rss = asyncio.Event()
    rss_task = asyncio.create_task(rss_sampler(server_pid, stop_rss))
    async with _client(url, token, max(20, int(rate))) as reader:
        warm = await reader.post("/v1/runs", json={"agent": "support", "input": QUESTION,
                                                  "wait": True})
        warm.raise_for_status()
        run_ids = [warm.json()["run_id"]]
        rss_start = _proc_status(server_pid, "VmRSS")
        cpu_start = _proc_cpu_s(server_pid)
        loop_cpu_start = _proc_cpu_s(server_pid, server_pid)  # the main thread: the loop

        stop = asyncio.Event()
        idle_task = asyncio.create_task(read_load(reader, rate, run_ids, stop))
        await asyncio.sleep(idle_s)
        stop.set()
        idle = await idle_task

        stop, stop_lag = asyncio.Event(), asyncio.Event()
        lag_task = asyncio.create_task(loop_lag(stop_lag))
        reads_task = asyncio.create_task(read_load(reader, rate, run_ids, stop))
        began = time.perf_counter()
        cpu_client = time.process_time()
        until = began + duration_s
        per_client = await asyncio.gather(*(client_loop(url, token, run_ids, until, timeout_s)
                                            for _ in range(clients)))
        seen = [run for runs in per_client for run in runs]
        wall = time.perf_counter() - began
        stop.set()
        reads = await reads_task
        stop_lag.set()
        lags = await lag_task
        cpu_client = time.process_time() - cpu_client
    cpu_server = _proc_cpu_s(server_pid) - cpu_start
    cpu_loop = _proc_cpu_s(server_pid, server_pid) - loop_cpu_start
    await asyncio.sleep(0.5)  # let the server drop what the streams held
    rss_end = _proc_status(server_pid, "VmRSS")
    stop_rss.set()
    rss = await rss_task
    return _figures(seen, idle, reads, lags, wall=wall, cpu_server=cpu_server,
                    cpu_loop=cpu_loop, cpu_client=cpu_client, rss_start=rss_start, rss_end=rss_end,
                    rss_peak=max([rss_start, rss_end, *rss]),
                    rss_hwm=_proc_status(server_pid, "VmHWM"))


def _figures(seen: list[Followed], idle: Reads, reads: Reads, lags: list[float], *,
             wall: float, cpu_server: float, cpu_loop: float, cpu_client: float,
             rss_start: int,
             rss_end: int, rss_peak: int, rss_hwm: int) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    for s in seen:
        faults.update(s.faults())
    delays = [d for s in seen for d in s.delays]
    live = [d for s in seen for d, fresh in zip(s.delays, s.live, strict=True) if fresh]
    completed = [s for s in seen if s.status == "completed" and s.error is None]
    errors = Counter(s.error.split(":")[0] if s.error else f"status {s.status}"
                     for s in seen if s not in completed)
    mb = 1 / (1024 * 1024)
    return {
        "runs": len(seen), "runs_completed": len(completed),
        "events_received": sum(len(s.seqs) for s in seen),
        "events_expected": sum(len(s.expected) for s in seen),
        "faults": {k: faults[k] for k in ("dropped", "duplicated", "out_of_order", "gaps",
                                          "unexpected", "after_result")},
        "run_errors": dict(errors),
        "first_errors": [s.error for s in seen if s.error][:5],
        "api_read_idle": _ms(idle.all()),
        "api_read_load": _ms(reads.all()),
        "api_read_load_by_path": {k: _ms(v) for k, v in reads.latencies.items()},
        "api_read_codes": {str(k): v for k, v in sorted((idle.codes + reads.codes).items())},
        "api_read_failures": (idle.failures + reads.failures)[:10],
        "event_delay": _ms(delays),
        "event_delay_live": _ms(live),
        "run_wall": _ms([s.finished - s.started for s in completed]),
        "stream_open_after_post": _ms([s.stream_open - s.started for s in seen
                                       if s.stream_open]),
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu_server, 2),
        "server_loop_thread_cpu_s": round(cpu_loop, 2),
        "client_cpu_s": round(cpu_client, 2),
        "client_loop_lag": _ms(lags),
        "server_rss_mb": {"start": round(rss_start * mb, 1), "peak": round(rss_peak * mb, 1),
                          "end": round(rss_end * mb, 1), "hwm": round(rss_hwm * mb, 1)},
    }


def failed(figures: dict[str, Any]) -> list[str]:
    """What makes the run a failure (empty: none)."""
    out = [f"{n} event(s) {k.replace('_', ' ')}" for k, n in figures["faults"].items() if n]
    if figures["runs_completed"] != figures["runs"]:
        out.append(f"{figures['runs'] - figures['runs_completed']} run(s) did not "
                   f"complete: {figures['run_errors']} {figures['first_errors']}")
    if figures["api_read_failures"]:
        out.append(f"API reads failed: {figures['api_read_failures']}")
    if figures.get("server_errors"):
        out.append(f"the server logged errors: {figures['server_errors'][:3]}")
    return out


# --------------------------------------------------------------------------------- main


async def bench_backend(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with fresh_store(backend, tmp) as store:
        key = await operator_key(store)
        server = Server(store, args.delay_ms, tmp / f"server-{backend}.log")
        try:
            await asyncio.to_thread(server.wait_ready)
            token = await exchange(server.url, key)
            figures = await load(server.url, token, clients=args.clients, rate=args.rate,
                                 server_pid=server.pid, duration_s=args.duration,
                                 idle_s=args.idle_s)
        finally:
            code = server.stop()
        figures["server_exit"] = code
        figures["server_errors"] = server.errors_logged()
    return figures


def _pair(fig: dict[str, Any], key: str) -> str:
    p50, p99 = fig[key]["p50_ms"], fig[key]["p99_ms"]
    return "-" if p50 is None else f"{p50:.1f} / {p99:.1f} ms"


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    rows: list[tuple[str, list[str]]] = [
        ("runs completed", [f"{f['runs_completed']:,}/{f['runs']:,}" for f in results.values()]),
        ("journal events received (expected)",
         [f"{f['events_received']:,} ({f['events_expected']:,})" for f in results.values()]),
        ("dropped / duplicated / out of order",
         ["{dropped} / {duplicated} / {out_of_order}".format(**f["faults"])
          for f in results.values()]),
        ("API read p50 / p99, idle", [_pair(f, "api_read_idle") for f in results.values()]),
        ("API read p50 / p99, under load",
         [_pair(f, "api_read_load") for f in results.values()]),
        ("  p99 under load / idle",
         [f"{f['api_read_load']['p99_ms'] / f['api_read_idle']['p99_ms']:.1f}x"
          if f["api_read_load"]["p99_ms"] and f["api_read_idle"]["p99_ms"] else "-"
          for f in results.values()]),
        ("event delivery delay p50 / p99", [_pair(f, "event_delay") for f in results.values()]),
        ("  events created after the stream opened",
         [_pair(f, "event_delay_live") for f in results.values()]),
        ("run wall time p50 / p99 (POST to result)",
         [_pair(f, "run_wall") for f in results.values()]),
        ("all runs done in", [f"{f['wall_s']:.2f} s" for f in results.values()]),
        ("server RSS start / peak / end",
         ["{start:.0f} / {peak:.0f} / {end:.0f} MB".format(**f["server_rss_mb"])
          for f in results.values()]),
        ("server CPU (event-loop thread / other threads)",
         [f"{f['server_cpu_s']:.1f} s ({f['server_loop_thread_cpu_s']:.1f} / "
          f"{f['server_cpu_s'] - f['server_loop_thread_cpu_s']:.1f})" for f in results.values()]),
        ("client CPU / event-loop lag p99",
         [f"{f['client_cpu_s']:.1f} s / {f['client_loop_lag']['p99_ms']:.0f} ms"
          for f in results.values()]),
    ]
    width = max(len(name) for name, _ in rows)
    cols = [max(len(b), *(len(r[1][i]) for r in rows)) for i, b in enumerate(results)]
    out = [" " * width + "  " + "  ".join(b.rjust(w) for b, w in zip(results, cols,
                                                                      strict=True))]
    out += [name.ljust(width) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, cols,
                                                                            strict=True))
            for name, values in rows]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="API reads per second")
    parser.add_argument("--delay-ms", type=float, default=50.0,
                        help="the scripted model's think time per request")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds each client goes on starting and following runs "
                        "(0: one run each)")
    parser.add_argument("--idle-s", type=float, default=3.0,
                        help="seconds of API reads alone before the clients start")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": platform.python_version(), "cores": os.cpu_count(),
            "load_start": os.getloadavg()[0], "clients": args.clients, "rate": args.rate,
            "delay_ms": args.delay_ms, "duration_s": args.duration}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="keel-load-") as tmp:
        for backend in backends:
            results[backend] = asyncio.run(bench_backend(backend, args, Path(tmp)))
    info["load_end"] = os.getloadavg()[0]
    print(f"keel serve under load: {args.clients} SSE clients following runs for "
          f"{args.duration:g} s, "
          f"{args.rate:g} API reads/s, model {args.delay_ms:g} ms per request "
          f"({info['cores']} cores, load {info['load_start']:.1f} -> {info['load_end']:.1f})")
    print("\n".join(table(results)))
    problems = {b: failed(f) for b, f in results.items()}
    for backend, found in problems.items():
        for problem in found:
            print(f"FAIL {backend}: {problem}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
