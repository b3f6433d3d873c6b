"""The support desk under load: concurrent customer conversations through the HTTP API, on
SQLite and on Postgres, with no lost or duplicated effects.

The server is a separate process (``python -m keel.cli serve bench.support_desk_app:app``:
the desk with its scripted specialist model, ``--delay-ms`` per model request) on a fresh
shop database and a fresh run store; this process plays the customers and the staff with
``examples/support_desk/day.py``'s ``play_day``: ``--conversations`` customers at once,
each with their own customer token, two turns each through ``/v1/chat``:

* a status question, then a copy of the order's invoice;
* a return of their latest delivered order, then where the order is;
* a refund of 10.00 on it (no approval below 100), then its status;
* a policy question (answered from the help centre with a citation), then an order status.

Two reviewers approve anything that waits for approval and a person answers escalations,
as in ``keel demo``. Figures: latency per turn (from sending the message to the answer or
the hand-off to people; p50, p95, p99), turns per second over the whole day, the server's
peak memory (``VmHWM``), and the effects check: every refund or return case a customer was
told about is exactly one row of the shop's ``effects`` table, written by that turn's run,
and there is no other row.

    python -m bench.support_desk_load [--conversations 200] [--delay-ms 50]
                                      [--backend sqlite|postgres|both] [--json PATH]

Exit status 1 if a turn did not complete or an effect is missing or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from examples.support_desk import create_database
from examples.support_desk.day import DayLog, Visit, play_day

from bench.server_load import _free_port, fresh_store

ROOT = Path(__file__).resolve().parent.parent
ROLES = {"operator": "operator", "ana": "reviewer", "ben": "reviewer", "sam": "reviewer"}


def conversations(database: Path, n: int) -> list[Visit]:
    """``n`` customers (not the planted scenario ones), each about their latest delivered
    order, in the four shapes of the module's docstring."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT o.customer_id, o.id, (SELECT i.id FROM invoices i WHERE i.order_id = o.id)"
            " FROM orders o WHERE o.status = 'delivered' AND o.customer_id > 'C-00012' AND "
            "o.placed_at = (SELECT max(placed_at) FROM orders p WHERE p.customer_id = "
            "o.customer_id AND p.status = 'delivered') ORDER BY o.customer_id").fetchall()
    if len(rows) < n:
        raise SystemExit(f"the database has {len(rows)} customers to play, not {n}")
    visits = []
    for i, (customer, order, invoice) in enumerate(rows[:n]):
        shape = i % 4
        first = (f"Where is my order {order}?",
                 f"I'd like to return order {order}, it does not fit.",
                 f"Please refund 10.00 for order {order}, one item arrived damaged.",
                 "What is your return policy for electronics?")[shape]
        second = (f"Can I get a copy of invoice {invoice}?" if shape == 0
                  else f"What is the status of order {order}?")
        visits.append(Visit(name=f"c{i:03d}", title=first, customer=customer,
                            turns=(first, second), expect=()))
    return visits


