"""Where the behavioural monitor keeps what it learned and what it decided.

Three kinds of state, all keyed by *scope* (the agent's name, ``agent@tenant`` when the
tenant is known):

- the **baseline**: running aggregates over the agent's ordinary runs, a flat map of
  numbers (``runs``, ``cost.sum``, ``t<TAB>lookup<TAB>bytes.max`` …) that a finished run
  adds to with ``sum`` and ``max`` operations, so every worker folds into the same numbers;
- **throttles**: a tool of a scope throttled until a time, with the next free call slot;
- **approvals owed**: how many of the scope's next high-impact calls must wait for a person.

:class:`InMemoryMonitorStore` keeps them in this process; :class:`RedisMonitorStore` shares
them across a fleet (each change one atomic Lua script; ``redis`` is imported on first use).
Time is always the caller's clock reading, so tests can drive it.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from keel.core import ConfigError, StoreError

if TYPE_CHECKING:
    from redis.asyncio import Redis

FoldOp: TypeAlias = tuple[str, Literal["sum", "max"], float]
#: How long Redis keeps an owed-approval count nobody consumed.
_APPROVAL_TTL = 86_400.0


@dataclass(frozen=True, slots=True)
class Baseline:
    """An agent's learned normal: the aggregates of its ordinary runs."""

    fields: Mapping[str, float] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return int(self.fields.get("runs", 0))

    def tools(self) -> set[str]:
        return {k.split("\t")[1] for k in self.fields if k.startswith("t\t")}

    def uses(self, tool: str) -> bool:
        return self.fields.get(f"t\t{tool}\truns", 0) > 0

    def tool_mean(self, tool: str, metric: str) -> float:
        """The mean per run that used ``tool`` (0.0 if none did)."""
        n = self.fields.get(f"t\t{tool}\truns", 0)
        return self.fields.get(f"t\t{tool}\t{metric}.sum", 0.0) / n if n else 0.0

    def tool_max(self, tool: str, metric: str) -> float:
        return self.fields.get(f"t\t{tool}\t{metric}.max", 0.0)

    def latency_mean(self, tool: str) -> float:
        n = self.fields.get(f"t\t{tool}\tlat.n", 0)
        return self.fields.get(f"t\t{tool}\tlat.sum", 0.0) / n if n else 0.0

    def mean(self, metric: str) -> float:
        """The mean per run of a run-wide metric (``cost``, ``errors``)."""
        n = self.runs
        return self.fields.get(f"{metric}.sum", 0.0) / n if n else 0.0


@runtime_checkable
class MonitorStore(Protocol):
    """The monitor's shared state (see the module docstring)."""

    async def baseline(self, scope: str) -> Baseline: ...

    async def fold(self, scope: str, ops: Sequence[FoldOp]) -> None:
        """Add one run to the scope's baseline."""
        ...

    async def throttle(self, key: str, *, until: float, now: float) -> None:
        """Throttle ``key`` until ``until`` (extending a throttle already in force)."""
        ...

    async def reserve(self, key: str, *, interval: float, max_wait: float,
                      now: float) -> float | None:
        """None if ``key`` is not throttled; otherwise the seconds the call must wait for its
        slot. The slot is taken only when that wait is at most ``max_wait``."""
        ...

    async def owe_approvals(self, scope: str, count: int) -> None:
        """The scope's next ``count`` high-impact calls need approval (not added up: the
        larger of ``count`` and what is already owed)."""
        ...

    async def take_approval(self, scope: str) -> bool:
        """True (and one fewer owed) if the scope owes an approval."""
        ...


# ---------------------------------------------------------------------------------- memory


@dataclass(slots=True)
class _Throttle:
    until: float
    next_slot: float = 0.0


class InMemoryMonitorStore:
    """The monitor's state in this process (the default). Thread-safe."""

    def __init__(self) -> None:
        self._baselines: dict[str, dict[str, float]] = {}
        self._throttles: dict[str, _Throttle] = {}
        self._owed: dict[str, int] = {}
        self._lock = threading.Lock()

    async def baseline(self, scope: str) -> Baseline:
        with self._lock:
            return Baseline(dict(self._baselines.get(scope, {})))

    async def fold(self, scope: str, ops: Sequence[FoldOp]) -> None:
        with self._lock:
            data = self._baselines.setdefault(scope, {})
            for key, op, value in ops:
                if op == "sum":
                    data[key] = data.get(key, 0.0) + value
                else:
                    data[key] = max(data.get(key, value), value)

    async def throttle(self, key: str, *, until: float, now: float) -> None:
        with self._lock:
            t = self._throttles.get(key)
            if t is None or t.until <= now:
                self._throttles[key] = _Throttle(until=until)
            else:
                t.until = max(t.until, until)

    async def reserve(self, key: str, *, interval: float, max_wait: float,
                      now: float) -> float | None:
        with self._lock:
            t = self._throttles.get(key)
            if t is None or now >= t.until:
                return None
            slot = max(now, t.next_slot)
            wait = slot - now
            if wait <= max_wait:
                t.next_slot = slot + interval
            return wait

    async def owe_approvals(self, scope: str, count: int) -> None:
        with self._lock:
            self._owed[scope] = max(self._owed.get(scope, 0), count)

    async def take_approval(self, scope: str) -> bool:
        with self._lock:
            n = self._owed.get(scope, 0)
            if n <= 0:
                return False
            self._owed[scope] = n - 1
            return True


