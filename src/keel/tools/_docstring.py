"""A small docstring reader: the summary, and parameter descriptions from an ``Args:``
(Google style) or ``:param x:`` (reST) section."""

from __future__ import annotations

import inspect
import re

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$")
_GOOGLE_PARAM = re.compile(r"^\s*(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_REST_PARAM = re.compile(r"^\s*:param\s+(?:[\w\[\], |]+\s+)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Return (description, {parameter: description})."""
    text = inspect.cleandoc(doc) if doc else ""
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in text.splitlines():
        m = _SECTION.match(line.strip())
        if m:
            section, current = m.group(1), None
            continue
        rest = _REST_PARAM.match(line)
        if rest:
            current = rest.group(1)
            params[current] = rest.group(2).strip()
            section = "rest"
            continue
        if section is None:
            summary_lines.append(line)
        elif section in ("Args", "Arguments", "Parameters"):
            g = _GOOGLE_PARAM.match(line)
            if g and not line.startswith((" " * 8, "\t\t")):
                current = g.group(1)
                params[current] = g.group(3).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
        elif section == "rest" and current and line.strip() and not line.startswith(":"):
            params[current] = f"{params[current]} {line.strip()}".strip()
    summary = "\n".join(summary_lines).strip()
    return summary, params
