"""The failure-modes report over real runs that failed, were blocked or escalated in each
way (on SQLite and Postgres): the right counts, example run ids, places and mitigations;
completed runs add nothing; agent, tenant and time filters; bad arguments refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keel import UserError
from keel.observe import MITIGATIONS, FailureReport, failure_modes, mitigation
from keel.store import RunFilter
from tests._stores import fresh_store
from tests.observe.failing_runs import Seeded, seed


def _mode(report: FailureReport, kind: str, cause: str, where: str | None = None) -> Any:
    found = [m for m in report.modes if m.kind == kind and m.cause == cause
             and (where is None or m.where == where)]
    assert len(found) == 1, [(m.kind, m.cause, m.where) for m in report.modes]
    return found[0]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_each_way_a_run_goes_wrong_is_counted(kind: str, tmp_path: Path) -> None:
    async with fresh_store(kind, tmp_path, "failmodes") as store:
        seeded: Seeded = await seed(store)
        await seed(store, tenant="globex")  # another tenant's runs never count
        report = await failure_modes(store, tenant="acme")
    ids = seeded.ids
    assert report.runs == seeded.total == 13 and report.complete
    assert (report.failed, report.blocked, report.escalated) == (3, 6, 1)

    down = _mode(report, "failed", "ModelError", "model test:scripted")
    assert (down.count, down.runs) == (2, 2)
    assert list(down.examples) == ids["model_down"][::-1]  # newest first
    assert down.share == pytest.approx(2 / 13)
    assert "backoff" in down.mitigation and "breaker" in down.mitigation
    assert down.first_seen <= down.last_seen

    assert _mode(report, "blocked", "guard injection", "the user's input").examples == (
        ids["inject_input"][0],)
    tool_out = _mode(report, "blocked", "guard injection", "output of tool fetch_note")
    assert tool_out.examples == (ids["inject_tool"][0],)
    assert "injection guard" in tool_out.mitigation
    budget = _mode(report, "blocked", "budget exceeded (steps)", "tool lookup")
    assert budget.examples == (ids["budget"][0],) and "per-run budget" in budget.mitigation
    breaker = _mode(report, "blocked", "breaker open")
    assert breaker.examples == (ids["breaker"][0],) and breaker.where == "model test:scripted"
    limited = _mode(report, "blocked", "rate limited", "tool lookup")
    assert limited.examples == (ids["rate_limited"][0],)
    denied = _mode(report, "blocked", "approval denied", "tool refund")
    assert denied.examples == (ids["denied"][0],) and "approval" in denied.mitigation
    escalated = _mode(report, "escalated", "trigger tool")
    assert escalated.examples == (ids["escalated"][0],) and escalated.where == "queue support"
    repeated = _mode(report, "failed", "RepeatedFailure", "tool lookup")
    assert repeated.examples == (ids["repeated"][0],)
    tool_errors = _mode(report, "tool_error", "tool_error", "tool lookup")
    assert (tool_errors.count, tool_errors.runs) == (3, 1)

    for m in report.modes:  # every run of a mode is one version's
        assert sum(m.versions.values()) == m.runs and "-" not in m.versions

    every = {r for m in report.modes for r in m.examples}
    assert not every & set(ids["fine"]), "a completed run is not a failure mode"
    counts = [m.count for m in report.modes]
    assert counts == sorted(counts, reverse=True)


async def test_filters_limit_and_window(tmp_path: Path) -> None:
    async with fresh_store("sqlite", tmp_path, "failmodes") as store:
        seeded = await seed(store)
        only = await failure_modes(store, agent="writer")
        assert only.runs == 2 and [m.cause for m in only.modes] == ["ModelError"]
        assert (await failure_modes(store, limit=2)).modes == (
            await failure_modes(store)).modes[:2]
        later = await failure_modes(store, since=time.time() + 60)
        assert later.runs == 0 and later.modes == ()
        when = datetime.fromtimestamp(time.time() - 3600, UTC)
        assert (await failure_modes(store, since=when)).runs == seeded.total
        assert (await failure_modes(store, tenant="nobody")).runs == 0
        part = await failure_modes(store, scan=5)
        assert part.runs == 5 and not part.complete
        refunds = (await store.get_run(seeded.ids["denied"][0])).metadata["version"]
        served = [r for r in await store.list_runs(RunFilter(limit=100))
                  if r.metadata.get("version") == refunds]
        by_version = await failure_modes(store, version=refunds)
        assert by_version.runs == len(served) >= 1 and by_version.version == refunds
        assert [m.cause for m in by_version.modes] == ["approval denied"]
        assert (await failure_modes(store, version="0" * 16)).runs == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"limit": 0}, "limit= must be a whole number from 1"),
    ({"limit": True}, "limit="),
    ({"limit": 10_000}, "limit="),
    ({"scan": -1}, "scan="),
    ({"since": "yesterday"}, "since= must be epoch seconds or a datetime"),
    ({"since": float("nan")}, "finite"),
    ({"tenant": "x" * 5000}, "tenant"),
    ({"agent": "bad\x00agent"}, "agent"),
    ({"version": "v\x1b[31m"}, "version"),
    ({"version": ""}, "version"),
])
async def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str,
                                         tmp_path: Path) -> None:
    async with fresh_store("sqlite", tmp_path, "failmodes") as store:
        with pytest.raises(UserError, match=match):
            await failure_modes(store, **kwargs)


def test_every_mitigation_is_said_and_unknown_kinds_get_a_general_one() -> None:
    assert all(text.strip() for text in MITIGATIONS.values())
    assert "person" in mitigation("escalation:never-heard-of")
    assert "guard" in mitigation("guard:custom")
    assert "keel resume" in mitigation("SomethingNew")
