"""Fixtures for the CLI tests: an isolated store, wide output, agent modules on disk."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TOOL_USE = f"{EXAMPLES / 'tool_use.py'}:agent"
BUDGET = f"{EXAMPLES / 'budget_guard.py'}:agent"
STRUCTURED = f"{EXAMPLES / 'structured_output.py'}:agent"


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Offline examples, wide lines (no wrapping in assertions), the tmp dir as cwd."""
    monkeypatch.delenv("KEEL_MODEL", raising=False)
    monkeypatch.delenv("KEEL_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])  # the CLI puts the cwd on sys.path
    yield
    for name in [n for n in sys.modules if n.startswith("_keel_target_")]:
        del sys.modules[name]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


Invoke = Callable[..., "InvokeResult"]


class InvokeResult:
    """What one CLI call produced (stdout and stderr apart)."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.output = stdout + stderr

    def __repr__(self) -> str:
        return f"<exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}>"


@pytest.fixture
def keel(runner: CliRunner) -> Callable[..., InvokeResult]:
    """``keel(*args, input=None)``: run the CLI in-process."""

    def invoke(*args: str, input: str | None = None) -> InvokeResult:
        result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return InvokeResult(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def write_module(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_module(name, source)``: a Python file in the tmp dir (dedented)."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return write


ECHO_AGENT = '''
    """An agent whose model echoes the user's input, and calls a tool with hostile text."""
    from keel import Agent, tool
    from keel.core import ModelResponse, TextPart, ToolCallPart
    from keel.testing import FunctionModel

    HOSTILE = "[bold red]x[/] \\u001b[31mred\\u001b[0m"


    @tool(risk="read")
    def echo(text: str) -> str:
        """Return the text."""
        return text


    def reply(messages, tools, settings):
        user = next(m.text for m in messages if m.role == "user")
        if not any(m.role == "assistant" for m in messages):
            call = ToolCallPart(call_id="c0", tool_name="echo",
                                arguments='{"text": "[bold red]x[/] \\\\u001b[31mred"}')
            return ModelResponse(parts=(TextPart(text=user[:300]), call))
        return user


    agent = Agent("echo", model=FunctionModel(reply), tools=[echo])
'''


@pytest.fixture
def echo_agent(write_module: Callable[[str, str], Path]) -> str:
    return f"{write_module('echo_agent', ECHO_AGENT)}:agent"
