"""A rollout's state, its compare-and-set, its history, flags and the registered versions on
every store backend (memory, SQLite, Postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel import RunStore
from keel.rollout import Flags, Rollout, RolloutError, Versions, change_rollout
from tests._stores import BACKENDS, fresh_store
from tests.rollout._agents import agent, lookup_tool, refund_tool


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    async with fresh_store(request.param, tmp_path, "rollout") as opened:
        yield opened


async def test_state_cas_history_flags_and_versions(store: RunStore) -> None:
    versions = Versions(v1=agent("one", tools=(lookup_tool(), refund_tool())), v2=agent("two"))
    workers = [Rollout("support", versions, store=store, current="v1", candidate="v2",
                       ttl_s=0) for _ in range(4)]
    states = await asyncio.gather(*(w.start() for w in workers))
    assert {s.version for s in states} == {1}  # four workers started it once
    # four operators advance from the same reading: exactly one wins
    results = await asyncio.gather(
        *(change_rollout(store, "support", "advance", now=1.0, by=f"op{i}", expect_version=1)
          for i in range(4)), return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, RolloutError)]
    assert len(won) == 1 and len(lost) == 3 and won[0].percent == 10
    assert all("changed" in str(e) for e in lost)
    await workers[0].change("rollback", by="ana", reason="incident")
    history = await workers[1].history()
    assert [(s.status, s.percent) for s in history] == [
        ("active", 1), ("active", 10), ("rolled_back", 0)]
    assert {await workers[2].choose(user=f"u{i}") for i in range(200)} == {"v1"}
    flags = Flags(store, ttl_s=0)
    await flags.set("beta", tenants=["acme"], by="ana")
    assert await flags.enabled("beta", tenant="acme")
    assert not await flags.enabled("beta", tenant="globex")
    with pytest.raises(RolloutError, match="tools missing: refund"):
        await Versions(v1=agent("one", tools=(lookup_tool(),))).register(store)
