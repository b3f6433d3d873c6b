"""`keel replay`, `keel fork`, `keel diff`, `keel runs export|import` on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.cli._load import load_agent
from keel.store import SCHEMA_VERSION, RunRecord, open_store
from keel.testing import OpenAIWireServer
from tests.cli.conftest import InvokeResult
from tests.cli.test_run import run_id_of, stored

Keel = Callable[..., InvokeResult]

HISTORY = '''
    from keel import Agent, tool
    from keel.testing import ScriptedModel, call


    @tool(risk="read")
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key} [bold]\\x1b[31m"


    SCRIPT = [["Checking [red]a[/red].", call("lookup", {"key": "a"})],
              call("lookup", {"key": "b"}), "a and b"]
    agent = Agent("hist", model=ScriptedModel(SCRIPT), tools=[lookup],
                  instructions=INSTRUCTIONS)
'''


@pytest.fixture
def history(write_module: Callable[[str, str], Path]) -> Callable[[str], str]:
    """``history(instructions)``: (re)write the agent module; returns its target."""

    def write(instructions: str) -> str:
        source = HISTORY.replace("INSTRUCTIONS", repr(instructions))
        return f"{write_module('hist_agent', source)}:agent"

    return write


@pytest.fixture
def recorded(keel: Keel, store: str, history: Callable[[str], str]) -> str:
    r = keel("--store", store, "run", history("Be brief."), "what are a and b?")
    assert r.exit_code == 0, r
    return run_id_of(r.stdout)


def journal(store: str, run_id: str) -> list[Any]:
    async def read() -> list[Any]:
        async with open_store(store) as s:
            return await s.read_journal(run_id)

    return asyncio.run(read())


def all_runs(store: str) -> list[RunRecord]:
    async def read() -> list[RunRecord]:
        async with open_store(store) as s:
            return await s.list_runs()

    return asyncio.run(read())


def panel_rows(out: str) -> dict[str, str]:
    """``label -> value`` of a printed panel's rows (lines are not wrapped: COLUMNS=250)."""
    rows = {}
    for line in out.splitlines():
        inner = line.strip("│ ")
        label, sep, value = inner.partition("  ")
        if sep and label and not line.startswith("╭"):
            rows[label] = value.strip()
    return rows


# ----------------------------------------------------------------------------------- replay


def test_replay_identical_exits_0_and_writes_nothing(keel: Keel, store: str,
                                                     recorded: str) -> None:
    before = (stored(store, recorded), journal(store, recorded))
    r = keel("--store", store, "replay", recorded)
    assert r.exit_code == 0, r
    assert "replay identical" in r.stdout
    assert "5 of 5 recorded steps replayed" in r.stdout
    assert "identical · the replay produced the recorded output" in r.stdout
    assert "a and b" in r.stdout
    assert (stored(store, recorded), journal(store, recorded)) == before
    assert len(all_runs(store)) == 1


def test_replay_json(keel: Keel, store: str, recorded: str) -> None:
    r = keel("--store", store, "replay", "--json", recorded)
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)
    assert data["identical"] is True and data["steps_replayed"] == 5
    assert data["recorded_output"] == data["replayed_output"] == "a and b"


def test_replay_of_changed_code_exits_1_showing_both_sides(
        keel: Keel, store: str, recorded: str, history: Callable[[str], str]) -> None:
    history("Be verbose.")  # the code changed since the run was recorded
    r = keel("--store", store, "replay", recorded)
    assert r.exit_code == 1, r
    out = r.stdout
    assert "replay different" in out
    assert "diverged at step hist/turn:0/model" in out
    assert "0 of 5 recorded steps replayed" in out
    rows = panel_rows(out)
    assert rows["status"] == "completed"
    assert rows["recorded output"] == "a and b"
    assert rows["recorded"].startswith("model test:scripted · input ")
    assert "Checking [red]a[/red]." in rows["recorded"]  # literal, not markup
    assert rows["requested"].startswith("model test:scripted · input ")
    assert rows["recorded"] != rows["requested"]
    as_json = json.loads(keel("--store", store, "replay", "--json", recorded).stdout)
    assert as_json["identical"] is False
    assert as_json["divergence"]["step"] == "hist/turn:0/model"


