"""The monitor's shared parts: its state in a real Redis (two monitors standing for two
workers learn one baseline, throttle together and owe the same approvals), a circuit
breaker forced open on both breaker stores, and alerts POSTed to a real HTTP server on
loopback."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from keel import ConfigError, MemoryStore, StoreError
from keel.guard import (
    Alert,
    InMemoryMonitorStore,
    Monitor,
    MonitorPolicy,
    MonitorStore,
    RedisMonitorStore,
    WebhookNotifier,
)
from keel.reliability import BreakerPolicy, CircuitBreaker, InMemoryBreakerStore, RedisBreakerStore
from tests.guard.test_monitor import Alerts, Clock, Desk, Plan, warm_up

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason=f"no Redis at {REDIS_URL}")


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"keel-test:monitor:{uuid.uuid4().hex}:"
    yield p
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(f"{p}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[MonitorStore]:
    if request.param == "memory":
        yield InMemoryMonitorStore()
        return
    s = RedisMonitorStore(REDIS_URL, prefix)
    yield s
    await s.aclose()


# ---------------------------------------------------------------------- both stores


async def test_baselines_fold_sums_and_maxima(store: MonitorStore) -> None:
    await store.fold("desk", [("runs", "sum", 1.0), ("t\tlookup\truns", "sum", 1.0),
                              ("t\tlookup\trecords.sum", "sum", 10.0),
                              ("t\tlookup\trecords.max", "max", 10.0),
                              ("cost.sum", "sum", 0.25)])
    await store.fold("desk", [("runs", "sum", 1.0), ("t\tlookup\truns", "sum", 1.0),
                              ("t\tlookup\trecords.sum", "sum", 30.0),
                              ("t\tlookup\trecords.max", "max", 30.0),
                              ("cost.sum", "sum", 0.75)])
    b = await store.baseline("desk")
    assert b.runs == 2 and b.tools() == {"lookup"}
    assert b.tool_mean("lookup", "records") == 20.0
    assert b.tool_max("lookup", "records") == 30.0
    assert b.mean("cost") == pytest.approx(0.5)
    assert (await store.baseline("other")).runs == 0


async def test_throttles_space_calls_and_expire(store: MonitorStore) -> None:
    assert await store.reserve("k", interval=2.0, max_wait=5.0, now=100.0) is None
    await store.throttle("k", until=110.0, now=100.0)
    waits = [await store.reserve("k", interval=2.0, max_wait=5.0, now=100.0) for _ in range(5)]
    assert waits == [0.0, 2.0, 4.0, 6.0, 6.0], "a wait over 5s is refused and takes no slot"
    await store.throttle("k", until=105.0, now=101.0)  # a shorter throttle does not shorten
    assert await store.reserve("k", interval=2.0, max_wait=5.0, now=109.0) == 0.0
    assert await store.reserve("k", interval=2.0, max_wait=5.0, now=110.0) is None


async def test_owed_approvals_are_taken_one_at_a_time(store: MonitorStore) -> None:
    assert await store.take_approval("desk") is False
    await store.owe_approvals("desk", 2)
    await store.owe_approvals("desk", 1)  # not added up
    assert [await store.take_approval("desk") for _ in range(3)] == [True, True, False]


# --------------------------------------------------------------------- two workers


@needs_redis
async def test_two_workers_share_one_baseline_and_one_throttle(prefix: str) -> None:
    clock = Clock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    def worker(alerts: Alerts) -> tuple[Desk, RedisMonitorStore]:
        s = RedisMonitorStore(REDIS_URL, prefix)
        monitor = Monitor(MonitorPolicy(warmup_runs=10), store=s, notifier=alerts,
                          clock=clock, sleep=sleep, baseline_ttl=0)
        return Desk(monitor=monitor, clock=clock), s

    alerts_a, alerts_b = Alerts(), Alerts()
    desk_a, store_a = worker(alerts_a)
    desk_b, store_b = worker(alerts_b)
    runs = MemoryStore()
    agent_a, agent_b = desk_a.agent(), desk_b.agent()
    await warm_up(desk_a, agent_a, runs, runs=5, seed=1)
    await warm_up(desk_b, agent_b, runs, runs=5, seed=2)
    assert (await store_b.baseline("desk")).runs == 10
    # worker A sees a burst (the baseline allows max(10, 5 * 3) calls a minute) ...
    desk_a.seconds = 0.1
    await desk_a.run(agent_a, runs, Plan(calls=[("lookup", {"order_id": n})
                                                for n in range(16)], cost_per_turn=0.0), "a")
    assert alerts_a.kinds() == ["burst"]
    sleeps.clear()
    # ... and worker B's next call to that tool waits for the shared slot
    desk_b.seconds = 0.1
    await desk_b.run(agent_b, runs, Plan(calls=[("lookup", {"order_id": 1})]), "b")
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 2.0
    # worker B's new tool is judged against the baseline A helped learn
    await desk_b.run(agent_b, runs, Plan(calls=[("export_customers", {"segment": "a"})]), "c")
    assert alerts_b.kinds() == ["new_tool"]
    assert await store_a.take_approval("desk") is True, "A owes what B decided"
    await store_a.aclose()
    await store_b.aclose()


async def test_an_unreachable_redis_is_a_clear_error_naming_the_url() -> None:
    s = RedisMonitorStore("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(StoreError) as err:
        await s.baseline("desk")
    assert "127.0.0.1:1" in str(err.value) and "hunter2" not in str(err.value)
    assert "hunter2" not in repr(s)
    await s.aclose()


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"url": "http://127.0.0.1:6379"}, "url"),
    ({"prefix": ""}, "prefix"),
    ({"timeout": 0}, "timeout"),
])
def test_bad_redis_settings_are_refused(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedisMonitorStore(**kwargs)
    assert err.value.field == part


# ------------------------------------------------------------------ forcing a breaker open


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def breaker(request: pytest.FixtureRequest,
                  prefix: str) -> AsyncIterator[tuple[CircuitBreaker, Clock]]:
    clock = Clock(5000.0)
    if request.param == "memory":
        yield CircuitBreaker(BreakerPolicy(cooldown=30.0), store=InMemoryBreakerStore(),
                             clock=clock), clock
        return
    s = RedisBreakerStore(REDIS_URL, prefix)
    yield CircuitBreaker(BreakerPolicy(cooldown=30.0), store=s, clock=clock), clock
    await s.aclose()


async def test_a_breaker_forced_open_fails_fast_then_recovers(
        breaker: tuple[CircuitBreaker, Clock]) -> None:
    cb, clock = breaker
    await cb.force_open("tool:lookup", 120.0)
    snap = await cb.state("tool:lookup")
    assert snap.state == "open" and snap.retry_in == pytest.approx(120.0)
    await cb.force_open("tool:lookup", 10.0)  # a shorter force leaves the longer one
    assert (await cb.state("tool:lookup")).retry_in == pytest.approx(120.0)
    clock.now += 121.0
    assert (await cb.state("tool:lookup")).state == "half_open"
    permit = await cb.store.acquire("tool:lookup", cb.policy, now=clock.now)
    assert permit.allowed and permit.probe is not None
    await cb.store.record("tool:lookup", cb.policy, "success", probe=permit.probe, now=clock.now)
    assert (await cb.state("tool:lookup")).state == "closed"


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), "60", True])
async def test_forcing_open_needs_a_sane_duration(seconds: Any) -> None:
    with pytest.raises(ConfigError) as err:
        await CircuitBreaker().force_open("tool:x", seconds)
    assert err.value.field == "seconds"


async def test_forcing_open_a_store_that_cannot_is_a_clear_error() -> None:
    class Minimal(InMemoryBreakerStore):
        force_open = None  # type: ignore[assignment]

    with pytest.raises(ConfigError) as err:
        await CircuitBreaker(store=Minimal()).force_open("tool:x", 5.0)
    assert err.value.field == "store"


# --------------------------------------------------------------------------- webhooks


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], Any]]
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((dict(self.headers.items()), json.loads(body)))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_alerts_are_posted_to_a_webhook_with_the_evidence(
        hook_server: tuple[str, type[_Hook]]) -> None:
    url, handler = hook_server
    notifier = WebhookNotifier(url, headers={"Authorization": "Bearer t0k"})
    clock = Clock()
    monitor = Monitor(MonitorPolicy(loop_repeats=3, actions={"loop": ("alert",)}),
                      notifier=notifier, clock=clock)
    desk = Desk(monitor=monitor, clock=clock)
    result = await desk.run(desk.agent(), MemoryStore(),
                            Plan(calls=[("lookup", {"order_id": 9})] * 3), "again")
    assert result.output == "Done."
    assert len(handler.received) == 1
    headers, body = handler.received[0]
    assert headers["Authorization"] == "Bearer t0k"
    alert = body["alert"]
    assert alert["deviation"] == "loop" and alert["actions"] == ["alert"]
    assert alert["run_id"] == result.run_id and alert["agent"] == "desk"
    assert alert["tool"] == "lookup" and alert["evidence"]["repeats"] == 3
    assert "order_id" not in json.dumps(alert), "evidence carries hashes, not arguments"
    assert notifier.failures == 0


async def test_a_failing_webhook_does_not_fail_the_run(
        hook_server: tuple[str, type[_Hook]]) -> None:
    url, handler = hook_server
    handler.status = 500
    notifier = WebhookNotifier(url)
    alert = Alert(deviation="burst", actions=("alert",), reason="r", agent="a", run_id="r1")
    await notifier.notify(alert)
    assert notifier.failures == 1 and len(handler.received) == 1
    down = WebhookNotifier("http://127.0.0.1:1/alerts", timeout=0.5)
    await down.notify(alert)
    assert down.failures == 1


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"url": "ftp://example.test/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://127.0.0.1/x", "timeout": 0}, "timeout"),
    ({"url": "http://127.0.0.1/x", "headers": {"X": 1}}, "headers"),
])
def test_bad_webhooks_are_refused(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as err:
        WebhookNotifier(**kwargs)
    assert err.value.field == part


def test_a_webhooks_repr_hides_its_secrets() -> None:
    hook = WebhookNotifier("https://user:pw@hooks.example.test/alert?token=abc")
    assert "pw" not in repr(hook) and "abc" not in repr(hook)
