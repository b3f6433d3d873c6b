"""A deterministic generated run store for run analytics, and the brute-force count it is
checked against.

:func:`stats_dataset` makes runs of several agents, tenants (one hostile id, and none),
models (and runs whose ``metadata["model"]`` is missing or not a string), every status,
durations with ties, usage totals that are sometimes missing or not numbers, escalation
tasks, and journals for a fraction of the runs: failed and successful tool results, tool
intents and a non-tool entry that carries a ``failure`` (neither of which counts), model
steps answered by a cache (hits, misses, and an answer quoting a hit's mark).
:func:`brute_force` recomputes the figures from the generated data with plain Python, apart
from keel's own code; :func:`assert_stats_match` compares a store's answer with it.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel.store import HumanTask, JournalEntry, RunRecord, RunStore, StatsQuery, StatsResult

__all__ = ["GeneratedRun", "assert_stats_match", "brute_force", "load_dataset",
           "stats_dataset"]

T0 = 1_800_000_000.0
DAYS = 30
AGENTS = ("support", "billing", "triage", "research")
TENANTS = ("acme", "globex", "initech", "acme' OR '1'='1", None)
MODELS: tuple[Any, ...] = ("openai:gpt-4o", "anthropic:claude-sonnet", "openai:gpt-4o-mini",
                           None, 3)
STATUSES: tuple[Any, ...] = (("completed",) * 14 + ("failed",) * 3
                             + ("cancelled", "running", "suspended"))
TOOLS = ("refund", "lookup_order", "send_email", "search")
ERRORS = ("tool_error", "timeout", "permission_denied", "validation", None)


@dataclass(frozen=True, slots=True)
class GeneratedRun:
    record: RunRecord
    entries: tuple[JournalEntry, ...] = ()
    tasks: tuple[HumanTask, ...] = ()


def _usage(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.03:
        return {}
    if roll < 0.05:
        return {"input_tokens": "n/a", "output_tokens": True, "cost_usd": None}
    tin, tout = rng.randint(50, 8000), rng.randint(10, 2000)
    return {"requests": rng.randint(1, 6), "input_tokens": tin, "output_tokens": tout,
            "cost_usd": round(tin * 2.5e-6 + tout * 1e-5, 8), "steps": rng.randint(1, 12)}


def _entries(rng: random.Random, created: float) -> tuple[JournalEntry, ...]:
    out: list[JournalEntry] = []

    def add(key: str, phase: str, kind: str, name: str, data: Any) -> None:
        out.append(JournalEntry(seq=len(out), key=key, phase=phase,  # type: ignore[arg-type]
                                kind=kind, name=name, input_hash=f"{len(out):016x}",
                                data=data, created_at=created + len(out)))

    add("a/turn:0/model", "result", "model", "gpt-4o", {"failure": {"error_type": "x"}})
    roll = rng.random()
    if roll < 0.5:  # a model step a cache answered (some saying what they saved), a miss,
        # and an answer whose text quotes a hit's mark (not a hit)
        details: dict[str, Any] = {"cache": "hit", "cache_kind": "exact"}
        if roll < 0.3:
            details["cache_saved"] = {"cost_usd": round(rng.random() / 100, 6)}
        add("a/turn:0b/model", "result", "model", "gpt-4o",
            {"parts": [], "provider_details": details})
    elif roll < 0.7:
        add("a/turn:0b/model", "result", "model", "gpt-4o",
            {"parts": [], "provider_details": {"cache": "miss"}})
    elif roll < 0.8:
        add("a/turn:0b/model", "result", "model", "gpt-4o",
            {"parts": [{"type": "text", "text": '{"cache": "hit"}'}]})
    for i in range(rng.randint(1, 5)):
        tool, key = rng.choice(TOOLS), f"a/turn:{i}/tool:t#{i}"
        if rng.random() < 0.3:
            add(key, "intent", "tool", tool, {"arguments": {"n": i},
                                              "failure": {"error_type": "intent"}})
        if rng.random() < 0.45:
            et = rng.choice(ERRORS)
            failure: dict[str, Any] = {"message": "boom", "retryable": False}
            if et is not None:
                failure["error_type"] = et
            add(key, "result", "tool", tool, {"content": "err", "failure": failure})
        else:
            add(key, "result", "tool", tool, {"content": "ok", "failure": None})
    return tuple(out)


def stats_dataset(n: int, *, seed: int = 12, journal_fraction: float = 0.1
                  ) -> list[GeneratedRun]:
    """``n`` runs over 30 days from ``T0``; the same ``seed`` gives the same runs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        created = T0 + rng.random() * DAYS * 86_400
        # every 97th run lasts 1.5 s: ties among the durations
        duration = 1.5 if i % 97 == 0 else round(rng.expovariate(1 / 20.0), 3)
        model = rng.choice(MODELS)
        record = RunRecord(
            run_id=f"run-{i:07d}", agent=rng.choice(AGENTS), status=rng.choice(STATUSES),
            input={"q": i}, created_at=created, updated_at=created + duration,
            usage=_usage(rng), metadata={} if model is None else {"model": model},
            tenant=rng.choice(TENANTS), user=f"user-{i % 50}")
        entries = _entries(rng, created) if rng.random() < journal_fraction else ()
        tasks: tuple[HumanTask, ...] = ()
        roll = rng.random()
        if roll < 0.06:
            kinds = ["escalation"] * (2 if roll < 0.01 else 1) if roll < 0.04 else ["approval"]
            tasks = tuple(HumanTask(
                task_id=f"{kind}-{i}-{k}", run_id=record.run_id, kind=kind,  # type: ignore[arg-type]
                step_key=f"a/turn:{k}/{kind}", queue="ops", status="open",
                created_at=created + 1, data={"why": "check"}) for k, kind in enumerate(kinds))
        out.append(GeneratedRun(record, entries, tasks))
    return out


