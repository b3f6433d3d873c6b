"""``OutboxConformance``: the outbox half of the store conformance suite.

A store with its outbox on writes an event exactly for each write that is one (a run
created, a tool result appended, a task stored or decided, a run suspended or ended), in the
write's own transaction: a write that fails writes no event, a write repeated writes none
twice. The events carry the run's agent and tenant, never a tool's arguments or output.
With the outbox off nothing is written to it. ``read_outbox`` claims what it returns,
``mark_published`` retires rows, ``prune_outbox`` deletes the published ones.

Subclass it and provide two fixtures, each a fresh, open, empty store: ``outbox_store``
(outbox on) and ``plain_store`` (outbox off).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from keel.core import ConfigError, LeaseLost, StoreError, TaskConflict
from keel.store import Event, RunStore
from keel.testing._store_conformance import sample_entry, sample_run
from keel.testing._store_conformance_fleet import sample_task

__all__ = ["OutboxConformance"]

_T0 = 1_700_000_000.0


def tool_result(seq: int, *, name: str = "refund", failed: str | None = None,
                phase: str = "result") -> Any:
    """A tool step's journal entry holding arguments and output that must not leak."""
    data: dict[str, Any] = {"output": {"card": "4111 1111 1111 1111", "email": "a@b.example"}}
    if failed is not None:
        data = {"failure": {"error_type": failed, "message": "card 4111 declined"}}
    if phase == "intent":
        data = {"arguments": {"card": "4111 1111 1111 1111"}}
    return sample_entry(seq, f"support/turn:{seq}/tool:{name}#0", phase,  # type: ignore[arg-type]
                        kind="tool", name=name, data=data)


