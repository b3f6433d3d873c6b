"""The isolation half of the store conformance suite: calls scoped to a tenant (``tenant=``
on ``get_run``, ``read_journal``, ``request_cancel``, ``get_task``, ``claim_task``,
``resolve_task``, and ``TaskFilter(tenant=)``) see and act on that tenant's runs and tasks only.

What it requires of a store:

* a scoped call of another tenant's run or task, or of one stored without a tenant, raises
  RunNotFound / TaskNotFound with the message of an unknown id, and changes nothing (every
  run, journal and task reads back the same, unscoped, afterwards);
* the same call scoped to the owner, or unscoped, works as before;
* tenant ids that look like SQL or wildcards match only themselves;
* ``list_tasks(TaskFilter(tenant=))`` returns only the tasks of that tenant's runs, with the
  other filters and paging; a nonsense tenant in a TaskFilter is refused like RunFilter's.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from keel.core import ConfigError, RunNotFound, StoreError, TaskNotFound, UserError
from keel.store import HumanTask, JournalEntry, RunFilter, RunRecord, RunStore, TaskFilter
from keel.testing._store_conformance import _raises, assert_same, sample_entry, sample_run
from keel.testing._store_conformance_fleet import sample_task

__all__ = ["IsolationConformance"]

_T0 = 1_700_000_000.0
#: Run-id prefix -> the tenant of that run (None: stored without one). "h" and "p" hold ids
#: that look like SQL and a LIKE wildcard.
_TENANTS: dict[str, str | None] = {
    "a": "acme", "g": "globex", "n": None, "h": "acme' OR '1'='1", "p": "%",
}
_GATE = "agent/turn:0/tool:refund#0"

Snapshot = tuple[list[RunRecord], dict[str, list[JournalEntry]], list[HumanTask]]


async def _world(store: RunStore) -> None:
    """One suspended run per tenant (``<p>-run``), each with a journal holding an approval
    request, an open approval (``<p>-ap``) and an open escalation (``<p>-es``); and an acme
    run with an empty journal (``a-empty``)."""
    for i, (prefix, tenant) in enumerate(_TENANTS.items()):
        run_id = f"{prefix}-run"
        await store.create_run(sample_run(run_id, status="suspended", created_at=_T0 + i,
                                          tenant=tenant, user=f"user-{prefix}"))
        await store.append(run_id, [sample_entry(0),
                                    sample_entry(1, f"{_GATE}/approval", "intent")])
        await store.put_task(sample_task(f"{prefix}-ap", run_id, created_at=_T0 + 2 * i,
                                         step_key=f"{_GATE}/approval"))
        await store.put_task(sample_task(f"{prefix}-es", run_id, kind="escalation",
                                         created_at=_T0 + 2 * i + 1,
                                         step_key=f"{_GATE}/escalation"))
    await store.create_run(sample_run("a-empty", created_at=_T0 + 10, tenant="acme"))


async def _snapshot(store: RunStore) -> Snapshot:
    """Everything in the store, read unscoped."""
    runs = await store.list_runs(RunFilter(limit=1000))
    journals = {r.run_id: await store.read_journal(r.run_id) for r in runs}
    return runs, journals, await store.list_tasks(TaskFilter(limit=1000))


def _assert_unchanged(got: Snapshot, want: Snapshot, call: str) -> None:
    assert_same(got[0], want[0], f"the runs after a refused {call}")
    assert sorted(got[1]) == sorted(want[1])
    for run_id, entries in want[1].items():
        assert_same(got[1][run_id], entries, f"the journal of {run_id} after a refused {call}")
    assert_same(got[2], want[2], f"the tasks after a refused {call}")


async def _refused(store: RunStore, kind: type[StoreError], call: Awaitable[Any], the_id: str,
                   unknown: Awaitable[Any], unknown_id: str) -> None:
    """``call`` (of ``the_id``, not visible to its tenant) raises ``kind`` with the message of
    an unknown id (``unknown``, of ``unknown_id``), and changes nothing in the store."""
    before = await _snapshot(store)
    err = await _raises(kind, call)
    plain = await _raises(kind, unknown)
    assert str(err) == str(plain).replace(repr(unknown_id), repr(the_id)), (
        f"refused as {err!r}: the message must be an unknown id's ({plain!r}), never say "
        "that it exists elsewhere")
    _assert_unchanged(await _snapshot(store), before, repr(call))


def _others(prefix: str) -> list[str]:
    """The run prefixes not visible to ``prefix``'s tenant (another tenant, or none)."""
    mine = _TENANTS[prefix]
    return [p for p, t in _TENANTS.items() if t != mine or t is None]


