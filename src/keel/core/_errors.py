"""The keel error tree, drawn once.

::

    KeelError                       root of everything keel raises on purpose
    ├── UserError                   the developer misused keel; the message says the fix
    │   ├── ConfigError             a setting that makes no sense (names the field)
    │   ├── UnknownModel            a model id keel cannot resolve
    │   ├── MissingCredentials      a provider needs an API key that is not set
    │   ├── ToolDefinitionError     a function that cannot become a tool
    │   ├── StoreError              the run store cannot be used as asked
    │   │   ├── StoreVersionError   written by a newer keel, or not a keel store
    │   │   ├── RunNotFound         no run with that id
    │   │   ├── RunLeased           another worker holds the run's lease right now
    │   │   ├── LeaseLost           this worker's lease expired and another took the run over
    │   │   ├── TaskNotFound        no approval or escalation with that id
    │   │   ├── TaskConflict        the approval or escalation is already decided
    │   │   ├── SettingConflict     a setting changed since it was read (compare-and-set)
    │   │   ├── KeyNotFound         (keel.server) no API key with that id (for that tenant)
    │   │   └── KeyRevoked          (keel.server) the API key is revoked; nothing was changed
    │   ├── ArgumentRefused         (keel.guard) a validator refused an argument; a ValueError too
    │   ├── DocumentError           (keel.patterns) a document cannot be read or indexed
    │   ├── CorpusError             (keel.patterns) the corpus index is damaged or mismatched
    │   │   └── ChunkNotFound       (keel.patterns) no chunk with that id; a KeyError too
    │   ├── AuthError               (keel.server) an API key or token was refused (never
    │   │                           echoes it; ``reason`` says which rule failed)
    │   ├── EventRejected           (keel.events) an event is malformed, or its payload does not
    │   │                           validate against the trigger's type (names the event)
    │   ├── EvalError               (keel.evals) an evaluation cannot run as asked (a threshold
    │   │   │                       out of range, a baseline from another dataset)
    │   │   └── DatasetError        (keel.evals) a dataset file or case is malformed (names
    │   │                           the file and line)
    │   ├── RolloutError            (keel.rollout) a rollout or version cannot be used as asked
    │   │                           (unknown version, overlapping shares, missing tools)
    │   └── CliError                (keel.cli) a bad option value on the command line
    ├── RunError                    the run failed; carries run_id and step_key
    │   ├── BudgetExceeded          steps, tokens, cost or wall time ran out
    │   ├── ModelError              the model endpoint failed (status, retry_after)
    │   ├── ToolError               a tool failed in a way the run cannot absorb
    │   ├── RepeatedFailure         the same failing call kept being repeated
    │   ├── OutputValidationError   the final answer never matched the output type
    │   ├── Divergence              the journal no longer matches the code (both sides shown)
    │   │   └── WorkflowDivergence  (keel.temporal) a recorded workflow history no longer
    │   │                           replays against the workflow code (names the event)
    │   ├── DeadlineExceeded        the run's whole-run deadline passed
    │   ├── RunCancelled            the run was cancelled (reason, by)
    │   ├── UnknownOutcome          a non-idempotent tool crashed between intent and result
    │   ├── GuardrailTripped        a guardrail stopped the run
    │   ├── CircuitOpen             a breaker is open; fail fast (retryable)
    │   ├── BulkheadFull            a concurrency pool and its queue are full (retryable)
    │   ├── RateLimited             a rate limit would not allow the call in time (retryable)
    │   ├── ContextTooLong          the request does not fit the model's context window
    │   ├── StoreUnavailable        the store failed for a while: lost connection, deadlock,
    │   │                           pool timeout, a lock held past the busy timeout (retryable)
    │   ├── PlanStepFailed          (keel.patterns) a plan step failed and may not be skipped
    │   ├── WorkflowError           (keel.patterns) a workflow step failed
    │   │   └── GateFailed          (keel.patterns) a gate did not pass
    │   ├── MarketplaceFailed       (keel.patterns) no valid bid, or every award failed
    │   ├── HandoffLoop             (keel.patterns) agents kept handing the conversation around
    │   ├── EventBusUnavailable     (keel.events) the event bus cannot be reached (retryable)
    │   └── TemporalUnavailable     (keel.temporal) the Temporal server cannot be reached
    │                               (retryable)
    ├── SensitiveDataBlocked        (keel.guard) content holds a kind of personal data or
    │                               secret that the redaction policy blocks (never the value)
    └── Signal                      raised on purpose to steer control flow
        ├── RetryWithFeedback       tell the model what to fix and let it try again
        ├── ApprovalRequired        a step needs a human decision
        ├── Escalate                hand the run to a human
        ├── Handoff                 hand the conversation to another agent
        └── Paused                  (keel.runtime) the run used its step allowance and stopped
                                    between steps (an engine such as keel.temporal goes on)

A :class:`UserError` is a mistake to fix (the CLI exits 2); a :class:`RunError` is a failure
of this attempt (the CLI exits 1), and one marked ``retryable`` may pass when tried again: a
database outage is a :class:`StoreUnavailable`, never a usage error. The public classes print
as ``keel.X`` (``keel.patterns.X`` for the patterns' own), where users import them from.

Retryability is a field (``retryable``), never a guess from the class name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.core._messages import Message


class KeelError(Exception):
    """Root of the keel error tree."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------- user errors


