"""``run_stats``: run analytics from the run store, with no other infrastructure.

The figures are aggregated by the store itself (SQL on SQLite and Postgres, see
:meth:`keel.store.RunStore.stats`); only one row per group comes back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from keel.store import GROUP_KEYS, RunStore, StatsQuery, StatsResult

__all__ = ["GROUP_KEYS", "run_stats"]


async def run_stats(store: RunStore, *, agent: str | None = None, tenant: str | None = None,
                    since: float | datetime | None = None,
                    until: float | datetime | None = None,
                    by: str | Sequence[str] = ("agent",), top: int = 5) -> StatsResult:
    """Success rate, escalation rate, latency percentiles (p50/p95/p99 of finished runs'
    wall time), tokens, cost (total and per run) and the top failing tools and error types,
    for the runs of ``agent`` / ``tenant`` created in ``[since, until)``, grouped ``by`` any
    of ``agent``, ``tenant``, ``model`` and ``day`` (UTC). ``result.total`` covers every run
    in the query, ``result.groups`` has one row per group. An unknown agent or tenant is not
    an error: it has no runs, so every count is 0. Bad input raises
    :class:`keel.UserError` naming the argument."""
    def epoch(when: float | datetime | None) -> float | None:
        if isinstance(when, datetime):  # naive: UTC
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        return when  # StatsQuery checks the rest

    keys = (by,) if isinstance(by, str) else tuple(by)
    query = StatsQuery(agent=agent, tenant=tenant, since=epoch(since),
                       until=epoch(until),
                       by=keys, top=top)  # type: ignore[arg-type]
    return await store.stats(query)
