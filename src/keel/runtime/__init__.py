"""L2: the journal, run context, budgets, the middleware grid, the Agent loop and its runner."""

import warnings
from typing import Any

from keel.runtime._agent import Agent, AgentConfig
from keel.runtime._approvals import (
    ApprovalContext,
    ApprovalPolicy,
    ApprovalRule,
    Review,
    decide_approval,
)
from keel.runtime._budget import Budget, BudgetTracker
from keel.runtime._conversation_api import Conversation, SendOptions
from keel.runtime._diff import RunDiff, RunTotals, StepDiff, diff_runs, stored_number
from keel.runtime._engines import Notifier, notify_engine, register_engine
from keel.runtime._escalation import (
    EscalationPolicy,
    claim_escalation,
    resolve_escalation,
)
from keel.runtime._feedback import (
    FeedbackSummary,
    epoch_since,
    feedback_summary,
    record_feedback,
    record_feedback_sync,
    summarize_feedback,
)
from keel.runtime._flow import Flow, FlowContext, Share, check_name, flow
from keel.runtime._graph import (
    FlowGraph,
    GraphBuilder,
    GraphCounts,
    GraphEdge,
    GraphNode,
    StepMatch,
    agent_graph,
    count_runs,
    flow_graph,
    key_matches,
    nodes_hit,
)
from keel.runtime._guarding import GuardDecision, GuardInput, Place
from keel.runtime._journal import Durability, Journal, Paused
from keel.runtime._lease import worker_id
from keel.runtime._loop import FINAL_TOOL
from keel.runtime._middleware import (
    AgentInput,
    Guardrail,
    Middleware,
    MiddlewareStack,
    ModelNext,
    ModelRequestInput,
    RetryHook,
    RunEndInput,
    RunStartInput,
    SubRunInput,
    SubRunNext,
    ToolCallInput,
    ToolNext,
)
from keel.runtime._quorum import approval_reviews, review_summary, reviewers_needed
from keel.runtime._replay import (
    ReplayDivergence,
    ReplayReport,
    fork_run,
    plan_fork,
    replay_run,
)
from keel.runtime._result import RunResult
from keel.runtime._runner import (
    DEFAULT_STORE_URL,
    Launch,
    default_store_url,
    execute,
    using_store,
)
from keel.runtime._runs import FlowOptions, ResumeOptions, RunOptions
from keel.runtime._substeps import CONTEXT_KIND, SubSteps, run_sub_agent
from keel.runtime._version import VERSION_KEY, agent_version, tool_fingerprint, version_digest
from keel.runtime._worker import (
    Worker,
    WorkOutcome,
    cancel_run,
    hand_back,
    resolve_unknown_outcome,
)

__all__ = [
    "CONTEXT_KIND",
    "DEFAULT_STORE_URL",
    "FINAL_TOOL",
    "VERSION_KEY",
    "Agent",
    "AgentConfig",
    "AgentInput",
    "ApprovalContext",
    "ApprovalPolicy",
    "ApprovalRule",
    "Budget",
    "BudgetTracker",
    "Conversation",
    "Durability",
    "EscalationPolicy",
    "FeedbackSummary",
    "Flow",
    "FlowContext",
    "FlowGraph",
    "FlowOptions",
    "GraphBuilder",
    "GraphCounts",
    "GraphEdge",
    "GraphNode",
    "GuardDecision",
    "GuardInput",
    "Guardrail",
    "Journal",
    "Launch",
    "Middleware",
    "MiddlewareStack",
    "ModelNext",
    "ModelRequestInput",
    "Notifier",
    "Paused",
    "Place",
    "ReplayDivergence",
    "ReplayReport",
    "ResumeOptions",
    "RetryHook",
    "Review",
    "RunDiff",
    "RunEndInput",
    "RunOptions",
    "RunResult",
    "RunStartInput",
    "RunTotals",
    "SendOptions",
    "Share",
    "StepDiff",
    "StepMatch",
    "SubRunInput",
    "SubRunNext",
    "SubSteps",
    "ToolCallInput",
    "ToolNext",
    "WorkOutcome",
    "Worker",
    "agent_graph",
    "agent_version",
    "approval_reviews",
    "cancel_run",
    "check_name",
    "claim_escalation",
    "count_runs",
    "decide_approval",
    "default_store_url",
    "diff_runs",
    "epoch_since",
    "execute",
    "feedback_summary",
    "flow",
    "flow_graph",
    "fork_run",
    "hand_back",
    "key_matches",
    "nodes_hit",
    "notify_engine",
    "plan_fork",
    "record_feedback",
    "record_feedback_sync",
    "register_engine",
    "replay_run",
    "resolve_escalation",
    "resolve_unknown_outcome",
    "review_summary",
    "reviewers_needed",
    "run_sub_agent",
    "stored_number",
    "summarize_feedback",
    "tool_fingerprint",
    "using_store",
    "version_digest",
    "worker_id",
]

Paused.__module__ = __name__


def run_context_alias() -> type[FlowContext]:
    """``RunContext``, deprecated: the runtime never created one (to go in the next release)."""
    warnings.warn("RunContext is deprecated: it was never created by the runtime; use "
                  "keel.FlowContext (a flow's ctx, with the same step(), now(), uuid() and "
                  "random())", DeprecationWarning, stacklevel=3)  # the caller's caller
    return FlowContext


def __getattr__(name: str) -> Any:
    if name == "RunContext":
        return run_context_alias()
    if name == "register_default_middleware":  # deprecated: keel.defaults() lists them
        from keel.runtime import _defaults

        warnings.warn("keel.runtime.register_default_middleware is deprecated: keel's defaults "
                      "are listed by keel.defaults() (see docs/middleware.md)",
                      DeprecationWarning, stacklevel=2)
        return _defaults.register_default_middleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
