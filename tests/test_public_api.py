"""The curated public surface. Changing it is a decision: update this list on purpose."""

import subprocess
import sys

import pytest

import keel

EXPECTED = [
    "Agent", "ApprovalRequired", "Budget", "BudgetExceeded", "CircuitOpen", "ConfigError",
    "ContextTooLong",
    "Divergence", "Escalate", "GuardrailTripped", "Handoff", "KeelError", "MemoryStore",
    "Message", "Middleware", "MissingCredentials", "Model", "ModelError", "ModelResponse",
    "ModelSettings", "OutputValidationError", "RepeatedFailure", "RetryWithFeedback",
    "RunError", "RunNotFound", "RunResult", "RunStore", "Signal", "StoreError",
    "StoreUnavailable", "StoreVersionError", "Tool", "ToolContext", "ToolDefinitionError",
    "ToolError", "ToolResult", "UnknownModel", "UnknownOutcome", "Usage", "UserError",
    "__version__", "configure_json_logging", "open_store", "resolve_model", "tool",
    "tool_from_schema", "MCPServer",
    # durable runs for fleets
    "ApprovalPolicy", "ApprovalRule", "DeadlineExceeded", "Durability", "EscalationPolicy",
    "Review",
    "LeaseLost", "RunCancelled", "RunLeased", "TaskConflict", "TaskNotFound", "Worker",
    "SettingConflict",
    "cancel_run", "decide_approval", "resolve_escalation",
    # user feedback on runs
    "record_feedback", "record_feedback_sync",
    # flows (every pattern is one)
    "Flow", "FlowContext", "flow",
    # reliability
    "BreakerPolicy", "Bulkhead", "BulkheadFull", "BulkheadPolicy", "CircuitBreaker",
    "RateLimit", "RateLimited", "RateLimiter", "Retry", "RetryPolicy",
    # replay, fork, diff, export
    "ReplayReport", "RunDiff", "diff_runs", "export_run", "fork_run", "import_run", "replay_run",
    # the JSON codec (what a value becomes in the journal and the model's view)
    "to_jsonable",
    # typed options and configuration
    "AgentConfig", "FlowOptions", "ResumeOptions", "RunOptions",
    # the default middleware, and what a middleware's hooks take
    "defaults", "ModelNext", "ModelRequestInput", "RetryHook", "RunEndInput", "RunStartInput",
    "ToolCallInput", "ToolNext",
    # the guardrail seam
    "GuardDecision", "GuardInput", "Guardrail",
    # conversations (threads of runs)
    "Conversation",
]


def test_exported_members() -> None:
    assert sorted(keel.__all__) == sorted(EXPECTED)
    for name in keel.__all__:
        assert hasattr(keel, name), name


def test_run_context_is_a_deprecated_alias_of_flow_context() -> None:
    """keel.RunContext (never created by the runtime) was merged into FlowContext; the old
    name works for one release, with a DeprecationWarning, and is not in __all__."""
    import keel.runtime

    for module in (keel, keel.runtime):
        with pytest.warns(DeprecationWarning, match="FlowContext"):
            alias = module.RunContext
        assert alias is keel.FlowContext
        assert "RunContext" not in module.__all__
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = keel.NoSuchThing  # type: ignore[attr-defined]


def test_error_tree() -> None:
    assert issubclass(keel.UserError, keel.KeelError)
    assert issubclass(keel.RunError, keel.KeelError)
    assert issubclass(keel.Signal, keel.KeelError)
    for run_error in (keel.BudgetExceeded, keel.ModelError, keel.ToolError, keel.Divergence,
                      keel.UnknownOutcome, keel.RepeatedFailure, keel.OutputValidationError):
        assert issubclass(run_error, keel.RunError)
    for user_error in (keel.UnknownModel, keel.MissingCredentials, keel.ToolDefinitionError,
                       keel.StoreError, keel.StoreVersionError, keel.RunNotFound,
                       keel.ConfigError):
        assert issubclass(user_error, keel.UserError)


def test_import_has_no_side_effects() -> None:
    """Importing keel opens no connection, starts no thread and pulls in no provider SDK."""
    code = (
        "import sys, threading; import keel; "
        "assert threading.active_count() == 1, threading.enumerate(); "
        "heavy = [m for m in ('openai', 'anthropic', 'sqlite3', 'typer', 'rich', 'psycopg', "
        " 'jsonschema', 'redis', 'tenacity') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_importing_keel_registers_nothing() -> None:
    """The default middleware is listed by keel.defaults(), not registered in a process-wide
    registry when keel is imported."""
    from keel.runtime import _defaults

    assert _defaults._LEGACY == {}
    from keel import context, guard, observe

    assert [type(m) for m in keel.defaults()] == [
        observe.Tracing, observe.Metrics, keel.Retry, keel.CircuitBreaker, context.Paging,
        guard.LimitsGuard, guard.InjectionGuard, guard.DataGuard, guard.TaintGuard,
        guard.UntrustedContent, context.History]
