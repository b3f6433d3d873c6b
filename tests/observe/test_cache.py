"""The exact-match model cache: hits and misses on every backend, the determinism rule, TTL on
an injected clock, tenants kept apart, hits journaled (replay and resume read them back) and
free in the budget, hostile entries and a failing store treated as misses."""

from __future__ import annotations

import contextvars
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from keel import (
    Agent,
    ApprovalRequired,
    Budget,
    ConfigError,
    MemoryStore,
    ModelResponse,
    ModelSettings,
    Usage,
    UserError,
    replay_run,
    tool,
)
from keel.core import Message, TextPart
from keel.observe import (
    CacheStore,
    MemoryCacheStore,
    ModelCache,
    RedisCacheStore,
    SQLiteCacheStore,
    deterministic,
)
from keel.runtime import ModelRequestInput, RunStartInput, decide_approval
from keel.store import SQLiteStore, TaskFilter
from keel.testing import FunctionModel, ScriptedModel, call

REDIS_URL = "redis://127.0.0.1:6379/0"
ZERO = ModelSettings(temperature=0)


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


def _drop(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=needs_redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CacheStore]:
    if request.param == "memory":
        yield MemoryCacheStore()
    elif request.param == "sqlite":
        s = SQLiteCacheStore(tmp_path / "cache.db")
        yield s
        s.close()
    else:
        prefix = f"keel:test:cache:{uuid.uuid4().hex}:"
        r = RedisCacheStore(REDIS_URL, prefix=prefix)
        try:
            yield r
        finally:
            await r.aclose()
            _drop(prefix)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Counting:
    """A model that answers 'answer N' (N = how many times it was called) at $0.01 a call."""

    calls: int = 0

    def __call__(self, messages: list[Message], tools: Any, settings: Any) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=(TextPart(text=f"answer {self.calls}"),), model="m",
                             usage=Usage(requests=1, input_tokens=10, output_tokens=5,
                                         cost_usd=0.01))


def make(cache: ModelCache, settings: ModelSettings = ZERO,
         counting: Counting | None = None) -> tuple[Agent[str], Counting]:
    counting = counting or Counting()
    agent = Agent("desk", model=FunctionModel(counting, name="test:m"), settings=settings,
                  middleware=[cache])
    return agent, counting


async def _model_records(store: MemoryStore, run_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await store.read_journal(run_id)
            if e.kind == "model" and e.phase == "result"]


async def test_a_repeated_request_is_a_hit_on_every_backend(store: CacheStore) -> None:
    cache = ModelCache(store)
    agent, model = make(cache)
    runs = MemoryStore()
    first = await agent.run("opening hours?", store=runs)
    second = await agent.run("opening hours?", store=runs)
    other = await agent.run("refund policy?", store=runs)
    assert model.calls == 2, "the repeated question must not reach the model"
    assert (first.output, second.output, other.output) == ("answer 1", "answer 1", "answer 2")
    [miss] = await _model_records(runs, first.run_id)
    [hit] = await _model_records(runs, second.run_id)
    assert miss["provider_details"] == {"cache": "miss", "cache_kind": "exact"}
    assert hit["provider_details"]["cache"] == "hit"
    assert hit["provider_details"]["cache_kind"] == "exact"
    assert hit["provider_details"]["cache_saved"]["cost_usd"] == 0.01
    assert hit["usage"] == Usage().to_dict()
    assert hit["parts"] == miss["parts"]
    assert cache.stats["hits"] == 1 and cache.stats["misses"] == 2


