"""L3: the reliability layer: retries, circuit breakers, bulkheads, rate limits, fallback
chains, timeouts and sagas, all as middleware on the model and tool seams."""

from keel.reliability._breaker import (
    BreakerOutcome,
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    InMemoryBreakerStore,
    Permit,
)
from keel.reliability._breaker_redis import RedisBreakerStore
from keel.reliability._bulkhead import Bulkhead, BulkheadKey, BulkheadPolicy, PoolLoad
from keel.reliability._fallback import (
    ChainResult,
    FallbackChain,
    FallbackModel,
    LinkFailure,
    falls_back,
    link_failed,
)
from keel.reliability._ratelimit import RateLimit, RateLimiter, RateLimitKey
from keel.reliability._ratelimit_redis import RedisRateStore
from keel.reliability._retry import Retry, RetryPolicy, retryable_tool_failure
from keel.reliability._timeout import Timeout

__all__: list[str] = [
    "BreakerOutcome",
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerStore",
    "Bulkhead",
    "BulkheadKey",
    "BulkheadPolicy",
    "ChainResult",
    "CircuitBreaker",
    "FallbackChain",
    "FallbackModel",
    "InMemoryBreakerStore",
    "LinkFailure",
    "Permit",
    "PoolLoad",
    "RateLimit",
    "RateLimitKey",
    "RateLimiter",
    "RedisBreakerStore",
    "RedisRateStore",
    "Retry",
    "RetryPolicy",
    "Timeout",
    "falls_back",
    "link_failed",
    "retryable_tool_failure",
]
