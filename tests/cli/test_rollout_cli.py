"""``keel rollout status|advance|rollback|pause|resume|history``: each change written to the
store with compare-and-set and kept in the history; clear errors and exit code 2 for an
unknown rollout, an advance past 100%, a rollback of a completed rollout, a stale
--expect-version and a store that does not exist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from keel.rollout import Rollout, RolloutState, Versions, read_rollout
from keel.store import SQLiteStore
from tests.cli.conftest import InvokeResult
from tests.rollout._agents import agent

Keel = Callable[..., InvokeResult]


def _path(store: str) -> str:
    return store.removeprefix("sqlite:///")


def _start(store: str, steps: tuple[float, ...] = (1, 10, 50, 100)) -> RolloutState:
    async def go() -> RolloutState:
        async with SQLiteStore(_path(store)) as opened:
            r = Rollout("support", Versions(v1=agent("one"), v2=agent("two")), store=opened,
                        current="v1", candidate="v2", steps=steps)
            return await r.start()

    return asyncio.run(go())


def _read(store: str) -> RolloutState:
    async def go() -> RolloutState:
        async with SQLiteStore(_path(store)) as opened:
            return await read_rollout(opened, "support")

    return asyncio.run(go())


def test_status_advance_pause_rollback_and_history(keel: Keel, store: str) -> None:
    _start(store)
    r = keel("rollout", "status", "support", "--store", store)
    assert r.exit_code == 0, r
    assert "v1 (current) -> v2 (candidate)" in r.stdout and "1% (steps 1, 10, 50, 100)" in r.stdout
    r = keel("rollout", "advance", "support", "--store", store, "--by", "ana",
             "--reason", "looks good", "--json")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["percent"] == 10
    state = _read(store)
    assert (state.percent, state.by, state.reason, state.version) == (10, "ana", "looks good", 2)
    assert keel("rollout", "pause", "support", "--store", store, "--by", "ana").exit_code == 0
    assert keel("rollout", "resume", "support", "--store", store, "--by", "ana").exit_code == 0
    r = keel("rollout", "rollback", "support", "--store", store, "--by", "bob",
             "--reason", "complaints")
    assert r.exit_code == 0, r
    assert "rolled_back" in r.stdout and "within the workers' state TTL" in r.stderr
    assert (_read(store).status, _read(store).candidate_share()) == ("rolled_back", 0)
    r = keel("rollout", "history", "support", "--store", store, "--json")
    assert r.exit_code == 0, r
    rows = json.loads(r.stdout)
    assert [(s["status"], s["by"]) for s in rows] == [
        ("active", "keel.rollout"), ("active", "ana"), ("paused", "ana"), ("active", "ana"),
        ("rolled_back", "bob")]
    table = keel("rollout", "history", "support", "--store", store)
    assert table.exit_code == 0 and "complaints" in table.stdout


def test_bad_input_gets_a_clear_error(keel: Keel, store: str) -> None:
    missing = keel("rollout", "status", "nope", "--store", store)
    assert missing.exit_code == 2 and "no run store" in missing.stderr
    _start(store, steps=(50, 100))
    r = keel("rollout", "advance", "nope", "--store", store)
    assert r.exit_code == 2 and "no rollout named 'nope'" in r.stderr
    assert "support" in r.stderr  # names the rollouts there are
    r = keel("rollout", "advance", "support", "--store", store, "--expect-version", "7")
    assert r.exit_code == 2 and "not 7 as read" in r.stderr
    assert _read(store).version == 1  # nothing changed
    assert keel("rollout", "advance", "support", "--store", store).exit_code == 0
    r = keel("rollout", "advance", "support", "--store", store)
    assert r.exit_code == 2 and "no step past 100" in r.stderr
    r = keel("rollout", "rollback", "support", "--store", store)
    assert r.exit_code == 2 and "start a new rollout with current='v2'" in r.stderr
    for bad in ("a b", "x" * 300, "../etc"):
        r = keel("rollout", "status", bad, "--store", store)
        assert r.exit_code == 2 and "rollout name" in r.stderr
    r = keel("rollout", "pause", "support", "--store", store, "--expect-version", "0")
    assert r.exit_code == 2
    r = keel("rollout", "status", "support", "--store", "memory:")
    assert r.exit_code == 2 and "file store" in r.stderr


def test_an_operator_rollback_reaches_a_worker_within_its_ttl(keel: Keel, store: str) -> None:
    """A worker holding the state keeps it for ttl_s at most: after the CLI's rollback, a
    fresh read (what the TTL forces) sends every user to the current version."""

    async def go() -> tuple[set[str], set[str]]:
        async with SQLiteStore(_path(store)) as opened:
            r = Rollout("support", Versions(v1=agent("one"), v2=agent("two")), store=opened,
                        current="v1", candidate="v2", steps=(50, 100), ttl_s=0)
            await r.start()
            before = {await r.choose(user=f"u{i}") for i in range(100)}
            done = await asyncio.to_thread(keel, "rollout", "rollback", "support", "--store",
                                           store)
            assert done.exit_code == 0, done
            after = {await r.choose(user=f"u{i}") for i in range(100)}
            return before, after

    before, after = asyncio.run(go())
    assert before == {"v1", "v2"} and after == {"v1"}