def test_replay_of_a_run_started_from_python_needs_agent(
        keel: Keel, store: str, history: Callable[[str], str]) -> None:
    target = history("Be brief.")
    agent, _ = load_agent(target)
    run_id = asyncio.run(agent.run("q", store=store)).run_id
    r = keel("--store", store, "replay", run_id)
    assert r.exit_code == 2, r
    assert "was not started from the CLI" in r.stderr and "--agent MODULE:AGENT" in r.stderr
    ok = keel("--store", store, "replay", run_id, "--agent", target)
    assert ok.exit_code == 0, ok


def test_replay_usage_errors_exit_2(keel: Keel, store: str, recorded: str,
                                    tmp_path: Path) -> None:
    unknown = keel("--store", store, "replay", "no-such-run")
    assert unknown.exit_code == 2 and "no run 'no-such-run'" in unknown.stderr
    nothing = keel("--store", store, "replay")
    assert nothing.exit_code == 2 and "give the RUN_ID to replay" in nothing.stderr
    missing = keel("--store", f"sqlite:///{tmp_path / 'none.db'}", "replay", recorded)
    assert missing.exit_code == 2 and "there is no run store at" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    bad_agent = keel("--store", store, "replay", recorded, "--agent", "nowhere.py:agent")
    assert bad_agent.exit_code == 2 and "no such file" in bad_agent.stderr


def test_replay_file_needs_no_store(keel: Keel, store: str, recorded: str,
                                    tmp_path: Path) -> None:
    export = tmp_path / "run.json"
    assert keel("--store", store, "runs", "export", recorded, "-o", str(export)).exit_code == 0
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    r = keel("--store", elsewhere, "replay", "--file", str(export))
    assert r.exit_code == 0, r
    assert "replay identical" in r.stdout and recorded in r.stdout
    assert keel("--store", elsewhere, "replay", recorded, "--file", str(export)).exit_code == 0
    assert not (tmp_path / "elsewhere.db").exists()  # nothing was imported anywhere
    other = keel("replay", "other-id", "--file", str(export))
    assert other.exit_code == 2 and f"holds run {recorded}, not other-id" in other.stderr


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"),
    ("{not json", "not a keel run export: not valid JSON"),
    ('{"format": "keel.run", "schema_version": 99}', "exported with run schema version 99"),
    ('{"format": "keel.run", "schema_version": 2, "run": {}, "journal": []}',
     "run.run_id: Field required"),
])
def test_replay_file_refuses_bad_files(keel: Keel, tmp_path: Path, content: str | None,
                                       message: str) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    r = keel("replay", "--file", str(path))
    assert r.exit_code == 2, r
    assert message in r.stderr
    assert "Traceback" not in r.output


# ------------------------------------------------------------------------------------- fork


@pytest.fixture
def server() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer() as srv:
        yield srv
        assert srv.errors == []


def test_fork_with_another_model(keel: Keel, store: str, recorded: str,
                                 server: OpenAIWireServer) -> None:
    server.reply_text("Only a, and that is [bold]enough[/bold].")
    model = f"openai:local-model@{server.base_url}"
    r = keel("--store", store, "fork", recorded, "--at", "2", "--model", model)
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"fork of run {recorded} at step 2 (hist/turn:1/model) · 2 "
                               "steps copied · model openai:local-model@")
    assert lines[1].startswith("▶ resuming run ")
    fork_id = lines[1].split()[3]
    assert sum(1 for line in lines if line.endswith("(replayed)")) >= 2
    assert "Only a, and that is [bold]enough[/bold]." in r.stdout  # literal
    assert "run completed" in r.stdout
    assert len(server.requests) == 1  # only the live turn asked the model
    fork = stored(store, fork_id)
    assert fork.status == "completed"
    assert fork.metadata["fork"]["parent"] == recorded
    assert fork.metadata["fork"]["at"] == "hist/turn:1/model"
    assert fork.metadata["fork"]["model"] == model
    assert stored(store, recorded).status == "completed"


