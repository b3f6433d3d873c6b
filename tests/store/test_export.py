"""export_run / import_run: a run as portable JSON, validated as untrusted input on import."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from keel import RunNotFound, StoreError, StoreVersionError
from keel.store import (
    EXPORT_FORMAT,
    SCHEMA_VERSION,
    JournalEntry,
    MemoryStore,
    RunRecord,
    RunStore,
    dump_export,
    export_run,
    import_run,
    open_store,
    parse_export,
)
from keel.store import _export as export_module


def entry(seq: int, key: str, phase: str = "result", **kw: Any) -> JournalEntry:
    fields: dict[str, Any] = {"kind": "tool", "name": "lookup", "input_hash": "h1",
                              "data": {"content": f"result {seq}", "value": [1, 2.5, None]},
                              "created_at": 1000.0 + seq, "latency_ms": 3.5}
    fields.update(kw)
    return JournalEntry(seq=seq, key=key, phase=phase, **fields)  # type: ignore[arg-type]


RECORD = RunRecord(
    run_id="run-1", agent="support", status="completed", input="refund order 7",
    created_at=1000.0, updated_at=1010.0, target="app.py:agent", output={"ok": True, "n": 2},
    error=None, usage={"input_tokens": 10, "output_tokens": 4, "cost_usd": 0.01, "steps": 3},
    metadata={"model": "openai:gpt-4o-mini", "tags": ["a"]}, deadline_at=2000.0)
JOURNAL = [
    entry(0, "support/turn:0/model", kind="model", name="openai:gpt-4o-mini",
          data={"parts": [{"type": "text", "text": "ok"}], "usage": {"input_tokens": 10}}),
    entry(1, "support/turn:0/tool:refund#0", "intent", name="refund",
          data={"tool": "refund", "arguments": '{"order": 7}'}),
    entry(2, "support/turn:0/tool:refund#0", name="refund"),
]


async def seeded(store: RunStore | None = None) -> RunStore:
    store = store or MemoryStore()
    await store.create_run(RECORD)
    await store.append(RECORD.run_id, JOURNAL)
    return store


async def contents(store: RunStore) -> list[tuple[RunRecord, list[JournalEntry]]]:
    return [(r, await store.read_journal(r.run_id)) for r in await store.list_runs()]


# ----------------------------------------------------------------------------- round trip


async def test_export_then_import_reproduces_the_run() -> None:
    data = await export_run("run-1", store=await seeded())
    assert data["format"] == EXPORT_FORMAT == "keel.run"
    assert data["schema_version"] == 2  # no tenant or user: readable by a schema-2 keel
    assert isinstance(data["exported_at"], float)
    assert data["run"]["output"] == {"ok": True, "n": 2}
    assert len(data["journal"]) == 3
    target = MemoryStore()
    run_id = await import_run(parse_export(dump_export(data)), store=target)
    assert run_id == "run-1"
    assert await target.get_run("run-1") == RECORD
    assert await target.read_journal("run-1") == JOURNAL


async def test_export_is_plain_json_that_does_not_alias_the_store() -> None:
    store = await seeded()
    data = await export_run("run-1", store=store)
    data["run"]["output"]["ok"] = False
    data["journal"][0]["data"]["parts"].clear()
    assert (await store.get_run("run-1")).output == {"ok": True, "n": 2}
    assert (await store.read_journal("run-1"))[0].data["parts"] != []
    assert json.loads(dump_export(data)) == data


async def test_leases_are_neither_exported_nor_imported() -> None:
    store = await seeded()
    await store.update_run(RECORD.with_status("running"))
    await store.acquire_lease("run-1", "worker-a", 60.0)
    data = await export_run("run-1", store=store)
    assert "lease_owner" not in data["run"] and "lease_expires_at" not in data["run"]
    data["run"]["lease_owner"] = "worker-a"  # even when a file carries one
    data["run"]["lease_expires_at"] = 9e9
    target = MemoryStore()
    await import_run(data, store=target)
    imported = await target.get_run("run-1")
    assert imported.status == "running"
    assert imported.lease_owner is None and imported.lease_expires_at is None
    assert [r.run_id for r in await target.claim_runs("worker-b", 60.0)] == ["run-1"]


async def test_an_existing_run_id_is_refused_unless_new_id() -> None:
    store = await seeded()
    data = await export_run("run-1", store=store)
    before = await contents(store)
    with pytest.raises(StoreError, match="'run-1' already exists in this store; nothing was"):
        await import_run(data, store=store)
    assert await contents(store) == before
    new = await import_run(data, store=store, new_id=True)
    assert new != "run-1"
    record = await store.get_run(new)
    assert record.metadata == {**RECORD.metadata, "imported_from": "run-1"}
    assert record.output == RECORD.output and record.status == "completed"
    assert await store.read_journal(new) == JOURNAL


async def test_export_of_an_unknown_run() -> None:
    with pytest.raises(RunNotFound):
        await export_run("nope", store=MemoryStore())


async def test_sqlite_to_sqlite(tmp_path: Path) -> None:
    """Persistence is the point: a run exported from one SQLite file and imported into
    another reads back the same."""
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as a:
        text = dump_export(await export_run("run-1", store=await seeded(a)))
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as b:
        await import_run(parse_export(text.encode()), store=b)
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as b:
        assert await b.get_run("run-1") == RECORD
        assert await b.read_journal("run-1") == JOURNAL


# ------------------------------------------------------------------------------- versions


async def test_a_newer_schema_version_is_refused_naming_both_versions() -> None:
    data = await export_run("run-1", store=await seeded())
    data["schema_version"] = SCHEMA_VERSION + 1
    data["run"]["something_new"] = 1  # a newer layout: the version is reported, not fields
    target = MemoryStore()
    with pytest.raises(StoreVersionError) as err:
        await import_run(data, store=target)
    assert f"version {SCHEMA_VERSION + 1}" in str(err.value)
    assert f"up to {SCHEMA_VERSION}" in str(err.value)
    assert await target.list_runs() == []


async def test_an_older_schema_version_imports() -> None:
    data = await export_run("run-1", store=await seeded())
    data["schema_version"] = 1
    del data["run"]["deadline_at"]
    target = MemoryStore()
    await import_run(data, store=target)
    assert (await target.get_run("run-1")).deadline_at is None


# ------------------------------------------------------------------------------ malformed


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()


def _repeat_seq(data: dict[str, Any]) -> None:
    data["journal"][2]["seq"] = data["journal"][1]["seq"]


def _repeat_entry(data: dict[str, Any]) -> None:
    data["journal"].append({**data["journal"][2], "seq": 3})


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("format", _set("format", "other.thing"), "field 'format' must be 'keel.run'"),
    ("no format", _set("format", _DELETE), "field 'format' must be 'keel.run', not null"),
    ("version type", _set("schema_version", "2"), "'schema_version' must be a whole number"),
    ("version bool", _set("schema_version", True), "'schema_version' must be a whole number"),
    ("version zero", _set("schema_version", 0), "'schema_version' must be a whole number"),
    ("no run", _set("run", _DELETE), "run: Field required"),
    ("run type", _set("run", []), "run: Input should be"),
    ("status", _set("run.status", "exploded"), "run.status: Input should be"),
    ("run id type", _set("run.run_id", 7), "run.run_id: Input should be a valid string"),
    ("run id empty", _set("run.run_id", ""), "run.run_id: String should have at least 1"),
    ("run id control", _set("run.run_id", "a\x1b[2Jb"), "run.run_id: String should match"),
    ("run id long", _set("run.run_id", "x" * 300), "run.run_id: String should have at most"),
    ("created type", _set("run.created_at", "yesterday"), "run.created_at: Input should be"),
    ("extra field", _set("run.owner", "x"), "run.owner: Extra inputs are not permitted"),
    ("usage type", _set("run.usage", [1]), "run.usage: Input should be a valid dictionary"),
    ("journal type", _set("journal", {"0": {}}), "journal: Input should be a valid list"),
    ("seq type", _set("journal.1.seq", "1"), "journal.1.seq: Input should be a valid integer"),
    ("seq negative", _set("journal.0.seq", -1), "journal.0.seq: Input should be greater"),
    ("phase", _set("journal.2.phase", "maybe"), "journal.2.phase: Input should be"),
    ("key missing", _set("journal.0.key", _DELETE), "journal.0.key: Field required"),
    ("latency", _set("journal.0.latency_ms", -5), "journal.0.latency_ms: Input should be"),
    ("seq repeated", _repeat_seq, "journal.2.seq: 1 is repeated"),
    ("repeated", _repeat_entry, "journal.3: step 'support/turn:0/tool:refund#0' has two"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
async def test_malformed_exports_are_refused_naming_the_field(
        change: Callable[[dict[str, Any]], None], message: str) -> None:
    data = copy.deepcopy(await export_run("run-1", store=await seeded()))
    change(data)
    target = MemoryStore()
    with pytest.raises(StoreError) as err:
        await import_run(data, store=target)
    assert message in str(err.value)
    assert not isinstance(err.value, StoreVersionError)
    assert await target.list_runs() == []


@pytest.mark.parametrize("data", [None, [], "keel.run", 3])
async def test_a_non_object_is_refused(data: Any) -> None:
    with pytest.raises(StoreError, match="not a keel run export: expected an object"):
        await import_run(data, store=MemoryStore())


async def test_payloads_that_are_not_json_values_are_refused() -> None:
    data = await export_run("run-1", store=await seeded())
    data["journal"][0]["data"] = {"when": object()}
    with pytest.raises(StoreError, match=r"journal\.0\.data\.when: input was not a valid JSON"):
        await import_run(data, store=MemoryStore())


async def test_deeply_nested_payloads_are_refused() -> None:
    data = await export_run("run-1", store=await seeded())
    deep: Any = "bottom"
    for _ in range(export_module.MAX_DEPTH + 5):
        deep = [deep]
    data["run"]["output"] = deep
    target = MemoryStore()
    with pytest.raises(StoreError, match="nested deeper than 200 levels"):
        await import_run(data, store=target)
    assert await target.list_runs() == []


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "not valid JSON (Expecting value at line 1, column 1)"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "the file is not UTF-8 text"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": Infinity}', "Infinity is not a JSON number"),
    (b'{"a": 1, "a": 2}', 'the key "a" appears twice in one object'),
    (b"[1, 2]", "expected a JSON object, got an array"),
    (b'"text"', "expected a JSON object, got a string"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
])
def test_parse_export_refuses_what_is_not_an_export(raw: bytes, message: str) -> None:
    with pytest.raises(StoreError) as err:
        parse_export(raw)
    assert message in str(err.value)
    assert str(err.value).startswith("not a keel run export")


def test_parse_export_refuses_huge_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "MAX_EXPORT_BYTES", 1000)
    with pytest.raises(StoreError, match="1,001 bytes is more than the 1,000"):
        parse_export(b" " * 1001)


# -------------------------------------------------------------------------- failed writes


class BrokenAppend(MemoryStore):
    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                         lease: str | None = None) -> None:
        raise OSError("disk full")


async def test_a_failed_journal_write_says_what_happened_and_is_visible() -> None:
    data = await export_run("run-1", store=await seeded())
    target = BrokenAppend()
    with pytest.raises(StoreError) as err:
        await import_run(data, store=target)
    message = str(err.value)
    assert "run run-1 was created but writing its 3 journal entries failed" in message
    assert "OSError: disk full" in message and "ImportIncomplete" in message
    record = await target.get_run("run-1")  # not passed off as a finished run
    assert record.status == "failed"
    assert record.error is not None and record.error["type"] == "ImportIncomplete"
    assert await target.read_journal("run-1") == []
    assert await target.claim_runs("worker", 60.0) == []
