"""L3: observability and cost control (traces, metrics, run analytics, spend caps, caching).

Being built (issue 12); each part is middleware on the model and tool seams or reads the run
store, and switches on by default only where it costs nothing when unused.
"""

from keel.observe._alerts import (
    ApprovalsOverdue,
    CostSpike,
    ErrorRateAbove,
    FleetAlert,
    FleetAlerts,
    LatencyAbove,
    Notifier,
    Rule,
    SuccessRateBelow,
)
from keel.observe._audit import AUDIT_OUTCOMES, AuditEvent, audit_events_of
from keel.observe._cache import ModelCache, deterministic
from keel.observe._cache_stores import (
    CacheStore,
    MemoryCacheStore,
    RedisCacheStore,
    SQLiteCacheStore,
)
from keel.observe._caps import SpendAlert, SpendCap, SpendCaps, estimate_prompt_tokens
from keel.observe._caps_stores import CapStore, MemoryCapStore, RedisCapStore, SQLCapStore
from keel.observe._failure_modes import KINDS as FAILURE_KINDS
from keel.observe._failure_modes import FailureMode, FailureReport, failure_modes
from keel.observe._latency import LatencyBudget, RunTimings
from keel.observe._metrics import (
    Metrics,
    TenantOf,
    count_feedback,
    instruments,
    refresh_human_tasks,
    use_opentelemetry,
)
from keel.observe._mitigations import MITIGATIONS, mitigation
from keel.observe._run_stats import run_stats
from keel.observe._semantic import SemanticCache
from keel.observe._serve import (
    MetricsServer,
    mark_process_dead,
    scrape_registry,
    serve_metrics,
)
from keel.observe._tracing import (
    TRACE_METADATA,
    Tracing,
    inject_trace_headers,
    inject_trace_headers_async,
    trace_headers,
)
from keel.observe._tracing_setup import setup_tracing

__all__: list[str] = [
    "AUDIT_OUTCOMES",
    "FAILURE_KINDS",
    "MITIGATIONS",
    "TRACE_METADATA",
    "ApprovalsOverdue",
    "AuditEvent",
    "CacheStore",
    "CapStore",
    "CostSpike",
    "ErrorRateAbove",
    "FailureMode",
    "FailureReport",
    "FleetAlert",
    "FleetAlerts",
    "LatencyAbove",
    "LatencyBudget",
    "MemoryCacheStore",
    "MemoryCapStore",
    "Metrics",
    "MetricsServer",
    "ModelCache",
    "Notifier",
    "RedisCacheStore",
    "RedisCapStore",
    "Rule",
    "RunTimings",
    "SQLCapStore",
    "SQLiteCacheStore",
    "SemanticCache",
    "SpendAlert",
    "SpendCap",
    "SpendCaps",
    "SuccessRateBelow",
    "TenantOf",
    "Tracing",
    "audit_events_of",
    "count_feedback",
    "deterministic",
    "estimate_prompt_tokens",
    "failure_modes",
    "inject_trace_headers",
    "inject_trace_headers_async",
    "instruments",
    "mark_process_dead",
    "mitigation",
    "refresh_human_tasks",
    "run_stats",
    "scrape_registry",
    "serve_metrics",
    "setup_tracing",
    "trace_headers",
    "use_opentelemetry",
]