def test_fork_with_new_instructions_json(keel: Keel, store: str, recorded: str,
                                         tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Be thorough.", encoding="utf-8")
    r = keel("--store", store, "fork", recorded, "--at", "hist/turn:0/model",
             "--instructions", str(prompt), "--json")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)
    assert data["fork"] == {"parent": recorded, "at": "hist/turn:0/model"}
    assert data["output"] == "a and b" and data["replayed_steps"] == 0
    meta = stored(store, data["run_id"]).metadata["fork"]
    assert meta["instructions_changed"] is True and meta["instructions"] == "Be thorough."
    replay = keel("--store", store, "replay", data["run_id"])
    assert replay.exit_code == 0, replay  # a fork replays with what it ran with


@pytest.mark.parametrize(("args", "message"), [
    (["--at", "9"], "has no step 9: it has 5 step(s), numbered 0 to 4"),
    (["--at", "hist/turn:7/model"], "has no step 'hist/turn:7/model'; its steps are: 0 "),
    (["--at", "1", "--model", "nosuch:model"], "unknown model provider 'nosuch'"),
    (["--at", "1", "--model", "openai:gpt-4o"], "OPENAI_API_KEY"),
    (["--at", "1", "--instructions", "missing.txt"], "cannot read missing.txt"),
])
def test_fork_refusals_exit_2_and_write_nothing(keel: Keel, store: str, recorded: str,
                                                args: list[str], message: str) -> None:
    r = keel("--store", store, "fork", recorded, *args)
    assert r.exit_code == 2, r
    assert message in r.stderr
    assert [run.run_id for run in all_runs(store)] == [recorded]


def test_fork_of_an_unknown_run(keel: Keel, store: str, recorded: str) -> None:
    r = keel("--store", store, "fork", "nope", "--at", "0")
    assert r.exit_code == 2 and "no run 'nope'" in r.stderr


# ------------------------------------------------------------------------------------- diff


def test_diff_of_a_fork_and_its_parent(keel: Keel, store: str, recorded: str,
                                       server: OpenAIWireServer) -> None:
    server.reply_text("Only [bold]a[/bold] \x1b[2J.")
    fork = keel("--store", store, "fork", recorded, "--at", "2", "--model",
                f"openai:m@{server.base_url}", "--json")
    fork_id = json.loads(fork.stdout)["run_id"]
    r = keel("--store", store, "diff", recorded, fork_id)
    assert r.exit_code == 0, r
    out = r.stdout
    assert "runs differ" in out
    assert "2 same · 1 changed · 2 only in A · 0 only in B" in out
    assert "first divergence  hist/turn:1/model" in out
    assert "B forks A at step hist/turn:1/model" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("hist/")}
    assert "same" in rows["hist/turn:0/model"] and "(same)" in rows["hist/turn:0/model"]
    assert "Checking [red]a[/red]." in rows["hist/turn:0/model"]  # markup printed literally
    assert "value of a [bold]\\x1b[31m" in rows["hist/turn:0/tool:lookup#0"]  # escapes shown
    changed = rows["hist/turn:1/model"]
    assert "changed" in changed and "Only [bold]a[/bold] \\x1b[2J." in changed
    assert "only A" in rows["hist/turn:2/model"]
    assert "\x1b" not in out
    totals = {line.split()[0]: line.split()[1:] for line in out.split("totals")[-1].splitlines()
              if line.strip()}
    assert totals["steps"] == ["5", "3", "-2"]


def test_diff_json(keel: Keel, store: str, recorded: str) -> None:
    again = run_id_of(keel("--store", store, "run", stored(store, recorded).target or "",
                           "what are a and b?").stdout)
    r = keel("--store", store, "diff", "--json", recorded, again)
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)
    assert data["first_divergence"] is None and data["outputs_equal"] is True
    assert [s["status"] for s in data["steps"]] == ["same"] * 5
    assert data["deltas"] == {"steps": 0, "input_tokens": 0, "output_tokens": 0,
                              "tokens": 0, "cost_usd": 0.0}


