"""Rate limits on the model and tool seams: requests per interval, and model tokens per
interval.

In one process, requests go through an ``aiolimiter.AsyncLimiter`` (a leaky bucket: up to
``requests`` at once, then one every ``per / requests`` seconds) and tokens through a bucket
of the same shape that is charged after each response (``usage.input_tokens +
output_tokens``); the next call waits while the bucket is over its budget. With
``store=RedisRateStore(...)`` the counts are shared by every worker using the same Redis and
prefix (see :mod:`keel.reliability._ratelimit_redis`). In-process counts belong to the
process and its event loop: a new loop (another ``asyncio.run``) starts with fresh request
counts.

A call waits (asynchronously, never polling) until the limits allow it, at most
``max_wait`` seconds; if it would have to wait longer it is turned away: a tool call gets a
``rate_limited`` failure the model can read, a model request raises :class:`RateLimited`
(retryable), both with the estimated wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from aiolimiter import AsyncLimiter

from keel.core import ConfigError, ModelResponse, RateLimited
from keel.reliability._ratelimit_redis import RedisRateStore
from keel.runtime import Middleware, ModelNext, ModelRequestInput, ToolCallInput, ToolNext
from keel.tools import ToolResult

RateLimitKey: TypeAlias = Literal["tool", "model"]
_KEYS: tuple[str, ...] = get_args(RateLimitKey)
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """At most ``requests`` calls and (models only) ``tokens`` tokens every ``per`` seconds.

    Either may be None (not limited), not both.
    """

    requests: int | None = None
    per: float = 1.0
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.requests is not None and not _positive_int(self.requests):
            raise ConfigError("requests", f"must be a whole number >= 1 or None, got "
                                          f"{self.requests!r}")
        if self.tokens is not None and not _positive_int(self.tokens):
            raise ConfigError("tokens", f"must be a whole number >= 1 or None, got "
                                        f"{self.tokens!r}")
        if isinstance(self.per, bool) or not isinstance(self.per, int | float) or self.per <= 0:
            raise ConfigError("per", f"must be seconds > 0, got {self.per!r}")
        if self.requests is None and self.tokens is None:
            raise ConfigError("requests", "set requests, tokens or both (a limit that limits "
                                          "nothing is a mistake)")


class _TokenBucket:
    """A leaky bucket of tokens: charged after a call, draining at ``tokens / per`` a second.
    A call may start while the bucket holds less than its budget."""

    def __init__(self, limit: RateLimit, tokens: int, clock: Clock) -> None:
        self.capacity = float(tokens)
        self.rate = tokens / limit.per
        self.clock = clock
        self.level = 0.0
        self.checked = clock()

    def _leak(self) -> None:
        now = self.clock()
        self.level = max(0.0, self.level - (now - self.checked) * self.rate)
        self.checked = now

    def wait_time(self) -> float:
        """Seconds until a call may start (0 when it may start now)."""
        self._leak()
        over = self.level - self.capacity
        return 0.0 if over < 0 else (over + 1.0) / self.rate

    def charge(self, tokens: int) -> None:
        self._leak()
        self.level += tokens


@dataclass(slots=True)
class _Local:
    loop: asyncio.AbstractEventLoop
    requests: AsyncLimiter | None
    tokens: _TokenBucket | None


class RateLimiter(Middleware):
    """Rate limits per tool name (``by="tool"``) or per model id (``by="model"``).

    ``limits`` maps a tool name or model id to its :class:`RateLimit`; calls to anything
    else are not limited. ``store`` shares the counts across processes through Redis
    (default: in this process only). ``max_wait`` is the longest a call waits for the limits
    (0 turns it away at once). ``clock`` and ``sleep`` drive the token budget (tests pass
    fakes); request limits in one process follow the event loop's clock.

    Tokens are charged after a response, so calls that start together while under budget
    can overshoot it; the calls after them wait until the budget has drained.
    """

    def __init__(self, limits: Mapping[str, RateLimit], *, by: RateLimitKey = "model",
                 store: RedisRateStore | None = None, max_wait: float = 30.0,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if by not in _KEYS:
            raise ConfigError("by", f"must be one of {', '.join(map(repr, _KEYS))}, got {by!r}")
        for key, limit in limits.items():
            if not isinstance(key, str) or not key:
                raise ConfigError("limits", f"keys must be non-empty strings, got {key!r}")
            if not isinstance(limit, RateLimit):
                raise ConfigError(f"limits[{key!r}]",
                                  f"expected a RateLimit, got {type(limit).__name__}")
            if by == "tool" and limit.tokens is not None:
                raise ConfigError(f"limits[{key!r}].tokens",
                                  "token limits apply to model requests; use by='model'")
        if (isinstance(max_wait, bool) or not isinstance(max_wait, int | float)
                or max_wait < 0):
            raise ConfigError("max_wait", f"must be seconds >= 0, got {max_wait!r}")
        if store is not None and not isinstance(store, RedisRateStore):
            raise ConfigError("store", f"expected a RedisRateStore or None, got "
                                       f"{type(store).__name__}")
        self.by: RateLimitKey = by
        self.limits = dict(limits)
        self.store = store
        self.max_wait = float(max_wait)
        self.clock = clock
        self.sleep = sleep
        self._local: dict[str, _Local] = {}

    # ------------------------------------------------------------------ waiting for room

    def _state(self, key: str, limit: RateLimit) -> _Local:
        loop = asyncio.get_running_loop()
        state = self._local.get(key)
        if state is None:
            state = self._local[key] = _Local(
                loop=loop,
                requests=None if limit.requests is None
                else AsyncLimiter(limit.requests, limit.per),
                tokens=None if limit.tokens is None
                else _TokenBucket(limit, limit.tokens, self.clock))
        elif state.loop is not loop and state.requests is not None:
            # aiolimiter binds to the event loop it first ran on; a new loop (consecutive
            # ``asyncio.run`` calls in one process) gets a fresh request limiter.
            state.loop, state.requests = loop, AsyncLimiter(state.requests.max_rate,
                                                            state.requests.time_period)
        return state

    def _reject(self, key: str, what: str, retry_after: float) -> RateLimited:
        waited = ("no waiting allowed (max_wait=0)" if self.max_wait == 0
                  else f"it would wait longer than max_wait={self.max_wait:g}s")
        where = "shared through Redis" if self.store is not None else "in this process"
        return RateLimited(
            f"rate limit for {self.by} {key!r} reached: {what} ({where}); {waited}; "
            f"retry in about {retry_after:.2f}s", limit=key, retry_after=retry_after)

    async def _admit(self, key: str, limit: RateLimit) -> None:
        """Wait until ``key``'s limits allow one more call, or raise RateLimited."""
        deadline = self.clock() + self.max_wait
        if self.store is not None:
            await self._admit_shared(key, limit, deadline)
            return
        state = self._state(key, limit)
        if state.requests is not None:
            await self._admit_requests(key, limit, state.requests)
        bucket = state.tokens
        if bucket is not None:
            async def token_wait() -> float:
                return bucket.wait_time()

            await self._wait(key, f"{limit.tokens} tokens per {limit.per:g}s", token_wait,
                             deadline)

    async def _admit_requests(self, key: str, limit: RateLimit, limiter: AsyncLimiter) -> None:
        if limiter.has_capacity():
            await limiter.acquire()  # does not suspend: there is room
            return
        what = f"{limit.requests} requests per {limit.per:g}s"
        retry_after = limit.per / (limit.requests or 1)
        if self.max_wait == 0:
            raise self._reject(key, what, retry_after)
        try:
            async with asyncio.timeout(self.max_wait):
                await limiter.acquire()
        except TimeoutError:
            raise self._reject(key, what, retry_after) from None

    async def _wait(self, key: str, what: str, wait_time: Callable[[], Awaitable[float]],
                    deadline: float) -> None:
        """Sleep until ``wait_time()`` says the call may start (it returns 0), or raise
        RateLimited when that would pass the deadline. Each sleep is the computed wait."""
        while True:
            delay = await wait_time()
            if delay <= 0:
                return
            if self.clock() + delay > deadline:
                raise self._reject(key, what, delay)
            await self.sleep(delay)

    async def _admit_shared(self, key: str, limit: RateLimit, deadline: float) -> None:
        assert self.store is not None
        store = self.store
        if limit.requests is not None:
            requests = limit.requests

            async def request_wait() -> float:
                return await store.reserve(f"{self.by}:{key}:requests", requests, limit.per)

            await self._wait(key, f"{requests} requests per {limit.per:g}s", request_wait,
                             deadline)
        if limit.tokens is not None:
            tokens = limit.tokens

            async def token_wait() -> float:
                return await store.room(f"{self.by}:{key}:tokens", tokens, limit.per)

            await self._wait(key, f"{tokens} tokens per {limit.per:g}s", token_wait,
                             deadline)

    async def _charge(self, key: str, limit: RateLimit, response: ModelResponse) -> None:
        if limit.tokens is None:
            return
        used = response.usage.input_tokens + response.usage.output_tokens
        if used <= 0:
            return
        if self.store is not None:
            await self.store.charge(f"{self.by}:{key}:tokens", used, limit.per)
        else:
            bucket = self._state(key, limit).tokens
            assert bucket is not None
            bucket.charge(used)

    # ------------------------------------------------------------------------------ hooks

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        limit = self.limits.get(inp.model.name) if self.by == "model" else None
        if limit is None:
            return await next(inp)
        try:
            await self._admit(inp.model.name, limit)
        except RateLimited as exc:
            exc.run_id, exc.step_key = inp.run_id, inp.step_key
            raise
        response = await next(inp)
        await self._charge(inp.model.name, limit, response)
        return response

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        name = inp.tool.meta.name
        limit = self.limits.get(name) if self.by == "tool" else None
        if limit is None:
            return await next(inp)
        try:
            await self._admit(name, limit)
        except RateLimited as exc:
            return ToolResult.fail(
                "rate_limited", exc.message, retryable=True,
                hint=f"wait about {exc.retry_after or 0:.1f}s before calling {name!r} again, "
                     "or carry on without it")
        return await next(inp)
