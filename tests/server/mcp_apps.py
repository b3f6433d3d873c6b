"""The app the MCP server tests serve (``keel mcp serve tests.server.mcp_apps:app``): the
server tests' support agent (a read tool, an irreversible refund that waits for approval)
and an agent whose model always fails. The store comes from ``--store``."""

from __future__ import annotations

from typing import Any

from keel import Agent
from keel.core import ModelError
from keel.server import App
from keel.testing import FunctionModel
from tests.server.apps import support


def _broken(messages: Any, tools: Any, settings: Any) -> Any:
    raise ModelError("the model endpoint refused the request", status=400)


broken = Agent("broken", model=FunctionModel(_broken), instructions="Never answers.")
app = App([support, broken])
