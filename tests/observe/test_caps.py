"""Spend caps: enforced before each call from the estimate, reconciled with the reported
usage after it, alerts once per threshold and window, the three actions at the cap, bad
configuration refused, and the counters shared by worker processes (Redis, SQLite, and
Postgres tables) and in one process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from keel import BudgetExceeded, ConfigError, MemoryStore, ModelError
from keel.observe import (
    CapStore,
    MemoryCapStore,
    RedisCapStore,
    SpendAlert,
    SpendCap,
    SpendCaps,
    SQLCapStore,
)
from keel.observe._caps import window_of
from keel.observe._caps_stores import Slot
from keel.testing import FunctionModel

sys.path.insert(0, str(Path(__file__).parent))
from caps_helpers import (
    MAX_OUT,
    ListNotifier,
    agent,
    priced_model,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _redis_up() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _pg_up() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
        return True
    except Exception:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason=f"no Redis at {REDIS_URL}")
needs_pg = pytest.mark.skipif(not _pg_up(), reason=f"no Postgres at {PG_URL}")


def _drop_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _drop_pg(key_prefix: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute("DELETE FROM keel_spend_caps WHERE key LIKE %s", (key_prefix + "%",))
        conn.execute("DELETE FROM keel_spend_alerts WHERE key LIKE %s", (key_prefix + "%",))


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=needs_redis),
                        pytest.param("postgres", marks=needs_pg)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CapStore]:
    if request.param == "memory":
        yield MemoryCapStore()
    elif request.param == "sqlite":
        s = SQLCapStore(tmp_path / "caps.db")
        yield s
        s.close()
    elif request.param == "postgres":
        s = SQLCapStore(PG_URL)
        yield s
        s.close()
    else:
        prefix = f"keel:test:caps:{uuid.uuid4().hex}:"
        r = RedisCapStore(REDIS_URL, prefix=prefix)
        yield r
        await r.aclose()
        _drop_redis(prefix)


# ----------------------------------------------------------------------------- the stores


async def test_reserve_is_all_or_nothing_and_claims_are_first_only(store: CapStore) -> None:
    tag = uuid.uuid4().hex
    a = Slot(f"t{tag}|a|x", 1.0, None, 4e9)
    b = Slot(f"t{tag}|b|x", None, 100, 4e9)
    assert await store.reserve([a, b], 0.6, 60) is None
    refused = await store.reserve([a, b], 0.3, 50)  # a has room, b does not: neither moves
    assert refused is not None and refused.index == 1 and refused.tokens == 60
    assert await store.spent(a.key) == (pytest.approx(0.6), 60)
    totals = await store.settle([a, b], -0.1, -20)  # actual below the estimate
    assert totals[0] == (pytest.approx(0.5), 40) and totals[1][1] == 40
    assert await store.reserve([a], 0.5, 1) is None  # lands exactly on the cap: allowed
    assert await store.reserve([a], 0.01, 1) is not None
    assert await store.claim(a, "0.5") is True
    assert await store.claim(a, "0.5") is False
    assert await store.claim(b, "0.5") is True
    if isinstance(store, SQLCapStore) and store.postgres:
        _drop_pg(f"t{tag}")


def test_windows_are_utc_calendar_windows() -> None:
    new_year_eve = datetime(2026, 12, 31, 23, 30, tzinfo=UTC).timestamp()
    label, _, end = window_of("monthly", new_year_eve)
    assert label == "2026-12" and end == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert window_of("daily", new_year_eve)[0] == "2026-12-31"
    assert window_of("hourly", new_year_eve)[2] == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


# ----------------------------------------------------------------------- refuse, reconcile


async def test_refused_at_the_cap_naming_cap_window_and_reset(store: CapStore) -> None:
    name = f"acme-{uuid.uuid4().hex[:8]}"
    cap = SpendCap(scope="tenant", window="daily", max_usd=0.25, name=name)
    caps = SpendCaps([cap], store=store)
    a, runs, spent = agent([caps]), MemoryStore(), 0.0
    err = None
    for i in range(50):
        try:
            result = await a.run(f"question {i}", tenant="acme", store=runs)
        except BudgetExceeded as exc:
            err = exc
            break
        spent += result.usage.cost_usd
    assert err is not None
    assert err.limit == f"spend_cap:{name}"
    for piece in (name, "tenant 'acme'", "daily", today(), "resets at"):
        assert piece in str(err)
    assert err.resets_at == window_of("daily", time.time())[2]  # type: ignore[attr-defined]
    # reconciled: the counter holds exactly what the provider reported, no estimate left over
    assert (await store.spent(f"{name}|acme|{today()}"))[0] == pytest.approx(spent)
    assert 0.25 - 0.1 < spent <= 0.25  # stopped with less than one estimate (~$0.09) left
    # another tenant is not held by acme's cap
    other = await a.run("question", tenant="globex", store=runs)
    assert other.usage.cost_usd > 0
    if isinstance(store, SQLCapStore) and store.postgres:
        _drop_pg(name)


async def test_the_listed_price_is_charged_when_the_adapter_reports_no_cost() -> None:
    store = MemoryCapStore()
    caps = SpendCaps(SpendCap(scope="agent", window="hourly", max_usd=5.0), store=store)
    a = agent([caps], model=priced_model(report_cost=False))
    result = await a.run("hello there", store=MemoryStore())
    label = window_of("hourly", time.time())[0]
    usd, tokens = await store.spent(f"agent:each:hourly|helper|{label}")
    u = result.usage
    assert result.usage.cost_usd == 0 and tokens == u.input_tokens + u.output_tokens
    assert usd == pytest.approx((u.input_tokens * 1000 + u.output_tokens * 2000) / 1e6)


async def test_a_failed_call_releases_its_estimate() -> None:
    store = MemoryCapStore()
    caps = SpendCaps(SpendCap(scope="tenant", window="daily", max_tokens=10_000, name="t"),
                     store=store)
    broken = FunctionModel(lambda m, t, s: ModelError("down", retryable=False),
                           name="test:priced")
    with pytest.raises(ModelError):
        await agent([caps], model=broken).run("hi", tenant="acme", store=MemoryStore())
    assert await store.spent(f"t|acme|{today()}") == (0.0, 0)


async def test_token_caps_count_tokens() -> None:
    caps = SpendCaps(SpendCap(scope="agent", window="daily", max_tokens=3 * (MAX_OUT + 40),
                              name="tok"))
    a = agent([caps])
    done, err = 0, None
    for _ in range(20):
        try:
            await a.run("hi", store=MemoryStore())
        except BudgetExceeded as exc:
            err = exc
            break
        done += 1
    assert err is not None and "tokens used" in str(err)
    assert 2 <= done < 20


# ----------------------------------------------------------------------------- alerts


async def test_alerts_once_per_threshold_and_window(store: CapStore) -> None:
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    notifier = ListNotifier()
    caps = SpendCaps(SpendCap(scope="tenant", window="daily", max_usd=0.2, name=name),
                     store=store, notifier=notifier)
    # a second worker's middleware on the same store: the store decides who sends
    twin = SpendCaps(SpendCap(scope="tenant", window="daily", max_usd=0.2, name=name),
                     store=store, notifier=notifier)
    agents, runs = [agent([caps]), agent([twin])], MemoryStore()
    refused = 0
    for i in range(40):
        try:
            await agents[i % 2].run(f"q{i}", tenant="acme", store=runs)
        except BudgetExceeded:
            refused += 1
    await caps.drain(5)
    await twin.drain(5)
    assert refused > 0
    sent = sorted(a.threshold for a in notifier.alerts)
    assert sent == [0.5, 0.8, 1.0]
    assert all(isinstance(a, SpendAlert) and a.tenant == "acme" and a.window_label == today()
               for a in notifier.alerts)
    assert len(caps.sent) + len(twin.sent) == 3
    if isinstance(store, SQLCapStore) and store.postgres:
        _drop_pg(name)


async def test_guards_webhook_notifier_posts_spend_alerts_to_a_real_server() -> None:
    from keel.guard import WebhookNotifier

    got: list[dict[str, Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        size = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length"))
        got.append(json.loads(await reader.readexactly(size)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    notifier = WebhookNotifier(f"http://127.0.0.1:{port}/hook")
    caps = SpendCaps(SpendCap(scope="agent", window="daily", max_usd=1.0,
                              thresholds=(0.01, 0.02)), notifier=notifier)
    await agent([caps]).run("hello", store=MemoryStore())
    await caps.drain(5)
    server.close()
    await server.wait_closed()
    assert sorted(a["alert"]["threshold"] for a in got) == [0.01, 0.02]
    assert got[0]["alert"]["deviation"] == "spend_cap:agent:each:daily"


# ------------------------------------------------------------------------ queue, degrade


async def test_degrade_sends_the_call_to_the_fallback_and_the_journal_says_so() -> None:
    cheap = priced_model("test:cheap", answer="cheap answer")
    caps = SpendCaps(SpendCap(scope="tenant", window="daily", max_usd=0.1, action="degrade",
                              fallback=cheap, name="deg"))
    a, runs = agent([caps]), MemoryStore()
    models = []
    for i in range(10):
        result = await a.run(f"q{i}", tenant="acme", store=runs)
        models.append(result.text)
    assert models[0] == "done, thanks" and models[-1] == "cheap answer"
    journal = await runs.read_journal(result.run_id)
    step = next(e for e in journal if e.kind == "model" and e.phase == "result")
    assert step.data["model"] == "test:cheap"
    assert step.data["provider_details"]["spend_cap"] == {
        "degraded_from": "test:priced", "answered_by": "test:cheap"}


async def test_queue_waits_for_the_window_to_reset() -> None:
    hour_end = window_of("hourly", time.time())[2]
    t0 = time.time()
    clock = lambda: hour_end - 1.0 + (time.time() - t0)  # noqa: E731 - 1 s before the hour
    store = MemoryCapStore()
    caps = SpendCaps(SpendCap(scope="tenant", window="hourly", max_usd=0.12, action="queue",
                              name="q"), store=store, clock=clock)
    a, runs = agent([caps]), MemoryStore()
    await a.run("first", tenant="acme", store=runs)
    second = await a.run("second", tenant="acme", store=runs)  # waits for the next hour
    assert second.text == "done, thanks"
    old = window_of("hourly", hour_end - 1)[0]
    new = window_of("hourly", hour_end + 1)[0]
    assert (await store.spent(f"q|acme|{new}"))[0] == pytest.approx(second.usage.cost_usd)
    assert (await store.spent(f"q|acme|{old}"))[0] < 0.12


async def test_queue_refuses_a_call_that_alone_exceeds_the_cap() -> None:
    caps = SpendCaps(SpendCap(scope="tenant", window="hourly", max_usd=0.01, action="queue"))
    with pytest.raises(BudgetExceeded, match="hourly"):  # it would wait forever otherwise
        await agent([caps]).run("first", tenant="acme", store=MemoryStore())


async def test_queue_wait_is_bounded_by_the_runs_deadline() -> None:
    from keel import DeadlineExceeded

    store = MemoryCapStore()
    caps = SpendCaps(SpendCap(scope="tenant", window="monthly", max_usd=0.12, action="queue",
                              name="m"), store=store)
    a, runs = agent([caps]), MemoryStore()
    await a.run("first", tenant="acme", store=runs)
    with pytest.raises(DeadlineExceeded):  # the month does not end in 0.3 s
        await a.run("second", tenant="acme", store=runs, deadline=0.3)
    label = window_of("monthly", time.time())[0]
    first_only, _ = await store.spent(f"m|acme|{label}")
    assert 0 < first_only < 0.12  # nothing of the second call's estimate is left held


async def test_queue_bounded_by_max_wait_refuses() -> None:
    caps = SpendCaps(SpendCap(scope="tenant", window="monthly", max_usd=0.12, action="queue"),
                     max_wait=1.0)
    a, runs = agent([caps]), MemoryStore()
    await a.run("first", tenant="acme", store=runs)
    with pytest.raises(BudgetExceeded, match="monthly"):
        await a.run("second", tenant="acme", store=runs)


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("kw", "part"), [
    ({"scope": "team", "window": "daily", "max_usd": 1}, "SpendCap.scope"),
    ({"scope": "tenant", "window": "fortnightly", "max_usd": 1}, "SpendCap.window"),
    ({"scope": "tenant", "window": 86400, "max_usd": 1}, "SpendCap.window"),
    ({"scope": "tenant", "window": "daily", "max_usd": -1}, "SpendCap.max_usd"),
    ({"scope": "tenant", "window": "daily", "max_usd": float("nan")}, "SpendCap.max_usd"),
    ({"scope": "tenant", "window": "daily", "max_tokens": -5}, "SpendCap.max_tokens"),
    ({"scope": "tenant", "window": "daily", "max_tokens": 1.5}, "SpendCap.max_tokens"),
    ({"scope": "tenant", "window": "daily"}, "SpendCap"),
    ({"scope": "tenant", "window": "daily", "max_usd": 1, "thresholds": (0.5, 1.5)},
     "SpendCap.thresholds"),
    ({"scope": "tenant", "window": "daily", "max_usd": 1, "thresholds": "50%"},
     "SpendCap.thresholds"),
    ({"scope": "tenant", "window": "daily", "max_usd": 1, "action": "explode"},
     "SpendCap.action"),
    ({"scope": "tenant", "window": "daily", "max_usd": 1, "action": "degrade"},
     "SpendCap.fallback"),
    ({"scope": "tenant", "window": "daily", "max_usd": 1, "fallback": "openai:gpt-4o-mini"},
     "SpendCap.fallback"),
])
def test_bad_caps_are_refused_naming_the_part(kw: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as info:
        SpendCap(**kw)
    assert info.value.field == part  # type: ignore[attr-defined]


def test_bad_spend_caps_are_refused() -> None:
    cap = SpendCap(scope="tenant", window="daily", max_usd=1)
    for kw, part in [({"caps": []}, "SpendCaps.caps"), ({"caps": [cap, cap]}, "SpendCaps.caps"),
                     ({"caps": cap, "store": object()}, "SpendCaps.store"),
                     ({"caps": cap, "notifier": object()}, "SpendCaps.notifier"),
                     ({"caps": cap, "output_estimate": 0}, "SpendCaps.output_estimate"),
                     ({"caps": cap, "max_wait": -1}, "SpendCaps.max_wait"),
                     ({"caps": cap, "backoff": float("inf")}, "SpendCaps.backoff"),
                     ({"caps": cap, "attempts": 0}, "SpendCaps.attempts")]:
        with pytest.raises(ConfigError) as info:
            SpendCaps(**kw)
        assert info.value.field == part  # type: ignore[attr-defined]
    for bad in ("", "http://x", "redis://host"):
        with pytest.raises(ConfigError, match=r"SQLCapStore\.target"):
            SQLCapStore(bad)
    with pytest.raises(ConfigError):
        RedisCapStore("http://127.0.0.1:6379")


def test_a_fallback_equal_to_the_agents_model_is_refused() -> None:
    model = priced_model()
    caps = SpendCaps(SpendCap(scope="tenant", window="daily", max_usd=1, action="degrade",
                              fallback=model))
    with pytest.raises(ConfigError, match="own model"):
        agent([caps], model=model)
    by_id = SpendCaps(SpendCap(scope="tenant", window="daily", max_usd=1, action="degrade",
                               fallback="test:priced"))
    with pytest.raises(ConfigError, match="own model"):
        agent([by_id], model=model)


async def test_an_unreachable_redis_is_a_store_error_naming_it() -> None:
    from keel import StoreError

    caps = SpendCaps(SpendCap(scope="tenant", window="daily", max_usd=1),
                     store=RedisCapStore("redis://127.0.0.1:1/0", timeout=0.5))
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1"):
        await agent([caps]).run("hi", tenant="acme", store=MemoryStore())


# ------------------------------------------------------------ two worker processes


def _two_workers(kind: str, target: str, prefix: str, cap: float, notify: Path,
                 runs: int = 30) -> list[dict[str, Any]]:
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(here), *filter(None, [os.environ.get("PYTHONPATH")])])}
    procs = [subprocess.Popen([sys.executable, "-W", "error", str(here / "caps_worker.py"),
                               kind, target, prefix, str(cap), str(runs), str(notify)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(2)]
    deadline = time.time() + 60  # both ready (imports done), then both start at once
    while len(list(notify.parent.glob(notify.name + ".ready.*"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    Path(str(notify) + ".go").touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr.decode()
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def _check_shared(results: list[dict[str, Any]], total: float, cap: float,
                  notify: Path) -> None:
    spent = sum(sum(r["spent"]) for r in results)
    refused = sum(r["refused"] for r in results)
    # each worker finished all its runs; the one that was refused more saw the other's spend
    assert refused > 0 and all(len(r["spent"]) + r["refused"] == 40 for r in results)
    one_estimate = (60 * 1000 + MAX_OUT * 2000) / 1e6  # a generous bound for these prompts
    assert cap / 2 <= spent <= cap + one_estimate
    assert total == pytest.approx(spent)  # the shared counter holds exactly what was spent
    lines = [json.loads(x) for x in notify.read_text().splitlines()]
    assert sorted(x["threshold"] for x in lines) == [0.5, 0.8, 1.0]
    assert {x["tenant"] for x in lines} == {"acme"}


@needs_redis
async def test_two_processes_share_a_daily_cap_through_redis(tmp_path: Path) -> None:
    prefix = f"keel:test:caps:{uuid.uuid4().hex}:"
    notify = tmp_path / "alerts.jsonl"
    try:
        results = _two_workers("redis", REDIS_URL, prefix, 1.0, notify, runs=40)
        store = RedisCapStore(REDIS_URL, prefix=prefix)
        total, _ = await store.spent(f"tenant-daily{prefix}|acme|{today()}")
        await store.aclose()
    finally:
        _drop_redis(prefix)
    _check_shared(results, total, 1.0, notify)


async def test_two_processes_share_a_daily_cap_through_sqlite(tmp_path: Path) -> None:
    notify, db = tmp_path / "alerts.jsonl", tmp_path / "caps.db"
    results = _two_workers("sql", str(db), "-", 1.0, notify, runs=40)
    store = SQLCapStore(db)
    total, _ = await store.spent(f"tenant-daily|acme|{today()}")
    store.close()
    _check_shared(results, total, 1.0, notify)


@needs_pg
async def test_two_processes_share_a_daily_cap_through_postgres(tmp_path: Path) -> None:
    notify, tag = tmp_path / "alerts.jsonl", f"-{uuid.uuid4().hex[:8]}"
    try:
        results = _two_workers("sql", PG_URL, tag, 1.0, notify, runs=40)
        store = SQLCapStore(PG_URL)
        total, _ = await store.spent(f"tenant-daily{tag}|acme|{today()}")
        store.close()
    finally:
        _drop_pg(f"tenant-daily{tag}")
    _check_shared(results, total, 1.0, notify)