@pytest.mark.parametrize(("settings", "always", "cached"), [
    (ModelSettings(), False, False),
    (ModelSettings(temperature=0.7), False, False),
    (ModelSettings(temperature=0), False, True),
    (ModelSettings(temperature=0.7, extra={"seed": 7}), False, True),
    (ModelSettings(temperature=0.7), True, True),
])
async def test_only_deterministic_settings_are_cached_unless_always(
        settings: ModelSettings, always: bool, cached: bool) -> None:
    cache = ModelCache(always=always)
    agent, model = make(cache, settings)
    runs = MemoryStore()
    await agent.run("q", store=runs)
    second = await agent.run("q", store=runs)
    assert model.calls == (1 if cached else 2)
    assert deterministic(settings) == (cached and not always)
    [record] = await _model_records(runs, second.run_id)
    details = record.get("provider_details") or {}
    assert details.get("cache") == ("hit" if cached else None), "skipped requests stay unmarked"


async def test_settings_tools_and_model_are_part_of_the_key() -> None:
    cache = ModelCache()
    counting = Counting()
    runs = MemoryStore()
    await make(cache, ZERO, counting)[0].run("q", store=runs)
    await make(cache, ModelSettings(temperature=0, max_tokens=50), counting)[0].run(
        "q", store=runs)
    await make(cache, ModelSettings(temperature=0, timeout=5), counting)[0].run(
        "q", store=runs)  # the timeout does not change the answer: a hit

    @tool
    def lookup(x: int) -> int:
        """Look x up."""
        return x

    with_tool = Agent("desk", model=FunctionModel(counting, name="test:m"), settings=ZERO,
                      tools=[lookup], middleware=[cache])
    await with_tool.run("q", store=runs)
    other_model = Agent("desk", model=FunctionModel(counting, name="test:other"),
                        settings=ZERO, middleware=[cache])
    await other_model.run("q", store=runs)
    assert counting.calls == 4


async def test_entries_expire_after_the_ttl_on_the_injected_clock(store: CacheStore) -> None:
    clock = Clock()
    cache = ModelCache(store, ttl=60, clock=clock)
    agent, model = make(cache)
    runs = MemoryStore()
    await agent.run("q", store=runs)
    clock.now += 59
    assert (await agent.run("q", store=runs)).output == "answer 1"
    clock.now += 2  # 61 s after the answer was stored
    assert (await agent.run("q", store=runs)).output == "answer 2"
    assert model.calls == 2
    assert (await agent.run("q", store=runs)).output == "answer 2", "the refreshed entry"


async def test_tenants_never_see_each_others_entries(store: CacheStore) -> None:
    tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant")
    cache = ModelCache(store, tenant_of=lambda inp: tenant.get())
    agent, model = make(cache)
    runs = MemoryStore()
    outputs = []
    for who in ("acme", "globex", "acme", None, "globex", None):
        tenant.set(who)
        outputs.append((await agent.run("what is our plan?", store=runs)).output)
    assert outputs == ["answer 1", "answer 2", "answer 1", "answer 3", "answer 2", "answer 3"]
    assert model.calls == 3
    await store.clear("acme")
    tenant.set("acme")
    assert (await agent.run("what is our plan?", store=runs)).output == "answer 4"
    tenant.set("globex")
    assert (await agent.run("what is our plan?", store=runs)).output == "answer 2"


@dataclass(frozen=True, slots=True, kw_only=True)
class _TenantStart(RunStartInput):
    tenant: str | None = None


async def test_the_run_tenant_is_taken_from_run_start_once_the_runtime_carries_it() -> None:
    """Without tenant_of the cache reads ``RunStartInput.tenant`` (the field the tenants work
    adds) for the run's later requests, and forgets it at the run's end."""
    cache = ModelCache()
    await cache.on_run_start(_TenantStart(run_id="r1", agent="a", input="q", resumed=False,
                                          tenant="acme"))
    inp = ModelRequestInput(run_id="r1", step_key="a/turn:0/model", agent="a",
                            model=ScriptedModel(["x"]), messages=[Message.user("q")], tools=[],
                            settings=ZERO)
    assert cache.tenants.of(inp) == "acme"
    assert cache.tenants.of(ModelRequestInput(**{**_fields(inp), "run_id": "r2"})) == ""


