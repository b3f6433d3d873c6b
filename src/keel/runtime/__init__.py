"""L2: the journal, run context, budgets, the middleware grid, the Agent loop and its runner."""

from keel.runtime._agent import Agent
from keel.runtime._budget import Budget, BudgetTracker
from keel.runtime._context import RunContext
from keel.runtime._journal import Journal
from keel.runtime._loop import FINAL_TOOL
from keel.runtime._middleware import (
    Middleware,
    MiddlewareStack,
    ModelRequestInput,
    RunEndInput,
    RunStartInput,
    ToolCallInput,
)
from keel.runtime._result import RunResult
from keel.runtime._runner import DEFAULT_STORE_URL, default_store_url, using_store

__all__ = [
    "DEFAULT_STORE_URL",
    "FINAL_TOOL",
    "Agent",
    "Budget",
    "BudgetTracker",
    "Journal",
    "Middleware",
    "MiddlewareStack",
    "ModelRequestInput",
    "RunContext",
    "RunEndInput",
    "RunResult",
    "RunStartInput",
    "ToolCallInput",
    "default_store_url",
    "using_store",
]