class IsolationConformance:
    """Tenant-scoped reads and writes of one run or task, and tasks listed by tenant."""

    async def test_get_run_and_read_journal_are_scoped(self, store: RunStore) -> None:
        await _world(store)
        for prefix, tenant in _TENANTS.items():
            if tenant is None:
                continue
            run_id = f"{prefix}-run"
            assert_same(await store.get_run(run_id, tenant=tenant), await store.get_run(run_id),
                        "a run read by its tenant")
            assert_same(await store.read_journal(run_id, tenant=tenant),
                        await store.read_journal(run_id), "a journal read by its tenant")
            for other in _others(prefix):
                theirs = f"{other}-run"
                await _refused(store, RunNotFound, store.get_run(theirs, tenant=tenant), theirs,
                               store.get_run("zz-run", tenant=tenant), "zz-run")
                await _refused(store, RunNotFound, store.read_journal(theirs, tenant=tenant),
                               theirs, store.read_journal("zz-run", tenant=tenant), "zz-run")
        assert await store.read_journal("a-empty", tenant="acme") == []
        await _raises(RunNotFound, store.read_journal("a-empty", tenant="globex"))
        await _raises(RunNotFound, store.get_run("p-run", tenant="_"))  # a wildcard is text
        await _raises(RunNotFound, store.get_run("a-run", tenant="ACME"))
        await _raises(RunNotFound, store.get_run("a-run", tenant="acme' OR 'x'='x"))

    async def test_request_cancel_is_scoped(self, store: RunStore) -> None:
        await _world(store)
        for other in _others("a"):
            theirs = f"{other}-run"
            await _refused(store, RunNotFound,
                           store.request_cancel(theirs, reason="r", by="mallory", tenant="acme"),
                           theirs, store.request_cancel("zz-run", tenant="acme"), "zz-run")
        got = await store.request_cancel("a-run", reason="r", by="ops", tenant="acme")
        assert got.cancel_requested and got.tenant == "acme"
        assert (await store.get_run("a-run")).cancel_requested
        assert not (await store.get_run("g-run")).cancel_requested
        unscoped = await store.request_cancel("n-run")
        assert unscoped.cancel_requested, "an unscoped call works as before"

    async def test_get_task_is_scoped(self, store: RunStore) -> None:
        await _world(store)
        for prefix, tenant in _TENANTS.items():
            if tenant is None:
                continue
            for kind in ("ap", "es"):
                mine = f"{prefix}-{kind}"
                assert_same(await store.get_task(mine, tenant=tenant),
                            await store.get_task(mine), "a task read by its tenant")
                for other in _others(prefix):
                    theirs = f"{other}-{kind}"
                    await _refused(store, TaskNotFound, store.get_task(theirs, tenant=tenant),
                                   theirs, store.get_task("zz-ap", tenant=tenant), "zz-ap")

    async def test_claim_task_is_scoped(self, store: RunStore) -> None:
        await _world(store)
        for other in _others("g"):
            for kind in ("ap", "es"):
                theirs = f"{other}-{kind}"
                await _refused(store, TaskNotFound,
                               store.claim_task(theirs, "mallory", tenant="globex"), theirs,
                               store.claim_task("zz-es", "mallory", tenant="globex"), "zz-es")
        claimed = await store.claim_task("g-es", "gina", tenant="globex")
        assert claimed.status == "claimed" and claimed.claimed_by == "gina"
        assert (await store.get_task("a-es")).status == "open"
        assert (await store.claim_task("n-es", "ned")).claimed_by == "ned", "unscoped works"

    async def test_resolve_task_is_scoped(self, store: RunStore) -> None:
        await _world(store)
        decision = {"approved": True, "comment": "fine"}
        for other in _others("a"):
            theirs = f"{other}-ap"
            close = (await store.get_run(f"{other}-run")).with_status(
                "completed", output="forged", updated_at=2e9)
            entry = sample_entry(2, f"{_GATE}/approval", "result", data=decision)
            await _refused(store, TaskNotFound, store.resolve_task(
                theirs, decision, by="mallory", entry=entry, tenant="acme"), theirs,
                store.resolve_task("zz-ap", decision, by="mallory", tenant="acme"), "zz-ap")
            await _refused(store, TaskNotFound, store.resolve_task(
                f"{other}-es", {"action": "answer"}, by="mallory", close=close,
                tenant="acme"), f"{other}-es",
                store.resolve_task("zz-es", {}, by="mallory", tenant="acme"), "zz-es")
        entry = sample_entry(2, f"{_GATE}/approval", "result", data=decision)
        done = await store.resolve_task("a-ap", decision, by="ann", entry=entry, tenant="acme")
        assert done.status == "resolved" and done.by == "ann"
        assert (await store.get_run("a-run")).status == "running", "the decision woke it"
        assert (await store.read_journal("a-run", tenant="acme"))[-1] == entry
        for other in _others("a"):
            assert (await store.get_run(f"{other}-run")).status == "suspended"

    async def test_list_tasks_by_tenant(self, store: RunStore) -> None:
        await _world(store)
        everything = await store.list_tasks(TaskFilter(limit=1000))
        owners = {r.run_id: r.tenant for r in await store.list_runs(RunFilter(limit=1000))}
        for tenant in _TENANTS.values():
            if tenant is None:
                continue
            mine = await store.list_tasks(TaskFilter(tenant=tenant))
            want = [t for t in everything if owners[t.run_id] == tenant]
            assert_same(mine, want, f"the tasks of tenant {tenant!r}")
            assert len(mine) == 2
        acme = [t.task_id for t in await store.list_tasks(TaskFilter(tenant="acme",
                                                                      kind="escalation"))]
        assert acme == ["a-es"]
        pages = [await store.list_tasks(TaskFilter(tenant="acme", limit=1, offset=o))
                 for o in (0, 1, 2)]
        assert [[t.task_id for t in p] for p in pages] == [["a-ap"], ["a-es"], []]
        await store.claim_task("a-ap", "ann")
        claimed = await store.list_tasks(TaskFilter(tenant="acme", status="claimed"))
        assert [t.task_id for t in claimed] == ["a-ap"]
        assert await store.list_tasks(TaskFilter(tenant="globex", status="claimed")) == []
        for stranger in ("_", "ac%", "ACME", "acme' OR 'x'='x", "nobody"):
            assert await store.list_tasks(TaskFilter(tenant=stranger)) == [], stranger
        assert len(await store.list_tasks(TaskFilter(limit=1000))) == len(everything)

    async def test_a_nonsense_tenant_is_refused(self, store: RunStore) -> None:
        for bad in ("", "   ", "x" * 10_000, "a\x00b", "a\nb", "\x1b[31m", 7):
            message = ""
            try:
                TaskFilter(tenant=bad)  # type: ignore[arg-type]
            except (UserError, ConfigError) as exc:
                message = str(exc)
            assert "tenant" in message, f"TaskFilter(tenant={bad!r}) was accepted"
        await store.create_run(sample_run("a-run", status="suspended", tenant="acme"))
        await store.put_task(sample_task("a-ap", "a-run"))
        for call in (store.get_run("a-run", tenant=""), store.get_task("a-ap", tenant=" "),
                     store.read_journal("a-run", tenant="a\x00b")):
            message = ""
            try:
                await call
            except UserError as exc:
                message = str(exc)
            assert "tenant" in message, "a scoped call with a nonsense tenant was accepted"
