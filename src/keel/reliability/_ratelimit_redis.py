"""Rate-limit counts shared across worker processes through Redis.

Each limit is a fixed-window counter: the window opens with the first call counted in it
and lasts ``per`` seconds (the key's expiry), so every worker sees the same window whatever
its own clock says. Checking and counting happen in one Lua script, atomically, so two
workers can never both take the last slot. ``redis`` is imported when the store is first
used, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.core import ConfigError, StoreError
from keel.reliability._redis_util import safe_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS[1] the counter; ARGV: limit, cost, window in ms. cost 0 asks whether there is room at
# all (a token budget, charged after the call); cost > 0 takes that many slots if they fit.
# Returns the milliseconds to wait before trying again (0 = allowed, and counted).
_RESERVE = """
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local allowed
if cost == 0 then allowed = current < limit else allowed = current + cost <= limit end
if allowed then
  if cost > 0 then
    redis.call('INCRBY', KEYS[1], cost)
    if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], window) end
  end
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return math.max(ttl, 1)
"""

# KEYS[1] the counter; ARGV: amount, window in ms. Adds the amount (opening a window if none).
_CHARGE = """
local total = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return total
"""




class RedisRateStore:
    """Rate-limit counters in Redis at ``url``, under keys starting with ``prefix``.

    Workers that share a Redis and a prefix share their limits. The connection opens on
    first use; :meth:`aclose` closes it. An unreachable Redis raises :class:`StoreError`
    naming the URL.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "keel:ratelimit",
                 *, connect_timeout: float = 5.0) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("url", f"expected a redis://, rediss:// or unix:// URL, got "
                                     f"{url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("prefix", "must be a non-empty string")
        if connect_timeout <= 0:
            raise ConfigError("connect_timeout", f"must be seconds > 0, got {connect_timeout!r}")
        self.url = url
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisRateStore({safe_url(self.url)!r}, prefix={self.prefix!r})"

    def _connect(self) -> Redis:
        if self._client is None:
            try:
                from redis.asyncio import Redis
            except ImportError as exc:  # pragma: no cover - redis is an optional extra
                raise ConfigError("store", "RedisRateStore needs the redis package: "
                                           "pip install 'keel-agents[redis]'") from exc
            client = Redis.from_url(self.url, socket_connect_timeout=self.connect_timeout,
                                    socket_timeout=self.connect_timeout)
            self._scripts = {"reserve": client.register_script(_RESERVE),
                             "charge": client.register_script(_CHARGE)}
            self._client = client
        return self._client

    async def _run(self, script: str, key: str, *args: float) -> int:
        from redis.exceptions import ConnectionError, TimeoutError

        self._connect()
        try:
            result = await self._scripts[script](keys=[f"{self.prefix}:{key}"], args=list(args))
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise StoreError(
                f"the rate-limit store at {safe_url(self.url)} is unreachable ({exc}). Start "
                "Redis there, fix the URL, or drop store= to limit in this process only."
            ) from exc
        return int(result)

    async def reserve(self, key: str, limit: int, per: float) -> float:
        """Count one call against ``limit`` per ``per`` seconds; 0.0 if it was allowed,
        otherwise the seconds until the window reopens (nothing was counted)."""
        wait_ms = await self._run("reserve", key, limit, 1, _ms(per))
        return wait_ms / 1000.0

    async def room(self, key: str, limit: int, per: float) -> float:
        """0.0 while less than ``limit`` has been charged in the window, otherwise the seconds
        until it reopens."""
        wait_ms = await self._run("reserve", key, limit, 0, _ms(per))
        return wait_ms / 1000.0

    async def charge(self, key: str, amount: int, per: float) -> int:
        """Add ``amount`` to the window's total (opening a window if none); returns it."""
        return await self._run("charge", key, amount, _ms(per))

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
