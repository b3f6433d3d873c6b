"""The failure-modes report (``keel.observe.failure_modes``) on a SQLite store, against
baselines measured in the same process on the same store:

* **read**: paging ``list_runs`` and ``read_journals`` over every run (what any report from
  the journals must read at least);
* **stats**: ``store.stats`` of the same runs (the SQL aggregate ``keel stats`` shows);
* **failure modes**: the report (reads as above, then classifies every journal entry).

Runs are a mix: completed, failed with a model error, blocked by the injection guard, an
approval denied, an escalation and failing tool calls, five journal entries each. Figures are
medians of the rounds.

    python -m bench.bench_failure_modes [--runs 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from keel.observe import failure_modes
from keel.store import JournalEntry, RunFilter, RunRecord, RunStore, SQLiteStore, StatsQuery


def _entries(i: int, now: float) -> list[JournalEntry]:
    def entry(seq: int, key: str, kind: str, name: str, data: Any,
              phase: str = "result") -> JournalEntry:
        return JournalEntry(seq=seq, key=key, phase=phase, kind=kind, name=name,  # type: ignore[arg-type]
                            input_hash="h", data=data, created_at=now + seq)

    model = {"parts": [{"type": "text", "text": "ok"}], "usage": {"requests": 1}}
    out = [entry(0, "desk/turn:0/model", "model", "m", model)]
    if i % 5 == 1:
        out.append(entry(1, "desk/input/guard:input", "guard", "injection",
                         {"place": "input", "action": "block", "reason": "injection",
                          "guard": "injection", "evidence": {}}))
    if i % 5 == 2:
        out.append(entry(1, "desk/turn:0/tool:refund#0/approval", "approval", "refund",
                         {"approval_id": f"ap-{i}", "tool": "refund"}, "intent"))
        out.append(entry(2, "desk/turn:0/tool:refund#0/approval", "approval", "refund",
                         {"approved": False, "by": "ana", "comment": "no"}))
    if i % 5 == 3:
        out.append(entry(1, "desk/escalation#0", "escalation", "tool",
                         {"trigger": "low_confidence", "queue": "support"}, "intent"))
    for n in range(len(out), 5):
        out.append(entry(n, f"desk/turn:{n}/tool:lookup#0", "tool", "lookup",
                         {"content": "x", "failure": {"error_type": "timeout"}
                          if i % 7 == 0 else None}))
    return out


async def fill(store: RunStore, runs: int) -> None:
    now = time.time() - runs
    for i in range(runs):
        failed = i % 5 in (1, 4)
        error = ({"type": "GuardrailTripped", "step_key": "desk/input/guard:input"}
                 if i % 5 == 1 else {"type": "ModelError", "step_key": "desk/turn:0/model"}
                 if i % 5 == 4 else None)
        record = RunRecord(run_id=f"run-{i:06d}", agent="desk", status="running",
                           input=f"question {i}", created_at=now + i, updated_at=now + i,
                           tenant="acme")
        await store.create_run(record)
        await store.finish_run(record.with_status("failed" if failed else "completed",
                                                  error=error, updated_at=now + i + 1),
                               _entries(i, now + i))


async def _median(fn: Callable[[], Awaitable[Any]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def measure(runs: int = 5000, rounds: int = 3) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "runs.db") as store:
            await fill(store, runs)

            async def read() -> None:
                offset = 0
                while True:
                    page = await store.list_runs(RunFilter(limit=500, offset=offset))
                    await store.read_journals([r.run_id for r in page])
                    if len(page) < 500:
                        return
                    offset += 500

            async def report() -> None:
                got = await failure_modes(store, scan=runs)
                assert got.runs == runs and got.complete

            base = await _median(read, rounds)
            stats = await _median(lambda: store.stats(StatsQuery(by=())), rounds)
            modes = await _median(report, rounds)
    return {"runs": runs, "read_s": base, "stats_s": stats, "failure_modes_s": modes,
            "vs_read": modes / base, "vs_stats": modes / stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = asyncio.run(measure(args.runs, args.rounds))
    print(f"{out['runs']:,} runs, 5 journal entries each (SQLite, medians)")
    print(f"  read (list_runs + read_journals): {out['read_s'] * 1000:8.1f} ms")
    print(f"  store.stats:                      {out['stats_s'] * 1000:8.1f} ms")
    print(f"  failure_modes:                    {out['failure_modes_s'] * 1000:8.1f} ms"
          f"  ({out['vs_read']:.2f}x the read, {out['vs_stats']:.1f}x stats)")


if __name__ == "__main__":
    main()
