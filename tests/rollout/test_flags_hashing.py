"""Consistent hashing and feature flags."""

from __future__ import annotations

import pytest

from keel import SettingConflict
from keel.rollout import BUCKETS, Flags, RolloutError, bucket, in_share
from keel.store import MemoryStore


def test_buckets_are_stable_and_spread_evenly() -> None:
    # pinned: a change to the hash would move users between arms in the middle of rollouts
    assert [bucket("support", f"u{i}") for i in range(5)] == [7269, 9618, 455, 5163, 1849]
    assert bucket("a", "user-1") != bucket("b", "user-1") or \
        bucket("a", "user-2") != bucket("b", "user-2")
    counts = [0] * 10
    for i in range(20_000):
        counts[bucket("support", f"user-{i}") * 10 // BUCKETS] += 1
    assert all(1800 < c < 2200 for c in counts), counts  # each decile within 10%
    share = sum(in_share("support", f"user-{i}", 10) for i in range(20_000)) / 20_000
    assert 0.09 < share < 0.11


def test_shares_are_cumulative() -> None:
    users = [f"user-{i}" for i in range(5000)]
    previous: set[str] = set()
    for percent in (0, 1, 10, 50, 100):
        inside = {u for u in users if in_share("r", u, percent)}
        assert previous <= inside  # raising the share moves nobody out
        previous = inside
    assert previous == set(users)
    assert not any(in_share("r", u, 0) for u in users)


async def test_flags_sticky_allow_lists_and_history() -> None:
    store = MemoryStore()
    flags = Flags(store, ttl_s=0)
    assert await flags.enabled("new-router", user="u1") is False  # unknown: off
    flag = await flags.set("new-router", percent=20, by="ana", reason="try it")
    assert flag.version == 1 and flag.on and flag.percent == 20
    on = [u for u in (f"u{i}" for i in range(2000)) if await flags.enabled("new-router", user=u)]
    assert 300 < len(on) < 500
    again = [u for u in (f"u{i}" for i in range(2000)) if await flags.enabled("new-router", user=u)]
    assert on == again  # sticky
    await flags.set("new-router", tenants=["acme"], users=["vip"], by="ana")
    assert await flags.enabled("new-router", tenant="acme", user="anyone")
    assert await flags.enabled("new-router", user="vip")
    assert not await flags.enabled("new-router", user=on[0])  # allow-list: percent 0
    assert not await flags.enabled("new-router")  # no key, not 100%
    await flags.set("new-router", on=False, tenants=["acme"], reason="incident")
    assert not await flags.enabled("new-router", tenant="acme")
    history = await flags.history("new-router")
    assert [(f.version, f.on, f.updated_by) for f in history] == \
        [(1, True, "ana"), (2, True, "ana"), (3, False, None)]
    assert history[-1].reason == "incident"
    assert [f.name for f in await flags.list()] == ["new-router"]


async def test_flag_cache_and_compare_and_set() -> None:
    store = MemoryStore()
    now = [0.0]
    reader, writer = Flags(store, ttl_s=2, clock=lambda: now[0]), Flags(store)
    await writer.set("f", percent=100)
    assert await reader.enabled("f", user="u")
    await writer.set("f", on=False)
    assert await reader.enabled("f", user="u")  # cached for ttl_s
    now[0] = 2.5
    assert not await reader.enabled("f", user="u")
    with pytest.raises(SettingConflict, match="read it again"):
        await writer.set("f", on=True, expect_version=1)
    assert (await writer.get("f", fresh=True)).on is False  # type: ignore[union-attr]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"percent": 101}, "percentage from 0 to 100"),
    ({"percent": float("nan")}, "percentage from 0 to 100"),
    ({"percent": True}, "percentage from 0 to 100"),
    ({"on": "yes"}, "True or False"),
    ({"tenants": "acme"}, "list of ids"),
    ({"users": [""]}, "1 to 200 characters"),
    ({"users": ["x" * 201]}, "1 to 200 characters"),
    ({"users": [f"u{i}" for i in range(10_001)]}, "at most 10,000"),
])
async def test_flag_bad_input(kwargs: dict[str, object], match: str) -> None:
    flags = Flags(MemoryStore())
    with pytest.raises(RolloutError, match=match):
        await flags.set("f", **kwargs)  # type: ignore[arg-type]
    assert await flags.list() == []


async def test_flag_bad_names_and_store() -> None:
    flags = Flags(MemoryStore())
    for bad in ("", "a b", "x" * 101, "flag\n"):
        with pytest.raises(RolloutError, match="flag name"):
            await flags.set(bad)
    with pytest.raises(RolloutError, match="RunStore"):
        Flags("sqlite:///x.db")  # type: ignore[arg-type]
