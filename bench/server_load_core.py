"""The core of bench/server_load.py: the SSE clients and their checks, the API reader, the
samplers of the server's memory and CPU and of this process's event-loop lag, and the
figures. :func:`load` runs it against a server that is already up (the smoke test in
tests/server/test_load_smoke.py calls it too)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

QUESTION = "where is order A1?"
_READS = ("/v1/runs?limit=20", "run", "/v1/stats")


# ------------------------------------------------------------------------- /proc of the server


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
    """Start a run, follow its events to the end, read its timeline: what was seen."""
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
            seen.expected = sorted(e["seq"] for e in r.json()["journal"])  # commit order
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


class Readers:
    """HTTP clients for the reader, one connection each: a read takes an idle one or makes
    a new one, so it never waits for a connection here (it waits in the server), and no
    client has a pool of hundreds of connections to search."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._idle:
            client = self._idle.pop()
        else:
            client = _client(self.url, self.token, 1)
            self._all.append(client)
        try:
            yield client
        finally:
            self._idle.append(client)

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._all))


async def read_load(readers: Readers, rate: float, run_ids: list[str],
                    stop: asyncio.Event) -> Reads:
    """``rate`` reads a second, each sent on schedule, until ``stop``; then the stragglers."""
    out = Reads()
    pending: set[asyncio.Task[None]] = set()
    rng = random.Random(7)

    async def one(kind: str) -> None:
        path = f"/v1/runs/{rng.choice(run_ids)}" if kind == "run" else kind
        async with readers.client() as client:
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


def _postgres_cpu_s() -> float:
    """CPU seconds of this machine's Postgres processes so far (0 without a local one)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/comm") as f:
                    if f.read().strip() != "postgres":
                        continue
            except OSError:
                continue
            total += _proc_cpu_s(int(entry.name))
    return total


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of every core of the machine so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


async def loop_lag(stop: asyncio.Event, every: float = 0.01) -> list[float]:
    """How late this process's event loop wakes up (seconds), every ``every`` s."""
    lags = []
    while not stop.is_set():
        begin = time.perf_counter()
        await asyncio.sleep(every)
        lags.append(time.perf_counter() - begin - every)
    return lags


async def rss_sampler(pid: int, stop: asyncio.Event) -> list[int]:
    """The RSS of ``pid`` (bytes) every 100 ms until ``stop``."""
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


@dataclass(frozen=True, kw_only=True)
class LoadConfig:
    """The size of one benchmark pass (the defaults are the published figures)."""

    clients: int = 200  #: SSE clients, each following one run at a time
    rate: float = 50.0  #: API reads per second
    delay_ms: float = 50.0  #: the scripted model's think time per request
    duration_s: float = 20.0  #: how long clients go on starting runs (0: one run each)
    idle_s: float = 3.0  #: the reader alone first, for the baseline
    timeout_s: float = 300.0  #: a run not followed to its result by then is a failure


async def load(url: str, token: str, server_pid: int, config: LoadConfig) -> dict[str, Any]:
    """The benchmark's core against a running server: the reader alone for ``idle_s``,
    then ``clients`` followers (each following one run after another for ``duration_s``,
    at least one) with the reader going on; the figures, and the faults."""
    stop_rss = asyncio.Event()
    rss_task = asyncio.create_task(rss_sampler(server_pid, stop_rss))
    readers = Readers(url, token)
    try:
        async with readers.client() as client:
            warm = await client.post("/v1/runs", json={"agent": "support", "input": QUESTION,
                                                      "wait": True})
        warm.raise_for_status()
        run_ids = [warm.json()["run_id"]]
        rss_start = _proc_status(server_pid, "VmRSS")
        cpu_start = _proc_cpu_s(server_pid)
        loop_cpu_start = _proc_cpu_s(server_pid, server_pid)  # the main thread: the loop

        stop = asyncio.Event()
        idle_task = asyncio.create_task(read_load(readers, config.rate, run_ids, stop))
        await asyncio.sleep(config.idle_s)
        stop.set()
        idle = await idle_task

        stop, stop_lag = asyncio.Event(), asyncio.Event()
        lag_task = asyncio.create_task(loop_lag(stop_lag))
        reads_task = asyncio.create_task(read_load(readers, config.rate, run_ids, stop))
        began = time.perf_counter()
        cpu_client = time.process_time()
        machine, postgres = _machine_cpu(), _postgres_cpu_s()
        until = began + config.duration_s
        per_client = await asyncio.gather(*(
            client_loop(url, token, run_ids, until, config.timeout_s)
            for _ in range(config.clients)))
        seen = [run for runs in per_client for run in runs]
        wall = time.perf_counter() - began
        stop.set()
        reads = await reads_task
        stop_lag.set()
        lags = await lag_task
        cpu_client = time.process_time() - cpu_client
        busy, total = (b - a for a, b in zip(machine, _machine_cpu(), strict=True))
        postgres = _postgres_cpu_s() - postgres
    finally:
        await readers.close()
    cpu_server = _proc_cpu_s(server_pid) - cpu_start
    cpu_loop = _proc_cpu_s(server_pid, server_pid) - loop_cpu_start
    await asyncio.sleep(0.5)  # let the server drop what the streams held
    rss_end = _proc_status(server_pid, "VmRSS")
    stop_rss.set()
    rss = await rss_task
    figures = _figures(seen, idle, reads, lags, wall=wall, cpu_server=cpu_server,
                       cpu_loop=cpu_loop, cpu_client=cpu_client, rss_start=rss_start,
                       rss_end=rss_end, rss_peak=max([rss_start, rss_end, *rss]),
                       rss_hwm=_proc_status(server_pid, "VmHWM"))
    figures["clients"] = config.clients
    figures["machine_cpu_busy"] = round(busy / total, 3) if total else None
    figures["postgres_cpu_s"] = round(postgres, 2)
    figures["server_rss_mb_each_s"] = [round(b / 2**20, 1) for b in rss[::10]]
    return figures


def _figures(seen: list[Followed], idle: Reads, reads: Reads, lags: list[float], *,
             wall: float, cpu_server: float, cpu_loop: float, cpu_client: float,
             rss_start: int, rss_end: int, rss_peak: int, rss_hwm: int) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    for s in seen:
        faults.update(s.faults())
    delays = [d for s in seen for d in s.delays]
    live = [d for s in seen for d, fresh in zip(s.delays, s.live, strict=True) if fresh]
    completed = [s for s in seen if s.status == "completed" and s.error is None]
    errors = Counter(s.error.split(":")[0] if s.error else f"status {s.status}"
                     for s in seen if s.status != "completed" or s.error is not None)
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
