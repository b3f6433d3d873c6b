"""Circuit-breaker state shared by a fleet of workers through Redis.

Each breaker is three keys under ``<prefix>{<breaker key>}`` (one hash slot, so it works on
a Redis Cluster too):

- ``:state``  a hash; ``open_until`` is set while the breaker is open or half-open (open
  until that time, half-open after it), ``successes`` counts half-open trial successes;
- ``:fails``  a sorted set of failure times, trimmed to the window and expiring with it;
- ``:probes`` a sorted set of half-open trial tokens scored by lease expiry, so at most
  ``half_open_probes`` trials are in flight across all workers.

Every decision (may this call go ahead? count this outcome) is one Lua script, run
atomically by Redis, so concurrent workers never double-count or both take the last trial.
Time is the Redis server's clock unless the caller passes one (tests), so every worker
agrees on when a cooldown ends. Keys expire on their own an hour after a breaker last
changed. ``redis`` is imported on first use, never at import time.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from keel.core import ConfigError, StoreError
from keel.reliability._breaker import (
    BreakerOutcome,
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    Permit,
)
from keel.reliability._redis_util import ms, safe_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

_CLOCK = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: state, fails, probes. ARGV: now ('' = server time), max probes, token, lease (s),
# probes ttl (ms). Returns {decision, seconds left of the cooldown or ''}.
_ACQUIRE = _CLOCK + """
local now = clock(ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then return {'closed', ''} end
if now < open_until then return {'open', string.format('%.6f', open_until - now)} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[3], string.format('%.6f', now + tonumber(ARGV[4])), ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return {'probe', ''}
end
return {'half_open', ''}
"""

# KEYS: state, fails, probes. ARGV: now, outcome, probe token ('' = not a trial), failure
# threshold, window (s), cooldown (s), success threshold, failure id, state ttl (ms), fails
# ttl (ms), consecutive ('1': a success while closed forgets the failures). Returns the state
# afterwards.
_RECORD = _CLOCK + """
local now = clock(ARGV[1])
local outcome = ARGV[2]
local token = ARGV[3]
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
local function current()
  if not open_until then return 'closed' end
  if now < open_until then return 'open' end
  return 'half_open'
end
local function open()
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.6f', now + tonumber(ARGV[6])),
             'successes', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
  return 'open'
end
if token ~= '' then
  if not open_until or redis.call('ZREM', KEYS[3], token) == 0 then return current() end
  if outcome == 'failure' then return open() end
  if outcome == 'success' then
    if redis.call('HINCRBY', KEYS[1], 'successes', 1) >= tonumber(ARGV[7]) then
      redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
      return 'closed'
    end
    redis.call('PEXPIRE', KEYS[1], ARGV[9])
  end
  return 'half_open'
end
if not open_until and outcome == 'success' and ARGV[11] == '1' then
  redis.call('DEL', KEYS[2])
  return 'closed'
end
if open_until or outcome ~= 'failure' then return current() end
redis.call('ZADD', KEYS[2], string.format('%.6f', now), ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.6f', now - tonumber(ARGV[5])))
redis.call('PEXPIRE', KEYS[2], ARGV[10])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return open() end
return 'closed'
"""

# KEYS: state, fails. ARGV: now, window (s). Returns {state, failures, seconds left or ''}.
_SNAPSHOT = _CLOCK + """
local now = clock(ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then
  local since = '(' .. string.format('%.6f', now - tonumber(ARGV[2]))
  return {'closed', tostring(redis.call('ZCOUNT', KEYS[2], since, '+inf')), ''}
end
if now < open_until then return {'open', '0', string.format('%.6f', open_until - now)} end
return {'half_open', '0', ''}
"""

# KEYS: state, fails, probes. ARGV: now ('' = server time), seconds, state ttl (ms). Opens the
# breaker until now + seconds unless it is already open until later.
_FORCE = _CLOCK + """
local now = clock(ARGV[1])
local ends = now + tonumber(ARGV[2])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if open_until and open_until >= ends then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'open_until', string.format('%.6f', ends), 'successes', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_STATES: dict[str, BreakerState] = {"closed": "closed", "open": "open",
                                    "half_open": "half_open"}
#: How long an untouched breaker's keys live after its last change, beyond its own timings.
_IDLE_TTL = 3600.0






def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBreakerStore:
    """Circuit-breaker state in Redis at ``url``, under keys starting with ``prefix``.

    Workers that share a Redis and a prefix open and close their breakers together. The
    connection opens on first use (one per event loop); :meth:`aclose` closes it. An
    unreachable Redis raises :class:`~keel.StoreError` naming the URL: a breaker never falls
    back to per-process state on its own.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "keel:breaker:",
                 *, timeout: float = 5.0) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("url", f"expected a redis://, rediss:// or unix:// URL, not "
                                     f"{url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("prefix", "must be a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("timeout", f"must be a number of seconds > 0, not {timeout!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = float(timeout)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisBreakerStore({safe_url(self.url)!r}, prefix={self.prefix!r})"

    def _keys(self, key: str) -> list[str]:
        base = f"{self.prefix}{{{key}}}"
        return [f"{base}:state", f"{base}:fails", f"{base}:probes"]

    def _connect(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        try:
            from redis.asyncio import Redis
        except ImportError as exc:  # pragma: no cover - redis is an optional extra
            raise ConfigError("store", "RedisBreakerStore needs the redis package: "
                                       "pip install 'keel-agents[redis]'") from exc
        # A client belongs to the loop it was made in; a new loop (run_sync) gets a new one.
        client = Redis.from_url(self.url, socket_connect_timeout=self.timeout,
                                socket_timeout=self.timeout)
        self._scripts = {"acquire": client.register_script(_ACQUIRE),
                         "record": client.register_script(_RECORD),
                         "snapshot": client.register_script(_SNAPSHOT),
                         "force": client.register_script(_FORCE)}
        self._client, self._loop = client, loop
        return client

    def _error(self, exc: Exception) -> StoreError:
        from redis.exceptions import ConnectionError, TimeoutError

        where = f"the circuit-breaker store at {safe_url(self.url)}"
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return StoreError(
                f"{where} is unreachable ({type(exc).__name__}: {exc}). Start Redis there or "
                "fix the URL (RedisBreakerStore(url=...)), or drop store= to keep breakers "
                "per process.")
        return StoreError(f"{where} failed: {type(exc).__name__}: {exc}")

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            self._connect()
            return await self._scripts[script](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    async def ping(self) -> None:
        """Check that Redis answers (raises :class:`~keel.StoreError` naming the URL if not)."""
        from redis.exceptions import RedisError

        try:
            await self._connect().ping()
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    async def acquire(self, key: str, policy: BreakerPolicy, *,
                      now: float | None = None) -> Permit:
        token = uuid.uuid4().hex
        decision, left = await self._run("acquire", self._keys(key), [
            _now_arg(now), policy.half_open_probes, token, repr(float(policy.cooldown)),
            ms(policy.cooldown) + 1000])
        decision, left = _text(decision), _text(left)
        if decision == "closed":
            return Permit(allowed=True, state="closed")
        if decision == "probe":
            return Permit(allowed=True, state="half_open", probe=token)
        if decision == "open":
            return Permit(allowed=False, state="open", retry_in=float(left))
        return Permit(allowed=False, state="half_open")

    async def record(self, key: str, policy: BreakerPolicy, outcome: BreakerOutcome, *,
                     probe: str | None = None, now: float | None = None) -> BreakerState:
        state = await self._run("record", self._keys(key), [
            _now_arg(now), outcome, probe or "", policy.failure_threshold,
            repr(float(policy.window)), repr(float(policy.cooldown)), policy.success_threshold,
            uuid.uuid4().hex, ms(2 * policy.cooldown + _IDLE_TTL),
            ms(policy.window) + 1000, "1" if policy.consecutive else "0"])
        return _STATES[_text(state)]

    async def snapshot(self, key: str, policy: BreakerPolicy, *,
                       now: float | None = None) -> BreakerSnapshot:
        state, failures, left = await self._run("snapshot", self._keys(key)[:2], [
            _now_arg(now), repr(float(policy.window))])
        left = _text(left)
        return BreakerSnapshot(state=_STATES[_text(state)], failures=int(_text(failures)),
                               retry_in=float(left) if left else None)

    async def reset(self, key: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._connect().delete(*self._keys(key))
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc

    async def force_open(self, key: str, seconds: float, *, now: float | None = None) -> None:
        """Open ``key``'s breaker for ``seconds`` on every worker (unless it is already open
        until later); then it half-opens and recovers as usual."""
        await self._run("force", self._keys(key), [
            _now_arg(now), repr(float(seconds)), ms(seconds + _IDLE_TTL)])

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()
