"""Safe text for the terminal: the consoles, and helpers that never let data act as markup.

Everything the CLI prints that came from a run (inputs, outputs, tool arguments and results,
error messages, file names) goes through :func:`safe`: it becomes a ``rich.text.Text`` (so
``[bold]`` is printed, not interpreted), control characters are shown as ``\\x1b``-style
escapes (so ANSI sequences cannot recolour or rewrite the terminal), and long values are cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.text import Text

from keel.core import dumps

#: Control characters (except newline and tab) and bidirectional overrides.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

#: How much of one value the live view and the timeline show.
SHORT = 160
LONG = 2000


def printable(text: str) -> str:
    """``text`` with control characters replaced by visible escapes (``\\x1b``)."""
    return _UNSAFE.sub(lambda m: _escape_char(m.group()), text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def one_line(text: str, limit: int = SHORT) -> str:
    """``text`` on one line (newlines shown as ``⏎``), cut to ``limit``."""
    return clip(" ⏎ ".join(part.strip() for part in text.strip().splitlines()), limit)


def safe(text: str, style: str = "", limit: int | None = LONG) -> Text:
    """A ``Text`` that shows ``text`` literally: no markup, no control codes, cut to
    ``limit`` characters (``None``: whole)."""
    shown = text if limit is None else clip(text, limit)
    return Text(printable(shown), style=style)


def to_json(value: Any) -> str:
    """JSON for scripts (``--json``): keel's codec, indented, ASCII only, so no byte of it can
    act on a terminal."""
    return dumps(value, indent=2, ensure_ascii=True)


@dataclass(slots=True)
class Screen:
    """Where the CLI writes: ``out`` (stdout) for results, ``err`` (stderr) for errors.

    Both consoles look up ``sys.stdout`` / ``sys.stderr`` when they print, so they follow
    redirection (and test runners). Syntax highlighting is off: run data is printed as is.
    :meth:`line` and the error helpers do not hard-wrap (the terminal wraps), so an error or a
    step stays one line for ``grep``; tables and panels fit the width.
    """

    out: Console = field(default_factory=lambda: Console(highlight=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    @property
    def unicode(self) -> bool:
        return self.out.encoding.lower().startswith("utf")

    def arrow(self, right: bool = True) -> str:
        if self.unicode:
            return "→" if right else "←"
        return "->" if right else "<-"

    def error(self, message: str, *, hint: str | None = None) -> None:
        """One red line naming the problem (its message names the fix), and an optional hint."""
        line = Text("error: ", style="bold red")
        line.append_text(safe(message, "red", limit=LONG))
        self.err.print(line, soft_wrap=True)
        if hint:
            self.err.print(safe(hint, "dim", limit=LONG), soft_wrap=True)

    def note(self, message: str, style: str = "yellow") -> None:
        self.err.print(safe(message, style, limit=LONG), soft_wrap=True)

    def line(self, text: Text) -> None:
        """One line of output, not hard-wrapped."""
        self.out.print(text, soft_wrap=True)
