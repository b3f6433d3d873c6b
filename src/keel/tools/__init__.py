"""L1: the Tool seam, ``@tool``, schemas and validation, metadata and tool sets."""

from keel.tools._result import ErrorType, ToolFailure, ToolResult
from keel.tools._tool import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_TIMEOUT,
    ArgValidator,
    FunctionTool,
    Reconciler,
    Risk,
    Tool,
    ToolMeta,
    render_value,
    tool,
)
from keel.tools._toolset import Toolset

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_TIMEOUT",
    "ArgValidator",
    "ErrorType",
    "FunctionTool",
    "Reconciler",
    "Risk",
    "Tool",
    "ToolFailure",
    "ToolMeta",
    "ToolResult",
    "Toolset",
    "render_value",
    "tool",
]
