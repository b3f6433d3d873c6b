"""L3: observability and cost control (traces, metrics, run analytics, spend caps, caching).

Being built (issue 12); each part is middleware on the model and tool seams or reads the run
store, and switches on by default only where it costs nothing when unused.
"""

# metrics and fleet alerts (docs/observability.md "Metrics and alerts")
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
from keel.observe._metrics import (
    Metrics,
    TenantOf,
    instruments,
    refresh_human_tasks,
    use_opentelemetry,
)
from keel.observe._serve import MetricsServer, mark_process_dead, serve_metrics

__all__: list[str] = [
    # metrics and fleet alerts
    "ApprovalsOverdue",
    "CostSpike",
    "ErrorRateAbove",
    "FleetAlert",
    "FleetAlerts",
    "LatencyAbove",
    "Metrics",
    "MetricsServer",
    "Notifier",
    "Rule",
    "SuccessRateBelow",
    "TenantOf",
    "instruments",
    "mark_process_dead",
    "refresh_human_tasks",
    "serve_metrics",
    "use_opentelemetry",
]
