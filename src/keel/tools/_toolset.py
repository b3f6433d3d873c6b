"""A set of tools with unique names, filtered by the scopes a caller holds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from keel.core import ToolDefinitionError, ToolSpec
from keel.tools._tool import Tool


class Toolset:
    """An ordered, name-unique collection of tools."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool) -> None:
        if not isinstance(t, Tool):
            raise ToolDefinitionError(
                f"{t!r} is not a keel tool; decorate the function with @keel.tool.")
        if t.name in self._tools:
            raise ToolDefinitionError(
                f"two tools are named {t.name!r}; tool names must be unique within an agent. "
                "Rename one with @tool(name=...).")
        self._tools[t.name] = t

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def permitted(self, scopes: frozenset[str]) -> Toolset:
        """The tools whose required scopes are all in ``scopes``."""
        return Toolset(t for t in self._tools.values() if t.meta.scopes <= scopes)

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]