def _fields(inp: ModelRequestInput) -> dict[str, Any]:
    return {f: getattr(inp, f) for f in inp.__dataclass_fields__}


async def test_a_bad_tenant_id_is_a_clear_error() -> None:
    agent, _ = make(ModelCache(tenant_of=lambda inp: 42))  # type: ignore[arg-type,return-value]
    with pytest.raises(UserError, match=r"ModelCache.tenant_of returned int"):
        await agent.run("q", store=MemoryStore())


async def test_a_hit_costs_nothing_in_the_budget_or_the_run_totals() -> None:
    cache = ModelCache()
    agent, model = make(cache)
    runs = MemoryStore()
    first = await agent.run("q", store=runs)
    assert first.usage.cost_usd == 0.01
    # a budget with no money left for a model call still takes answers from the cache
    broke = Agent("desk", model=FunctionModel(model, name="test:m"), settings=ZERO,
                  middleware=[cache], budget=Budget(max_cost_usd=0.005))
    second = await broke.run("q", store=runs)
    third = await broke.run("q", store=runs)
    assert second.usage == Usage() and third.usage == Usage()
    assert second.steps == 1, "a hit is still a step of the run"
    assert (await runs.get_run(second.run_id)).usage["cost_usd"] == 0.0
    assert model.calls == 1


async def test_replay_of_a_run_with_hits_is_identical_and_never_asks_the_cache(
        tmp_path: Path) -> None:
    cache_store = SQLiteCacheStore(tmp_path / "cache.db")
    cache = ModelCache(cache_store)
    agent, model = make(cache)
    runs = MemoryStore()
    await agent.run("q", store=runs)
    hit = await agent.run("q", store=runs)
    await cache_store.clear()  # the cache is gone: replay must read the journal alone
    report = await replay_run(agent, hit.run_id, store=runs)
    assert report.identical, report.reason
    assert report.replayed_output == "answer 1"
    assert model.calls == 1 and cache.stats["hits"] == 1
    cache_store.close()


async def test_resume_reads_the_hit_back_from_the_journal(tmp_path: Path) -> None:
    effects: list[int] = []

    @tool(risk="irreversible")
    def refund(amount: int) -> str:
        """Refund money."""
        effects.append(amount)
        return "refunded"

    cache = ModelCache()
    script = [call("refund", {"amount": 5}), "done"]
    runs = SQLiteStore(str(tmp_path / "runs.db"))
    first_model = ScriptedModel(script, name="test:m")
    first = Agent("desk", model=first_model, tools=[refund], settings=ZERO, middleware=[cache])
    with pytest.raises(ApprovalRequired):
        await first.run("refund 5", store=runs)
    [task] = await runs.list_tasks(TaskFilter(kind="approval"))
    await decide_approval(task.task_id, store=runs, approve=True, by="ann")
    await first.resume(task.run_id, store=runs)
    # a second run: its first model step is a hit, then it waits for approval
    second_model = FunctionModel(lambda m, t, s: "refund done", name="test:m")
    second = Agent("desk", model=second_model, tools=[refund], settings=ZERO,
                   middleware=[cache])
    with pytest.raises(ApprovalRequired) as info:
        await second.run("refund 5", store=runs)
    run_id = info.value.run_id
    assert run_id is not None
    [recorded] = await _model_records(runs, run_id)  # type: ignore[arg-type]
    assert recorded["provider_details"]["cache"] == "hit"
    await cache.store.clear()
    [task2] = [t for t in await runs.list_tasks(TaskFilter(kind="approval"))
               if t.run_id == run_id]
    await decide_approval(task2.task_id, store=runs, approve=True, by="ann")
    resumed = await second.resume(run_id, store=runs)
    assert resumed.output == "refund done" and resumed.replayed_steps >= 1
    assert len(second_model.requests) == 1, "only the turn after the tool reached the model"
    records = await _model_records(runs, run_id)  # type: ignore[arg-type]
    assert records[0] == recorded, "the hit was read back, not asked again"
    assert records[1]["provider_details"] == {"cache": "miss", "cache_kind": "exact"}
    assert effects == [5, 5]
    await runs.close()


