"""``keel serve`` under load: many SSE clients each following its own run, plus a steady rate
of API reads, on SQLite and on Postgres.

The server is a separate process (``python -m keel.cli serve bench.server_app:app``) on a
fresh store; this process is the clients (asyncio + httpx):

* ``--clients`` clients each start a run (``POST /v1/runs``, asynchronous) of the support
  agent ("where is order A1?": a tool call, then the answer; two model requests of
  ``--delay-ms`` each) and follow it (``GET /v1/runs/{id}/events``), then start the next,
  until ``--duration`` seconds have passed (at least one run each): about ``--clients``
  runs are in flight and followed at any moment. A client notes when every journal event
  arrives; the delivery delay is that time minus the event's ``at`` (when the runtime
  created the journal entry, same machine clock). After each run the client checks that it
  got every entry of ``GET /v1/runs/{id}/timeline`` exactly once and in order, a ``result``
  event with status ``completed``, and nothing after it.
* A reader sends ``--rate`` API reads per second, open loop (each on schedule, whether or not
  the previous one answered), cycling ``GET /v1/runs?limit=20``, ``GET /v1/runs/{id}`` and
  ``GET /v1/stats``. The same reader first runs for ``--idle-s`` seconds with no other load:
  that is the baseline its figures under load are compared with.
* The server's memory is sampled from ``/proc/<pid>/status`` (``VmRSS``) every 100 ms.

    python -m bench.server_load [--clients 200] [--rate 50] [--delay-ms 50] [--duration 20]
                                [--backend sqlite|postgres|both] [--json PATH]

The clients' side is bench/server_load_core.py.

Exit status 1 if an event was dropped, duplicated or out of order, a run did not complete,
or a request failed; the figures are printed either way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.server_load_core import LoadConfig, failed, load

PG_URL = os.environ.get("KEEL_BENCH_POSTGRES_URL",
                        "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


# --------------------------------------------------------------------------------- main


async def bench_backend(backend: str, config: LoadConfig, tmp: Path) -> dict[str, Any]:
    """Start ``keel serve`` on a fresh store of ``backend``, load it, stop it: the figures."""
    with fresh_store(backend, tmp) as store:
        key = await operator_key(store)
        server = Server(store, config.delay_ms, tmp / f"server-{backend}.log")
        try:
            await asyncio.to_thread(server.wait_ready)
            token = await exchange(server.url, key)
            figures = await load(server.url, token, server.pid, config)
        finally:
            code = server.stop()
        figures["server_exit"] = code
        figures["server_errors"] = server.errors_logged()
    return figures


def _pair(fig: dict[str, Any], key: str) -> str:
    p50, p99 = fig[key]["p50_ms"], fig[key]["p99_ms"]
    return "-" if p50 is None else f"{p50:.1f} / {p99:.1f} ms"


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The table's rows: a name and one value per column of ``results``."""
    return [
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
        ("all runs done in / runs per second",
         [f"{f['wall_s']:.1f} s / {f['runs'] / f['wall_s']:.0f}" for f in results.values()]),
        ("server RSS start / peak / end",
         ["{start:.0f} / {peak:.0f} / {end:.0f} MB".format(**f["server_rss_mb"])
          for f in results.values()]),
        ("server CPU (event-loop thread / other threads)",
         [f"{f['server_cpu_s']:.1f} s ({f['server_loop_thread_cpu_s']:.1f} / "
          f"{f['server_cpu_s'] - f['server_loop_thread_cpu_s']:.1f})" for f in results.values()]),
        ("  server CPU per run", [f"{f['server_cpu_s'] / f['runs'] * 1e3:.1f} ms"
                                  for f in results.values()]),
        ("Postgres processes' CPU during the load",
         [f"{f['postgres_cpu_s']:.1f} s" for f in results.values()]),
        ("machine CPU busy during the load (all cores)",
         [f"{f['machine_cpu_busy']:.0%}" for f in results.values()]),
        ("client CPU / event-loop lag p99",
         [f"{f['client_cpu_s']:.1f} s / {f['client_loop_lag']['p99_ms']:.0f} ms"
          for f in results.values()]),
    ]


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The figures as aligned text, a column per entry of ``results``."""
    found = rows(results)
    width = max(len(name) for name, _ in found)
    cols = [max(len(b), *(len(r[1][i]) for r in found)) for i, b in enumerate(results)]
    out = [" " * width + "  " + "  ".join(b.rjust(w) for b, w in zip(results, cols,
                                                                      strict=True))]
    out += [name.ljust(width) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, cols,
                                                                            strict=True))
            for name, values in found]
    return out


def markdown(results: dict[str, dict[str, Any]]) -> list[str]:
    """The figures as a Markdown table, a column per entry of ``results``."""
    out = ["| | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    out += [f"| {name.strip()} | " + " | ".join(values) + " |"
            for name, values in rows(results)]
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
    parser.add_argument("--markdown", action="store_true",
                        help="print the table in Markdown")
    args = parser.parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    config = LoadConfig(clients=args.clients, rate=args.rate, delay_ms=args.delay_ms,
                        duration_s=args.duration, idle_s=args.idle_s)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=False,
                            capture_output=True, text=True).stdout.strip()
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
            "python": platform.python_version(), "cores": os.cpu_count(),
            "load_start": os.getloadavg()[0], "clients": args.clients, "rate": args.rate,
            "delay_ms": args.delay_ms, "duration_s": args.duration}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="keel-load-") as tmp:
        for backend in backends:
            results[backend] = asyncio.run(bench_backend(backend, config, Path(tmp)))
    info["load_end"] = os.getloadavg()[0]
    print(f"keel serve under load: {args.clients} SSE clients following runs for "
          f"{args.duration:g} s, "
          f"{args.rate:g} API reads/s, model {args.delay_ms:g} ms per request "
          f"({info['cores']} cores, load {info['load_start']:.1f} -> {info['load_end']:.1f})")
    print("\n".join(markdown(results) if args.markdown else table(results)))
    problems = {b: failed(f) for b, f in results.items()}
    for backend, found in problems.items():
        for problem in found:
            print(f"FAIL {backend}: {problem}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
