"""A Trigger takes an Agent or a flow as mypy sees them: user code that builds triggers type
checks cleanly under ``--strict`` (and a string where the agent goes is a type error)."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = '''
from typing import Any

from pydantic import BaseModel

from keel import Agent, flow
from keel.events import Fired, Trigger
from keel.runtime import FlowContext
from keel.testing import ScriptedModel


class Order(BaseModel):
    order_id: str


agent: Agent[Any] = Agent("a", model=ScriptedModel(["x"]))


@flow("pipeline")
async def pipeline(ctx: FlowContext, text: str) -> str:
    return text


def make(fired: Fired[Order]) -> str:
    return fired.payload.order_id


by_agent = Trigger("order_processed", agent=agent, payload=Order, input=make)
by_flow = Trigger("order_processed", agent=pipeline, user=lambda fired: "u", tenant="acme")
wrong = Trigger("order_processed", agent="agent")
'''


def test_triggers_type_check_for_agents_and_flows(tmp_path: Path) -> None:
    path = tmp_path / "user_code.py"
    path.write_text(SNIPPET)
    out, err, _ = api.run([str(path), "--config-file", str(ROOT / "pyproject.toml"),
                           "--strict", "--no-error-summary", "--show-error-codes",
                           "--cache-dir", str(ROOT / ".mypy_cache" / "typing-tests")])
    assert not err, err
    errors = [line for line in out.splitlines() if "user_code.py" in line]
    assert len(errors) == 1 and "wrong" not in errors[0], out
    line = int(errors[0].split(":")[1])
    assert SNIPPET.splitlines()[line - 1].startswith("wrong = "), out
    assert "arg-type" in errors[0]