@pytest.mark.parametrize("garbage", [
    "not json", "[]", '{"v": 1}', json.dumps({"v": 99, "response": {}}),
    '{"v": 1, "created_at": 0, "expires_at": 1e300, "response": {"parts": "x"}}',
    '{"v": 1, "created_at": 0, "expires_at": "nan", "response": {}}',
    "[" * 100_000 + "]" * 100_000,
])
async def test_a_corrupt_or_hostile_entry_is_a_miss_and_is_replaced(
        store: CacheStore, garbage: str) -> None:
    cache = ModelCache(store)
    agent, model = make(cache)
    runs = MemoryStore()
    await agent.run("q", store=runs)
    tenants = [""]
    keys = await _keys(store, tenants)
    for key in keys:
        await store.set("", key, garbage, ttl=60)
    assert (await agent.run("q", store=runs)).output == "answer 2"
    assert (await agent.run("q", store=runs)).output == "answer 2"
    assert model.calls == 2


async def _keys(store: CacheStore, tenants: list[str]) -> list[str]:
    """The cache keys a store holds (each backend's own listing)."""
    if isinstance(store, MemoryCacheStore):
        return [k for (_, k) in store._data]
    if isinstance(store, SQLiteCacheStore):
        with store._db() as db:
            return [r[0] for r in db.execute("SELECT key FROM keel_model_cache")]
    assert isinstance(store, RedisCacheStore)
    client = store._connect()
    return [k.decode().rsplit(":", 1)[1] async for k in client.scan_iter(
        match=f"{store.prefix}*")]


async def test_an_oversized_response_is_not_cached_and_an_oversized_entry_not_read(
        store: CacheStore) -> None:
    big = Counting()

    def huge(messages: list[Message], tools: Any, settings: Any) -> ModelResponse:
        big.calls += 1
        return ModelResponse(parts=(TextPart(text="x" * 5000),))

    cache = ModelCache(store, max_entry_bytes=4096)
    agent = Agent("desk", model=FunctionModel(huge, name="test:m"), settings=ZERO,
                  middleware=[cache])
    runs = MemoryStore()
    await agent.run("q", store=runs)
    await agent.run("q", store=runs)
    assert big.calls == 2 and cache.stats["too_large"] == 2
    assert await _keys(store, [""]) == []


async def test_a_store_that_fails_is_a_miss_and_the_run_goes_on() -> None:
    dead = RedisCacheStore("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    assert "hunter2" not in repr(dead)
    cache = ModelCache(dead)
    agent, _model = make(cache)
    runs = MemoryStore()
    assert (await agent.run("q", store=runs)).output == "answer 1"
    assert (await agent.run("q", store=runs)).output == "answer 2"
    assert cache.stats["errors"] == 4 and cache.stats["hits"] == 0
    await dead.aclose()


def test_secrets_are_masked_before_an_entry_is_written() -> None:
    from keel.observe._cache import encode_entry

    secret = "sk-" + "a" * 40
    text = encode_entry(ModelResponse(parts=(TextPart(text=f"key {secret}"),)), now=0, ttl=1)
    assert secret not in text


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"ttl": 0}, "ModelCache.ttl"), ({"ttl": float("inf")}, "ModelCache.ttl"),
    ({"ttl": "1h"}, "ModelCache.ttl"), ({"always": 1}, "ModelCache.always"),
    ({"max_entry_bytes": 10}, "ModelCache.max_entry_bytes"),
    ({"store": object()}, "ModelCache.store"), ({"tenant_of": "acme"}, "ModelCache.tenant_of"),
    ({"clock": 3}, "ModelCache.clock"),
])
def test_bad_configuration_names_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError, match=part.replace(".", r"\.")):
        ModelCache(**kwargs)


