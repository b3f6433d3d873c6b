"""The fleet half of the store conformance suite: leases, fencing, claiming runnable runs,
cancel requests, pruning and human tasks (approvals and escalations).

What it requires of a store, beyond the docstrings of the seam:

* a live lease excludes every other owner (``RunLeased`` names the holder); an expired one,
  or one held by ``steal_from``, is taken over; ``renew_leases`` extends only the owner's;
* ``lease=`` on ``append`` / ``update_run`` / ``finish_run`` / ``suspend_run`` fences the
  write: a stale owner gets ``LeaseLost`` and nothing is stored;
* ``claim_runs`` hands each runnable run (``running``, lease absent or expired) to exactly
  one of many concurrent claimers, and never a suspended, finished or live-leased run;
* ``update_run`` and ``finish_run`` keep the lease fields and ``cancel_requested``, and a
  record leaving ``running`` releases the lease;
* ``prune_runs`` deletes only the chosen statuses older than the cut-off, with journals and
  tasks;
* a task is put once, claimed by one person, resolved once; ``resolve_task`` appends the
  decision and wakes (``suspended`` -> ``running``, no lease) or closes the run in one
  transaction, and changes nothing when it refuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from keel.core import LeaseLost, RunLeased, RunNotFound, StoreError, TaskConflict, TaskNotFound
from keel.store import HumanTask, RunFilter, RunStore, TaskFilter
from keel.testing._store_conformance import _raises, assert_same, sample_entry, sample_run

__all__ = ["FleetConformance", "sample_task"]


def sample_task(task_id: str = "ap-1", run_id: str = "run-1", *, kind: str = "approval",
                created_at: float = 1_700_000_000.0, **changes: Any) -> HumanTask:
    """An open task with every field that a new task has filled in."""
    fields: dict[str, Any] = {
        "task_id": task_id, "run_id": run_id, "kind": kind,
        "step_key": f"agent/turn:0/tool:refund#0/{kind}", "queue": "billing",
        "status": "open", "created_at": created_at, "due_at": created_at + 3600,
        "data": {"tool": "refund", "arguments": {"amount": 250}, "reason": "amount > 100",
                 "note": "caf\u00e9 \u2603 \U0001f600"},
    }
    fields.update(changes)
    return HumanTask(**fields)


class FleetConformance:
    """Leases, claiming, cancellation, pruning and human tasks."""

    # ---------------------------------------------------------------------------- leases

    async def test_lease_fields_round_trip_on_create(self, store: RunStore) -> None:
        record = sample_run("run-l0", lease_owner="w1", lease_expires_at=time.time() + 60,
                            deadline_at=1_800_000_000.5, cancel_requested=True)
        await store.create_run(record)
        assert_same(await store.get_run("run-l0"), record, "a leased record")

    async def test_a_live_lease_excludes_other_owners(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-l1"))
        got = await store.acquire_lease("run-l1", "w1", 60)
        assert got.lease_owner == "w1" and got.lease_expires_at is not None
        assert got.lease_expires_at > time.time() + 50
        assert got.status == "running", "acquiring a lease must not change the status"
        err = await _raises(RunLeased, store.acquire_lease("run-l1", "w2", 60))
        assert getattr(err, "holder", None) == "w1" and "w1" in str(err)
        again = await store.acquire_lease("run-l1", "w1", 120)  # the holder renews
        assert again.lease_owner == "w1"
        stolen = await store.acquire_lease("run-l1", "w2", 60, steal_from="w1")
        assert stolen.lease_owner == "w2", "steal_from names the holder known to be dead"
        await _raises(RunLeased, store.acquire_lease("run-l1", "w3", 60, steal_from="w1"))
        await _raises(RunNotFound, store.acquire_lease("nope", "w1", 60))

    async def test_an_expired_lease_is_taken_over(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-l2"))
        await store.acquire_lease("run-l2", "w1", 0.05)
        await asyncio.sleep(0.15)
        got = await store.acquire_lease("run-l2", "w2", 60)
        assert got.lease_owner == "w2"
        assert await store.renew_leases("w1", 60) == set(), "w1 must see that it lost the run"

    async def test_renew_and_release(self, store: RunStore) -> None:
        for i in range(3):
            await store.create_run(sample_run(f"run-r{i}", created_at=1_700_000_000.0 + i))
        await store.acquire_lease("run-r0", "w1", 0.5)
        await store.acquire_lease("run-r1", "w1", 0.5)
        await store.acquire_lease("run-r2", "w2", 60)
        assert await store.renew_leases("w1", 60) == {"run-r0", "run-r1"}
        await asyncio.sleep(0.6)  # past the first expiry: renewal kept them
        await _raises(RunLeased, store.acquire_lease("run-r0", "w3", 60))
        await store.release_lease("run-r0", "w2")  # not the holder: nothing happens
        assert (await store.get_run("run-r0")).lease_owner == "w1"
        await store.release_lease("run-r0", "w1")
        released = await store.get_run("run-r0")
        assert released.lease_owner is None and released.lease_expires_at is None
        assert await store.renew_leases("w1", 60) == {"run-r1"}
        await store.release_lease("nope", "w1")  # unknown runs are ignored

    async def test_fenced_writes_from_a_stale_owner_store_nothing(self, store: RunStore) -> None:
        record = sample_run("run-f")
        await store.create_run(record)
        await store.acquire_lease("run-f", "w1", 60)
        await store.append("run-f", [sample_entry(0)], lease="w1")
        await store.acquire_lease("run-f", "w2", 60, steal_from="w1")
        await _raises(LeaseLost, store.append("run-f", [sample_entry(1)], lease="w1"))
        done = record.with_status("completed", output="stale", updated_at=record.updated_at + 1)
        await _raises(LeaseLost, store.finish_run(done, [sample_entry(1)], lease="w1"))
        await _raises(LeaseLost, store.update_run(done, lease="w1"))
        await _raises(LeaseLost, store.suspend_run(done, [sample_entry(1)], waiting_on=[],
                                                   lease="w1"))
        assert await store.read_journal("run-f") == [sample_entry(0)]
        now = await store.get_run("run-f")
        assert now.status == "running" and now.output is None and now.lease_owner == "w2"
        await store.append("run-f", [sample_entry(1)], lease="w2")
        await store.finish_run(done, [sample_entry(2)], lease="w2")
        finished = await store.get_run("run-f")
        assert finished.status == "completed" and finished.output == "stale"
        assert finished.lease_owner is None, "a finished run keeps no lease"

    async def test_update_keeps_lease_fields_and_cancel_flag(self, store: RunStore) -> None:
        record = sample_run("run-u")
        await store.create_run(record)
        await store.acquire_lease("run-u", "w1", 60)
        await store.request_cancel("run-u")
        await store.update_run(dataclasses.replace(record, metadata={"step": 3}))
        got = await store.get_run("run-u")
        assert got.lease_owner == "w1" and got.cancel_requested is True
        assert got.metadata == {"step": 3}
        await store.update_run(record.with_status("failed", updated_at=record.updated_at + 1))
        failed = await store.get_run("run-u")
        assert failed.lease_owner is None and failed.lease_expires_at is None
        assert failed.cancel_requested is True

    async def test_request_cancel(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-c"))
        got = await store.request_cancel("run-c")
        assert got.cancel_requested is True
        assert (await store.get_run("run-c")).cancel_requested is True
        await _raises(RunNotFound, store.request_cancel("nope"))

    # -------------------------------------------------------------------------- claiming

    async def test_claim_runs_takes_only_runnable_runs(self, store: RunStore) -> None:
        t0 = 1_700_000_000.0
        specs: list[tuple[str, str, str]] = [
            ("c-free", "support", "running"), ("c-susp", "support", "suspended"),
            ("c-done", "support", "completed"), ("c-live", "support", "running"),
            ("c-dead", "support", "running"), ("c-other", "billing", "running"),
        ]
        for i, (run_id, agent, status) in enumerate(specs):
            await store.create_run(sample_run(run_id, agent=agent, status=status,  # type: ignore[arg-type]
                                              created_at=t0 + i, updated_at=t0 + i))
        await store.acquire_lease("c-live", "w9", 60)
        await store.acquire_lease("c-dead", "w8", 0.05)
        await asyncio.sleep(0.15)
        got = await store.claim_runs("w1", 60, agents=["support"], limit=10)
        assert [r.run_id for r in got] == ["c-free", "c-dead"], "least recently updated first"
        assert all(r.lease_owner == "w1" for r in got)
        assert (await store.get_run("c-dead")).lease_owner == "w1"
        assert await store.claim_runs("w2", 60, agents=["support"], limit=10) == []
        other = await store.claim_runs("w2", 60, limit=10)
        assert [r.run_id for r in other] == ["c-other"], "agents=None claims any agent"
        assert (await store.get_run("c-susp")).lease_owner is None

    async def test_claim_runs_skips_runs_another_engine_drives(self, store: RunStore) -> None:
        await store.create_run(sample_run("e-temporal", agent="support", metadata={
            "engine": "temporal", "workflow_id": "keel-run-e-temporal"}))
        await store.create_run(sample_run("e-keel", agent="support", metadata={"model": "m"}))
        got = await store.claim_runs("w1", 60, agents=["support"], limit=10)
        assert [r.run_id for r in got] == ["e-keel"]
        assert await store.claim_runs("w2", 60, limit=10) == []
        assert (await store.get_run("e-temporal")).lease_owner is None

    async def test_concurrent_claimers_never_share_a_run(self, store: RunStore) -> None:
        for i in range(20):
            await store.create_run(sample_run(f"q-{i:02d}", created_at=1_700_000_000.0 + i))
        batches = await asyncio.gather(*(store.claim_runs(f"w{n}", 60, limit=3)
                                         for n in range(10)))
        claimed = [r.run_id for batch in batches for r in batch]
        assert len(claimed) == len(set(claimed)), f"a run was claimed twice: {claimed}"
        assert len(claimed) == 20
        for batch, n in zip(batches, range(10), strict=True):
            for r in batch:
                assert (await store.get_run(r.run_id)).lease_owner == f"w{n}"

    # --------------------------------------------------------------------------- pruning

    async def test_prune_runs_deletes_old_finished_runs_only(self, store: RunStore) -> None:
        t0 = 1_700_000_000.0
        await store.create_run(sample_run("p-old", status="completed", updated_at=t0))
        await store.create_run(sample_run("p-oldfail", status="failed", updated_at=t0 + 1))
        await store.create_run(sample_run("p-new", status="completed", updated_at=t0 + 100))
        await store.create_run(sample_run("p-susp", status="suspended", updated_at=t0))
        await store.append("p-old", [sample_entry(0)])
        await store.put_task(sample_task("t-old", "p-old"))
        await store.put_task(sample_task("t-susp", "p-susp"))
        assert await store.prune_runs(before=t0 + 50) == 2
        await _raises(RunNotFound, store.get_run("p-old"))
        await _raises(RunNotFound, store.read_journal("p-old"))
        await _raises(TaskNotFound, store.get_task("t-old"))
        assert (await store.get_task("t-susp")).run_id == "p-susp"
        left = {r.run_id for r in await store.list_runs(RunFilter())}
        assert left == {"p-new", "p-susp"}
        assert await store.prune_runs(before=t0 + 50, statuses=["suspended"]) == 1
        assert await store.prune_runs(before=t0 + 50) == 0

    # ------------------------------------------------------------------------ human tasks

    async def test_tasks_round_trip_and_put_once(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-t", status="suspended"))
        task = sample_task("ap-rt", "run-t")
        assert await store.put_task(task) is True
        assert await store.put_task(dataclasses.replace(task, queue="other")) is False
        assert_same(await store.get_task("ap-rt"), task, "a task")
        await _raises(TaskNotFound, store.get_task("nope"))
        await _raises(RunNotFound, store.put_task(sample_task("ap-x", "no-run")))

    async def test_list_tasks_filters_and_orders_oldest_first(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-a", status="suspended"))
        await store.create_run(sample_run("run-b", status="suspended"))
        t0 = 1_700_000_000.0
        await store.put_task(sample_task("t3", "run-a", created_at=t0 + 3))
        await store.put_task(sample_task("t1", "run-b", created_at=t0 + 1, queue="shipping",
                                         kind="escalation"))
        await store.put_task(sample_task("t2", "run-a", created_at=t0 + 2))
        await store.put_task(sample_task("t0", "run-b", created_at=t0 + 2))

        def ids(tasks: list[HumanTask]) -> list[str]:
            return [t.task_id for t in tasks]

        assert ids(await store.list_tasks()) == ["t1", "t0", "t2", "t3"]
        assert ids(await store.list_tasks(TaskFilter(kind="approval"))) == ["t0", "t2", "t3"]
        assert ids(await store.list_tasks(TaskFilter(queue="shipping"))) == ["t1"]
        assert ids(await store.list_tasks(TaskFilter(run_id="run-a"))) == ["t2", "t3"]
        assert ids(await store.list_tasks(TaskFilter(limit=2, offset=1))) == ["t0", "t2"]
        await store.claim_task("t2", "ann")
        assert ids(await store.list_tasks(TaskFilter(status="open"))) == ["t1", "t0", "t3"]
        assert ids(await store.list_tasks(TaskFilter(status="claimed"))) == ["t2"]

    async def test_claim_task(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-ct", status="suspended"))
        await store.put_task(sample_task("t", "run-ct"))
        claimed = await store.claim_task("t", "ann")
        assert claimed.status == "claimed" and claimed.claimed_by == "ann"
        assert claimed.claimed_at is not None
        assert (await store.claim_task("t", "ann")).claimed_by == "ann"
        await _raises(TaskConflict, store.claim_task("t", "bob"))
        assert (await store.get_task("t")).claimed_by == "ann"
        await _raises(TaskNotFound, store.claim_task("nope", "ann"))

    async def test_resolve_task_wakes_the_run(self, store: RunStore) -> None:
        record = sample_run("run-w", status="suspended")
        await store.create_run(record)
        await store.append("run-w", [sample_entry(0, "k/approval", "intent")])
        await store.put_task(sample_task("t", "run-w"))
        decision = {"approved": True, "comment": "ok \u2603"}
        entry = sample_entry(1, "k/approval", "result", data=decision)
        done = await store.resolve_task("t", decision, by="ann", entry=entry)
        assert done.status == "resolved" and done.resolution == decision
        assert done.by == "ann" and done.resolved_at is not None
        assert_same(await store.get_task("t"), done, "the resolved task")
        run = await store.get_run("run-w")
        assert run.status == "running" and run.lease_owner is None, "runnable after decision"
        assert (await store.read_journal("run-w"))[-1] == entry
        claimed = await store.claim_runs("w1", 60)
        assert [r.run_id for r in claimed] == ["run-w"]

    async def test_resolve_task_refusals_change_nothing(self, store: RunStore) -> None:
        record = sample_run("run-x", status="suspended")
        await store.create_run(record)
        await store.put_task(sample_task("t1", "run-x"))
        await store.put_task(sample_task("t2", "run-x", step_key="k2"))
        await store.resolve_task("t1", {"approved": True}, by="ann",
                                 entry=sample_entry(0, "k1", "result"))
        journal = await store.read_journal("run-x")
        err = await _raises(TaskConflict, store.resolve_task(
            "t1", {"approved": False}, by="bob", entry=sample_entry(1, "k1b")))
        assert "already decided" in str(err) and "ann" in str(err)
        # t2's decision repeats a journal key: refused, t2 stays open
        await _raises(TaskConflict, store.resolve_task(
            "t2", {"approved": True}, by="bob", entry=sample_entry(5, "k1", "result")))
        assert (await store.get_task("t2")).status == "open"
        assert await store.read_journal("run-x") == journal
        await _raises(TaskNotFound, store.resolve_task("nope", {}, by="ann"))
        finished = (await store.get_run("run-x")).with_status("cancelled", updated_at=2e9)
        await store.update_run(finished)
        err = await _raises(TaskConflict, store.resolve_task("t2", {}, by="ann"))
        assert "cancelled" in str(err)
        assert (await store.get_task("t2")).status == "open"

    async def test_resolve_task_can_close_the_run(self, store: RunStore) -> None:
        record = sample_run("run-cl", status="suspended")
        await store.create_run(record)
        await store.put_task(sample_task("esc", "run-cl", kind="escalation"))
        closed = record.with_status("completed", output="a human answered", updated_at=2e9)
        await store.resolve_task("esc", {"answer": "a human answered"}, by="ann",
                                 close=closed)
        got = await store.get_run("run-cl")
        assert got.status == "completed" and got.output == "a human answered"

    async def test_resolve_task_refuses_a_close_record_of_another_run(
            self, store: RunStore) -> None:
        await store.create_run(sample_run("run-a", status="suspended"))
        await store.create_run(sample_run("run-b", status="suspended"))
        await store.put_task(sample_task("t", "run-a"))
        wrong = sample_run("run-b").with_status("completed", output="x", updated_at=2e9)
        await _raises(StoreError, store.resolve_task("t", {}, by="ann", close=wrong))
        assert (await store.get_task("t")).status == "open"
        assert (await store.get_run("run-b")).status == "suspended"

    async def test_resolve_on_a_running_run_keeps_its_status(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-rr"))
        await store.acquire_lease("run-rr", "w1", 60)
        await store.put_task(sample_task("t", "run-rr"))
        await store.resolve_task("t", {"approved": True}, by="ann")
        got = await store.get_run("run-rr")
        assert got.status == "running" and got.lease_owner == "w1"

    async def test_suspend_run_parks_or_wakes(self, store: RunStore) -> None:
        record = sample_run("run-s")
        await store.create_run(record)
        await store.acquire_lease("run-s", "w1", 60)
        await store.put_task(sample_task("a", "run-s"))
        await store.put_task(sample_task("b", "run-s", step_key="kb"))
        status = await store.suspend_run(record.with_status("suspended"), [sample_entry(0)],
                                         waiting_on=["a", "b"], lease="w1")
        assert status == "suspended"
        got = await store.get_run("run-s")
        assert got.status == "suspended" and got.lease_owner is None
        assert await store.read_journal("run-s") == [sample_entry(0)]
        await store.resolve_task("a", {"approved": True}, by="ann")
        await store.acquire_lease("run-s", "w1", 60)
        # the worker suspends again for b, but b is decided meanwhile: the run stays runnable
        await store.resolve_task("b", {"approved": True}, by="ann")
        status = await store.suspend_run(record.with_status("suspended"), [],
                                         waiting_on=["b"], lease="w1")
        assert status == "running"
        got = await store.get_run("run-s")
        assert got.status == "running" and got.lease_owner is None
        try:
            await store.suspend_run(record.with_status("suspended"), [sample_entry(0)],
                                    waiting_on=["b"])
        except StoreError:
            pass
        else:
            raise AssertionError("suspend_run stored a repeated journal entry")
