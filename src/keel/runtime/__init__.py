"""L2: the journal, run context, budgets, the middleware grid, the Agent loop and its runner."""

from keel.runtime._agent import Agent, AgentConfig
from keel.runtime._approvals import ApprovalPolicy, ApprovalRule, decide_approval
from keel.runtime._budget import Budget, BudgetTracker
from keel.runtime._context import RunContext
from keel.runtime._diff import RunDiff, RunTotals, StepDiff, diff_runs
from keel.runtime._escalation import (
    EscalationPolicy,
    claim_escalation,
    resolve_escalation,
)
from keel.runtime._flow import Flow, FlowContext, flow
from keel.runtime._journal import Durability, Journal
from keel.runtime._lease import worker_id
from keel.runtime._loop import FINAL_TOOL
from keel.runtime._middleware import (
    Middleware,
    MiddlewareStack,
    ModelNext,
    ModelRequestInput,
    RetryHook,
    RunEndInput,
    RunStartInput,
    ToolCallInput,
    ToolNext,
)
from keel.runtime._replay import ReplayDivergence, ReplayReport, fork_run, replay_run
from keel.runtime._result import RunResult
from keel.runtime._runner import DEFAULT_STORE_URL, default_store_url, using_store
from keel.runtime._runs import FlowOptions, ResumeOptions, RunOptions
from keel.runtime._worker import Worker, WorkOutcome, cancel_run

__all__ = [
    "DEFAULT_STORE_URL",
    "FINAL_TOOL",
    "Agent",
    "AgentConfig",
    "ApprovalPolicy",
    "ApprovalRule",
    "Budget",
    "BudgetTracker",
    "Durability",
    "EscalationPolicy",
    "Flow",
    "FlowContext",
    "FlowOptions",
    "Journal",
    "Middleware",
    "MiddlewareStack",
    "ModelNext",
    "ModelRequestInput",
    "ReplayDivergence",
    "ReplayReport",
    "ResumeOptions",
    "RetryHook",
    "RunContext",
    "RunDiff",
    "RunEndInput",
    "RunOptions",
    "RunResult",
    "RunStartInput",
    "RunTotals",
    "StepDiff",
    "ToolCallInput",
    "ToolNext",
    "WorkOutcome",
    "Worker",
    "cancel_run",
    "claim_escalation",
    "decide_approval",
    "default_store_url",
    "diff_runs",
    "flow",
    "fork_run",
    "replay_run",
    "resolve_escalation",
    "using_store",
    "worker_id",
]


def __getattr__(name: str) -> object:
    if name == "register_default_middleware":  # deprecated: keel.defaults() lists them
        import warnings

        from keel.runtime import _defaults

        warnings.warn("keel.runtime.register_default_middleware is deprecated: keel's defaults "
                      "are listed by keel.defaults() (see docs/middleware.md)",
                      DeprecationWarning, stacklevel=2)
        return _defaults.register_default_middleware
    raise AttributeError(f"module 'keel.runtime' has no attribute {name!r}")
