"""keel's retry policy as Temporal's activity retry policy."""

from __future__ import annotations

from keel.reliability import RetryPolicy
from keel.temporal._types import RetrySpec

#: The error types Temporal never retries a step for: the developer's mistakes, and run
#: failures that would fail again the same way (keel marks these ``retryable = False``).
NON_RETRYABLE = (
    "UserError", "ConfigError", "UnknownModel", "MissingCredentials", "ToolDefinitionError",
    "StoreError", "RunNotFound", "UnknownTarget", "RunExists", "Divergence", "UnknownOutcome",
    "GuardrailTripped", "BudgetExceeded", "RunCancelled", "ContextTooLong",
    "OutputValidationError", "RepeatedFailure", "DeadlineExceeded",
)


def retry_spec(policy: RetryPolicy | None = None) -> RetrySpec:
    """Temporal's retry of one step (a ``keel.advance`` activity) from keel's
    :class:`~keel.RetryPolicy` (its defaults when None): the first wait is ``base_delay``,
    multiplied by ``multiplier`` per attempt up to ``max_delay``, at most ``max_attempts``
    attempts; keel's non-retryable error types are never retried. (Temporal adds no jitter
    of its own; keel's retry middleware still retries transient model and tool errors
    inside each attempt, with full jitter.)"""
    p = policy or RetryPolicy()
    return RetrySpec(initial_interval_s=max(p.base_delay, 0.001), backoff=p.multiplier,
                     max_interval_s=max(p.max_delay, p.base_delay, 0.001),
                     max_attempts=p.max_attempts, non_retryable=list(NON_RETRYABLE))
