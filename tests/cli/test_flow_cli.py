"""Flows (patterns) from the CLI: `keel run`, `keel resume`, `keel replay`, `keel worker` and
the refusals that apply to them, on a real SQLite file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import InvokeResult
from tests.cli.test_history import journal
from tests.cli.test_run import run_id_of, stored

Keel = Callable[..., InvokeResult]

PAIR = '''
    from pathlib import Path

    from keel import Agent, FlowContext, flow
    from keel.testing import ScriptedModel

    writer = Agent("writer", model=ScriptedModel(["a draft"]))
    editor = Agent("editor", model=ScriptedModel(["an edit"]))
    CRASH = Path(__file__).with_name("crash-once")


    @flow("pair", agents=[writer, editor])
    async def pair(ctx: FlowContext, input: str) -> dict[str, str]:
        draft = await ctx.run_agent(writer, input)
        if CRASH.exists():
            CRASH.unlink()
            raise RuntimeError("the editor's machine went away")
        edit = await ctx.run_agent(editor, draft.output)
        return {"draft": draft.output, "edit": edit.output}
'''


def _target(write_module: Callable[[str, str], Path]) -> str:
    return f"{write_module('pair_flow', PAIR)}:pair"


def test_a_flow_runs_from_the_cli_and_its_steps_are_journaled(
        keel: Keel, store: str, write_module: Callable[[str, str], Path]) -> None:
    r = keel("--store", store, "run", "--json", _target(write_module), "a poem")
    assert r.exit_code == 0, r
    out = json.loads(r.stdout)
    assert out["output"] == {"draft": "a draft", "edit": "an edit"}
    record = stored(store, out["run_id"])
    assert record.status == "completed" and record.metadata == {"pattern": "flow"}
    keys = [e.key for e in journal(store, out["run_id"])]
    assert keys == ["pair/writer/turn:0/model", "pair/editor/turn:0/model"]


def test_resume_and_replay_of_a_flow_from_the_cli(
        keel: Keel, store: str, write_module: Callable[[str, str], Path],
        tmp_path: Path) -> None:
    target = _target(write_module)
    (tmp_path / "crash-once").write_text("x")
    r = keel("--store", store, "run", target, "a poem")
    assert r.exit_code != 0 and "went away" in r.output
    run_id = run_id_of(r.stdout)
    assert stored(store, run_id).status == "failed"
    r = keel("--store", store, "resume", "--json", run_id)
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["output"]["edit"] == "an edit"
    models = [e.key for e in journal(store, run_id) if e.kind == "model"]
    assert models == ["pair/writer/turn:0/model", "pair/editor/turn:0/model"]  # writer once
    r = keel("--store", store, "replay", "--json", run_id)
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["identical"] is True


def test_fork_refuses_a_flow_and_says_why(
        keel: Keel, store: str, write_module: Callable[[str, str], Path]) -> None:
    r = keel("--store", store, "run", "--json", _target(write_module), "a poem")
    run_id = json.loads(r.stdout)["run_id"]
    r = keel("--store", store, "fork", run_id, "--at", "0", "--model", "test:x")
    assert r.exit_code != 0
    assert "fork a run of an agent" in r.output
    assert len(journal(store, run_id)) == 2  # nothing written


def test_a_target_that_is_neither_agent_nor_flow_is_refused(
        keel: Keel, store: str, write_module: Callable[[str, str], Path]) -> None:
    path = write_module("not_runnable", "thing = 42\n")
    r = keel("--store", store, "run", f"{path}:thing", "hi")
    assert r.exit_code != 0 and "not a keel Agent or Flow" in r.output


def test_runs_show_names_the_pattern_and_the_nested_steps(
        keel: Keel, store: str, write_module: Callable[[str, str], Path]) -> None:
    r = keel("--store", store, "run", "--json", _target(write_module), "a poem")
    run_id = json.loads(r.stdout)["run_id"]
    r = keel("--store", store, "runs", "show", run_id)
    assert r.exit_code == 0, r
    assert re.search(r"pattern\s+flow", r.stdout)
    assert "pair/writer/turn:0/model" in r.stdout and "pair/editor/turn:0/model" in r.stdout
