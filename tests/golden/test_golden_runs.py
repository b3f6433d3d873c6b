"""Golden fixtures: runs written by released keel versions (tests/fixtures/) must still import,
replay and resume on every store backend, and a schema-1 store must still open.

The fixtures are never regenerated here. If a change makes one of these tests fail, the change
broke runs that users have stored (or, for the last test, changed what keel writes): see
tests/fixtures/make_fixtures.py before touching a fixture.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel import ApprovalRequired, MemoryStore, RunStore, decide_approval, replay_run
from keel.cli import app
from keel.store import (
    SCHEMA_VERSION,
    SQLiteStore,
    export_run,
    import_run,
    parse_export,
)
from tests._stores import BACKENDS, fresh_store
from tests.fixtures import agents, make_fixtures

FINISHED = ("plain", "team", "saga")


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.name))


#: One directory of fixtures per keel version that wrote them, oldest first.
VERSION_DIRS = sorted(make_fixtures.RUNS_DIR.glob("keel-*"), key=_version)
FIXTURES = [d / f"{name}.json" for d in VERSION_DIRS for name in make_fixtures.NAMES]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def load(path: Path) -> dict[str, Any]:
    return parse_export(path.read_bytes())


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """A fresh, empty store of each backend."""
    async with fresh_store(request.param, tmp_path, "keel_golden") as opened:
        yield opened


@pytest.fixture(autouse=True)
def _effects() -> Iterator[None]:
    agents.EFFECTS.clear()
    yield
    agents.EFFECTS.clear()


def _without_export_time(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "exported_at"}


def test_the_fixtures_are_there() -> None:
    assert VERSION_DIRS, "no golden fixtures in tests/fixtures/runs/"
    missing = [str(p) for p in FIXTURES if not p.is_file()]
    assert not missing, f"golden fixtures missing: {missing}"
    assert make_fixtures.SCHEMA_1_STORE.is_file()


def _replay_cases(names: tuple[str, ...]) -> list[Any]:
    return [pytest.param(p, id=_id(p)) for p in FIXTURES if p.stem in names]


@pytest.mark.parametrize("path", _replay_cases(FINISHED))
async def test_a_finished_run_imports_and_replays_identically(
        store: RunStore, path: Path) -> None:
    data = load(path)
    run_id = await import_run(data, store=store)
    assert run_id == data["run"]["run_id"]
    # the store gives back exactly what the file holds: nothing re-encoded on the way
    again = await export_run(run_id, store=store)
    assert _without_export_time(again) == _without_export_time(data)
    report = await replay_run(agents.BUILDERS[path.stem](), run_id, store=store)
    assert report.identical, (report.reason, report.divergence)
    assert report.steps_replayed == report.steps_recorded > 0
    assert not agents.EFFECTS, "a replay ran a tool"


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.stem == "approval"], ids=_id)
async def test_a_run_suspended_on_an_approval_resumes_to_completion(
        store: RunStore, path: Path) -> None:
    run_id = await import_run(load(path), store=store)
    agent = agents.approval_agent()
    # an export carries no task: resuming puts the recorded request back in the queue
    with pytest.raises(ApprovalRequired) as waiting:
        await agent.resume(run_id, store=store)
    assert waiting.value.approval_ids == (agents.APPROVAL_ID,)
    assert not agents.EFFECTS, "resuming re-ran a recorded step"
    task = await store.get_task(agents.APPROVAL_ID)
    assert task.data["arguments"] == {"account": "DE-ÄÖÜ-1", "amount": 99.5,
                                      "memo": "Rückzahlung ✓"}
    await decide_approval(agents.APPROVAL_ID, store=store, approve=True, by="golden")
    result = await agent.resume(run_id, store=store)
    assert result.output == "Überwiesen: 99.5 € an DE-ÄÖÜ-1."
    assert agents.EFFECTS == {"transfer": 1}, "the approved tool did not run exactly once"
    assert (await store.get_run(run_id)).status == "completed"
    sent = [e.data["value"] for e in await store.read_journal(run_id)
            if e.key == "payer/turn:1/tool:transfer#0" and e.phase == "result"]
    assert sent == [{"sent": 99.5, "to": "DE-ÄÖÜ-1", "memo": "Rückzahlung ✓",
                     "key": f"{run_id}/payer/turn:1/tool:transfer#0"}]
    replayed = await replay_run(agent, run_id, store=store)
    assert replayed.identical, replayed.reason
    assert agents.EFFECTS == {"transfer": 1}


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.stem == "saga"], ids=_id)
async def test_the_compensated_saga_stays_compensated(store: RunStore, path: Path) -> None:
    data = load(path)
    run_id = await import_run(data, store=store)
    record = await store.get_run(run_id)
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "ModelError"
    keys = [e["key"] for e in data["journal"] if e["phase"] == "result"]
    assert keys[-3:] == ["trip/compensate:trip/turn:1/tool:book_hotel#0",
                         "trip/compensate:trip/turn:0/tool:book_flight#0", "trip/saga"]
    with pytest.raises(keel.RunError, match="the model is down") as failed:
        await agents.saga_agent().resume(run_id, store=store)  # the recorded failure, at once
    assert failed.value.step_key == "trip/turn:2/model"
    assert not agents.EFFECTS, "a recorded booking or compensation ran again"
    after = await store.get_run(run_id)
    assert after.status == "failed" and after.error is not None
    assert {k: after.error[k] for k in ("type", "message", "step_key")} == {
        k: record.error[k] for k in ("type", "message", "step_key")}


async def test_a_changed_hash_or_encoding_is_caught_by_the_replay() -> None:
    """The harness itself: a fixture whose hash or recorded value differs does not replay."""
    data = load(VERSION_DIRS[-1] / "plain.json")
    for mutate in (_bump_tool_hash, _bump_tool_content):
        changed = copy.deepcopy(data)
        mutate(changed)
        store = MemoryStore()
        run_id = await import_run(changed, store=store)
        report = await replay_run(agents.plain_agent(), run_id, store=store)
        assert not report.identical, mutate.__name__


def _bump_tool_hash(data: dict[str, Any]) -> None:
    entry = next(e for e in data["journal"] if e["kind"] == "tool")
    entry["input_hash"] = "0" * len(entry["input_hash"])


def _bump_tool_content(data: dict[str, Any]) -> None:
    entry = next(e for e in data["journal"] if e["kind"] == "tool")
    entry["data"]["content"] = json.dumps(entry["data"]["value"], ensure_ascii=True)


async def test_this_keel_still_writes_the_newest_fixtures() -> None:
    """The writing side: the same agents, run by this keel, journal the same data under the
    same hashes as the newest fixtures. If this fails, this change alters how journal data is
    encoded or hashed. If that is intended, keep the old fixture directory (users' stores
    hold such runs; the tests above keep reading them), write a new one for the new version
    with make_fixtures.py, and say so in CHANGELOG.md."""
    built = await make_fixtures.build_exports()
    newest = VERSION_DIRS[-1]
    for name, data in built.items():
        stored = load(newest / f"{name}.json")
        # latency_ms counts the frozen clock's reads during a step, and middleware that times
        # steps (keel.observe.Metrics) reads it too: not part of what is encoded or hashed.
        data, stored = _without_latency(data), _without_latency(stored)
        # the agent's version (a content hash of its behaviour) joined the run record's
        # metadata after these fixtures were written: a new key, not a change of encoding;
        # an agent's run must have it (a flow's run has none)
        version = data["run"]["metadata"].pop("version", None)
        is_flow = "pattern" in data["run"]["metadata"]
        assert is_flow or (isinstance(version, str) and len(version) == 16), (name, version)
        stored["run"]["metadata"].pop("version", None)
        assert _first_difference(data, stored) is None, (
            f"{name}: this keel writes {_first_difference(data, stored)} differently from "
            f"{newest.name}/{name}.json")


def _without_latency(export: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(export)
    for entry in out["journal"]:
        entry.pop("latency_ms", None)
    return out


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path or '(top)'} ({a!r} != {b!r})"
    if isinstance(a, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                return f"{path}.{key} (present on one side only)"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path} (length {len(a)} != {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path} ({a!r} != {b!r})"


# ------------------------------------------------------------------------ schema-1 store


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the committed schema-1 file (opening it upgrades it in place)."""
    path = tmp_path / "schema-1.db"
    shutil.copyfile(make_fixtures.SCHEMA_1_STORE, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM keel_meta").fetchone() == ("1",)
    return path


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


async def test_a_schema_1_store_is_upgraded_and_its_runs_read_and_replay(
        old_store: Path) -> None:
    exports = {name: load(VERSION_DIRS[0] / f"{name}.json") for name in make_fixtures.NAMES}
    async with SQLiteStore(old_store) as store:
        listed = {r.run_id: r for r in await store.list_runs()}
        assert set(listed) == {agents.RUNS[n][0] for n in make_fixtures.NAMES}
        for name, data in exports.items():
            got = await export_run(data["run"]["run_id"], store=store)
            assert _without_export_time(got) == _without_export_time(data), name
        for name in ("plain", "team", "saga"):
            report = await replay_run(agents.BUILDERS[name](), agents.RUNS[name][0],
                                      store=store)
            assert report.identical, (name, report.reason)
    with sqlite3.connect(old_store) as conn:
        assert conn.execute("SELECT value FROM keel_meta").fetchone() == (str(SCHEMA_VERSION),)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_cli_lists_shows_and_replays_an_upgraded_schema_1_store(
        old_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path])  # the CLI puts directories on sys.path
    before = set(sys.modules)
    try:
        _read_through_the_cli(old_store)
    finally:  # the CLI imported the agent file as a module of its own
        for name in set(sys.modules) - before:
            if name.startswith("_keel_target_"):
                del sys.modules[name]