@pytest.mark.parametrize(("make_store", "part"), [
    (lambda: RedisCacheStore("http://x"), "RedisCacheStore.url"),
    (lambda: RedisCacheStore(prefix=""), "RedisCacheStore.prefix"),
    (lambda: SQLiteCacheStore(""), "SQLiteCacheStore.path"),
    (lambda: SQLiteCacheStore("x.db", max_entries=0), "SQLiteCacheStore.max_entries"),
    (lambda: MemoryCacheStore(max_entries=-1), "MemoryCacheStore.max_entries"),
])
def test_bad_store_configuration_names_the_part(make_store: Any, part: str) -> None:
    with pytest.raises(ConfigError, match=part.replace(".", r"\.")):
        make_store()


async def test_the_memory_store_is_bounded() -> None:
    s = MemoryCacheStore(max_entries=3)
    for i in range(10):
        await s.set("t", str(i), "v", ttl=60)
    assert len(s) == 3 and await s.get("t", "0") is None and await s.get("t", "9") == "v"
    small = MemoryCacheStore(max_bytes=100)
    for i in range(10):
        await small.set("t", str(i), "x" * 30, ttl=60)
    assert len(small) == 3 and await small.get("t", "9") == "x" * 30
    await small.set("t", "9", "y" * 30, ttl=60)  # a replaced entry is counted once
    await small.clear("t")
    assert len(small) == 0 and small._bytes == 0


async def test_a_streamed_run_takes_a_hit_like_a_replayed_step() -> None:
    cache = ModelCache()
    agent, model = make(cache)
    runs = MemoryStore()
    await agent.run("q", store=runs)
    events = [e async for e in agent.stream("q", store=runs)]
    finished = events[-1]
    assert type(finished).__name__ == "RunFinished"
    assert finished.result.output == "answer 1" and model.calls == 1  # type: ignore[attr-defined]


def test_sqlite_prunes_past_max_entries(tmp_path: Path) -> None:
    import asyncio

    s = SQLiteCacheStore(tmp_path / "c.db", max_entries=10)

    async def fill() -> None:
        for i in range(200):
            await s.set("t", str(i), "v", ttl=60 + i)

    asyncio.run(fill())
    with s._db() as db:
        (count,) = db.execute("SELECT COUNT(*) FROM keel_model_cache").fetchone()
    assert count <= 10 + 64, "pruned now and then, never far past the bound"
    s.close()


def test_the_incremental_key_equals_the_full_key_and_notices_a_changed_prefix() -> None:
    from keel.observe._cache import _Prefixes, cache_key

    prefixes = _Prefixes()
    history = [Message.system("s"), Message.user("u")]
    keys = []
    for i in range(5):
        key = prefixes.key("r", "h", history)
        assert key == cache_key("h", history)
        keys.append(key)
        history.append(Message.assistant(f"a{i}"))
    assert len(set(keys)) == 5
    changed = list(history)
    changed[1] = Message.user("another question")
    assert prefixes.key("r", "h", changed) == cache_key("h", changed) != cache_key("h", history)
    same_list_edited = history
    same_list_edited[0] = Message.system("edited")
    assert prefixes.key("r", "h", same_list_edited) == cache_key("h", same_list_edited)
    assert prefixes.key("r", "other header", history) == cache_key("other header", history)
    # no two requests share an encoding: the boundaries between fields are part of the key
    assert cache_key("h", [Message.user("ab")]) != cache_key("h", [Message.user("a"),
                                                                   Message.user("b")])
    prefixes.forget("r")
    assert prefixes.slots == {}


def test_importing_keel_observe_loads_no_store_driver_and_no_numpy() -> None:
    """SQLite, Redis and numpy are imported on first use, so the cache could join the
    defaults without slowing ``import keel``."""
    import subprocess
    import sys

    code = ("import sys, keel.observe; print([m for m in ('sqlite3', 'redis', 'numpy', "
            "'wordllama') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
