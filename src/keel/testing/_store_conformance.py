"""A conformance suite for any :class:`~keel.store.RunStore`.

Subclass :class:`keel.testing.StoreConformance` in a test module and give the subclass a
``store`` fixture that yields a fresh, open, empty store for each test; every ``test_*``
method then runs against it::

    import pytest
    from keel.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            async with MyStore(tmp_path / "runs.db") as s:
                yield s

The tests are ``async def`` methods with plain asserts (pytest-asyncio in ``auto`` mode runs
them). What they require of a store, beyond the docstrings of the seam:

* every field of a :class:`RunRecord` and :class:`JournalEntry` comes back equal, including
  nested JSON, megabyte-sized strings and any ``str`` in a payload (NUL, emoji, lone
  surrogates; identifiers such as keys and names hold any text without those two);
* ``create_run`` on an existing id raises :class:`keel.StoreError` (not ``RunNotFound``) and
  changes neither the record nor its journal;
* within one run, ``(key, phase)`` is unique: an ``append`` whose batch repeats a pair, or
  repeats one already stored, raises :class:`keel.StoreError` and stores nothing of its
  batch - a journal holds one intent and one result per step;
* every call naming an unknown run raises :class:`keel.RunNotFound`, whose message points at
  ``keel runs list``, and creates nothing;
* ``list_runs`` is newest first (ties broken the same way every time, so pages neither repeat
  nor skip runs), filters by status and agent, and pages by ``limit``/``offset``;
* concurrent appends to one run (``asyncio.gather``) all land, none lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from keel.core import RunNotFound, StoreError
from keel.store import JournalEntry, Phase, RunFilter, RunRecord, RunStatus, RunStore

__all__ = ["RunConformance", "assert_same", "sample_entry", "sample_run"]

_T0 = 1_700_000_000.0


def sample_run(run_id: str = "run-1", *, agent: str = "support",
               status: RunStatus = "running", created_at: float = _T0,
               **changes: Any) -> RunRecord:
    """A run record with every field filled in; ``changes`` overrides any of them."""
    fields: dict[str, Any] = {
        "run_id": run_id, "agent": agent, "status": status,
        "input": {"messages": [{"role": "user", "text": "Where is my order?"}]},
        "created_at": created_at, "updated_at": created_at, "target": "app.agents:support",
        "metadata": {"tenant": "acme", "tags": ["a", "b"]},
    }
    fields.update(changes)
    return RunRecord(**fields)


def sample_entry(seq: int, key: str | None = None, phase: Phase = "result", *,
                 data: Any = None, **changes: Any) -> JournalEntry:
    """A journal entry for step ``key`` (default ``agent/turn:<seq>/model``)."""
    fields: dict[str, Any] = {
        "seq": seq, "key": key if key is not None else f"agent/turn:{seq}/model",
        "phase": phase, "kind": "model", "name": "gpt-4o",
        "input_hash": f"{seq:020x}", "data": {"seq": seq} if data is None else data,
        "created_at": _T0 + seq, "latency_ms": 12.5,
    }
    fields.update(changes)
    return JournalEntry(**fields)


async def _raises(kind: type[StoreError], call: Awaitable[Any]) -> StoreError:
    """Await ``call``, assert it raises ``kind``, and return the error."""
    try:
        await call
    except kind as exc:
        return exc
    except Exception as exc:  # the wrong error: say which
        raise AssertionError(
            f"expected {kind.__name__}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"expected {kind.__name__}, nothing was raised")


def _canonical(value: Any) -> str:
    """JSON text that tells ``True`` from ``1`` and ``1`` from ``1.0`` (``==`` does not)."""
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return json.dumps(dataclasses.asdict(value), sort_keys=True, default=repr)


def assert_same(got: Any, want: Any, what: str) -> None:
    """Assert that a record, an entry or a list of them came back exactly as stored."""
    a, b = _canonical(got), _canonical(want)
    if got == want and a == b:
        return
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
              min(len(a), len(b)))
    start = max(0, at - 60)
    raise AssertionError(
        f"{what} changed in the store (as JSON, from character {start}):\n"
        f"  got  ...{a[start:at + 60]}...\n  sent ...{b[start:at + 60]}...")


def _keys(entries: list[JournalEntry]) -> list[tuple[str, str]]:
    return [(e.key, e.phase) for e in entries]


class RunConformance:
    """Runs and journals: the tests every RunStore must pass (``StoreConformance`` adds the
    fleet half)."""

    # ------------------------------------------------------------------ runs: round trips

    async def test_create_and_get_round_trip_every_field(self, store: RunStore) -> None:
        record = sample_run(
            "run-rt", agent="billing", status="suspended", created_at=_T0 + 0.125,
            updated_at=_T0 + 9.5, target=None,
            input={"nested": {"list": [1, 2.5, True, False, None, "x"], "empty": {}, "e": []},
                   "text": "café – 東京 – 🚀"},
            output=["done", {"n": 3}],
            error={"type": "ToolError", "message": "boom", "retryable": False},
            usage={"input_tokens": 10, "output_tokens": 20, "cost_usd": 0.00012},
            metadata={"tenant": "ünïcode", "deep": {"a": [{"b": None}]}})
        await store.create_run(record)
        assert_same(await store.get_run("run-rt"), record, "the record")
        assert await store.read_journal("run-rt") == []

    async def test_scalar_and_null_payloads_round_trip(self, store: RunStore) -> None:
        values: list[Any] = ["plain", 42, 10**20, 0.5, 1.0, True, None, [], {}]
        records = [sample_run(f"run-{i}", input=v, output=v) for i, v in enumerate(values)]
        for record in records:
            await store.create_run(record)
        for record in records:
            assert_same(await store.get_run(record.run_id), record, "the record")

    async def test_awkward_strings_round_trip(self, store: RunStore) -> None:
        # Payloads may hold any str; identifiers (keys, names) any text but NUL and surrogates.
        name = "tab:\t nl:\n quote:\"' backslash:\\ emoji:🦀 rtl:שלום %_*"
        text = f"nul:\x00 lone surrogate:\ud800 {name}"
        record = sample_run("run-str", agent=name, input={text: text}, metadata={"k": text})
        await store.create_run(record)
        entry = sample_entry(0, key=f"agent/tool:{name}", data=[text, {text: text}],
                             name=name)
        await store.append("run-str", [entry])
        assert_same(await store.get_run("run-str"), record, "the record")
        assert_same(await store.read_journal("run-str"), [entry], "the journal")

    async def test_large_payloads_round_trip(self, store: RunStore) -> None:
        big = "x" * 1_000_000 + "✓" * 1000
        record = sample_run("run-big", input={"doc": big}, output=big)
        await store.create_run(record)
        entries = [sample_entry(0, data={"doc": big}), sample_entry(1, data=[big, big])]
        await store.append("run-big", entries)
        assert_same(await store.get_run("run-big"), record, "a record with 1 MB strings")
        assert_same(await store.read_journal("run-big"), entries, "1 MB journal payloads")

    async def test_duplicate_create_is_refused_and_changes_nothing(self, store: RunStore) -> None:
        original = sample_run("run-dup")
        await store.create_run(original)
        await store.append("run-dup", [sample_entry(0)])
        clash = sample_run("run-dup", agent="other", status="failed", input="replaced")
        exc = await _raises(StoreError, store.create_run(clash))
        assert not isinstance(exc, RunNotFound), f"a duplicate id is not RunNotFound: {exc}"
        assert "run-dup" in str(exc), f"the error should name the run: {exc}"
        assert await store.get_run("run-dup") == original
        assert await store.read_journal("run-dup") == [sample_entry(0)]

    # ---------------------------------------------------------------------- the journal

    async def test_append_then_read_in_append_order(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-a"))
        await store.create_run(sample_run("run-b"))
        first = [sample_entry(0, "s/tool:refund#0", "intent", kind="tool", name="refund",
                              data={"args": {"amount": 5}}),
                 sample_entry(1, "s/tool:refund#0", "result", kind="tool", name="refund",
                              data={"ok": True})]
        second = [sample_entry(2, "s/turn:1/model")]
        # seq is whatever the caller wrote: the store keeps it, and keeps append order.
        third = [sample_entry(9, "s/turn:3/model"), sample_entry(3, "s/turn:2/model")]
        await store.append("run-a", first)
        await store.append("run-b", [sample_entry(0, "other")])
        await store.append("run-a", second)
        await store.append("run-a", [])
        await store.append("run-a", third)
        assert_same(await store.read_journal("run-a"), first + second + third, "the journal")
        assert_same(await store.read_journal("run-b"), [sample_entry(0, "other")], "journal")

    async def test_same_key_in_both_phases_and_in_other_runs(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-1"))
        await store.create_run(sample_run("run-2"))
        intent = sample_entry(0, "k", "intent")
        result = sample_entry(1, "k", "result")
        await store.append("run-1", [intent])
        await store.append("run-1", [result])
        await store.append("run-2", [intent, result])
        assert await store.read_journal("run-1") == [intent, result]
        assert await store.read_journal("run-2") == [intent, result]

    async def test_duplicate_key_phase_in_one_batch_stores_nothing(
            self, store: RunStore) -> None:
        await store.create_run(sample_run("run-u"))
        before = [sample_entry(0, "k0")]
        await store.append("run-u", before)
        batch = [sample_entry(1, "k1", "intent"), sample_entry(2, "k2"),
                 sample_entry(3, "k1", "intent")]
        exc = await _raises(StoreError, store.append("run-u", batch))
        assert not isinstance(exc, RunNotFound), f"a duplicate step is not RunNotFound: {exc}"
        got = await store.read_journal("run-u")
        assert _keys(got) == _keys(before), f"part of a failed batch was stored: {_keys(got)}"

    async def test_duplicate_key_phase_across_batches_stores_nothing(
            self, store: RunStore) -> None:
        await store.create_run(sample_run("run-u"))
        before = [sample_entry(0, "k0", "intent"), sample_entry(1, "k0", "result")]
        await store.append("run-u", before)
        for batch in ([sample_entry(2, "k0", "result")],
                      [sample_entry(2, "k1"), sample_entry(3, "k2"), sample_entry(4, "k0")]):
            await _raises(StoreError, store.append("run-u", batch))
            got = await store.read_journal("run-u")
            assert _keys(got) == _keys(before), f"a failed batch left entries: {_keys(got)}"
        await store.append("run-u", [sample_entry(2, "k1")])  # the store still works
        assert _keys(await store.read_journal("run-u")) == [*_keys(before), ("k1", "result")]

    async def test_concurrent_appends_to_one_run_all_land(self, store: RunStore) -> None:
        await store.create_run(sample_run("run-c"))
        batches = [[sample_entry(2 * i, f"step:{i}", "intent", data={"i": i, "p": "intent"}),
                    sample_entry(2 * i + 1, f"step:{i}", "result", data={"i": i, "p": "out"})]
                   for i in range(100)]
        singles = [[sample_entry(1000 + i, f"single:{i}")] for i in range(100)]
        await asyncio.gather(*(store.append("run-c", b) for b in batches + singles))
        journal = await store.read_journal("run-c")
        want = {(e.key, e.phase): e for b in batches + singles for e in b}
        got = {(e.key, e.phase): e for e in journal}
        assert len(journal) == len(want), f"{len(want)} appended, {len(journal)} read back"
        assert got == want, "concurrent appends lost or changed entries"
        position = {(e.key, e.phase): n for n, e in enumerate(journal)}
        for i in range(100):  # within a batch, entries keep their order
            assert position[(f"step:{i}", "intent")] < position[(f"step:{i}", "result")]

    # ------------------------------------------------------------------- unknown runs

    async def test_unknown_run_ids_raise_run_not_found(self, store: RunStore) -> None:
        await store.create_run(sample_run("known"))
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.get_run("nope"),
            lambda: store.read_journal("nope"),
            lambda: store.append("nope", [sample_entry(0)]),
            lambda: store.append("nope", [sample_entry(0), sample_entry(1)]),
            lambda: store.append("nope", []),
            lambda: store.update_run(sample_run("nope", status="completed")),
        ]
        for call in calls:
            exc = await _raises(RunNotFound, call())
            assert "keel runs list" in str(exc), f"the message should name the fix: {exc}"
        assert [r.run_id for r in await store.list_runs()] == ["known"], "a run appeared"
        assert await store.read_journal("known") == []

    # -------------------------------------------------------------------- updates

    async def test_update_run_replaces_the_record(self, store: RunStore) -> None:
        created = sample_run("run-up")
        await store.create_run(created)
        await store.append("run-up", [sample_entry(0)])
        steps: list[tuple[RunStatus, dict[str, Any]]] = [
            ("suspended", {"metadata": {"waiting_for": "approval"}}),
            ("running", {}),
            ("failed", {"error": {"type": "ModelError", "status": 503}}),
            ("completed", {"output": {"answer": "shipped"}, "error": None,
                           "usage": {"input_tokens": 5, "output_tokens": 7}}),
        ]
        current = created
        for n, (status, changes) in enumerate(steps, start=1):
            current = current.with_status(status, updated_at=_T0 + n, **changes)
            await store.update_run(current)
            assert_same(await store.get_run("run-up"), current, f"the record ({status})")
            listed = await store.list_runs(RunFilter(status=status))
            assert [r.run_id for r in listed] == ["run-up"], f"listing by {status}: {listed}"
        assert await store.list_runs(RunFilter(status="running")) == []
        assert await store.read_journal("run-up") == [sample_entry(0)], "update touched journal"

    async def test_finish_run_appends_and_updates_together(self, store: RunStore) -> None:
        created = sample_run("run-fin")
        await store.create_run(created)
        await store.append("run-fin", [sample_entry(0)])
        done = created.with_status("completed", output="ok", updated_at=_T0 + 1)
        await store.finish_run(done, [sample_entry(1), sample_entry(2)])
        assert_same(await store.get_run("run-fin"), done, "the finished record")
        assert await store.read_journal("run-fin") == [sample_entry(i) for i in range(3)]
        await store.finish_run(done.with_status("failed", updated_at=_T0 + 2), [])
        assert (await store.get_run("run-fin")).status == "failed"

    async def test_finish_run_is_all_or_nothing(self, store: RunStore) -> None:
        created = sample_run("run-fin2")
        await store.create_run(created)
        await store.append("run-fin2", [sample_entry(0)])
        clash = created.with_status("completed", output="never", updated_at=_T0 + 1)
        try:
            await store.finish_run(clash, [sample_entry(1), sample_entry(0)])
        except StoreError:
            pass
        else:
            raise AssertionError("finish_run accepted an entry that is already recorded")
        assert_same(await store.get_run("run-fin2"), created, "record after a failed finish")
        assert await store.read_journal("run-fin2") == [sample_entry(0)], "partial finish"
        try:
            await store.finish_run(sample_run("nope"), [sample_entry(0)])
        except RunNotFound:
            pass
        else:
            raise AssertionError("finish_run on an unknown run did not raise RunNotFound")

    # -------------------------------------------------------------------- listing

    async def test_list_runs_newest_first_with_filters(self, store: RunStore) -> None:
        specs: list[tuple[str, str, RunStatus]] = [
            ("r0", "support", "completed"), ("r1", "billing", "running"),
            ("r2", "support", "running"), ("r3", "support", "failed"),
            ("r4", "billing", "completed"), ("r5", "support", "running"),
            ("r6", "triage", "cancelled"),
        ]
        order = [3, 0, 6, 1, 5, 2, 4]  # created out of time order
        for i in order:
            run_id, agent, status = specs[i]
            await store.create_run(sample_run(run_id, agent=agent, status=status,
                                              created_at=_T0 + 10 * i))
        newest = [s[0] for s in reversed(specs)]

        def ids(runs: list[RunRecord]) -> list[str]:
            return [r.run_id for r in runs]

        assert ids(await store.list_runs()) == newest
        assert ids(await store.list_runs(RunFilter())) == newest
        assert ids(await store.list_runs(RunFilter(status="running"))) == ["r5", "r2", "r1"]
        assert ids(await store.list_runs(RunFilter(agent="support"))) == ["r5", "r3", "r2", "r0"]
        assert ids(await store.list_runs(RunFilter(status="running", agent="support"))) == [
            "r5", "r2"]
        assert await store.list_runs(RunFilter(agent="nobody")) == []
        assert await store.list_runs(RunFilter(status="suspended")) == []
        full = await store.list_runs()
        assert full[0] == sample_run("r6", agent="triage", status="cancelled",
                                     created_at=_T0 + 60), "listed records must be whole"

    async def test_list_runs_paging(self, store: RunStore) -> None:
        for i in range(12):  # three share each timestamp: ties must page consistently
            await store.create_run(sample_run(f"run-{i:02d}", created_at=_T0 + i // 3))
        everything = await store.list_runs(RunFilter(limit=100))
        assert len(everything) == 12
        assert [r.created_at for r in everything] == sorted(
            (r.created_at for r in everything), reverse=True), "not newest first"
        pages = [await store.list_runs(RunFilter(limit=5, offset=o)) for o in (0, 5, 10, 15)]
        assert [len(p) for p in pages] == [5, 5, 2, 0]
        paged = [r.run_id for p in pages for r in p]
        assert paged == [r.run_id for r in everything], "pages repeat or skip runs"
        assert await store.list_runs(RunFilter(limit=0)) == []
        assert [r.run_id for r in await store.list_runs(RunFilter(limit=3, offset=4,
                                                                  agent="support"))] == [
            r.run_id for r in everything[4:7]]

    async def test_list_runs_default_limit_is_fifty(self, store: RunStore) -> None:
        for i in range(55):
            await store.create_run(sample_run(f"run-{i:02d}", created_at=_T0 + i))
        runs = await store.list_runs()
        assert len(runs) == RunFilter().limit == 50
        assert runs[0].run_id == "run-54" and runs[-1].run_id == "run-05"
