"""The tenant half of the store conformance suite: every run carries a tenant and a user id,
stored with it, never changed by later writes, and ``list_runs`` filters by tenant so that one
tenant never sees another's runs."""

from __future__ import annotations

from keel.core import ConfigError, UserError
from keel.store import RunFilter, RunRecord, RunStore
from keel.testing._store_conformance import sample_entry, sample_run

__all__ = ["HOSTILE_IDS", "TenantConformance"]

_T0 = 1_700_000_000.0

#: Tenant and user ids a store must keep exactly and match only exactly: SQL-ish text,
#: quotes, LIKE wildcards, backslashes, unicode (combining marks, RTL, emoji, CJK) and the
#: longest id a run may carry.
HOSTILE_IDS: tuple[str, ...] = (
    "acme' OR '1'='1", 'x"; DROP TABLE runs; --', "%", "_", "a%b_c\\", "*",
    "Müller & Söhne GmbH", "e\u0301cole", "שלום", "\U0001f600 tenant", "株式会社", " spaced ",
    "t" * 200,
)


def _ids(runs: list[RunRecord]) -> list[str]:
    return [r.run_id for r in runs]


class TenantConformance:
    """Tenants and users on runs: round trips, isolation in ``list_runs``, immutability."""

    async def test_tenant_and_user_round_trip_exactly(self, store: RunStore) -> None:
        for i, value in enumerate(HOSTILE_IDS):
            record = sample_run(f"run-{i}", created_at=_T0 + i, tenant=value, user=value[::-1])
            await store.create_run(record)
            got = await store.get_run(record.run_id)
            assert (got.tenant, got.user) == (value, value[::-1]), value
        await store.create_run(sample_run("run-none", created_at=_T0 - 1))
        none = await store.get_run("run-none")
        assert (none.tenant, none.user) == (None, None)
        listed = {r.run_id: (r.tenant, r.user) for r in await store.list_runs()}
        assert listed["run-0"] == (HOSTILE_IDS[0], HOSTILE_IDS[0][::-1])
        assert listed["run-none"] == (None, None)

    async def test_list_runs_by_tenant_never_shows_another_tenants_runs(
            self, store: RunStore) -> None:
        tenants = ["acme", "globex", None, "acme' OR '1'='1", "%"]
        for i in range(20):
            await store.create_run(sample_run(
                f"run-{i:02d}", agent="support" if i % 2 else "billing",
                status="completed" if i % 3 else "running", created_at=_T0 + i,
                tenant=tenants[i % len(tenants)], user=f"user-{i}"))
        everyone = await store.list_runs(RunFilter(limit=100))
        for tenant in tenants:
            if tenant is None:
                continue
            mine = await store.list_runs(RunFilter(tenant=tenant, limit=100))
            expected = [r.run_id for r in everyone if r.tenant == tenant]
            assert _ids(mine) == expected and len(expected) == 4, tenant
            assert all(r.tenant == tenant for r in mine)
        # a filter that looks like SQL or a wildcard matches only that exact id
        assert await store.list_runs(RunFilter(tenant="acme' OR 'x'='x")) == []
        assert await store.list_runs(RunFilter(tenant="ac%")) == []
        assert await store.list_runs(RunFilter(tenant="ACME")) == []
        # combined with the other filters and paged, still only the tenant's runs
        acme = [r for r in everyone if r.tenant == "acme"]
        support = await store.list_runs(RunFilter(tenant="acme", agent="support"))
        assert _ids(support) == [r.run_id for r in acme if r.agent == "support"]
        done = await store.list_runs(RunFilter(tenant="acme", status="completed"))
        assert _ids(done) == [r.run_id for r in acme if r.status == "completed"]
        pages = [await store.list_runs(RunFilter(tenant="acme", limit=3, offset=o))
                 for o in (0, 3, 6)]
        assert [len(p) for p in pages] == [3, 1, 0]
        assert [r.run_id for p in pages for r in p] == _ids(acme)

    async def test_later_writes_keep_the_runs_tenant_and_user(self, store: RunStore) -> None:
        """A record written back with another tenant (a bug, or a forged record) does not
        move the run to that tenant: the ids are fixed when the run is created."""
        created = sample_run("run-t", tenant="acme", user="alice")
        await store.create_run(created)
        await store.append("run-t", [sample_entry(0)])
        forged = created.with_status("running", tenant="globex", user="mallory",
                                     updated_at=_T0 + 1)
        await store.update_run(forged)
        await store.finish_run(forged.with_status("completed", output="ok",
                                                  updated_at=_T0 + 2), [sample_entry(1)])
        got = await store.get_run("run-t")
        assert (got.status, got.output) == ("completed", "ok")
        assert (got.tenant, got.user) == ("acme", "alice")
        assert await store.list_runs(RunFilter(tenant="globex")) == []
        cancelled = await store.request_cancel("run-t", reason="test", by="ops")
        assert (cancelled.tenant, cancelled.user) == ("acme", "alice")

    async def test_leases_and_claims_return_the_tenant(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-c", tenant="acme", user="bob"))
        leased = await store.acquire_lease("run-c", "w1", 60)
        assert (leased.tenant, leased.user) == ("acme", "bob")
        await store.release_lease("run-c", "w1")
        claimed = await store.claim_runs("w2", 60)
        assert [(r.run_id, r.tenant, r.user) for r in claimed] == [("run-c", "acme", "bob")]

    async def test_a_nonsense_tenant_filter_is_refused(self, store: RunStore) -> None:
        for bad in ("", "   ", "x" * 10_000, "a\x00b", "a\nb", "\x1b[31m", 7):
            message = ""
            try:
                RunFilter(tenant=bad)  # type: ignore[arg-type]
            except (UserError, ConfigError) as exc:
                message = str(exc)
            assert "tenant" in message, f"RunFilter(tenant={bad!r}) was accepted"
        assert await store.list_runs() == []
