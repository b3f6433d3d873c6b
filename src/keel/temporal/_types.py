"""What the workflow and its activities pass each other: plain dataclasses, safe to import in
Temporal's workflow sandbox (no keel imports) and encoded by Temporal's JSON converter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The one workflow type every keel run on Temporal executes.
WORKFLOW_NAME = "keel.run"
#: The signal that says a person decided something the run waits for (or cancelled it).
DECIDED_SIGNAL = "keel.decided"
START_ACTIVITY = "keel.start"
ADVANCE_ACTIVITY = "keel.advance"
STATUS_ACTIVITY = "keel.status"
STOP_ACTIVITY = "keel.stop"

#: The engine name keel.start writes into a run's metadata (``keel.store.ENGINE_KEY``).
ENGINE = "temporal"
#: Outcome statuses that end the workflow.
ENDED = ("completed", "failed", "cancelled")


@dataclass(kw_only=True)
class RunRequest:
    """One keel run to execute: which agent or flow (``target``, its name as the worker
    knows it), the input, the run id, who it is for, and how the workflow drives it.

    ``max_steps`` / ``max_tokens`` / ``max_cost_usd``: a budget the workflow itself checks
    after every step (on top of the agent's own budget, which keel checks before each call).
    ``poll_s``: how often a suspended run's status is read when no signal arrives.
    ``step_timeout_s``: how long one step (one model request or tool call, with keel's own
    retries inside) may take before Temporal retries it. ``heartbeat_s``: a step's worker
    reports in this often (a third of it); a worker silent for longer (killed, hung) has
    its step retried on another worker then, not after ``step_timeout_s``. ``retry``: the
    activity retry policy, from keel's defaults (see :func:`keel.temporal.retry_spec`)."""

    run_id: str
    target: str
    input: str
    tenant: str | None = None
    user: str | None = None
    conversation: str | None = None
    max_steps: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    poll_s: float = 60.0
    step_timeout_s: float = 600.0
    heartbeat_s: float = 30.0
    retry: RetrySpec | None = None


@dataclass(kw_only=True)
class RetrySpec:
    """Temporal's activity retry policy, as plain data (so the workflow stays keel-free)."""

    initial_interval_s: float = 0.5
    backoff: float = 2.0
    max_interval_s: float = 30.0
    max_attempts: int = 4
    non_retryable: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Outcome:
    """Where a run stands after an activity: ``status`` is ``completed``, ``failed``,
    ``cancelled``, ``suspended`` (waiting for people: ``waiting`` holds the task ids) or
    ``running`` (it paused between steps and goes on). ``usage``: the run's totals so far
    (``steps``, tokens, ``cost_usd``); ``error``: keel's stored error for a failed run."""

    run_id: str
    status: str
    agent: str = ""
    output: Any = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class StopRequest:
    """End a run in keel's store from the workflow: ``status`` ``cancelled`` (Temporal
    cancelled the workflow) or ``failed`` (the workflow's own budget ran out)."""

    run_id: str
    target: str
    status: str
    error_type: str
    message: str
    by: str = "temporal"


def workflow_id_for(run_id: str) -> str:
    """The Temporal workflow id of keel run ``run_id``."""
    return f"keel-run-{run_id}"
