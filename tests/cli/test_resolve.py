"""``keel runs resolve``: a person records whether a step with an unknown outcome took effect;
the decision is journaled with who made it, and the resumed run replays the step instead of
running the tool again. End to end on a real SQLite store, after a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keel.store import SQLiteStore

SRC = Path(__file__).resolve().parents[2] / "src"
STEP = "bank/turn:0/tool:wire#0"

BANK = '''
    """A bank agent whose wire transfer is not idempotent; the model answers with what the
    transfer returned, or with the failure it saw."""
    import os, sys, time
    from keel import Agent, tool
    from keel.core import ModelResponse, ToolCallPart
    from keel.guard import undelimit
    from keel.testing import FunctionModel


    @tool(risk="irreversible", approval=False)
    def wire(amount: int) -> str:
        """Wire money."""
        with open(os.environ["BANK_EFFECTS"], "a") as f:
            f.write(f"wired {amount}\\n")
        if os.environ.get("BANK_CRASH"):
            print("ready", flush=True)
            time.sleep(600)  # killed here: the intent is journaled, the result never is
        return "wired"


    def reply(messages, tools, settings):
        done = [m for m in messages if m.role == "tool"]
        if not done:
            call = ToolCallPart(call_id="c0", tool_name="wire", arguments='{"amount": 5}')
            return ModelResponse(parts=(call,))
        return "model saw: " + undelimit(done[-1].parts[0].content)


    agent = Agent("bank", model=FunctionModel(reply), tools=[wire])
'''


@pytest.fixture
def crashed(write_module: Callable[[str, str], Path], tmp_path: Path, store: str,
            monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, Path]:
    """A run killed while its non-idempotent tool ran: (target, run id, effects file)."""
    target = f"{write_module('bank', BANK)}:agent"
    effects = tmp_path / "effects.txt"
    monkeypatch.setenv("BANK_EFFECTS", str(effects))
    env = {**os.environ, "PYTHONPATH": str(SRC), "BANK_CRASH": "1"}
    with subprocess.Popen([sys.executable, "-m", "keel.cli", "--store", store, "run", target,
                           "pay 5"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env=env, cwd=tmp_path) as child:
        assert child.stdout is not None
        while (line := child.stdout.readline()) and line.strip() != "ready":
            pass
        assert line.strip() == "ready"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert effects.read_text() == "wired 5\n"
    return target, _only_run(tmp_path / "runs.db"), effects


def _only_run(db: Path) -> str:
    import asyncio

    async def read() -> str:
        async with SQLiteStore(db) as s:
            [record] = await s.list_runs()
            return record.run_id

    return asyncio.run(read())


def _journal(db: Path, run_id: str) -> list[Any]:
    import asyncio

    async def read() -> list[Any]:
        async with SQLiteStore(db) as s:
            return await s.read_journal(run_id)

    return asyncio.run(read())


def test_resolve_as_succeeded_then_resume_never_runs_the_tool_again(
        keel: Any, crashed: tuple[str, str, Path], store: str, tmp_path: Path) -> None:
    _, run_id, effects = crashed
    stopped = keel("--store", store, "resume", run_id)
    assert stopped.exit_code == 1 and "UnknownOutcome" in stopped.stderr
    assert "keel runs resolve" in stopped.stderr  # the error names the way out

    done = keel("--store", store, "runs", "resolve", run_id, "--outcome", "succeeded",
                "--result", '"wired (bank ref 77)"', "--comment", "seen in the bank's ledger",
                "--by", "ann")
    assert done.exit_code == 0, done
    assert f"keel resume {run_id}" in done.stdout
    journal = _journal(tmp_path / "runs.db", run_id)
    [note] = [e for e in journal if e.kind == "resolve"]
    assert note.key == f"{STEP}/resolved"
    assert note.data == {"step_key": STEP, "outcome": "succeeded", "result": "wired (bank ref 77)",
                         "comment": "seen in the bank's ledger", "by": "ann"}

    resumed = keel("--store", store, "resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed
    assert json.loads(resumed.stdout)["output"] == "model saw: wired (bank ref 77)"
    assert effects.read_text() == "wired 5\n"  # the transfer happened once, before the crash
    shown = keel("--store", store, "runs", "show", run_id)
    assert shown.exit_code == 0 and "resolve" in shown.stdout and "ann" in shown.stdout
    replayed = keel("--store", store, "replay", run_id)
    assert replayed.exit_code == 0, replayed
    again = keel("--store", store, "runs", "resolve", run_id, "--outcome", "failed")
    assert again.exit_code == 2 and "completed" in again.stderr


def test_resolve_as_failed_tells_the_model_the_call_did_not_happen(
        keel: Any, crashed: tuple[str, str, Path], store: str) -> None:
    _, run_id, effects = crashed
    done = keel("--store", store, "runs", "resolve", run_id, "--outcome", "failed",
                "--comment", "not in the ledger", "--json")
    assert done.exit_code == 0, done
    assert json.loads(done.stdout)["step_key"] == STEP
    resumed = keel("--store", store, "resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed
    output = json.loads(resumed.stdout)["output"]
    assert "did not happen" in output and "not in the ledger" in output
    assert effects.read_text() == "wired 5\n"


def test_resolve_refuses_bad_input_and_changes_nothing(
        keel: Any, crashed: tuple[str, str, Path], store: str, tmp_path: Path) -> None:
    _, run_id, _ = crashed
    before = _journal(tmp_path / "runs.db", run_id)
    for args, message in [
        (["--outcome", "maybe"], "--outcome must be succeeded or failed"),
        (["--outcome", "succeeded", "--result", "{not json"], "--result is not valid JSON"),
        (["--outcome", "failed", "--result", "1"], "leave it out"),
        (["--outcome", "succeeded", "--step", "bank/nope"], "no unresolved step"),
    ]:
        result = keel("--store", store, "runs", "resolve", run_id, *args)
        assert result.exit_code == 2, (args, result)
        assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert _journal(tmp_path / "runs.db", run_id) == before
    missing = keel("--store", store, "runs", "resolve", "nope", "--outcome", "failed")
    assert missing.exit_code == 2
