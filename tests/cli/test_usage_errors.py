"""Usage errors are one line naming the problem (and one naming the help), exit code 2; the
commands are listed in the order a user meets them, each summed up by one whole sentence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from keel.cli import app
from keel.cli._app import COMMAND_ORDER, RUNS_ORDER

SRC = Path(__file__).resolve().parents[2] / "src"

CASES = [
    (["runs", "list", "--limit", "-1"], "keel runs list: Invalid value for '--limit'",
     "try: keel runs list --help"),
    (["bogus"], "keel: No such command 'bogus'.", "try: keel --help"),
    (["run", "agent.py:agent"], "keel run: Missing argument 'INPUT'.", "try: keel run --help"),
    (["--store"], "Option '--store' requires an argument.", "try: keel"),
    (["runs", "list", "--store"], "Option '--store' requires an argument.", "try: keel"),
]


@pytest.mark.parametrize(("args", "first", "second"), CASES)
def test_usage_error_is_one_line_in_process(runner: CliRunner, args: list[str], first: str,
                                            second: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and first in lines[0]
    assert lines[1].startswith(second)
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


@pytest.mark.parametrize(("args", "first", "second"), CASES[:4])
def test_usage_error_is_one_line_from_the_console_script(args: list[str], first: str,
                                                         second: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "keel.cli", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert first in lines[0] and lines[1].startswith(second)


def test_a_bare_group_prints_its_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 2
    assert "Usage: keel runs" in result.stdout
    assert result.stderr == ""


def _listed(output: str, names: tuple[str, ...]) -> list[str]:
    seen = []
    for line in output.splitlines():
        words = line.strip("│ ").split()
        if words and words[0] in names and words[0] not in seen:
            seen.append(words[0])
    return seen


def test_keel_help_lists_commands_in_the_order_a_user_meets_them(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = result.stdout[result.stdout.index("Commands"):]
    assert _listed(commands, COMMAND_ORDER) == list(COMMAND_ORDER)
    assert COMMAND_ORDER[:3] == ("run", "resume", "runs")


def test_keel_runs_help_lists_its_commands_in_order(runner: CliRunner) -> None:
    result = runner.invoke(app, ["runs", "--help"])
    commands = result.stdout[result.stdout.index("Commands"):]
    assert _listed(commands, RUNS_ORDER) == list(RUNS_ORDER)


def _commands(group: object, path: str) -> list[tuple[str, str]]:
    ctx = typer.Context(group, info_name=path.split()[-1])  # type: ignore[arg-type]
    found = []
    for name in group.list_commands(ctx):  # type: ignore[attr-defined]
        sub = group.get_command(ctx, name)  # type: ignore[attr-defined]
        found.append((f"{path} {name}", sub.get_short_help_str(limit=1000)))
        if hasattr(sub, "list_commands"):
            found.extend(_commands(sub, f"{path} {name}"))
    return found


def test_every_summary_is_one_whole_sentence() -> None:
    commands = _commands(typer.main.get_command(app), "keel")
    assert len(commands) > 20
    for path, summary in commands:
        assert summary[:1].isupper() and summary.endswith("."), (path, summary)
        assert "e.g" not in summary and "\n" not in summary, (path, summary)
        # a sentence, not a label: the first word is a verb the user asks for
        assert summary.split()[0] not in {"The", "Approvals", "Escalations", "Everything",
                                          "Tool", "Runs"}, (path, summary)


def test_resume_help_does_not_offer_cancelled_runs(runner: CliRunner) -> None:
    commands = dict(_commands(typer.main.get_command(app), "keel"))
    assert "cancelled" not in commands["keel resume"]
    text = " ".join(runner.invoke(app, ["resume", "--help"]).stdout.split())
    assert "stopped with `keel runs cancel`, is not resumed" in text
