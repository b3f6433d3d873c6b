"""L3: the reliability layer: retries, circuit breakers, bulkheads, rate limits, fallback
chains, timeouts and sagas, all as middleware on the model and tool seams."""

__all__: list[str] = []
