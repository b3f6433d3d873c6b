"""keel: a production runtime for AI agents.

Validated tools, budgets, retries, the run journal and structured logs are on by default.
Install with ``pip install keel-agents`` (``'keel-agents[all]'`` for the ``keel`` command,
the provider SDKs and embeddings); the quick start is the project's README.md, which is
also this distribution's long description (``importlib.metadata.metadata("keel-agents")``).
"""

import warnings
from typing import Any

from keel.core import (
    ApprovalRequired,
    BudgetExceeded,
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    Divergence,
    Escalate,
    GuardrailTripped,
    Handoff,
    KeelError,
    LeaseLost,
    Message,
    MissingCredentials,
    ModelError,
    ModelResponse,
    ModelSettings,
    OutputValidationError,
    RateLimited,
    RepeatedFailure,
    RetryWithFeedback,
    RunCancelled,
    RunError,
    RunLeased,
    RunNotFound,
    Signal,
    StoreError,
    StoreUnavailable,
    StoreVersionError,
    TaskConflict,
    TaskNotFound,
    ToolContext,
    ToolDefinitionError,
    ToolError,
    UnknownModel,
    UnknownOutcome,
    Usage,
    UserError,
    configure_json_logging,
    to_jsonable,
)
from keel.models import Model, resolve_model
from keel.reliability import (
    BreakerPolicy,
    Bulkhead,
    BulkheadPolicy,
    CircuitBreaker,
    RateLimit,
    RateLimiter,
    Retry,
    RetryPolicy,
)
from keel.runtime import (
    Agent,
    ApprovalPolicy,
    ApprovalRule,
    Budget,
    Durability,
    EscalationPolicy,
    Flow,
    FlowContext,
    Middleware,
    ReplayReport,
    RunDiff,
    RunResult,
    Worker,
    cancel_run,
    decide_approval,
    diff_runs,
    flow,
    fork_run,
    replay_run,
    resolve_escalation,
)
from keel.runtime import register_default_middleware as _register_default
from keel.store import MemoryStore, RunStore, export_run, import_run, open_store
from keel.tools import Tool, ToolResult, tool

__version__ = "0.1.0"

# The composition root: every Agent gets these unless it passes its own of the same type
# (e.g. ``Retry(RetryPolicy(max_attempts=6))``, ``CircuitBreaker.off()``) or
# ``default_middleware=False``. Outermost first: a retry goes through the breaker, so an
# open breaker stops the retries.
_register_default("reliability", lambda: [Retry(), CircuitBreaker()])

__all__ = [
    "Agent",
    "ApprovalPolicy",
    "ApprovalRequired",
    "ApprovalRule",
    "BreakerPolicy",
    "Budget",
    "BudgetExceeded",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadPolicy",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "DeadlineExceeded",
    "Divergence",
    "Durability",
    "Escalate",
    "EscalationPolicy",
    "Flow",
    "FlowContext",
    "GuardrailTripped",
    "Handoff",
    "KeelError",
    "LeaseLost",
    "MemoryStore",
    "Message",
    "Middleware",
    "MissingCredentials",
    "Model",
    "ModelError",
    "ModelResponse",
    "ModelSettings",
    "OutputValidationError",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "RepeatedFailure",
    "ReplayReport",
    "Retry",
    "RetryPolicy",
    "RetryWithFeedback",
    "RunCancelled",
    "RunDiff",
    "RunError",
    "RunLeased",
    "RunNotFound",
    "RunResult",
    "RunStore",
    "Signal",
    "StoreError",
    "StoreUnavailable",
    "StoreVersionError",
    "TaskConflict",
    "TaskNotFound",
    "Tool",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolResult",
    "UnknownModel",
    "UnknownOutcome",
    "Usage",
    "UserError",
    "Worker",
    "__version__",
    "cancel_run",
    "configure_json_logging",
    "decide_approval",
    "diff_runs",
    "export_run",
    "flow",
    "fork_run",
    "import_run",
    "open_store",
    "replay_run",
    "resolve_escalation",
    "resolve_model",
    "to_jsonable",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name == "RunContext":  # deprecated alias, to be removed in the next release
        warnings.warn("keel.RunContext is deprecated: it was never created by the runtime; "
                      "use keel.FlowContext (a flow's ctx, with the same step(), now(), "
                      "uuid() and random())", DeprecationWarning, stacklevel=2)
        return FlowContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
