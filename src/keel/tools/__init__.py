"""L1: the Tool seam, ``@tool``, schemas and validation, metadata and tool sets."""

import warnings

from keel.tools._mcp import MCPServer, MCPTool, MCPToolInfo
from keel.tools._projection import project
from keel.tools._result import ErrorType, ToolFailure, ToolResult
from keel.tools._schema_tool import SchemaTool, tool_from_schema
from keel.tools._threads import run_in_worker
from keel.tools._tool import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_TIMEOUT,
    ArgValidator,
    FunctionTool,
    Reconciler,
    Risk,
    Tool,
    ToolMeta,
    tool,
)
from keel.tools._toolset import Toolset

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_TIMEOUT",
    "ArgValidator",
    "ErrorType",
    "FunctionTool",
    "MCPServer",
    "MCPTool",
    "MCPToolInfo",
    "Reconciler",
    "Risk",
    "SchemaTool",
    "Tool",
    "ToolFailure",
    "ToolMeta",
    "ToolResult",
    "Toolset",
    "project",
    "run_in_worker",
    "tool",
    "tool_from_schema",
]


def __getattr__(name: str) -> object:
    if name == "render_value":  # deprecated: one release, then removed
        from keel.core import to_text

        warnings.warn("keel.tools.render_value is deprecated; use keel.core.to_text (the "
                      "same rendering every part of keel uses)", DeprecationWarning,
                      stacklevel=2)
        return to_text
    raise AttributeError(f"module 'keel.tools' has no attribute {name!r}")