async def load_dataset(store: RunStore, runs: Sequence[GeneratedRun], *,
                       concurrency: int = 1) -> None:
    """Write the generated runs, their journals and tasks through the store's API
    (``concurrency`` writers at once: a pooled Postgres store loads faster)."""

    async def write(part: Sequence[GeneratedRun]) -> None:
        for run in part:
            await store.create_run(run.record)
            if run.entries:
                await store.append(run.record.run_id, run.entries)
            for task in run.tasks:
                await store.put_task(task)

    await asyncio.gather(*(write(runs[i::concurrency]) for i in range(concurrency)))


# --------------------------------------------------------------------------- the reference


def _key(name: str, r: RunRecord) -> Any:
    if name == "day":
        return datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%d")
    if name == "model":
        m = r.metadata.get("model")
        return m if isinstance(m, str) else None
    return getattr(r, name)


def _num(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def brute_force(runs: Sequence[GeneratedRun], query: StatsQuery
                ) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The figures per group key (``()``: the total), counted one run at a time."""
    picked = [g for g in runs
              if (query.agent is None or g.record.agent == query.agent)
              and (query.tenant is None or g.record.tenant == query.tenant)
              and (query.since is None or g.record.created_at >= query.since)
              and (query.until is None or g.record.created_at < query.until)]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    bys: set[tuple[str, ...]] = {(), tuple(query.by)}
    for by in bys:
        groups: dict[tuple[Any, ...], list[GeneratedRun]] = defaultdict(list)
        for g in picked:
            groups[tuple(_key(name, g.record) for name in by)].append(g)
        for key, members in groups.items():
            out[key] = _figures(members, query.top)
    return out


def _figures(members: list[GeneratedRun], top: int) -> dict[str, Any]:
    status = Counter(g.record.status for g in members)
    durations = sorted(g.record.updated_at - g.record.created_at for g in members
                       if g.record.status in ("completed", "failed", "cancelled"))

    def pct(p: int) -> float | None:
        return durations[math.ceil(p * len(durations) / 100) - 1] if durations else None

    tools: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for g in members:
        for e in g.entries:
            if e.kind == "tool" and e.phase == "result" and e.data.get("failure"):
                tools[e.name] += 1
                errors[e.data["failure"].get("error_type") or "unknown"] += 1
    saved = [_hit(e) for g in members for e in g.entries]
    saved = [v for v in saved if v is not None]
    finished = status["completed"] + status["failed"] + status["cancelled"]
    return {
        "runs": len(members), **{s: status[s] for s in
                                 ("completed", "failed", "cancelled", "running", "suspended")},
        "escalated": sum(any(t.kind == "escalation" for t in g.tasks) for g in members),
        "success_rate": status["completed"] / finished if finished else None,
        "input_tokens": sum(_num(g.record.usage.get("input_tokens")) for g in members),
        "output_tokens": sum(_num(g.record.usage.get("output_tokens")) for g in members),
        "cost_usd": sum(_num(g.record.usage.get("cost_usd")) for g in members),
        "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99),
        "max_s": durations[-1] if durations else None,
        "tool_failures": sum(tools.values()),
        "failing_tools": sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))[:top],
        "error_types": sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:top],
        "cache_hits": len(saved), "cache_saved_usd": sum(saved),
    }


def _hit(e: JournalEntry) -> float | None:
    if e.kind != "model" or e.phase != "result":
        return None
    details = e.data.get("provider_details") or {}
    if details.get("cache") != "hit":
        return None
    return float(details.get("cache_saved", {}).get("cost_usd", 0.0))


def assert_stats_match(got: StatsResult, want: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    """Every figure of every row equals the brute-force count (sums of money to 1e-9)."""
    rows: dict[tuple[Any, ...], Any] = {(): got.total} if got.total.runs else {}
    rows.update({tuple(r.key.values()): r for r in got.groups})
    assert set(rows) == set(want), (sorted(map(str, rows)), sorted(map(str, want)))
    for key, expected in want.items():
        row = rows[key]
        for name, value in expected.items():
            mine = getattr(row, name)
            if name in ("failing_tools", "error_types"):
                mine = list(mine)
            if name in ("cost_usd", "cache_saved_usd") or (name == "success_rate"
                                                           and value is not None):
                assert math.isclose(mine, value, rel_tol=1e-9, abs_tol=1e-12), (key, name,
                                                                                 mine, value)
            else:
                assert mine == value, (key, name, mine, value)
