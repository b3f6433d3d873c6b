"""L3: observability and cost control (traces, metrics, run analytics, spend caps, caching).

Being built (issue 12); each part is middleware on the model and tool seams or reads the run
store, and switches on by default only where it costs nothing when unused.
"""

# caching and latency budgets (docs/observability.md, "Caching")
from keel.observe._cache import ModelCache, deterministic
from keel.observe._cache_stores import (
    CacheStore,
    MemoryCacheStore,
    RedisCacheStore,
    SQLiteCacheStore,
)
from keel.observe._latency import LatencyBudget, RunTimings
from keel.observe._semantic import SemanticCache

__all__: list[str] = [
    # caching and latency budgets
    "CacheStore",
    "LatencyBudget",
    "MemoryCacheStore",
    "ModelCache",
    "RedisCacheStore",
    "RunTimings",
    "SQLiteCacheStore",
    "SemanticCache",
    "deterministic",
]
