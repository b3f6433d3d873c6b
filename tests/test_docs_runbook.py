"""docs/runbooks/support_desk.md cites only commands that exist: every ``keel ...`` in it
names a real command path, and every ``--option`` given to it is one of that command's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from keel.cli import app

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbooks" / "support_desk.md"
_CALL = re.compile(r"(?:`|^\s*)(keel(?: [a-z][a-z-]*)+)((?: [^`#\n]*)?)", re.M)


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    command: Any = typer.main.get_command(app)
    path = ["keel"]
    for word in words:
        if not hasattr(command, "get_command"):
            break
        sub = command.get_command(typer.Context(command, info_name=path[-1]), word)
        if sub is None:
            break
        command, path = sub, [*path, word]
    return command, path


def test_every_cited_command_and_option_exists() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    cited = _CALL.findall(text)
    assert len(cited) > 30
    for head, rest in cited:
        words = head.split()[1:]
        command, path = _resolve(words)
        assert len(path) > 1, f"`{head}` is not a keel command"
        assert not hasattr(command, "get_command"), f"`{head}` names a group, not a command"
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert option in known, f"`{' '.join(path)}` has no {option}"
