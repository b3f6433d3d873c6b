"""L3: observability and cost control (traces, metrics, run analytics, spend caps, caching).

Being built (issue 12); each part is middleware on the model and tool seams or reads the run
store, and switches on by default only where it costs nothing when unused.
"""

# Tracing (OpenTelemetry, GenAI semantic conventions): docs/observability.md "Tracing".
from keel.observe._tracing import (
    TRACE_METADATA,
    Tracing,
    inject_trace_headers,
    inject_trace_headers_async,
    trace_headers,
)
from keel.observe._tracing_setup import setup_tracing

__all__: list[str] = [
    # Tracing
    "TRACE_METADATA",
    "Tracing",
    "inject_trace_headers",
    "inject_trace_headers_async",
    "setup_tracing",
    "trace_headers",
]
