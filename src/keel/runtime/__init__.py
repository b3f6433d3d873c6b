"""L2: the journal, run context, budgets, the middleware grid, the Agent loop and its runner."""

from keel.runtime._agent import Agent
from keel.runtime._approvals import ApprovalPolicy, ApprovalRule, decide_approval
from keel.runtime._budget import Budget, BudgetTracker
from keel.runtime._context import RunContext
from keel.runtime._defaults import register_default_middleware
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
    ModelRequestInput,
    RetryHook,
    RunEndInput,
    RunStartInput,
    ToolCallInput,
)
from keel.runtime._replay import ReplayDivergence, ReplayReport, fork_run, replay_run
from keel.runtime._result import RunResult
from keel.runtime._runner import DEFAULT_STORE_URL, default_store_url, using_store
from keel.runtime._worker import Worker, WorkOutcome, cancel_run, resolve_unknown_outcome

__all__ = [
    "DEFAULT_STORE_URL",
    "FINAL_TOOL",
    "Agent",
    "ApprovalPolicy",
    "ApprovalRule",
    "Budget",
    "BudgetTracker",
    "Durability",
    "EscalationPolicy",
    "Flow",
    "FlowContext",
    "Journal",
    "Middleware",
    "MiddlewareStack",
    "ModelRequestInput",
    "ReplayDivergence",
    "ReplayReport",
    "RetryHook",
    "RunContext",
    "RunDiff",
    "RunEndInput",
    "RunResult",
    "RunStartInput",
    "RunTotals",
    "StepDiff",
    "ToolCallInput",
    "WorkOutcome",
    "Worker",
    "cancel_run",
    "claim_escalation",
    "decide_approval",
    "default_store_url",
    "diff_runs",
    "flow",
    "fork_run",
    "register_default_middleware",
    "replay_run",
    "resolve_escalation",
    "resolve_unknown_outcome",
    "using_store",
    "worker_id",
]
