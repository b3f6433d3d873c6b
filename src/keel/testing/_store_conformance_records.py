"""The feedback and settings half of the store conformance suite: feedback is kept per run,
scoped by tenant and idempotent by id; settings are versioned documents written with
compare-and-set, every version kept."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from keel.core import RunNotFound, SettingConflict, UserError
from keel.store import Feedback, RunStore
from keel.testing._store_conformance import sample_run
from keel.testing._store_conformance_tenants import HOSTILE_IDS

__all__ = ["RecordsConformance"]

_T0 = 1_700_000_000.0


async def _refuses(kind: type[Exception], call: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> None:
    """``call(*args, **kwargs)`` (awaited when it gives an awaitable) must raise ``kind``."""
    try:
        result = call(*args, **kwargs)
        if inspect.isawaitable(result):
            await result
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}, nothing was raised")


def _fb(fid: str, run_id: str, at: float, **kw: object) -> Feedback:
    return Feedback(feedback_id=fid, run_id=run_id, created_at=at, **kw)  # type: ignore[arg-type]


class RecordsConformance:
    """``put_feedback``/``list_feedback`` and the settings methods."""

    async def test_feedback_round_trips_with_the_runs_tenant(self, store: RunStore) -> None:
        await store.create_run(sample_run("r1", created_at=_T0, tenant="acme"))
        await store.create_run(sample_run("r2", created_at=_T0 + 1))
        comment = "Ünïcode ' OR 1=1; -- \U0001f600 " + "x" * 100
        got = await store.put_feedback(_fb("f1", "r1", _T0 + 5, thumbs="down", score=0.25,
                                           comment=comment, by="ana",
                                           metadata={"k": [1, 2]}))
        assert (got.tenant, got.thumbs, got.score, got.comment, got.by, got.metadata) == (
            "acme", "down", 0.25, comment, "ana", {"k": [1, 2]})
        await store.put_feedback(_fb("f2", "r2", _T0 + 6, thumbs="up"))
        await store.put_feedback(_fb("f3", "r1", _T0 + 7, score=1.0))
        assert [f.feedback_id for f in await store.list_feedback()] == ["f1", "f2", "f3"]
        assert [f.feedback_id for f in await store.list_feedback(run_ids=["r1"])] == ["f1", "f3"]
        assert await store.list_feedback(run_ids=[]) == []
        assert [f.feedback_id for f in await store.list_feedback(tenant="acme")] == ["f1", "f3"]
        assert [f.feedback_id for f in await store.list_feedback(since=_T0 + 6)] == ["f2", "f3"]
        assert [f.feedback_id for f in await store.list_feedback(limit=1)] == ["f1"]
        assert (await store.list_feedback(run_ids=["r1"]))[0] == got

    async def test_feedback_is_idempotent_by_id(self, store: RunStore) -> None:
        await store.create_run(sample_run("r1", created_at=_T0))
        first = await store.put_feedback(_fb("f1", "r1", _T0, thumbs="up"))
        again = await store.put_feedback(_fb("f1", "r1", _T0 + 9, thumbs="down"))
        assert again == first and len(await store.list_feedback()) == 1

    async def test_feedback_on_a_missing_or_foreign_run_is_refused(self, store: RunStore) -> None:
        await store.create_run(sample_run("r1", created_at=_T0, tenant="acme"))
        await _refuses(RunNotFound, store.put_feedback, _fb("f1", "nope", _T0, thumbs="up"))
        await _refuses(RunNotFound, store.put_feedback, _fb("f2", "r1", _T0, thumbs="up"),
                       tenant="globex")
        await store.put_feedback(_fb("f3", "r1", _T0, thumbs="up"), tenant="acme")
        assert [f.feedback_id for f in await store.list_feedback()] == ["f3"]
        assert await store.list_feedback(tenant="globex") == []

    async def test_feedback_goes_with_its_run(self, store: RunStore) -> None:
        await store.create_run(sample_run("old", status="completed", created_at=_T0))
        await store.create_run(sample_run("new", status="completed", created_at=_T0 + 10,
                                          conversation="c1", tenant="acme"))
        await store.create_run(sample_run("keep", created_at=_T0 + 20))
        for run_id in ("old", "new", "keep"):
            await store.put_feedback(_fb(f"f-{run_id}", run_id, _T0, thumbs="up"))
        assert await store.prune_runs(before=_T0 + 5) == 1
        assert await store.delete_conversation("c1", tenant="acme") == 1
        assert [f.run_id for f in await store.list_feedback()] == ["keep"]

    async def test_feedback_with_many_run_ids(self, store: RunStore) -> None:
        for i in range(3):
            await store.create_run(sample_run(f"r{i}", created_at=_T0 + i))
            await store.put_feedback(_fb(f"f{i}", f"r{i}", _T0 + i, thumbs="up"))
        ids = [f"missing-{i}" for i in range(1200)] + ["r2", "r0"]
        assert [f.feedback_id for f in await store.list_feedback(run_ids=ids)] == ["f0", "f2"]

    async def test_settings_compare_and_set_and_history(self, store: RunStore) -> None:
        assert await store.get_setting("rollout:a") is None
        one = await store.put_setting("rollout:a", {"percent": 1}, expect_version=0, by="ops",
                                      reason="start")
        assert (one.version, one.value, one.updated_by, one.reason) == (1, {"percent": 1},
                                                                        "ops", "start")
        await _refuses(SettingConflict, store.put_setting, "rollout:a", {"percent": 50},
                       expect_version=0)
        two = await store.put_setting("rollout:a", {"percent": 10}, expect_version=1)
        await _refuses(SettingConflict, store.put_setting, "rollout:a", {"percent": 50},
                       expect_version=1)
        got = await store.get_setting("rollout:a")
        assert got is not None and (got.version, got.value) == (2, {"percent": 10}) \
            and got.updated_at == two.updated_at
        history = await store.setting_history("rollout:a")
        assert [(s.version, s.value) for s in history] == [(1, {"percent": 1}),
                                                          (2, {"percent": 10})]
        assert [s.version for s in await store.setting_history("rollout:a", limit=1)] == [2]

    async def test_list_settings_by_prefix_takes_prefixes_literally(self, store: RunStore) -> None:
        for key in ("flag:a", "flag:b", "rollout:x", "flag%", "fla_g"):
            await store.put_setting(key, key, expect_version=0)
        await store.put_setting("flag:a", "newer", expect_version=1)
        assert [(s.key, s.value) for s in await store.list_settings("flag:")] == [
            ("flag:a", "newer"), ("flag:b", "flag:b")]
        assert [s.key for s in await store.list_settings("flag%")] == ["flag%"]
        assert len(await store.list_settings()) == 5

    async def test_concurrent_compare_and_set_has_one_winner(self, store: RunStore) -> None:
        await store.put_setting("race", 0, expect_version=0)

        async def bump(i: int) -> bool:
            try:
                await store.put_setting("race", i, expect_version=1)
            except SettingConflict:
                return False
            return True

        won = await asyncio.gather(*(bump(i) for i in range(8)))
        assert sum(won) == 1
        got = await store.get_setting("race")
        assert got is not None and got.version == 2

    async def test_bad_settings_and_feedback_are_refused(self, store: RunStore) -> None:
        for key in ("", "with space", "x" * 201, None, "tab\tkey"):
            await _refuses(UserError, store.put_setting, key, 1, expect_version=0)
        for bad in (-1, True, "1", 1.5):
            await _refuses(UserError, store.put_setting, "k", 1, expect_version=bad)
        for value in (float("nan"), {1, 2}, object(), "x" * 300_000):
            await _refuses(UserError, store.put_setting, "k", value, expect_version=0)
        assert await store.get_setting("k") is None
        for kw in ({}, {"thumbs": "sideways"}, {"score": 2}, {"score": float("nan")},
                   {"comment": "x" * 5000}, {"score": True}):
            await _refuses(UserError, _fb, "f", "r", _T0, **kw)
        await _refuses(UserError, store.list_feedback, limit=0)

    async def test_hostile_keys_round_trip(self, store: RunStore) -> None:
        for i, text in enumerate(HOSTILE_IDS):
            key = f"k{i}:" + "".join(c for c in text if not c.isspace())[:150]
            await store.put_setting(key, {"text": text}, expect_version=0)
            got = await store.get_setting(key)
            assert got is not None and got.value == {"text": text}
