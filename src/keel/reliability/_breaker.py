"""Circuit breakers: stop calling a model endpoint or a tool that keeps failing.

One breaker per model endpoint (``model:<model.name>``, which includes the base URL of a
custom endpoint) and one per tool (``tool:<meta.name>``, or the tool's
:attr:`~keel.tools.ToolMeta.breaker_key` when set: e.g. ``mcp:<server>`` for every tool of
one MCP server). Each breaker moves through::

    closed ──(failure_threshold failures within window)──▶ open
    open ──(cooldown passed)──▶ half-open
    half-open ──(success_threshold trial successes)──▶ closed
    half-open ──(a trial fails)──▶ open (a fresh cooldown)

An open breaker fails fast: a model request raises :class:`~keel.CircuitOpen` (retryable, so
a fallback chain moves on to its next link); a tool call returns the ``circuit_open``
observation so the model can take another path. In half-open, at most ``half_open_probes``
trial calls are in flight at once; other calls fail fast until a trial reports back.

Only failures that say something about the endpoint's health count: for models, server
errors (5xx, 408, 429), timeouts and lost connections, not a 4xx caused by the request; for
tools, ``timeout`` and ``tool_error`` failures, not invalid arguments or denied approvals.

The state lives in a :class:`BreakerStore`: :class:`InMemoryBreakerStore` (the default, one
process) or :class:`~keel.reliability.RedisBreakerStore` (a fleet of workers opens and closes
together).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, runtime_checkable

from keel.core import CircuitOpen, ConfigError, KeelError, ModelError, ModelResponse
from keel.runtime import Middleware, ModelNext, ModelRequestInput, ToolCallInput, ToolNext
from keel.tools import ToolResult

_log = logging.getLogger("keel.breaker")

BreakerState: TypeAlias = Literal["closed", "open", "half_open"]
#: How a call that was let through ended: ``failure`` counts against the breaker, ``neutral``
#: says nothing about the endpoint's health (a 4xx, a validation failure, a cancellation).
BreakerOutcome: TypeAlias = Literal["success", "failure", "neutral"]
Clock: TypeAlias = Callable[[], float]

#: Status codes that say the server (not the request) is in trouble.
_SERVER_TROUBLE = frozenset({408, 429})
#: Tool failures that say the tool itself is unhealthy.
_TOOL_FAILURES = frozenset({"timeout", "tool_error"})
TOOL_HINT = "This tool is failing repeatedly; use another approach or tell the user."


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens and how it recovers.

    ``failure_threshold`` failures within ``window`` seconds open the breaker (with
    ``consecutive``, the default, only failures since the last success count, so a busy
    endpoint with a modest error rate is not cut off: its successes keep resetting the
    count, while a dependency that is down fails call after call and opens it); after
    ``cooldown`` seconds it lets up to ``half_open_probes`` trial calls through at once;
    ``success_threshold`` trial successes close it, one trial failure opens it again. A trial
    that never reports back (its process died) frees its slot after ``cooldown``.
    """

    failure_threshold: int = 10
    window: float = 60.0
    cooldown: float = 30.0
    half_open_probes: int = 1
    success_threshold: int = 1
    consecutive: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.consecutive, bool):
            raise ConfigError("consecutive", f"must be True or False, not {self.consecutive!r}")
        for name in ("failure_threshold", "half_open_probes", "success_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(name, f"must be an integer, not {value!r}")
            if value < 1:
                raise ConfigError(name, f"must be at least 1, not {value}")
        for name in ("window", "cooldown"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(name, f"must be a number of seconds, not {value!r}")
            if not value > 0 or value == float("inf"):
                raise ConfigError(name, f"must be a finite number of seconds > 0, not {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Permit:
    """The store's answer to "may this call go ahead?".

    ``probe`` is set when the call is a half-open trial (hand it back to ``record``);
    ``retry_in`` is the cooldown left, in seconds, when the breaker is open.
    """

    allowed: bool
    state: BreakerState
    probe: str | None = None
    retry_in: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSnapshot:
    """A breaker's state for inspection: ``failures`` in the current window (closed) and
    ``retry_in`` seconds until it probes again (open)."""

    state: BreakerState
    failures: int = 0
    retry_in: float | None = None


@runtime_checkable
class BreakerStore(Protocol):
    """Where breakers keep their state. ``now`` is the caller's clock reading, or None for
    the store's own clock (a shared store uses one clock for every worker)."""

    async def acquire(self, key: str, policy: BreakerPolicy, *,
                      now: float | None = None) -> Permit:
        """May a call go ahead? In half-open, takes one of the trial slots."""
        ...

    async def record(self, key: str, policy: BreakerPolicy, outcome: BreakerOutcome, *,
                     probe: str | None = None, now: float | None = None) -> BreakerState:
        """Count how a call that was let through ended; returns the state afterwards."""
        ...

    async def snapshot(self, key: str, policy: BreakerPolicy, *,
                       now: float | None = None) -> BreakerSnapshot:
        """The breaker's state, without changing it."""
        ...

    async def reset(self, key: str) -> None:
        """Forget the breaker: it is closed with no failures counted."""
        ...


# ------------------------------------------------------------------------------- in memory


@dataclass(slots=True)
class _Breaker:
    failures: deque[float] = field(default_factory=deque)
    open_until: float | None = None
    successes: int = 0
    probes: dict[str, float] = field(default_factory=dict)  # token -> lease expiry

    def state(self, now: float) -> BreakerState:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def open(self, now: float, policy: BreakerPolicy) -> BreakerState:
        self.open_until = now + policy.cooldown
        self.successes = 0
        self.failures.clear()
        self.probes.clear()
        return "open"

    def close(self) -> BreakerState:
        self.open_until = None
        self.successes = 0
        self.failures.clear()
        self.probes.clear()
        return "closed"


class InMemoryBreakerStore:
    """Breaker state in this process (the default). Safe to share between event loops and
    threads; one instance can serve many ``CircuitBreaker`` middlewares."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str, policy: BreakerPolicy, *,
                      now: float | None = None) -> Permit:
        t = self._clock() if now is None else now
        with self._lock:
            b = self._breakers.get(key)
            if b is None or b.open_until is None:
                return Permit(allowed=True, state="closed")
            if t < b.open_until:
                return Permit(allowed=False, state="open", retry_in=b.open_until - t)
            for token in [k for k, expiry in b.probes.items() if expiry <= t]:
                del b.probes[token]
            if len(b.probes) >= policy.half_open_probes:
                return Permit(allowed=False, state="half_open")
            token = uuid.uuid4().hex
            b.probes[token] = t + policy.cooldown
            return Permit(allowed=True, state="half_open", probe=token)

    async def record(self, key: str, policy: BreakerPolicy, outcome: BreakerOutcome, *,
                     probe: str | None = None, now: float | None = None) -> BreakerState:
        t = self._clock() if now is None else now
        with self._lock:
            b = self._breakers.setdefault(key, _Breaker())
            if probe is not None:
                if b.open_until is None or b.probes.pop(probe, None) is None:
                    return b.state(t)  # a trial from an episode that has already ended
                if outcome == "failure":
                    return b.open(t, policy)
                if outcome == "success":
                    b.successes += 1
                    if b.successes >= policy.success_threshold:
                        return b.close()
                return "half_open"
            if b.open_until is None and outcome == "success" and policy.consecutive:
                b.failures.clear()  # a success ends the run of failures
                return "closed"
            if b.open_until is not None or outcome != "failure":
                return b.state(t)  # a late answer from a call let through before it opened
            b.failures.append(t)
            while b.failures and b.failures[0] <= t - policy.window:
                b.failures.popleft()
            if len(b.failures) >= policy.failure_threshold:
                return b.open(t, policy)
            return "closed"

    async def snapshot(self, key: str, policy: BreakerPolicy, *,
                       now: float | None = None) -> BreakerSnapshot:
        t = self._clock() if now is None else now
        with self._lock:
            b = self._breakers.get(key)
            if b is None:
                return BreakerSnapshot(state="closed")
            state = b.state(t)
            if state == "closed":
                recent = sum(1 for f in b.failures if f > t - policy.window)
                return BreakerSnapshot(state=state, failures=recent)
            retry_in = None if b.open_until is None or state != "open" else b.open_until - t
            return BreakerSnapshot(state=state, retry_in=retry_in)

    async def reset(self, key: str) -> None:
        with self._lock:
            self._breakers.pop(key, None)

    async def force_open(self, key: str, seconds: float, *, now: float | None = None) -> None:
        """Open ``key``'s breaker for ``seconds`` whatever its failures (a monitor switching
        a tool off); then it half-opens and recovers as usual. An open breaker that would
        stay open longer is left alone."""
        t = self._clock() if now is None else now
        with self._lock:
            b = self._breakers.setdefault(key, _Breaker())
            if b.open_until is not None and b.open_until >= t + seconds:
                return
            b.open_until = t + seconds
            b.successes = 0
            b.failures.clear()
            b.probes.clear()

    def quiet(self, key: str) -> bool:
        """True if ``key``'s breaker is closed with no failure counted and no trial out: a
        call may go straight through, and only a failure needs recording (the hot path)."""
        b = self._breakers.get(key)
        return b is None or (b.open_until is None and not b.failures and not b.probes)


# ------------------------------------------------------------------------------ classifying


def model_outcome(exc: BaseException) -> BreakerOutcome:
    """Whether a model request's exception says the endpoint is unhealthy."""
    if isinstance(exc, CircuitOpen):  # an inner breaker refused; the endpoint was not called
        return "neutral"
    if isinstance(exc, ModelError):
        if exc.status is not None:
            return "failure" if exc.status >= 500 or exc.status in _SERVER_TROUBLE else "neutral"
        return "failure" if exc.retryable else "neutral"
    if isinstance(exc, KeelError):  # budgets, signals, misuse: not the endpoint's doing
        return "neutral"
    if isinstance(exc, TimeoutError | ConnectionError):
        return "failure"
    return "neutral"


def tool_outcome(result: ToolResult) -> BreakerOutcome:
    """Whether a tool result says the tool is unhealthy."""
    if result.failure is None:
        return "success"
    return "failure" if result.failure.error_type in _TOOL_FAILURES else "neutral"


# ------------------------------------------------------------------------------ middleware


_CLOSED = Permit(allowed=True, state="closed")


class CircuitBreaker(Middleware):
    """Middleware: one circuit breaker per model endpoint and per tool.

    ``store`` keeps the state (default: a fresh :class:`InMemoryBreakerStore`; pass a
    :class:`~keel.reliability.RedisBreakerStore` to share it across a fleet). ``clock`` is
    for tests; None uses the store's own clock (a Redis store uses the Redis server's, the
    one clock every worker agrees on). ``CircuitBreaker.off()`` switches breakers off for an
    agent (it replaces a default breaker of the same type).
    """

    def __init__(self, policy: BreakerPolicy | None = None, *,
                 store: BreakerStore | None = None, clock: Clock | None = None) -> None:
        if policy is not None and not isinstance(policy, BreakerPolicy):
            raise ConfigError("policy", f"must be a BreakerPolicy, not {type(policy).__name__}")
        if store is not None and not isinstance(store, BreakerStore):
            raise ConfigError("store", f"must be a BreakerStore (acquire, record, snapshot, "
                                       f"reset), not {type(store).__name__}")
        self.policy = policy or BreakerPolicy()
        self.store: BreakerStore = store if store is not None else InMemoryBreakerStore()
        self.clock = clock
        self.enabled = True
        #: ``on_state(key, state)``, called when a breaker changes state (closed, half_open,
        #: open) as this middleware sees it; ``keel.Agent`` wires it to the metrics gauge.
        self.on_state: Callable[[str, str], None] | None = None
        #: the in-process store when its own clock is used: lets healthy calls skip the
        #: acquire/record round (a success on a quiet breaker changes nothing)
        self._quiet_store = (self.store if isinstance(self.store, InMemoryBreakerStore)
                             and clock is None else None)

    @classmethod
    def off(cls) -> CircuitBreaker:
        """A breaker that lets every call through; use it to switch a default breaker off."""
        breaker = cls()
        breaker.enabled = False
        return breaker

    def __repr__(self) -> str:
        if not self.enabled:
            return "CircuitBreaker.off()"
        return f"CircuitBreaker({self.policy!r}, store={type(self.store).__name__})"

    def _now(self) -> float | None:
        return None if self.clock is None else self.clock()

    async def state(self, key: str) -> BreakerSnapshot:
        """The state of the breaker for ``key`` (``model:<name>`` or ``tool:<name>``)."""
        return await self.store.snapshot(key, self.policy, now=self._now())

    async def force_open(self, key: str, seconds: float) -> None:
        """Open the breaker for ``key`` (``tool:<name>`` or ``model:<name>``) for ``seconds``
        (calls fail fast as for a breaker opened by failures; afterwards it half-opens and a
        successful trial closes it). For a store that cannot (one without ``force_open``)
        raises ConfigError naming the store."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not 0 < seconds < float("inf"):
            raise ConfigError("seconds", f"must be a finite number of seconds > 0, not "
                                         f"{seconds!r}")
        force = getattr(self.store, "force_open", None)
        if force is None:
            raise ConfigError("store", f"{type(self.store).__name__} cannot force a breaker "
                                       "open (it has no force_open method)")
        await force(key, float(seconds), now=self._now())
        _log.warning("circuit breaker %s forced open for %gs", key, seconds,
                     extra={"breaker": key, "breaker_state": "open"})

    def _saw(self, key: str, permit: Permit) -> None:
        if self.on_state is not None and permit.state != "closed":
            self.on_state(key, permit.state)

    async def _record(self, key: str, permit: Permit, outcome: BreakerOutcome) -> None:
        if permit.probe is None and outcome != "failure" and not (
                outcome == "success" and self.policy.consecutive):
            return  # nothing to count: a closed breaker counts failures (and resets on success)
        before = permit.state
        after = await self.store.record(key, self.policy, outcome, probe=permit.probe,
                                        now=self._now())
        if after != before and self.on_state is not None:
            self.on_state(key, after)
        if after == "open" and before != "open":
            _log.warning("circuit breaker %s opened; calls fail fast for %gs", key,
                         self.policy.cooldown, extra={"breaker": key, "breaker_state": after})
        elif after == "closed" and before == "half_open":
            _log.info("circuit breaker %s closed after a successful trial call", key,
                      extra={"breaker": key, "breaker_state": after})

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        if not self.enabled:
            return await next(inp)
        key = f"model:{inp.model.name}"
        quiet = self._quiet_store
        if quiet is not None and quiet.quiet(key):
            try:
                return await next(inp)
            except BaseException as exc:
                outcome = model_outcome(exc)
                if outcome == "failure":
                    await self._record(key, _CLOSED, outcome)
                raise
        permit = await self.store.acquire(key, self.policy, now=self._now())
        self._saw(key, permit)
        if not permit.allowed:
            raise CircuitOpen(f"model endpoint {inp.model.name}: {_refusal(permit)}",
                              run_id=inp.run_id, step_key=inp.step_key, retryable=True)
        try:
            response = await next(inp)
        except BaseException as exc:
            await self._record(key, permit, model_outcome(exc))
            raise
        await self._record(key, permit, "success")
        return response

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        if not self.enabled:
            return await next(inp)
        name = inp.tool.meta.name
        key = inp.tool.meta.breaker_key or f"tool:{name}"
        quiet = self._quiet_store
        if quiet is not None and quiet.quiet(key):
            result = await next(inp)
            outcome = tool_outcome(result)
            if outcome == "failure":
                await self._record(key, _CLOSED, outcome)
            return result
        permit = await self.store.acquire(key, self.policy, now=self._now())
        self._saw(key, permit)
        if not permit.allowed:
            return ToolResult.fail("circuit_open", f"tool {name!r} was not called: "
                                   f"{_refusal(permit)}", retryable=False, hint=TOOL_HINT)
        try:
            result = await next(inp)
        except BaseException:  # a signal (approval, handoff) or a cancellation
            await self._record(key, permit, "neutral")
            raise
        await self._record(key, permit, tool_outcome(result))
        return result


def _refusal(permit: Permit) -> str:
    if permit.state == "open":
        wait = f"in {permit.retry_in:.1f}s" if permit.retry_in is not None else "later"
        return (f"its circuit breaker is open after repeated failures; calls fail fast and "
                f"it will be tried again {wait}")
    return ("its circuit breaker is half-open and trial calls are already in flight; it will "
            "be tried again when they report back")
