"""L3: observability and cost control (traces, metrics, run analytics, spend caps, caching).

Being built (issue 12); each part is middleware on the model and tool seams or reads the run
store, and switches on by default only where it costs nothing when unused.
"""

__all__: list[str] = []
