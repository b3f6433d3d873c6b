"""The conversation part of the store conformance suite: a run may belong to a conversation
(thread); the id is stored with it and never changed by later writes, ``list_runs`` filters
by it in the query, ``read_journals`` reads several runs' journals, and
``delete_conversation`` removes one tenant's conversation - runs, journal entries and tasks -
and nothing else."""

from __future__ import annotations

from keel.core import ConfigError, UserError
from keel.store import RunFilter, RunRecord, RunStore
from keel.testing._store_conformance import sample_entry, sample_run
from keel.testing._store_conformance_fleet import sample_task
from keel.testing._store_conformance_tenants import HOSTILE_IDS

__all__ = ["ConversationConformance"]

_T0 = 1_700_000_000.0


def _ids(runs: list[RunRecord]) -> list[str]:
    return [r.run_id for r in runs]


class ConversationConformance:
    """Conversations on runs: round trips, the filter, several journals, deletion."""

    async def test_conversation_round_trips_and_is_fixed(self, store: RunStore) -> None:
        for i, value in enumerate(HOSTILE_IDS):
            await store.create_run(sample_run(f"run-{i}", created_at=_T0 + i,
                                              conversation=value))
            assert (await store.get_run(f"run-{i}")).conversation == value
        created = sample_run("run-x", tenant="acme", conversation="c-1")
        await store.create_run(created)
        await store.update_run(created.with_status("running", conversation="c-2",
                                                   updated_at=_T0 + 1))
        await store.finish_run(created.with_status("completed", conversation=None,
                                                   updated_at=_T0 + 2), [sample_entry(0)])
        assert (await store.get_run("run-x")).conversation == "c-1"
        await store.create_run(sample_run("run-none", created_at=_T0 - 1))
        assert (await store.get_run("run-none")).conversation is None

    async def test_list_runs_by_conversation(self, store: RunStore) -> None:
        convs = ["c-1", "c-2", None, "c-1' OR '1'='1", "%"]
        for i in range(15):
            await store.create_run(sample_run(
                f"run-{i:02d}", created_at=_T0 + i, tenant="acme" if i % 2 else "globex",
                conversation=convs[i % len(convs)]))
        everyone = await store.list_runs(RunFilter(limit=100))
        for conv in convs:
            if conv is None:
                continue
            mine = await store.list_runs(RunFilter(conversation=conv, limit=100))
            assert _ids(mine) == [r.run_id for r in everyone if r.conversation == conv], conv
            assert len(mine) == 3
        assert await store.list_runs(RunFilter(conversation="c-%")) == []
        assert await store.list_runs(RunFilter(conversation="C-1")) == []
        acme = await store.list_runs(RunFilter(conversation="c-1", tenant="acme"))
        assert _ids(acme) == [r.run_id for r in everyone
                              if r.conversation == "c-1" and r.tenant == "acme"]
        page = await store.list_runs(RunFilter(conversation="c-1", limit=1, offset=1))
        assert _ids(page) == _ids(await store.list_runs(RunFilter(conversation="c-1")))[1:2]

    async def test_read_journals_of_several_runs(self, store: RunStore) -> None:
        for name in ("a", "b", "empty"):
            await store.create_run(sample_run(name))
        await store.append("a", [sample_entry(0), sample_entry(1, data="\x00 ünï")])
        await store.append("b", [sample_entry(0, "k", "intent"), sample_entry(1, "k")])
        got = await store.read_journals(["b", "missing", "a", "empty", "a"])
        assert list(got) == ["b", "a", "empty"]
        assert got["a"] == await store.read_journal("a")
        assert got["b"] == await store.read_journal("b")
        assert got["empty"] == []
        assert await store.read_journals([]) == {}

    async def test_read_journals_of_many_runs(self, store: RunStore) -> None:
        ids = [f"run-{i:04d}" for i in range(620)]
        for i, run_id in enumerate(ids):
            await store.create_run(sample_run(run_id, created_at=_T0 + i))
            await store.append(run_id, [sample_entry(0, data=run_id)])
        got = await store.read_journals(list(reversed(ids)))
        assert list(got) == list(reversed(ids))
        assert all(entries[0].data == run_id for run_id, entries in got.items())

    async def test_delete_conversation_removes_one_tenants_turns_only(
            self, store: RunStore) -> None:
        plan = [("mine-1", "acme", "c-1"), ("mine-2", "acme", "c-1"),
                ("theirs", "globex", "c-1"), ("other", "acme", "c-2"),
                ("untenanted", None, "c-1")]
        for i, (run_id, tenant, conv) in enumerate(plan):
            await store.create_run(sample_run(run_id, created_at=_T0 + i, tenant=tenant,
                                              conversation=conv))
            await store.append(run_id, [sample_entry(0, data={"text": f"secret {run_id}"})])
            await store.put_task(sample_task(f"task-{run_id}", run_id))
        assert await store.delete_conversation("c-1", tenant="acme") == 2
        left = {r.run_id for r in await store.list_runs(RunFilter(limit=100))}
        assert left == {"theirs", "other", "untenanted"}
        assert {t.run_id for t in await store.list_tasks()} == left
        assert await store.read_journals(["mine-1", "mine-2"]) == {}
        assert (await store.read_journal("theirs"))[0].data == {"text": "secret theirs"}
        assert await store.delete_conversation("c-1", tenant="acme") == 0
        assert await store.delete_conversation("nope", tenant="acme") == 0
        assert await store.delete_conversation("c-1", tenant=None) == 1
        assert await store.delete_conversation("c-1", tenant="globex") == 1
        assert {r.run_id for r in await store.list_runs()} == {"other"}

    async def test_nonsense_conversation_ids_are_refused(self, store: RunStore) -> None:
        for bad in ("", "   ", "x" * 10_000, "a\x00b", "a\nb", "\x1b[31m", 7):
            for where in ("filter", "delete"):
                message = ""
                try:
                    if where == "filter":
                        RunFilter(conversation=bad)  # type: ignore[arg-type]
                    else:
                        await store.delete_conversation(bad, tenant="acme")  # type: ignore[arg-type]
                except (UserError, ConfigError) as exc:
                    message = str(exc)
                assert "conversation" in message, f"{where}: {bad!r} was accepted"
        message = ""
        try:
            await store.delete_conversation("c-1", tenant="a\x00b")
        except UserError as exc:
            message = str(exc)
        assert "tenant" in message