class UserError(KeelError):
    """keel was misused. The message names the fix."""


class ConfigError(UserError):
    """A configuration value that makes no sense; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid setting {field!r}: {problem}")
        self.field = field


class UnknownModel(UserError):
    """A model id that keel cannot resolve to an adapter."""


class MissingCredentials(UserError):
    """A provider needs a key that is not configured."""


class ToolDefinitionError(UserError):
    """A Python function that cannot be turned into a tool, or a clash between tools."""


class StoreError(UserError):
    """The run store cannot be used as asked."""


class StoreVersionError(StoreError):
    """The store was written by a newer keel, or is not a keel store at all."""


class RunNotFound(StoreError):
    """No run with the given id exists in the store."""


class RunLeased(StoreError):
    """Another worker holds the run's lease: it is being continued elsewhere right now."""

    def __init__(self, message: str, *, holder: str | None = None,
                 expires_at: float | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLost(StoreError):
    """This worker no longer holds the run's lease (it expired and another worker took the
    run over, or the run was released); nothing was written."""


class TaskNotFound(StoreError):
    """No approval or escalation with the given id exists in the store."""


class TaskConflict(StoreError):
    """The approval or escalation cannot be decided now: it is already decided, or its run is
    not waiting for it. Nothing was changed."""


class SettingConflict(StoreError):
    """A setting was written with the version it had when it was read, but someone changed
    it since (compare-and-set). Nothing was changed: read it again and decide again."""


# ----------------------------------------------------------------------------- run errors


class RunError(KeelError):
    """The run failed. Carries the run id and the key of the step that failed."""

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        step_key: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.run_id = run_id
        self.step_key = step_key
        #: For a failure read back from the journal (a resumed run that must end as it did):
        #: the type it was recorded with, which the run records again.
        self.recorded_type: str | None = None

    def __str__(self) -> str:
        where = [f"run {self.run_id}"] if self.run_id else []
        if self.step_key:
            where.append(f"step {self.step_key}")
        return f"{self.message} ({', '.join(where)})" if where else self.message

    @property
    def error_type(self) -> str:
        """The type the run's record names: the class, or the type it was recorded with."""
        return self.recorded_type or type(self).__name__


class BudgetExceeded(RunError):
    """A per-run limit (steps, tokens, cost, wall time) would be crossed by the next call."""

    def __init__(self, message: str, *, limit: str, used: float, allowed: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.used = used
        self.allowed = allowed


class ModelError(RunError):
    """The model endpoint failed. ``status`` is the HTTP status when there was one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        model: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.retry_after = retry_after
        self.model = model


class ToolError(RunError):
    """A tool failed. Raised by tool code to report a failure with a chosen retryability."""

    def __init__(self, message: str, *, hint: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.hint = hint


class RepeatedFailure(RunError):
    """The model kept repeating the same failing call with the same arguments."""


class OutputValidationError(RunError):
    """The model's final answer never validated against the output type."""


class Divergence(RunError):
    """The recorded journal and the code disagree about a step."""

    def __init__(self, message: str, *, recorded: dict[str, Any], requested: dict[str, Any],
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.recorded = recorded
        self.requested = requested

    def __str__(self) -> str:
        return (
            f"{super().__str__()}\n  recorded:  {self.recorded}\n  requested: {self.requested}\n"
            "  The code no longer matches this run's journal. Run it with the code version that "
            "started it, or fork it from an earlier step."
        )


class DeadlineExceeded(RunError):
    """The run's whole-run deadline passed (it survives restarts: it is stored with the run)."""


class RunCancelled(RunError):
    """The run was cancelled (``keel runs cancel`` or ``cancel_run``). ``message`` is the
    reason given; ``by`` says who asked (None when nobody said)."""

    def __init__(self, message: str, *, by: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.by = by


class UnknownOutcome(RunError):
    """A non-idempotent tool started (intent recorded) but its result was never recorded."""


class GuardrailTripped(RunError):
    """A guardrail stopped the run."""


class StoreUnavailable(RunError):
    """The run store failed for a while rather than for good: the connection was lost, the
    server stopped answering, a write met another (deadlock, serialization failure), no pooled
    connection came free, or an SQLite file stayed locked past the busy timeout. Nothing was
    written by the failed call; trying again later may work (``retryable`` is true)."""

    retryable = True


class CircuitOpen(RunError):
    """A circuit breaker is open; the call was not attempted."""

    retryable = True


class BulkheadFull(RunError):
    """A bulkhead pool is at capacity and its queue is full (or the wait in the queue ran
    past its timeout); the call was not attempted. ``pool`` names the pool; ``active`` and
    ``waiting`` are its load when the call was turned away."""

    retryable = True

    def __init__(self, message: str, *, pool: str, max_concurrent: int, max_queue: int,
                 active: int, waiting: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.pool = pool
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.active = active
        self.waiting = waiting


class RateLimited(RunError):
    """A rate limit would not let the call start within the allowed wait; the call was not
    attempted. ``limit`` names the limit; ``retry_after`` is the estimated wait in seconds."""

    retryable = True

    def __init__(self, message: str, *, limit: str, retry_after: float | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.retry_after = retry_after


class ContextTooLong(RunError):
    """The request does not fit the model's context window: the provider refused it as too
    long (OpenAI ``context_length_exceeded``, Anthropic ``prompt is too long``), or a history
    policy cannot fit even what it must keep (the system instructions, pinned turns, the
    latest turn) within the window minus the reply reserve. ``limit`` is the token budget
    when known, ``tokens`` the request's size when known. Not retryable as it is: the
    history policy (``keel.context.History``) compacts and tries once more."""

    retryable = False

    def __init__(self, message: str, *, limit: int | None = None, tokens: int | None = None,
                 model: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.tokens = tokens
        self.model = model


# -------------------------------------------------------------------------------- signals


class Signal(KeelError):
    """Raised on purpose to steer the run; not a failure. ``run_id`` is set when the signal
    leaves a run (e.g. the run that is now suspended)."""

    run_id: str | None = None


class RetryWithFeedback(Signal):
    """Raised by a tool or validator: the model gets ``message`` back and may try again."""

    retryable = True

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ApprovalRequired(Signal):
    """A step needs a human decision before it can run; the run is suspended until then."""

    def __init__(self, message: str, *, approval_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.approval_ids = approval_ids


class Escalate(Signal):
    """Hand the run to a human. Raised by code (or a tool) that wants a person to take over;
    ``reason`` says why, ``queue`` where the packet goes."""

    def __init__(self, reason: str, *, trigger: str = "requested", queue: str | None = None,
                 proposal: str | None = None, escalation_id: str | None = None) -> None:
        super().__init__(f"escalated to a human: {reason}")
        self.reason = reason
        self.trigger = trigger
        self.queue = queue
        self.proposal = proposal
        self.escalation_id = escalation_id


class Handoff(Signal):
    """Hand the conversation to another agent.

    A tool raises ``Handoff(target, reason)``; the agent loop records the call as a
    successful step (so resume and replay read it back), finishes the other calls of the
    turn and then raises ``Handoff`` from its run with ``messages`` (the conversation so far,
    the handoff's observation included) and ``step_key`` (the tool step that handed off)
    filled in. Only the first handoff of a turn (in call order) is raised. A team or flow
    catches it around ``ctx.run_agent`` and gives the conversation to ``target``; a run
    that nobody receives it in fails with a ``RunError``.
    """

    def __init__(self, target: str, reason: str = "", *,
                 messages: list[Message] | None = None, step_key: str | None = None) -> None:
        super().__init__(f"handoff to {target}: {reason}" if reason else f"handoff to {target}")
        self.target = target
        self.reason = reason
        self.messages: list[Message] = list(messages or ())
        self.step_key = step_key


def _public(module: str, *classes: type[BaseException]) -> None:
    """Name ``classes`` by the module users import them from, so that a traceback, ``repr``
    and ``str(type(exc))`` say ``keel.RunError`` rather than this private module."""
    for cls in classes:
        cls.__module__ = module


_public("keel", KeelError, UserError, ConfigError, UnknownModel, MissingCredentials,
        ToolDefinitionError, StoreError, StoreVersionError, RunNotFound, RunLeased, LeaseLost,
        TaskNotFound, TaskConflict, SettingConflict, RunError, BudgetExceeded, ModelError,
        ToolError,
        RepeatedFailure, OutputValidationError, Divergence, DeadlineExceeded, RunCancelled,
        UnknownOutcome, GuardrailTripped, StoreUnavailable, CircuitOpen, BulkheadFull,
        RateLimited, ContextTooLong, Signal, RetryWithFeedback, ApprovalRequired, Escalate, Handoff)