def test_diff_of_an_unknown_run(keel: Keel, store: str, recorded: str) -> None:
    r = keel("--store", store, "diff", recorded, "nope")
    assert r.exit_code == 2 and "no run 'nope'" in r.stderr


# ---------------------------------------------------------------------------- export/import


def test_export_to_stdout_and_import_elsewhere(keel: Keel, store: str, recorded: str,
                                               tmp_path: Path) -> None:
    r = keel("--store", store, "runs", "export", recorded)
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)
    assert data["format"] == "keel.run" and data["run"]["run_id"] == recorded
    assert len(data["journal"]) == 5
    (tmp_path / "run.json").write_text(r.stdout, encoding="utf-8")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    imported = keel("--store", other, "runs", "import", str(tmp_path / "run.json"))
    assert imported.exit_code == 0, imported
    assert imported.stdout.startswith(f"imported run {recorded} (5 journal entries) into ")
    assert stored(other, recorded) == stored(store, recorded)
    assert journal(other, recorded) == journal(store, recorded)
    shown = keel("--store", other, "runs", "show", recorded)
    assert shown.exit_code == 0 and "a and b" in shown.stdout


def test_import_from_stdin_with_a_new_id(keel: Keel, store: str, recorded: str) -> None:
    text = keel("--store", store, "runs", "export", recorded).stdout
    r = keel("--store", store, "runs", "import", "-", "--new-id", input=text)
    assert r.exit_code == 0, r
    new_id = r.stdout.split()[2]
    assert new_id != recorded
    assert stored(store, new_id).metadata["imported_from"] == recorded
    assert keel("--store", store, "replay", new_id).exit_code == 0


def test_export_to_a_file(keel: Keel, store: str, recorded: str, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    r = keel("--store", store, "runs", "export", recorded, "-o", str(path))
    assert r.exit_code == 0, r
    assert r.stdout == ""
    assert f"exported run {recorded} (5 journal entries) to {path}" in r.stderr
    assert json.loads(path.read_text(encoding="utf-8"))["run"]["run_id"] == recorded
    bad = keel("--store", store, "runs", "export", recorded, "-o", str(tmp_path / "no/x.json"))
    assert bad.exit_code == 2 and "cannot write" in bad.stderr
    unknown = keel("--store", store, "runs", "export", "nope")
    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.stderr


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d, "already exists in this store; nothing was imported"),
    (lambda d: {**d, "schema_version": SCHEMA_VERSION + 1},
     f"exported with run schema version {SCHEMA_VERSION + 1}, but this keel reads versions up "
     f"to {SCHEMA_VERSION}"),
    (lambda d: {**d, "journal": [{**d["journal"][0], "seq": "x"}]},
     "journal.0.seq: Input should be a valid integer"),
    (lambda d: {**d, "run": {**d["run"], "status": "done"}}, "run.status: Input should be"),
])
def test_import_refusals_exit_2_and_change_nothing(
        keel: Keel, store: str, recorded: str, tmp_path: Path,
        change: Callable[[dict[str, Any]], dict[str, Any]], message: str) -> None:
    data = json.loads(keel("--store", store, "runs", "export", recorded).stdout)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(change(data)), encoding="utf-8")
    before = all_runs(store)
    r = keel("--store", store, "runs", "import", str(path))
    assert r.exit_code == 2, r
    assert message in r.stderr
    assert all_runs(store) == before


def test_import_of_unreadable_files(keel: Keel, store: str, tmp_path: Path) -> None:
    assert "cannot read" in keel("--store", store, "runs", "import", "nope.json").stderr
    assert "is a directory" in keel("--store", store, "runs", "import", str(tmp_path)).stderr
    (tmp_path / "bin.json").write_bytes(b"\x00\xff")
    r = keel("--store", store, "runs", "import", str(tmp_path / "bin.json"))
    assert r.exit_code == 2 and "not UTF-8 text" in r.stderr
    memory = keel("--store", "memory:", "runs", "import", str(tmp_path / "bin.json"))
    assert memory.exit_code == 2
