"""Every example runs offline on its scripted model and still shows what it claims to.

The examples are documentation; an example that silently breaks fails here.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from keel import Agent, BudgetExceeded, MemoryStore, RepeatedFailure, RunError
from keel.core import ToolResultPart
from keel.testing import ScriptedModel
from tests.examples.conftest import load_example

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALL = sorted(p.stem for p in EXAMPLES.glob("*.py"))
#: Examples of a single agent (``agent``); the others show a pattern (``flow``, a keel Flow)
#: and are tested in tests/examples/test_pattern_examples.py.
NAMES = ["approval_gate", "budget_guard", "self_correction", "structured_output", "tool_use"]
PATTERNS = [name for name in ALL if name not in NAMES]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_MODEL", raising=False)


@pytest.fixture
def load() -> Iterator[Any]:
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        module_name = f"_keel_example_{name}"
        loaded.append(module_name)
        return load_example(EXAMPLES / f"{name}.py", module_name)

    yield load
    for module_name in loaded:
        sys.modules.pop(module_name, None)


def run(agent: Agent[Any], text: str) -> Any:
    return asyncio.run(agent.run(text, store=MemoryStore()))


def errors_seen(result: Any) -> list[str]:
    return [part.content for m in result.messages for part in m.parts
            if isinstance(part, ToolResultPart) and part.is_error]


def test_the_examples_are_the_ones_tested_here() -> None:
    assert set(NAMES) <= set(ALL)


@pytest.mark.parametrize("name", PATTERNS)
def test_every_pattern_example_is_offline_with_flow_and_input(load: Any, name: str) -> None:
    from keel import Flow

    module = load(name)
    assert isinstance(module.flow, Flow), f"examples/{name}.py must define `flow`"
    assert isinstance(module.INPUT, str) and module.INPUT
    assert module.__doc__ and "KEEL_MODEL" in module.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_every_example_is_offline_with_agent_and_input(load: Any, name: str) -> None:
    module = load(name)
    assert isinstance(module.agent, Agent)
    assert isinstance(module.agent.model, ScriptedModel)
    assert isinstance(module.INPUT, str) and module.INPUT
    assert module.__doc__ and "KEEL_MODEL" in module.__doc__


def test_example_models_follow_keel_model(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "openai:gpt-4o-mini")
    for name in NAMES:
        assert load(name).agent.model == "openai:gpt-4o-mini"


def test_tool_use(load: Any) -> None:
    module = load("tool_use")
    result = run(module.agent, module.INPUT)
    assert result.output == ("Tokyo is warmer: 24°C and sunny, 6°C more than Paris (18°C and "
                             "cloudy).")
    assert result.steps == 6  # 3 model turns, 2 parallel weather calls, 1 calculation
    tool_messages = [m for m in result.messages if m.role == "tool"]
    assert [p.content for p in tool_messages[0].parts] == [
        '{"city": "Paris", "temp_c": 18, "sky": "cloudy"}',
        '{"city": "Tokyo", "temp_c": 24, "sky": "sunny"}']
    assert tool_messages[1].parts[0].content == "6.0"
    assert errors_seen(result) == []


def test_structured_output(load: Any) -> None:
    module = load("structured_output")
    result = run(module.agent, module.INPUT)
    assert isinstance(result.output, module.Ticket)
    assert result.output == module.Ticket(category="billing", priority=4,
                                          summary="Pro customer charged twice this month")
    rejected = errors_seen(result)
    assert len(rejected) == 1 and "final_result rejected" in rejected[0]
    assert "priority" in rejected[0] and "less than or equal to 5" in rejected[0]


def test_self_correction(load: Any) -> None:
    module = load("self_correction")
    result = run(module.agent, module.INPUT)
    assert result.output == "Order 1001 (a blue kettle) has shipped and should arrive by 6 March."
    errors = errors_seen(result)
    assert len(errors) == 3
    assert '"unknown_tool"' in errors[0] and "Available tools: get_order" in errors[0]
    assert '"invalid_arguments"' in errors[1] and "order_id" in errors[1]
    assert '"invalid_json"' in errors[2]


def test_budget_guard_stops_the_loop(load: Any) -> None:
    module = load("budget_guard")
    assert module.EXPECTED_ERROR is BudgetExceeded
    with pytest.raises(BudgetExceeded) as caught:
        run(module.agent, module.INPUT)
    exc = caught.value
    assert exc.limit == "steps" and exc.allowed == 10
    assert exc.run_id and exc.step_key == "poller/turn:5/model"
    assert "Budget(max_steps=...)" in exc.message


def test_budget_guard_stops_repeated_failures(load: Any) -> None:
    module = load("budget_guard")
    with pytest.raises(RepeatedFailure) as caught:
        run(module.stubborn, "Fetch report q3.")
    assert "failed 3 times with the same arguments" in caught.value.message
    assert caught.value.step_key == "stubborn/turn:2/tool:fetch_report#0"


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_example_runs_as_a_script(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_MODEL"}
    env["KEEL_STORE"] = f"sqlite:///{tmp_path / 'runs.db'}"
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, encoding="utf-8",
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip()
    assert (tmp_path / "runs.db").exists()  # journaled in the configured store


async def test_approval_gate_waits_for_a_person_then_refunds_once(load: Any) -> None:
    from keel import ApprovalRequired, MemoryStore, decide_approval

    module = load("approval_gate")
    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as info:
        await module.agent.run(module.INPUT, store=store)
    [task] = await store.list_tasks()
    assert task.data["tool"] == "refund" and task.data["reason"] == "refunds over 100 need a person"
    await decide_approval(task.task_id, store=store, approve=True, by="t", comment="ok")
    result = await module.agent.resume(info.value.run_id, store=store)
    assert "refunded 249.00" in result.output
    refunds = [e for e in await store.read_journal(result.run_id)
               if e.kind == "tool" and e.name == "refund"]
    assert [e.phase for e in refunds] == ["intent", "result"], "the refund ran exactly once"


def test_run_errors_name_the_run(load: Any) -> None:
    module = load("budget_guard")
    with pytest.raises(RunError, match=r"\(run \w+, step poller/turn:5/model\)"):
        run(module.agent, module.INPUT)
