"""Retries for transient failures: exponential backoff with full jitter, on both seams.

:class:`Retry` is middleware. On the model seam it retries a :class:`~keel.ModelError` whose
``retryable`` is set (the adapters set it for 429, 5xx, 529, timeouts and broken connections)
and waits what a 429/503 ``Retry-After`` asks for (up to ``max_retry_after``). On the tool
seam it retries only transient failures (a ``timeout``, or a ``tool_error`` whose
:attr:`~keel.tools.ToolFailure.transient` is set), and a tool that is not idempotent only when
the tool itself declared the failure safe to retry (``ToolError(retryable=True)``). A failure
the model should see (bad arguments, an unknown tool, a denial) is never retried here: the
model corrects it. An open circuit (:class:`~keel.CircuitOpen`) is not retried either.

Before each retry the run's ``on_retry`` hook journals the failed attempt and charges it to
the budget; a :class:`~keel.BudgetExceeded` from it ends the retries and propagates.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from keel.core import CircuitOpen, ConfigError, KeelError, ModelError, ModelResponse
from keel.runtime import (
    Middleware,
    ModelNext,
    ModelRequestInput,
    RetryHook,
    ToolCallInput,
    ToolNext,
)
from keel.tools import Tool, ToolFailure, ToolResult

if TYPE_CHECKING:  # tenacity is imported on the first retry, not with keel
    from tenacity import AsyncRetrying, RetryCallState

Jitter: TypeAlias = Literal["full", "none"]
Sleep: TypeAlias = Callable[[float], Awaitable[None]]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times to try a call and how long to wait between tries.

    The wait before retry *n* (after the *n*-th failed attempt) is
    ``uniform(0, min(max_delay, base_delay * multiplier ** (n - 1)))`` with ``jitter="full"``
    (the upper bound itself with ``jitter="none"``). A model error's ``Retry-After`` replaces
    that wait when ``respect_retry_after`` is set; one longer than ``max_retry_after`` is not
    waited for: the error is raised at once. ``random`` is the source of jitter (pass a seeded
    ``random.Random`` for reproducible delays in tests).
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: Jitter = "full"
    respect_retry_after: bool = True
    max_retry_after: float = 60.0
    random: _random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool)
                or self.max_attempts < 1):
            raise ConfigError("max_attempts", f"must be a whole number >= 1 (1 means no "
                              f"retries), not {self.max_attempts!r}")
        if not _number(self.base_delay) or self.base_delay < 0:
            raise ConfigError("base_delay", f"must be a number of seconds >= 0, not "
                              f"{self.base_delay!r}")
        if not _number(self.max_delay) or self.max_delay < self.base_delay:
            raise ConfigError("max_delay", f"must be a number of seconds >= base_delay "
                              f"({self.base_delay!r}), not {self.max_delay!r}")
        if not _number(self.multiplier) or self.multiplier < 1:
            raise ConfigError("multiplier", f"must be a number >= 1, not {self.multiplier!r}")
        if self.jitter not in ("full", "none"):
            raise ConfigError("jitter", f"must be 'full' or 'none', not {self.jitter!r}")
        if not isinstance(self.respect_retry_after, bool):
            raise ConfigError("respect_retry_after", f"must be True or False, not "
                              f"{self.respect_retry_after!r}")
        if not _number(self.max_retry_after) or self.max_retry_after < 0:
            raise ConfigError("max_retry_after", f"must be a number of seconds >= 0, not "
                              f"{self.max_retry_after!r}")
        if self.random is not None and not isinstance(self.random, _random.Random):
            raise ConfigError("random", f"must be a random.Random or None, not "
                              f"{self.random!r}")



def _error_text(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, KeelError) else str(exc)
    return f"{type(exc).__name__}: {message}"


def _failure_text(failure: ToolFailure) -> str:
    return f"{failure.error_type}: {failure.message}"


def _note(exc: BaseException, text: str) -> None:
    if text not in getattr(exc, "__notes__", ()):
        exc.add_note(text)


def retryable_tool_failure(tool: Tool, failure: ToolFailure | None) -> bool:
    """Whether :class:`Retry` would make this failed call again as is.

    Timeouts and transient ``tool_error`` s of idempotent tools; of a tool that is not
    idempotent, only a failure the tool declared safe (``ToolError(retryable=True)``).
    Validation failures, denials and unknown tools never: the model must change something.
    """
    if failure is None:
        return False
    if failure.error_type == "timeout":
        return tool.meta.idempotent
    if failure.error_type != "tool_error" or failure.transient is None:
        return False
    return tool.meta.idempotent or failure.transient == "declared"


class Retry(Middleware):
    """Retry transient model and tool failures with exponential backoff and full jitter.

    ``sleep`` is awaited for each wait (pass a fake in tests). ``Retry.off()`` makes every
    call once; putting it in an agent's middleware replaces the default retry.
    """

    def __init__(self, policy: RetryPolicy | None = None, *, sleep: Sleep = asyncio.sleep) -> None:
        self.policy = RetryPolicy() if policy is None else policy
        if not isinstance(self.policy, RetryPolicy):
            raise ConfigError("policy", f"must be a RetryPolicy, not {self.policy!r}")
        self._sleep = sleep
        self._random = self.policy.random or _random.Random()
        self._backoff: Callable[[RetryCallState], float] | None = None

    @classmethod
    def off(cls) -> Retry:
        """A Retry that never retries (replaces the default retry middleware)."""
        return cls(RetryPolicy(max_attempts=1))

    def __repr__(self) -> str:
        return f"Retry({self.policy!r})"

    # ------------------------------------------------------------------------- the seams

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        try:  # the first attempt outside tenacity: the common case costs nothing extra
            return await next(inp)
        except Exception as exc:
            if self.policy.max_attempts == 1 or not self._model_retryable(exc):
                raise
            first: BaseException = exc
        attempts = 0

        async def attempt() -> ModelResponse:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise first
            return await next(inp)

        retrying = self._retrying(inp.on_retry, self._retry_model, self._give_up_model)
        response: ModelResponse = await retrying(attempt)
        return response

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        first = await next(inp)  # outside tenacity, as for models
        tool = inp.tool
        if self.policy.max_attempts == 1 or not retryable_tool_failure(tool, first.failure):
            return first
        attempts = 0

        async def attempt() -> ToolResult:  # the tool sees which attempt this is (ctx.attempt)
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                return first
            return await next(replace(inp, ctx=replace(inp.ctx, attempt=attempts)))

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or outcome.failed:
                return False  # signals and bugs propagate; tools report failures as results
            result: ToolResult = outcome.result()
            return retryable_tool_failure(tool, result.failure)

        retrying = self._retrying(inp.on_retry, should_retry, self._give_up_tool)
        result: ToolResult = await retrying(attempt)
        return result

    # --------------------------------------------------------------------------- tenacity

    def _retrying(self, on_retry: RetryHook, should_retry: Callable[[RetryCallState], bool],
                  give_up: Callable[[RetryCallState], Any]) -> AsyncRetrying:
        from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

        if self._backoff is None:
            self._backoff = wait_exponential(multiplier=self.policy.base_delay,
                                             max=self.policy.max_delay,
                                             exp_base=self.policy.multiplier)

        async def before_sleep(state: RetryCallState) -> None:
            await on_retry(state.attempt_number, _outcome_text(state), state.upcoming_sleep)

        return AsyncRetrying(
            sleep=self._sleep, stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait, retry=should_retry, before_sleep=before_sleep,
            retry_error_callback=give_up)

    def _wait(self, state: RetryCallState) -> float:
        policy = self.policy
        exc = _exception(state)
        if (policy.respect_retry_after and isinstance(exc, ModelError)
                and exc.retry_after is not None):
            return max(0.0, float(exc.retry_after))
        assert self._backoff is not None  # set by _retrying
        bound = self._backoff(state)
        return self._random.uniform(0.0, bound) if policy.jitter == "full" else bound

    def _retry_model(self, state: RetryCallState) -> bool:
        exc = _exception(state)
        return exc is not None and self._model_retryable(exc)

    def _model_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, CircuitOpen) or not isinstance(exc, ModelError) or not exc.retryable:
            return False
        after = exc.retry_after
        limit = self.policy.max_retry_after
        if self.policy.respect_retry_after and after is not None and after > limit:
            _note(exc, f"not retried: the server asked to wait {after:g} s (Retry-After), "
                       f"longer than RetryPolicy.max_retry_after ({limit:g} s)")
            return False
        return True

    @staticmethod
    def _give_up_model(state: RetryCallState) -> Any:
        exc = _exception(state)
        assert exc is not None  # only exceptions are retried on the model seam
        _note(exc, f"gave up after {state.attempt_number} attempts")
        raise exc

    @staticmethod
    def _give_up_tool(state: RetryCallState) -> ToolResult:
        assert state.outcome is not None
        result: ToolResult = state.outcome.result()
        failure = result.failure
        assert failure is not None  # only failures are retried
        return ToolResult.fail(
            failure.error_type, f"{failure.message} (gave up after {state.attempt_number} "
            "attempts)", retryable=failure.retryable, hint=failure.hint,
            transient=failure.transient)


def _exception(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


def _outcome_text(state: RetryCallState) -> str:
    exc = _exception(state)
    if exc is not None:
        return _error_text(exc)
    assert state.outcome is not None
    result: ToolResult = state.outcome.result()
    return _failure_text(result.failure) if result.failure is not None else "failed"
