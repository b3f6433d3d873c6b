"""Bulkheads: separate concurrency pools, so one heavy workload cannot starve the others.

A :class:`Bulkhead` keys every call to a pool (by tool group, by agent or by model endpoint)
and lets at most ``max_concurrent`` calls of a pool run at once. Further calls wait in the
pool's queue (at most ``max_queue`` of them, for at most ``queue_timeout`` seconds); beyond
that they are turned away at once with a clear rejection: a tool call gets a
``bulkhead_full`` failure the model can read, a model request raises :class:`BulkheadFull`
(retryable). Both name the pool, its limits and its load.

Pools live in the process (and its event loop): each worker process of a fleet has its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from keel.core import BulkheadFull, ConfigError, ModelResponse
from keel.runtime import Middleware, ModelNext, ModelRequestInput, ToolCallInput, ToolNext
from keel.tools import ToolResult

BulkheadKey: TypeAlias = Literal["tool_group", "agent", "model"]
_KEYS: tuple[str, ...] = get_args(BulkheadKey)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadPolicy:
    """The limits of one pool.

    ``max_concurrent`` calls run at once (>= 1); up to ``max_queue`` more wait for a slot
    (>= 0; 0 turns a call away as soon as the pool is full); a call that has waited
    ``queue_timeout`` seconds (> 0, or None to wait as long as it takes) is turned away.
    """

    max_concurrent: int
    max_queue: int = 0
    queue_timeout: float | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_concurrent) or self.max_concurrent < 1:
            raise ConfigError("max_concurrent",
                              f"must be a whole number >= 1, got {self.max_concurrent!r}")
        if not _is_int(self.max_queue) or self.max_queue < 0:
            raise ConfigError("max_queue",
                              f"must be a whole number >= 0 (0 rejects at once when the pool "
                              f"is full), got {self.max_queue!r}")
        timeout = self.queue_timeout
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, int | float) or timeout <= 0):
            raise ConfigError("queue_timeout",
                              f"must be seconds > 0, or None to wait without a limit, got "
                              f"{timeout!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolLoad:
    """A pool's load at one moment: calls running and calls waiting, with its limits."""

    pool: str
    active: int
    waiting: int
    max_concurrent: int
    max_queue: int


class _Rejected(Exception):
    def __init__(self, load: PoolLoad, why: str) -> None:
        super().__init__(why)
        self.load = load
        self.why = why


class _Pool:
    """One pool: a semaphore for the running calls and an explicit count of waiting ones."""

    def __init__(self, name: str, policy: BulkheadPolicy) -> None:
        self.name = name
        self.policy = policy
        self.loop = asyncio.get_running_loop()
        self.active = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(policy.max_concurrent)

    def load(self) -> PoolLoad:
        return PoolLoad(pool=self.name, active=self.active, waiting=self.waiting,
                        max_concurrent=self.policy.max_concurrent,
                        max_queue=self.policy.max_queue)

    @property
    def idle(self) -> bool:
        return self.active == 0 and self.waiting == 0

    async def acquire(self) -> None:
        # A free slot goes to the queue first; a newcomer takes it only when nobody waits.
        if not self._slots.locked() and self.waiting == 0:
            await self._slots.acquire()  # does not suspend: a slot is free
        else:
            if self.waiting >= self.policy.max_queue:
                why = ("no queue: calls are turned away while the pool is full"
                       if self.policy.max_queue == 0 else "the queue is full")
                raise _Rejected(self.load(), why)
            self.waiting += 1
            try:
                async with asyncio.timeout(self.policy.queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise _Rejected(self.load(), f"waited {self.policy.queue_timeout:g}s in the "
                                             "queue without getting a slot") from None
            finally:
                self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._slots.release()


class Bulkhead(Middleware):
    """Concurrency pools per tool group, per agent or per model endpoint (``by``).

    ``pools`` maps a key (a tool group, an agent name or a model id) to its
    :class:`BulkheadPolicy`; ``default`` is the policy for keys not listed (each such key
    gets a pool of its own), and without it unlisted keys are not limited. ``by="tool_group"``
    limits tool calls only, ``by="model"`` model requests only, and ``by="agent"`` both (a
    model request or tool call holds a slot of its agent's pool while it runs).

    Pools are per process: several workers each enforce the limits on their own calls.
    """

    def __init__(self, pools: Mapping[str, BulkheadPolicy], *, by: BulkheadKey = "tool_group",
                 default: BulkheadPolicy | None = None) -> None:
        if by not in _KEYS:
            raise ConfigError("by", f"must be one of {', '.join(map(repr, _KEYS))}, got {by!r}")
        for key, policy in pools.items():
            if not isinstance(key, str) or not key:
                raise ConfigError("pools", f"keys must be non-empty strings, got {key!r}")
            if not isinstance(policy, BulkheadPolicy):
                raise ConfigError(f"pools[{key!r}]", f"expected a BulkheadPolicy, got "
                                                     f"{type(policy).__name__}")
        if default is not None and not isinstance(default, BulkheadPolicy):
            raise ConfigError("default", f"expected a BulkheadPolicy or None, got "
                                         f"{type(default).__name__}")
        self.by: BulkheadKey = by
        self.policies = dict(pools)
        self.default = default
        self._pools: dict[str, _Pool] = {}

    def load(self, key: str) -> PoolLoad | None:
        """The current load of the pool for ``key`` (None before its first call)."""
        pool = self._pools.get(key)
        return None if pool is None else pool.load()

    def _pool(self, key: str) -> _Pool | None:
        policy = self.policies.get(key, self.default)
        if policy is None:
            return None
        pool = self._pools.get(key)
        # A pool is bound to the event loop it first ran on; an idle one is rebuilt for a new
        # loop (e.g. consecutive ``asyncio.run`` calls in one process).
        if pool is None or (pool.loop is not asyncio.get_running_loop() and pool.idle):
            pool = self._pools[key] = _Pool(key, policy)
        return pool

    def _describe(self, rejected: _Rejected) -> str:
        load = rejected.load
        return (f"bulkhead pool {load.pool!r} (by {self.by}) is full: {load.active}/"
                f"{load.max_concurrent} calls running, {load.waiting}/{load.max_queue} "
                f"queued; {rejected.why}")

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        if self.by == "tool_group":
            return await next(inp)
        pool = self._pool(inp.agent if self.by == "agent" else inp.model.name)
        if pool is None:
            return await next(inp)
        try:
            await pool.acquire()
        except _Rejected as rejected:
            load = rejected.load
            raise BulkheadFull(self._describe(rejected), pool=load.pool,
                               max_concurrent=load.max_concurrent, max_queue=load.max_queue,
                               active=load.active, waiting=load.waiting, run_id=inp.run_id,
                               step_key=inp.step_key) from None
        try:
            return await next(inp)
        finally:
            pool.release()

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        if self.by == "model":
            return await next(inp)
        pool = self._pool(inp.agent if self.by == "agent" else inp.tool.meta.group)
        if pool is None:
            return await next(inp)
        try:
            await pool.acquire()
        except _Rejected as rejected:
            return ToolResult.fail(
                "bulkhead_full", self._describe(rejected), retryable=True,
                hint="the system is busy: try again shortly, or carry on without this tool")
        try:
            return await next(inp)
        finally:
            pool.release()