# ----------------------------------------------------------------------------------- redis

# KEYS[1] the baseline hash. ARGV: triples of field, op ('sum'|'max'), value.
_FOLD = """
for i = 1, #ARGV, 3 do
  local f, op, v = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if op == 'sum' then
    redis.call('HINCRBYFLOAT', KEYS[1], f, v)
  else
    local cur = tonumber(redis.call('HGET', KEYS[1], f))
    if not cur or v > cur then redis.call('HSET', KEYS[1], f, string.format('%.17g', v)) end
  end
end
return 1
"""

# KEYS[1] the throttle hash. ARGV: until, now. Starts or extends a throttle.
_THROTTLE = """
local ends, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'until'))
if not cur or cur <= now then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'next', '0')
elseif ends > cur then
  redis.call('HSET', KEYS[1], 'until', ARGV[1])
else
  ends = cur
end
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((ends - now) * 1000)) + 1000)
return 1
"""

# KEYS[1] the throttle hash. ARGV: interval, max wait, now. Returns '' (not throttled) or the
# wait in seconds (the slot is taken if the wait is at most max wait).
_RESERVE = """
local interval, max_wait, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ends = tonumber(redis.call('HGET', KEYS[1], 'until'))
if not ends or now >= ends then return '' end
local slot = math.max(now, tonumber(redis.call('HGET', KEYS[1], 'next') or '0'))
local wait = slot - now
if wait <= max_wait then
  redis.call('HSET', KEYS[1], 'next', string.format('%.6f', slot + interval))
end
return string.format('%.6f', wait)
"""

# KEYS[1] the owed-approvals counter. ARGV: count, ttl ms.
_OWE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_TAKE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur <= 0 then return 0 end
redis.call('DECR', KEYS[1])
return 1
"""

_SCRIPTS = {"fold": _FOLD, "throttle": _THROTTLE, "reserve": _RESERVE, "owe": _OWE,
            "take": _TAKE}


def _safe_url(url: str) -> str:
    """The URL without its user and password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host)) if parts.netloc else url


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisMonitorStore:
    """The monitor's state in Redis at ``url``, under keys starting with ``prefix``: every
    worker sharing both learns one baseline, throttles together and owes the same approvals.

    The connection opens on first use (one per event loop); :meth:`aclose` closes it. An
    unreachable Redis raises :class:`~keel.StoreError` naming the URL.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "keel:monitor:",
                 *, timeout: float = 5.0) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("url", f"expected a redis://, rediss:// or unix:// URL, not "
                                     f"{url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("prefix", "must be a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not 0 < timeout < math.inf:
            raise ConfigError("timeout", f"must be a number of seconds > 0, not {timeout!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = float(timeout)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisMonitorStore({_safe_url(self.url)!r}, prefix={self.prefix!r})"

    def _connect(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        try:
            from redis.asyncio import Redis
        except ImportError as exc:  # pragma: no cover - redis is an optional extra
            raise ConfigError("store", "RedisMonitorStore needs the redis package: "
                                       "pip install 'keel-agents[redis]'") from exc
        client = Redis.from_url(self.url, socket_connect_timeout=self.timeout,
                                socket_timeout=self.timeout)
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self._client, self._loop = client, loop
        return client

    async def _call(self, script: str | None, key: str, args: Sequence[Any] = ()) -> Any:
        from redis.exceptions import RedisError

        try:
            client = self._connect()
            if script is None:
                return await client.hgetall(key)
            return await self._scripts[script](keys=[key], args=list(args))
        except (RedisError, OSError) as exc:
            raise StoreError(f"the monitor store at {_safe_url(self.url)} failed "
                             f"({type(exc).__name__}: {exc}). Start Redis there, fix the URL, "
                             "or drop store= to keep the monitor's state per process."
                             ) from exc

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{{{name}}}"

    async def baseline(self, scope: str) -> Baseline:
        raw = await self._call(None, self._key("baseline", scope))
        return Baseline({_text(k): float(_text(v)) for k, v in raw.items()})

    async def fold(self, scope: str, ops: Sequence[FoldOp]) -> None:
        args: list[Any] = []
        for key, op, value in ops:
            args += [key, op, repr(float(value))]
        if args:
            await self._call("fold", self._key("baseline", scope), args)

    async def throttle(self, key: str, *, until: float, now: float) -> None:
        await self._call("throttle", self._key("throttle", key),
                         [repr(float(until)), repr(float(now))])

    async def reserve(self, key: str, *, interval: float, max_wait: float,
                      now: float) -> float | None:
        wait = _text(await self._call("reserve", self._key("throttle", key),
                                      [repr(float(interval)), repr(float(max_wait)),
                                       repr(float(now))]))
        return float(wait) if wait else None

    async def owe_approvals(self, scope: str, count: int) -> None:
        await self._call("owe", self._key("approvals", scope),
                         [count, math.ceil(_APPROVAL_TTL * 1000)])

    async def take_approval(self, scope: str) -> bool:
        return bool(await self._call("take", self._key("approvals", scope)))

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()


__all__ = ["Baseline", "FoldOp", "InMemoryMonitorStore", "MonitorStore", "RedisMonitorStore"]
