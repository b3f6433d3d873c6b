"""The run-analytics half of the store conformance suite: ``RunStore.stats`` gives the same
figures on every backend, equal to a brute-force count over the same generated runs."""

from __future__ import annotations

import math

from keel.core import UserError
from keel.store import RunStore, StatsQuery
from keel.testing._stats_data import (
    T0,
    assert_stats_match,
    brute_force,
    load_dataset,
    stats_dataset,
)
from keel.testing._store_conformance import sample_entry, sample_run
from keel.testing._store_conformance_fleet import sample_task

__all__ = ["StatsConformance"]

_DAY = 86_400.0

#: The queries every store must answer like the brute force: groupings, filters, windows.
QUERIES: tuple[StatsQuery, ...] = (
    StatsQuery(),
    StatsQuery(by=()),
    StatsQuery(by=("tenant", "model"), top=3),
    StatsQuery(by=("day",), since=T0 + 3 * _DAY, until=T0 + 10 * _DAY),
    StatsQuery(agent="billing", by=("agent", "tenant", "model", "day")),
    StatsQuery(tenant="acme' OR '1'='1", by=("agent",)),
    StatsQuery(tenant="acme", agent="support", since=T0 + 5 * _DAY, by=("model",), top=1),
    StatsQuery(until=T0 + _DAY / 3, by=("tenant",), top=0),
)


class StatsConformance:
    """``stats``: success and escalation rates, latency percentiles, tokens, cost and the
    failing tools, per group and in total."""

    async def test_stats_equal_a_brute_force_count(self, store: RunStore) -> None:
        runs = stats_dataset(400, seed=7, journal_fraction=0.4)
        await load_dataset(store, runs)
        for query in QUERIES:
            got = await store.stats(query)
            assert got.query == query
            assert_stats_match(got, brute_force(runs, query))
        # the fixture exercises what it should: every kind of row is there
        total = (await store.stats(StatsQuery(by=()))).total
        assert total.runs == 400 and total.escalated > 0 and total.tool_failures > 0
        assert total.cache_hits > 0 and total.cache_saved_usd > 0
        assert {"unknown", "tool_error"} <= {name for name, _ in total.error_types}

    async def test_percentiles_are_nearest_rank_over_finished_runs(
            self, store: RunStore) -> None:
        for i in range(20):  # durations 1..20 s; plus runs that did not finish
            await store.create_run(sample_run(
                f"done-{i:02d}", status="completed" if i % 2 else "failed",
                created_at=T0 + i, updated_at=T0 + i + (i + 1)))
        for status in ("running", "suspended"):
            await store.create_run(sample_run(f"open-{status}", status=status,
                                              created_at=T0, updated_at=T0 + 10_000))
        got = (await store.stats(StatsQuery(by=()))).total
        assert (got.p50_s, got.p95_s, got.p99_s, got.max_s) == (10.0, 19.0, 20.0, 20.0)
        assert (got.runs, got.finished, got.running, got.suspended) == (22, 20, 1, 1)
        assert got.success_rate == 0.5
        assert got.escalation_rate == 0.0

    async def test_escalations_and_tool_failures_are_counted_per_run(
            self, store: RunStore) -> None:
        await store.create_run(sample_run("esc", status="completed", tenant="acme",
                                          usage={"cost_usd": 0.25, "input_tokens": 10}))
        await store.create_run(sample_run("plain", status="completed", tenant="acme",
                                          usage={"cost_usd": 0.75, "output_tokens": 5}))
        for n in range(2):  # two escalations of one run count it once
            await store.put_task(sample_task(f"esc-{n}", "esc", kind="escalation"))
        await store.put_task(sample_task("ap-1", "plain"))  # an approval is no escalation
        failed = {"content": "x", "failure": {"error_type": "timeout", "message": "slow"}}
        await store.append("plain", [
            sample_entry(0, "t/0", "intent", kind="tool", name="refund", data=failed),
            sample_entry(1, "t/0", "result", kind="tool", name="refund", data=failed),
            sample_entry(2, "t/1", "result", kind="tool", name="refund",
                         data={"content": "ok", "failure": None}),
            sample_entry(3, "m/2", "result", kind="model", name="gpt-4o", data=failed)])
        got = await store.stats(StatsQuery(tenant="acme", by=()))
        total = got.total
        assert (total.runs, total.escalated, total.escalation_rate) == (2, 1, 0.5)
        assert (total.input_tokens, total.output_tokens, total.tokens) == (10, 5, 15)
        assert math.isclose(total.cost_usd, 1.0) and total.cost_per_run is not None
        assert math.isclose(total.cost_per_run, 0.5)
        assert total.failing_tools == (("refund", 1),)
        assert total.error_types == (("timeout", 1),)

    async def test_non_finite_numbers_in_payloads_are_skipped_not_fatal(
            self, store: RunStore) -> None:
        """NaN and Infinity are not standard JSON (the stores keep them, the databases'
        JSON functions refuse them): such a usage, metadata or tool result is skipped as a
        whole on every backend, and the rest of the figures are still computed."""
        nan, inf = float("nan"), float("inf")
        await store.create_run(sample_run("bad", status="completed",
                                          usage={"cost_usd": nan, "input_tokens": 7},
                                          metadata={"model": "m", "score": -inf}))
        await store.create_run(sample_run("good", status="completed", created_at=T0,
                                          updated_at=T0 + 4,
                                          usage={"cost_usd": 0.5, "input_tokens": 3},
                                          metadata={"model": "m"}))
        bad_failure = {"failure": {"error_type": "timeout"}, "value": [inf]}
        good_failure = {"failure": {"error_type": "timeout"}, "note": "NaN in a string"}
        for run_id, data in (("bad", bad_failure), ("good", good_failure)):
            await store.append(run_id, [sample_entry(0, "t/0", kind="tool", name="fetch",
                                                     data=data)])
        got = await store.stats(StatsQuery(by=("model",)))
        assert (got.total.runs, got.total.input_tokens, got.total.cost_usd) == (2, 3, 0.5)
        assert [(row.key["model"], row.runs) for row in got.groups] == [("m", 1), (None, 1)]
        assert got.total.failing_tools == (("fetch", 1),) and got.total.p99_s == 4.0

    async def test_unknown_tenant_or_agent_and_empty_store_give_zeros(
            self, store: RunStore) -> None:
        empty = await store.stats()
        assert empty.total.runs == 0 and empty.groups == ()
        assert empty.total.success_rate is None and empty.total.p50_s is None
        await load_dataset(store, stats_dataset(30, seed=1))
        for query in (StatsQuery(tenant="nobody"), StatsQuery(agent="nobody"),
                      StatsQuery(tenant="ACME"), StatsQuery(tenant="acme%"),
                      StatsQuery(since=T0 + 400 * _DAY)):
            got = await store.stats(query)
            assert got.total.runs == 0 and got.groups == (), query

    async def test_bad_queries_are_refused_naming_the_argument(self, store: RunStore) -> None:
        bad = ({"by": ("agent", "colour")}, {"by": ("day", "day")}, {"top": -1},
               {"top": 101}, {"since": T0, "until": T0}, {"since": "yesterday"},
               {"until": float("nan")}, {"tenant": ""}, {"tenant": "t" * 201},
               {"agent": "a\x00"})
        for kwargs in bad:
            message = ""
            try:
                StatsQuery(**kwargs)
            except UserError as exc:
                message = str(exc)
            assert next(iter(kwargs)) in message, (kwargs, message or "accepted")
        assert (await store.stats()).total.runs == 0

