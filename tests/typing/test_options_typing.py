"""The run and flow options are typed: a misspelt option is a type error for mypy.

mypy checks a snippet of user code; the test pins the errors it must report (and that the
correct calls pass). If the options lose their types (``**kwargs: Any`` again), the expected
errors disappear and this test fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = '''
from keel import Agent, Budget, RunOptions
from keel.patterns import GroupChat, Marketplace, Planner
from keel.testing import ScriptedModel

agent: Agent[str] = Agent("a", model=ScriptedModel(["x"]))
agent.run_sync("hi", store=None, run_id="r", deps=1, target="t", deadline=5.0)
agent.resume_sync("r", store=None, deps=None, on_event=print)
options: RunOptions = {"store": None, "deadline": 30}
agent.run_sync("hi", **options)
GroupChat("chat", [agent], budget=Budget(max_steps=5), durability="always", middleware=[])
Marketplace("market", [agent], durability="batched")
Planner("plan", planner=agent, middleware=[])

agent.run_sync("hi", stor=None)  # E:1
agent.resume_sync("r", deadline=5)  # E:2
GroupChat("chat", [agent], durabilty="always")  # E:3


async def main() -> None:
    await agent.run("hi", on_event=print)
    async for _ in agent.stream("hi", deadline=5):
        pass
    await agent.run("hi", deadline="soon")  # E:4
    async for _ in agent.stream("hi", dedline=5):  # E:5
        pass
'''


def test_mypy_reports_misspelt_and_mistyped_options(tmp_path: Path) -> None:
    path = tmp_path / "user_code.py"
    path.write_text(SNIPPET)
    out, err, _ = api.run([str(path), "--config-file", str(ROOT / "pyproject.toml"),
                           "--no-error-summary", "--show-error-codes",
                           "--cache-dir", str(ROOT / ".mypy_cache" / "typing-tests")])
    assert not err, err
    lines = SNIPPET.splitlines()
    expected = {i + 1: m.group(1) for i, line in enumerate(lines)
                if (m := re.search(r"# E:(\d)", line))}
    errors: dict[int, str] = {}
    for line in out.splitlines():
        if (m := re.match(r".*user_code\.py:(\d+): error: (.*)", line)):
            errors.setdefault(int(m.group(1)), m.group(2))
    assert set(errors) == set(expected), out
    assert '"stor"' in errors[_line(lines, "E:1")]
    assert '"deadline"' in errors[_line(lines, "E:2")]
    assert '"durabilty"' in errors[_line(lines, "E:3")]
    assert "deadline" in errors[_line(lines, "E:4")]
    assert '"dedline"' in errors[_line(lines, "E:5")]


def _line(lines: list[str], tag: str) -> int:
    return next(i + 1 for i, line in enumerate(lines) if tag in line)
