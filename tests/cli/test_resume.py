"""`keel resume`: re-import the run's target, replay recorded steps dimmed, run the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from keel import ModelError
from keel.cli._load import load_agent
from keel.store import open_store
from tests.cli.conftest import TOOL_USE, InvokeResult
from tests.cli.test_run import run_id_of, stored

Keel = Callable[..., InvokeResult]

FLAKY = '''
    """Turn 1 fails with a provider error until the file `provider-up` exists."""
    from pathlib import Path

    from keel import Agent, ModelError, tool
    from keel.core import ModelResponse, TextPart
    from keel.testing import FunctionModel, call

    UP = Path(__file__).with_name("provider-up")


    @tool(risk="read")
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"


    def reply(messages, tools, settings):
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 0:
            thought = TextPart(text="looking it up")
            return ModelResponse(parts=(thought, call("lookup", {"key": "k"})))
        if not UP.exists():
            raise ModelError("provider unavailable (503)", status=503, retryable=False)
        return "the value is known"


    agent = Agent("flaky", model=FunctionModel(reply), tools=[lookup])
'''


@pytest.fixture
def flaky(write_module: Callable[[str, str], Path]) -> str:
    return f"{write_module('flaky', FLAKY)}:agent"


def test_resume_a_failed_run(keel: Keel, store: str, tmp_path: Path, flaky: str) -> None:
    r = keel("--store", store, "run", flaky, "what is k?")
    assert r.exit_code == 1, r
    assert "ModelError: provider unavailable (503)" in r.stderr
    run_id = run_id_of(r.stdout)
    (tmp_path / "provider-up").touch()
    resumed = keel("--store", store, "resume", run_id)
    assert resumed.exit_code == 0, resumed
    lines = resumed.stdout.splitlines()
    assert lines[0].startswith(f"▶ resuming run {run_id}")
    replayed = [line for line in lines if line.endswith("(replayed)")]
    assert len(replayed) == 4  # turn 0: header, thought, call, observation
    assert any("looking it up" in line for line in replayed)
    assert any("lookup" in line and "value of k" in line for line in replayed)
    live = next(line for line in lines if line.startswith("turn 1"))
    assert "(replayed)" not in live
    assert "2 replayed from the journal" in resumed.stdout
    assert "the value is known" in resumed.stdout
    assert stored(store, run_id).status == "completed"


def test_resume_json(keel: Keel, store: str, tmp_path: Path, flaky: str) -> None:
    run_id = run_id_of(keel("--store", store, "run", flaky, "q").stdout)
    (tmp_path / "provider-up").touch()
    r = keel("--store", store, "resume", "--json", run_id)
    assert r.exit_code == 0, r
    assert '"replayed_steps": 2' in r.stdout and '"status": "completed"' in r.stdout


def test_resume_a_completed_run_is_an_error(keel: Keel, store: str) -> None:
    run_id = run_id_of(keel("--store", store, "run", TOOL_USE, "q").stdout)
    r = keel("--store", store, "resume", run_id)
    assert r.exit_code == 2, r
    assert f"run {run_id} already completed; nothing to resume" in r.stderr
    assert f"keel runs show {run_id}" in r.stderr


def test_resume_a_run_not_started_from_the_cli(keel: Keel, store: str, flaky: str) -> None:
    agent, _ = load_agent(flaky)
    with pytest.raises(ModelError):  # started from Python: the run record has no target
        asyncio.run(agent.run("q", store=store, run_id="from-python"))
    r = keel("--store", store, "resume", "from-python")
    assert r.exit_code == 2, r
    assert "was not started from the CLI" in r.stderr
    assert "agent.resume('from-python')" in r.stderr


def test_resume_when_the_target_no_longer_imports(keel: Keel, store: str, flaky: str,
                                                  tmp_path: Path) -> None:
    run_id = run_id_of(keel("--store", store, "run", flaky, "q").stdout)
    (tmp_path / "flaky.py").unlink()
    r = keel("--store", store, "resume", run_id)
    assert r.exit_code == 2, r
    assert "flaky.py: no such file" in r.stderr


def test_resume_a_run_whose_process_died(keel: Keel, store: str, tmp_path: Path,
                                         flaky: str) -> None:
    run_id = run_id_of(keel("--store", store, "run", flaky, "q").stdout)
    record = stored(store, run_id)

    async def crash() -> None:  # as if the process was killed mid-run: status stays running
        async with open_store(store) as s:
            await s.update_run(record.with_status("running", error=None))

    asyncio.run(crash())
    (tmp_path / "provider-up").touch()
    r = keel("--store", store, "resume", run_id)
    assert r.exit_code == 0, r
    assert f"run {run_id} is marked running" in r.stderr
    assert stored(store, run_id).status == "completed"


SUSPENDS = '''
    from keel import Agent, ApprovalRequired, tool
    from keel.testing import ScriptedModel, call


    @tool(risk="write")
    def refund(amount: int) -> str:
        """Refund an amount."""
        raise ApprovalRequired(f"a refund of {amount} needs a human's approval")


    agent = Agent("refunds", model=ScriptedModel([call("refund", {"amount": 500}), "done"]),
                  tools=[refund])
'''


def test_a_suspended_run_exits_3(keel: Keel, store: str,
                                 write_module: Callable[[str, str], Path]) -> None:
    target = f"{write_module('suspends', SUSPENDS)}:agent"
    r = keel("--store", store, "run", target, "refund me")
    assert r.exit_code == 3, r
    run_id = run_id_of(r.stdout)
    assert f"run {run_id} is suspended: ApprovalRequired: a refund of 500 needs" in r.stderr
    assert stored(store, run_id).status == "suspended"
    as_json = keel("--store", store, "run", "--json", target, "refund me")
    assert as_json.exit_code == 3
    assert '"status": "suspended"' in as_json.stdout
