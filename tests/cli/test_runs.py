"""`keel runs list` and `keel runs show`, and stores keel cannot use."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import BUDGET, STRUCTURED, TOOL_USE, InvokeResult
from tests.cli.test_run import run_id_of

Keel = Callable[..., InvokeResult]


@pytest.fixture
def three_runs(keel: Keel, store: str) -> dict[str, str]:
    """agent name -> run id, for one completed weather run, one triage run, one failed run."""
    ids = {}
    for target in (TOOL_USE, STRUCTURED, BUDGET):
        r = keel("--store", store, "run", target, "q")
        ids[r.stdout.split(" · agent ")[1].split()[0]] = run_id_of(r.stdout)
    return ids


def test_list_shows_a_table_newest_first(keel: Keel, store: str,
                                         three_runs: dict[str, str]) -> None:
    r = keel("--store", store, "runs", "list")
    assert r.exit_code == 0, r
    header = next(line for line in r.stdout.splitlines() if "agent" in line)
    for column in ("id", "agent", "status", "steps", "tokens", "cost", "created"):
        assert column in header
    rows = [line.split() for line in r.stdout.splitlines() if line.strip()[:2] == "01"]
    assert [row[0] for row in rows] == [three_runs["poller"], three_runs["triage"],
                                        three_runs["weather"]]
    assert rows[0][1:4] == ["poller", "failed", "10"]
    assert rows[2][1:4] == ["weather", "completed", "6"]
    assert rows[2][5] == "$0.0000"


def test_list_filters(keel: Keel, store: str, three_runs: dict[str, str]) -> None:
    failed = keel("--store", store, "runs", "list", "--status", "failed").stdout
    assert three_runs["poller"] in failed and three_runs["weather"] not in failed
    triage = keel("--store", store, "runs", "list", "--agent", "triage").stdout
    assert three_runs["triage"] in triage and three_runs["poller"] not in triage
    one = keel("--store", store, "runs", "list", "--limit", "1").stdout
    assert three_runs["poller"] in one and three_runs["triage"] not in one
    none = keel("--store", store, "runs", "list", "--agent", "nobody")
    assert none.exit_code == 0 and "none match" in none.stdout


def test_list_json(keel: Keel, store: str, three_runs: dict[str, str]) -> None:
    data = json.loads(keel("--store", store, "runs", "list", "--json").stdout)
    assert [d["run_id"] for d in data][::-1] == list(three_runs.values())
    assert data[0]["error"]["type"] == "BudgetExceeded"


def test_list_rejects_a_bad_status_and_limit(keel: Keel, store: str) -> None:
    r = keel("--store", store, "runs", "list", "--status", "done")
    assert r.exit_code == 2
    assert "unknown run status 'done'" in r.stderr and "completed" in r.stderr
    assert keel("--store", store, "runs", "list", "--limit", "0").exit_code == 2


def test_list_on_a_missing_store_does_not_create_it(keel: Keel, tmp_path: Path) -> None:
    r = keel("--store", str(tmp_path / "nowhere" / "runs.db"), "runs", "list")
    assert r.exit_code == 0, r
    assert "No runs" in r.stdout and "keel run MODULE:AGENT" in r.stdout
    assert not (tmp_path / "nowhere").exists()


def test_show_prints_record_and_timeline(keel: Keel, store: str,
                                         three_runs: dict[str, str]) -> None:
    r = keel("--store", store, "runs", "show", three_runs["weather"])
    assert r.exit_code == 0, r
    out = r.stdout
    assert three_runs["weather"] in out and "completed" in out and "tool_use.py:agent" in out
    assert "journal" in out
    rows = [line.split(None, 6) for line in out.splitlines() if line.strip()[:1].isdigit()
            and "weather/turn:" in line]
    assert [row[1] for row in rows] == [
        "weather/turn:0/model", "weather/turn:0/tool:get_weather#0",
        "weather/turn:0/tool:get_weather#1", "weather/turn:1/model",
        "weather/turn:1/tool:calculate#0", "weather/turn:2/model"]
    assert all(row[2] == "result" for row in rows)
    assert [row[3] for row in rows] == ["model", "tool", "tool", "model", "tool", "model"]
    assert "call get_weather" in out  # the model's tool calls
    assert "I'll look up both cities at once." in out  # its text
    assert '"temp_c": 18' in out  # a tool's observation
    assert " ms" in out  # latency


def test_show_a_failed_run_with_its_error(keel: Keel, store: str,
                                          three_runs: dict[str, str]) -> None:
    run_id = three_runs["poller"]
    r = keel("--store", store, "runs", "show", run_id)
    assert r.exit_code == 0, r
    assert "run failed" in r.stdout and "BudgetExceeded" in r.stdout
    assert "poller/turn:5/model" in r.stdout and f"keel resume {run_id}" in r.stdout


def test_show_tool_errors(keel: Keel, store: str) -> None:
    from tests.cli.conftest import EXAMPLES

    r = keel("--store", store, "run", f"{EXAMPLES / 'self_correction.py'}:agent", "q")
    shown = keel("--store", store, "runs", "show", run_id_of(r.stdout)).stdout
    assert "unknown_tool: there is no tool named 'find_order'" in shown
    assert "invalid_arguments: bad arguments for get_order" in shown
    assert "invalid_json" in shown


def test_show_json(keel: Keel, store: str, three_runs: dict[str, str]) -> None:
    data = json.loads(keel("--store", store, "runs", "show", "--json",
                           three_runs["triage"]).stdout)
    assert data["output"]["priority"] == 4
    assert data["journal"][0]["key"] == "triage/turn:0/model"


def test_unknown_run_id(keel: Keel, store: str, three_runs: dict[str, str]) -> None:
    for command in (["runs", "show", "nope"], ["resume", "nope"]):
        r = keel("--store", store, *command)
        assert r.exit_code == 2, r
        assert "error: no run 'nope' in this store; `keel runs list` shows the runs." in r.stderr


def test_unknown_run_id_without_a_store(keel: Keel, tmp_path: Path) -> None:
    r = keel("--store", str(tmp_path / "none.db"), "runs", "show", "abc")
    assert r.exit_code == 2
    assert "no run 'abc'" in r.stderr and "no run store at" in r.stderr
    assert not (tmp_path / "none.db").exists()


def test_memory_store_cannot_be_read_by_another_command(keel: Keel) -> None:
    r = keel("--store", "memory:", "runs", "list")
    assert r.exit_code == 2
    assert "only inside the process" in r.stderr and "sqlite:///" in r.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", [
    ["runs", "list"], ["runs", "show", "x"], ["resume", "x"], ["run", TOOL_USE, "q"]])
def test_a_corrupt_store_file_is_refused_and_left_alone(keel: Keel, tmp_path: Path,
                                                        command: list[str]) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage\xff" * 100)
    before = digest(bad)
    r = keel("--store", str(bad), *command)
    assert r.exit_code == 2, r
    assert "is not a keel run store" in r.stderr and "point keel at another file" in r.stderr
    assert "Traceback" not in r.output
    assert digest(bad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


def test_a_store_from_a_newer_keel(keel: Keel, tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE keel_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO keel_meta VALUES ('schema_version', '99')")
    db.close()
    before = digest(path)
    r = keel("--store", f"sqlite:///{path}", "runs", "list")
    assert r.exit_code == 2, r
    assert "newer keel" in r.stderr and "pip install -U" in r.stderr
    assert digest(path) == before


def test_a_bad_store_url(keel: Keel) -> None:
    r = keel("--store", "mysql://db/runs", "runs", "list")
    assert r.exit_code == 2
    assert "cannot open run store" in r.stderr


def test_show_names_the_fallback_link_that_answered(keel: Keel, store: str) -> None:
    import asyncio as _asyncio

    from keel import Agent, ModelError
    from keel.reliability import FallbackModel
    from keel.store import open_store as _open
    from keel.testing import ScriptedModel

    async def go() -> str:
        primary = ScriptedModel([ModelError("down", status=503, retryable=True)] * 9,
                                name="test:primary")
        backup = ScriptedModel(["from the backup"], name="test:backup")
        agent = Agent("fb", model=FallbackModel(primary, backup), default_middleware=False)
        async with _open(store) as s:
            return (await agent.run("hi", store=s)).run_id

    run_id = _asyncio.run(go())
    r = keel("--store", store, "runs", "show", run_id)
    assert r.exit_code == 0, r
    assert "answered by test:backup after test:primary failed" in r.stdout