class DeskServer:
    """``keel serve bench.support_desk_app:app`` in a child process, on a free port."""

    def __init__(self, folder: Path, store: str, delay_ms: float) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {**os.environ, "KEEL_BENCH_DELAY_MS": str(delay_ms),
               "KEEL_BENCH_DESK_DIR": str(folder), "KEEL_BENCH_STORE": store,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.log = folder / "server.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "bench.support_desk_app:app",
             "--port", self.url.rsplit(":", 1)[1], "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the desk server exited: " + self.log.read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the desk server did not become ready in time")

    def peak_mb(self) -> float:
        """The server's peak resident memory so far (MB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


async def make_keys(store: str) -> dict[str, str]:
    """The operator's and the staff's keys, made before the server starts."""
    from keel.server import KeyStore

    async with KeyStore(store) as keys:
        return {name: (await keys.create_key("northwind", role,  # type: ignore[arg-type]
                                             name=name, by="bench"))[1]
                for name, role in ROLES.items()}


_TOLD = (("refund", re.compile(r"refund of [\d.]+ \w+ for order NW-\d{6} is issued")),
         ("ticket_created", re.compile(r"return case T-\d+")))


def check_effects(log: DayLog, database: Path) -> dict[str, Any]:
    """Every refund and return case a customer was told about is exactly one ``effects``
    row of that turn's run, and no other row exists: counts of what is missing, what is
    duplicated and what nobody was told about."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT run_id, kind FROM effects").fetchall()
    written: dict[tuple[str, str], int] = {}
    for run_id, kind in rows:
        written[(run_id, kind)] = written.get((run_id, kind), 0) + 1
    told = {(t.run_id, kind) for t in log.turns for kind, said in _TOLD
            if t.answer and said.search(t.answer)}
    return {"effects": len(rows), "told": len(told),
            "missing": sum(1 for k in told if k not in written),
            "duplicated": sum(n - 1 for n in written.values() if n > 1),
            "untold": sum(1 for k in written if k not in told)}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def bench_backend(backend: str, n: int, delay_ms: float, tmp: Path) -> dict[str, Any]:
    """Serve the desk on a fresh store of ``backend``, play ``n`` conversations: figures."""
    folder = tmp / f"desk-{backend}"
    folder.mkdir(parents=True)
    create_database(folder / "desk.db")
    visits = conversations(folder / "desk.db", n + 4)
    alone, visits = visits[n:], visits[:n]
    with fresh_store(backend, folder) as store:
        url = store if "://" in store else f"sqlite:///{store}"
        keys = await make_keys(url)
        server = DeskServer(folder, url, delay_ms)
        try:
            await asyncio.to_thread(server.wait_ready)
            reviewers = {"ana": keys["ana"], "ben": keys["ben"]}
            baseline = DayLog()
            for visit in alone:  # the baseline: one conversation at a time, each shape
                baseline.turns += (await play_day(
                    server.url, operator=keys["operator"], reviewers=reviewers,
                    person=keys["sam"], day=[visit])).turns
            log = await play_day(server.url, operator=keys["operator"], reviewers=reviewers,
                                 person=keys["sam"], day=visits)
            peak = server.peak_mb()
        finally:
            code = server.stop()
    latencies = [t.latency_s * 1000 for t in log.turns]
    single = [t.latency_s * 1000 for t in baseline.turns]
    both = DayLog(turns=[*baseline.turns, *log.turns])
    return {
        "backend": backend, "conversations": n, "turns": len(log.turns),
        "completed": sum(1 for t in log.turns if t.status == "completed"),
        "waited_for_people": sum(1 for t in log.turns if t.waited),
        "p50_ms": _pct(latencies, 0.5), "p95_ms": _pct(latencies, 0.95),
        "p99_ms": _pct(latencies, 0.99), "wall_s": log.wall_s,
        "alone_p50_ms": _pct(single, 0.5),
        "turns_per_s": len(log.turns) / log.wall_s if log.wall_s else 0.0,
        "server_peak_mb": peak, "server_exit": code,
        **check_effects(both, folder / "desk.db"),
    }


def failed(figures: dict[str, Any]) -> list[str]:
    """What went wrong (empty: every turn completed, every effect exactly once)."""
    problems = []
    if figures["completed"] != figures["turns"]:  # the main day's turns
        problems.append(f"{figures['turns'] - figures['completed']} turns did not complete")
    for what in ("missing", "duplicated", "untold"):
        if figures[what]:
            problems.append(f"{figures[what]} effects {what}")
    return problems


def table(results: list[dict[str, Any]]) -> str:
    head = "| | " + " | ".join(r["backend"] for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("conversations (turns)", lambda r: f"{r['conversations']} ({r['turns']})"),
            ("turns completed", lambda r: f"{r['completed']}"),
            ("latency per turn p50 / p95 / p99",
             lambda r: f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['p99_ms']:.0f} ms"),
            ("latency per turn p50, one conversation at a time",
             lambda r: f"{r['alone_p50_ms']:.0f} ms (p50 under load: "
                       f"{r['p50_ms'] / max(r['alone_p50_ms'], 1e-9):.0f}x)"),
            ("throughput", lambda r: f"{r['turns_per_s']:.1f} turns/s ({r['wall_s']:.1f} s)"),
            ("server peak memory", lambda r: f"{r['server_peak_mb']:.0f} MB"),
            ("effects written / told to customers",
             lambda r: f"{r['effects']} / {r['told']}"),
            ("missing / duplicated / untold",
             lambda r: f"{r['missing']} / {r['duplicated']} / {r['untold']}")]
    for label, fmt in columns:
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in results) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    results = []
    with tempfile.TemporaryDirectory(prefix="keel-desk-load-") as tmp:
        for backend in backends:
            results.append(asyncio.run(bench_backend(backend, args.conversations,
                                                     args.delay_ms, Path(tmp))))
    print(f"support desk load: {args.conversations} conversations at once, "
          f"{args.delay_ms:.0f} ms scripted model; {platform.python_version()}, "
          f"{os.cpu_count()} cores")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    problems = [f"{r['backend']}: {p}" for r in results for p in failed(r)]
    for p in problems:
        print("FAILED:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