class _Log:
    """What a relay would see: each ``read_outbox`` returns the rows written since the last
    (the earlier ones are claimed); ``all`` keeps every row read, in position order."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.rows: list[tuple[int, Event]] = []

    async def events(self) -> list[Event]:
        rows = await self.store.read_outbox(0, 10_000)
        positions = [p for p, _ in rows]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert not self.rows or not positions or positions[0] > self.rows[-1][0]
        self.rows += rows
        return [e for _, e in self.rows]

    async def types(self) -> list[tuple[str, str]]:
        return [(e.type, e.id) for e in await self.events()]


async def _expect(kind: type[Exception], call: Any) -> None:
    try:
        await call
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


class OutboxConformance:
    """The outbox: which writes are events, atomicity, tenants, off, the relay's calls."""

    async def test_each_write_that_is_an_event_writes_exactly_that_event(
            self, outbox_store: RunStore) -> None:
        store = outbox_store
        log = _Log(store)
        assert store.outbox is True
        run = sample_run("run-1", tenant="acme", user="ann", conversation="c-1")
        await store.create_run(run)
        await store.append("run-1", [sample_entry(0)])  # a model step: no event
        await store.append("run-1", [tool_result(1, phase="intent")])  # an intent: none
        await store.append("run-1", [tool_result(1)])
        await store.append("run-1", [tool_result(2, name="lookup", failed="not_found"),
                                     sample_entry(3)])
        await store.update_run(run.with_status("running", updated_at=_T0 + 1))  # no event
        assert await store.put_task(sample_task("ap-1", "run-1")) is True
        assert await store.put_task(sample_task("ap-1", "run-1")) is False  # kept once
        status = await store.suspend_run(run.with_status("suspended", updated_at=_T0 + 2),
                                         [sample_entry(4)], waiting_on=["ap-1"])
        assert status == "suspended"
        decision = {"approved": True, "edited": False, "comment": "ok, card 4111",
                    "by": "bob", "arguments": {"card": "4111"}}
        await store.resolve_task("ap-1", decision, by="bob",
                                 entry=sample_entry(5, "t/approval", kind="approval"))
        done = run.with_status("completed", output={"card": "4111"}, updated_at=_T0 + 3,
                               usage={"steps": 4, "cost_usd": 0.01, "model": "x"})
        await store.finish_run(done, [tool_result(6)])
        await store.update_run(done)  # written again: no second run.completed
        assert await log.types() == [
            ("run.started", "run-1:started"),
            ("tool.called", "run-1:1:result"),
            ("tool.called", "run-1:2:result"),
            ("approval.requested", "ap-1:requested"),
            ("run.suspended", (await log.events())[4].id),
            ("approval.decided", "ap-1:decided"),
            ("tool.called", "run-1:6:result"),
            ("run.completed", "run-1:completed"),
        ]
        events = {e.id: e for e in await log.events()}
        assert all(e.run_id == "run-1" and e.agent == "support" and e.tenant == "acme"
                   for e in events.values())
        assert events["run-1:1:result"].data == {
            "tool": "refund", "step_key": "support/turn:1/tool:refund#0", "ok": True,
            "error_type": None, "latency_ms": 12.5}
        assert events["run-1:2:result"].data["ok"] is False
        assert events["run-1:2:result"].data["error_type"] == "not_found"
        assert events["ap-1:requested"].data["tool"] == "refund"
        assert events["ap-1:decided"].data == {"task_id": "ap-1", "by": "bob",
                                               "approved": True, "edited": False,
                                               "step_key": sample_task().step_key}
        assert events["run-1:completed"].data["usage"] == {"steps": 4, "cost_usd": 0.01}
        suspended = [e for e in events.values() if e.type == "run.suspended"]
        assert suspended[0].id.startswith("run-1:suspended:")
        assert suspended[0].data == {"waiting_on": ["ap-1"]}
        text = "".join(e.to_json().decode() for e in events.values())
        assert "4111" not in text and "a@b.example" not in text, "tool data leaked"
        assert "Where is my order" not in text, "the run's input leaked"

    async def test_an_escalation_and_a_decision_that_ends_the_run(
            self, outbox_store: RunStore) -> None:
        store = outbox_store
        log = _Log(store)
        run = sample_run("run-e", tenant="globex")
        await store.create_run(run)
        await store.put_task(sample_task("esc-1", "run-e", kind="escalation",
                                         data={"trigger": "requested", "reason": "x"}))
        closed = run.with_status("cancelled", updated_at=_T0 + 5,
                                 error={"type": "EscalationDismissed", "message": "m"})
        await store.resolve_task("esc-1", {"action": "dismiss", "comment": "private"},
                                 by="carol", close=closed)
        types = await log.types()
        assert [t for t, _ in types] == ["run.started", "run.escalated",
                                         "escalation.resolved", "run.cancelled"]
        events = {e.type: e for e in await log.events()}
        assert events["run.escalated"].data["trigger"] == "requested"
        assert events["escalation.resolved"].data == {
            "task_id": "esc-1", "step_key": sample_task(kind="escalation").step_key,
            "by": "carol", "action": "dismiss"}
        assert events["run.cancelled"].data["error_type"] == "EscalationDismissed"
        assert all(e.tenant == "globex" for e in events.values())

    async def test_a_write_that_fails_writes_no_event(self, outbox_store: RunStore) -> None:
        store = outbox_store
        log = _Log(store)
        await store.create_run(sample_run("run-f"))
        await store.append("run-f", [tool_result(0)])
        before = await log.types()
        # a batch repeating a stored (key, phase): nothing of it, and no event
        await _expect(StoreError, store.append("run-f", [tool_result(1), tool_result(0)]))
        await _expect(StoreError, store.append("run-f", [tool_result(2), tool_result(2)]))
        done = sample_run("run-f").with_status("completed")
        await _expect(StoreError, store.finish_run(done, [tool_result(3), tool_result(0)]))
        assert (await store.get_run("run-f")).status == "running"
        # an unknown run, a lost lease
        await _expect(StoreError, store.append("nope", [tool_result(0)]))
        await store.acquire_lease("run-f", "w1", 60)
        await _expect(LeaseLost, store.append("run-f", [tool_result(4)], lease="w2"))
        await _expect(LeaseLost, store.finish_run(done, [tool_result(5)], lease="w2"))
        await _expect(LeaseLost, store.update_run(done, lease="w2"))
        await _expect(StoreError, store.create_run(sample_run("run-f")))
        assert await log.types() == before
        # a decision refused because the run is over
        await store.put_task(sample_task("ap-x", "run-f"))
        await store.finish_run(done, [], lease="w1")
        after = await log.types()
        await _expect(TaskConflict, store.resolve_task("ap-x", {"approved": True}, by="x"))
        assert await log.types() == after
        assert [t for t, _ in after][-2:] == ["approval.requested", "run.completed"]

    async def test_with_the_outbox_off_nothing_is_written_to_it(
            self, plain_store: RunStore) -> None:
        store = plain_store
        assert store.outbox is False
        run = sample_run("run-o")
        await store.create_run(run)
        await store.append("run-o", [tool_result(0)])
        await store.put_task(sample_task("ap-o", "run-o"))
        await store.suspend_run(run.with_status("suspended"), [], waiting_on=["ap-o"])
        await store.resolve_task("ap-o", {"approved": True}, by="x")
        await store.finish_run(run.with_status("failed", error={"type": "X"}),
                               [tool_result(1)])
        assert await store.read_outbox(0, 100) == []

    async def test_read_claims_mark_retires_prune_deletes(self, outbox_store: RunStore) -> None:
        store = outbox_store
        for i in range(5):
            await store.create_run(sample_run(f"run-{i}", created_at=_T0 + i))
        first = await store.read_outbox(0, 2)
        assert [e.id for _, e in first] == ["run-0:started", "run-1:started"]
        second = await store.read_outbox(0, 10)  # the claimed rows are skipped
        assert [e.id for _, e in second] == ["run-2:started", "run-3:started",
                                             "run-4:started"]
        assert await store.read_outbox(0, 10) == []
        assert await store.mark_published([p for p, _ in first]) == 2
        assert await store.mark_published([p for p, _ in first]) == 0  # already
        assert await store.mark_published([]) == 0
        assert await store.prune_outbox(0.0) == 0  # nothing published that long ago
        assert await store.prune_outbox(4_000_000_000.0) == 2
        # after= skips positions up to it; a short claim runs out and the rows come back
        last = second[-1][0]
        assert await store.read_outbox(last, 10) == []
        await store.create_run(sample_run("run-9"))
        short = await store.read_outbox(0, 10, claim_s=0.001)
        assert [e.id for _, e in short] == ["run-9:started"]
        for _ in range(500):
            await asyncio.sleep(0.01)
            back = await store.read_outbox(0, 10, claim_s=30)
            if back:
                break
        assert [e.id for _, e in back] == ["run-9:started"], "a claim that ran out"

    async def test_bad_arguments_are_config_errors(self, outbox_store: RunStore) -> None:
        store = outbox_store
        bad_reads: list[dict[str, Any]] = [
            {"after": -1}, {"after": "0"}, {"after": True}, {"after": 1.5},
            {"limit": 0}, {"limit": 10_001}, {"limit": "5"}, {"limit": None},
            {"claim_s": 0}, {"claim_s": math.nan}, {"claim_s": math.inf}, {"claim_s": -1},
        ]
        for kwargs in bad_reads:
            args = {"after": 0, "limit": 10, **kwargs}
            await _expect(ConfigError, store.read_outbox(
                args["after"], args["limit"], claim_s=args.get("claim_s", 30.0)))
        for positions in ("12", b"1", [1.5], [True], [None], [[1]], 5, range(20_000)):
            await _expect(ConfigError, store.mark_published(positions))  # type: ignore[arg-type]
        for before in (math.nan, math.inf, "yesterday", None, True):
            await _expect(ConfigError, store.prune_outbox(before))  # type: ignore[arg-type]
        # huge or unknown positions are no error: nothing is marked
        assert await store.mark_published([2**62, -5, 0]) == 0

    async def test_deleting_a_conversation_deletes_its_events(
            self, outbox_store: RunStore) -> None:
        store = outbox_store
        log = _Log(store)
        await store.create_run(sample_run("run-a", tenant="t", conversation="chat"))
        await store.append("run-a", [tool_result(0)])
        await store.create_run(sample_run("run-b", tenant="u", conversation="chat"))
        assert await store.delete_conversation("chat", tenant="t") == 1
        assert [e.id for e in await log.events()] == ["run-b:started"]

    async def test_hostile_ids_and_payloads_round_trip(self, outbox_store: RunStore) -> None:
        store = outbox_store
        log = _Log(store)
        tenant = "acme' OR '1'='1 \U0001f600"
        await store.create_run(sample_run("run-h'\"; --", tenant=tenant, agent="a\u0301gent"))
        await store.append("run-h'\"; --", [tool_result(0, name="t\u00f6ol-\u202e" * 30)])
        events = await log.events()
        assert [e.run_id for e in events] == ["run-h'\"; --"] * 2
        assert all(e.tenant == tenant and e.agent == "a\u0301gent" for e in events)
        assert events[1].data["tool"] == "t\u00f6ol-\u202e" * 30
        assert Event.from_json(events[1].to_json()) == events[1]
        # ids too long for an event id still give events, each its own, the same each time
        long_id = "r" * 300
        await store.create_run(sample_run(long_id))
        await store.append(long_id, [tool_result(0), tool_result(1)])
        await store.finish_run(sample_run(long_id).with_status("completed"), [])
        longs = [e for e in await log.events() if e.run_id == long_id]
        assert len(longs) == 4 and len({e.id for e in longs}) == 4
        assert all(len(e.id) <= 256 for e in longs)