def _read_through_the_cli(old_store: Path) -> None:
    async def upgrade() -> None:
        async with SQLiteStore(old_store):
            pass

    asyncio.run(upgrade())
    url = f"sqlite:///{old_store}"
    plain = load(VERSION_DIRS[0] / "plain.json")
    rows = json.loads(_cli("runs", "list", "--store", url, "--json").stdout)
    assert {r["run_id"]: r["status"] for r in rows} == {
        agents.PLAIN_RUN: "completed", agents.TEAM_RUN: "completed",
        agents.APPROVAL_RUN: "suspended", agents.SAGA_RUN: "failed"}
    shown = json.loads(_cli("runs", "show", agents.PLAIN_RUN, "--store", url, "--json").stdout)
    assert shown["output"] == plain["run"]["output"]
    assert len(shown["journal"]) == len(plain["journal"])
    target = f"{Path(agents.__file__).resolve()}:PLAIN"
    replayed = json.loads(_cli("replay", agents.PLAIN_RUN, "--agent", target, "--store", url,
                               "--json").stdout)
    assert replayed["identical"] is True


async def test_a_run_suspended_in_a_schema_1_store_resumes_after_the_upgrade(
        old_store: Path) -> None:
    agent = agents.approval_agent()
    async with SQLiteStore(old_store) as store:
        with pytest.raises(ApprovalRequired):  # schema 1 had no task table: the task is made
            await agent.resume(agents.APPROVAL_RUN, store=store)
        await decide_approval(agents.APPROVAL_ID, store=store, approve=True, by="golden")
        result = await agent.resume(agents.APPROVAL_RUN, store=store)
    assert result.output == "Überwiesen: 99.5 € an DE-ÄÖÜ-1."
    assert agents.EFFECTS == {"transfer": 1}
