"""Runs as portable JSON: ``export_run`` writes one run and its journal as a plain dict,
``import_run`` validates such a dict and writes it into a store.

The format (``EXPORT_FORMAT``)::

    {"format": "keel.run", "schema_version": 3, "exported_at": 1718000000.0,
     "run": {"run_id": ..., "agent": ..., "status": ..., "input": ..., ...},
     "journal": [{"seq": 0, "key": "agent/turn:0/model", "phase": "result", ...}, ...]}

``schema_version`` is the oldest run schema that holds everything in the export: 4 for a run
of a ``conversation``, 3 for a run with a ``tenant`` or ``user`` (each written into ``run``
only when set), else 2, so that a keel that reads schema 2 still imports runs that have
none. Exports without them (older ones) import as runs without a tenant or conversation.

An export carries the run's record and its journal, never its lease (which worker holds the
run is a fact about one store). Files are untrusted on import: everything is validated before
anything is written, a file written by a newer keel is refused with
:class:`~keel.StoreVersionError`, and anything malformed (wrong types, missing fields, huge or
deeply nested JSON, text that is not JSON) gives a :class:`~keel.StoreError` naming the field,
with the store left unchanged.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from keel.core import StoreError, StoreVersionError, dumps, new_run_id
from keel.store._base import (
    SCHEMA_VERSION,
    JournalEntry,
    RunRecord,
    RunStatus,
    RunStore,
    required_store,
    store_moved,
)
from keel.store._ids import MAX_ID_CHARS

EXPORT_FORMAT = "keel.run"
#: Exports larger than this are refused before they are parsed.
MAX_EXPORT_BYTES = 256 * 1024 * 1024
#: Deeper nesting than this (in any payload) is refused: no real run needs it, and it is how a
#: hostile file would exhaust the stack of whatever reads it next.
MAX_DEPTH = 200
#: The run fields an export carries (the lease fields and the cancel request are not exported:
#: they describe one worker's hold on the run in one store).
RUN_FIELDS = ("run_id", "agent", "status", "input", "created_at", "updated_at", "target",
              "output", "error", "usage", "metadata", "deadline_at")
#: Run fields an export carries only when they are set (schema 3; ``conversation``: 4).
OWNER_FIELDS = ("tenant", "user", "conversation")
ENTRY_FIELDS = ("seq", "key", "phase", "kind", "name", "input_hash", "data", "created_at",
                "latency_ms")

_Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
_Name = Annotated[str, Field(max_length=4096)]
_Owner = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS,
                              pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]


class _Strict(BaseModel):
    # built on first use: `import keel` should not pay for validating exports
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True,
                              defer_build=True)


class _RunModel(_Strict):
    run_id: _Id
    agent: _Id
    status: RunStatus
    input: JsonValue
    created_at: float
    updated_at: float
    target: _Name | None = None
    output: JsonValue = None
    error: dict[str, JsonValue] | None = None
    usage: dict[str, JsonValue] = Field(default_factory=dict)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    deadline_at: float | None = None
    tenant: _Owner | None = None
    user: _Owner | None = None
    conversation: _Owner | None = None
    # Accepted so that a record dumped by other tools imports, and then dropped: leases and
    # cancel requests are not imported.
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    schema_version: int | None = None


class _EntryModel(_Strict):
    seq: Annotated[int, Field(ge=0)]
    key: Annotated[str, Field(min_length=1, max_length=4096)]
    phase: Literal["intent", "result"]
    kind: _Name
    name: _Name
    input_hash: _Name
    data: JsonValue
    created_at: float
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    schema_version: int | None = None


class _ExportModel(_Strict):
    format: Literal["keel.run"]
    schema_version: Annotated[int, Field(ge=1)]
    exported_at: float | None = None
    run: _RunModel
    journal: list[_EntryModel]


# ----------------------------------------------------------------------------- export


async def export_run(run_id: str, _old: str | None = None, /, *,
                     store: RunStore | None = None) -> dict[str, Any]:
    """The run ``run_id`` of ``store`` and its journal as a JSON-able dict (see the module
    docstring). Raises :class:`~keel.RunNotFound` for an unknown id. (``export_run(store,
    run_id)`` is the deprecated form.)"""
    (run_id,), given = store_moved("export_run", [run_id], _old, store)
    store = required_store("export_run", given)
    record = await store.get_run(run_id)
    entries = await store.read_journal(run_id)
    run = {f: getattr(record, f) for f in RUN_FIELDS}
    run.update({f: getattr(record, f) for f in OWNER_FIELDS if getattr(record, f) is not None})
    doc = {
        "format": EXPORT_FORMAT,
        "schema_version": (4 if record.conversation is not None else
                           3 if len(run) > len(RUN_FIELDS) else 2),
        "exported_at": time.time(),
        "run": run,
        "journal": [{f: getattr(e, f) for f in ENTRY_FIELDS} for e in entries],
    }
    try:  # a copy in plain JSON: tuples become lists, and nothing aliases the store's objects
        copied: dict[str, Any] = json.loads(dumps(doc, allow_nan=False))
    except ValueError as exc:
        raise StoreError(f"run {run_id} cannot be exported as JSON: {exc} (a payload holds "
                         "NaN or Infinity).") from None
    return copied


def dump_export(data: dict[str, Any]) -> str:
    """An export as JSON text (indented, ASCII only, so any byte of it is safe to print)."""
    return json.dumps(data, ensure_ascii=True, indent=1)


# ----------------------------------------------------------------------------- import


def parse_export(raw: str | bytes) -> dict[str, Any]:
    """Parse an export's JSON text, refusing (with :class:`~keel.StoreError`) text over
    :data:`MAX_EXPORT_BYTES`, text that is not UTF-8 JSON, ``NaN``/``Infinity``, repeated
    keys and nesting deeper than :data:`MAX_DEPTH`. The result still needs
    :func:`import_run`'s validation."""
    if len(raw) > MAX_EXPORT_BYTES:
        raise StoreError(f"not a keel run export: {len(raw):,} bytes is more than the "
                         f"{MAX_EXPORT_BYTES:,} an export may have.")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise StoreError(f"not a keel run export: the file is not UTF-8 text ({exc.reason} "
                         f"at byte {exc.start}).") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"not a keel run export: not valid JSON ({exc.msg} at line "
                         f"{exc.lineno}, column {exc.colno}).") from None
    except _BadJson as exc:
        raise StoreError(f"not a keel run export: {exc}.") from None
    except RecursionError:
        raise StoreError(f"not a keel run export: the JSON is nested deeper than {MAX_DEPTH} "
                         "levels.") from None
    if not isinstance(data, dict):
        raise StoreError(f"not a keel run export: expected a JSON object, got "
                         f"{_json_type(data)}.")
    return data


async def import_run(data: Any, _old: Any = None, /, *, store: RunStore | None = None,
                     new_id: bool = False) -> str:
    """Write an exported run (a dict as :func:`export_run` returns, or :func:`parse_export`
    reads) into ``store``; returns the run id it was stored under. (``import_run(store,
    data)`` is the deprecated form.)

    Everything is checked before anything is written. An existing run id is refused unless
    ``new_id``, which stores the run under a fresh id (the original is kept in
    ``metadata["imported_from"]``). Leases are not imported.

    The run is created as ``failed`` ("import incomplete") and then its journal and its real
    record are written in one transaction (``RunStore.finish_run``): if that second write
    fails, the run is left visibly incomplete rather than looking finished with a missing
    journal, and the error says so. While it is incomplete no worker can claim it.
    """
    (data,), given = store_moved("import_run", [data], _old, store)
    store = required_store("import_run", given)
    export = validate_export(data)
    run = export.run
    run_id = new_run_id() if new_id else run.run_id
    if not new_id and await _exists(store, run_id):
        raise StoreError(f"a run with id {run_id!r} already exists in this store; nothing was "
                         "imported. Import it as a new run with new_id=True (`keel runs "
                         "import FILE --new-id`).")
    record = _record(run, run_id, imported_from=run.run_id if new_id else None)
    entries = [_entry(e) for e in export.journal]
    placeholder = record.with_status("failed", output=None, error={
        "type": "ImportIncomplete", "message": "the import of this run did not finish; its "
        "journal may be missing. Delete it and import the file again.", "step_key": None,
        "retryable": False})
    await store.create_run(placeholder)
    try:
        await store.finish_run(record, entries)
    except Exception as exc:
        raise StoreError(
            f"run {run_id} was created but writing its {len(entries)} journal entries failed "
            f"({type(exc).__name__}: {exc}); the store now holds it as a failed run marked "
            "'ImportIncomplete' with no journal. Prune it, then import the file again (or "
            "import with --new-id).") from exc
    return run_id


def validate_export(data: Any) -> _ExportModel:
    """Check an export (format, version, every field and the journal's consistency) without
    writing anything; raises StoreVersionError or StoreError naming the problem."""
    if not isinstance(data, dict):
        raise StoreError(f"not a keel run export: expected an object, got {_json_type(data)}.")
    fmt = data.get("format")
    if fmt != EXPORT_FORMAT:
        raise StoreError(f"not a keel run export: field 'format' must be {EXPORT_FORMAT!r}, "
                         f"not {_short(fmt)}.")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError("not a keel run export: field 'schema_version' must be a whole number "
                         f">= 1, not {_short(version)}.")
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"this run was exported with run schema version {version}, but this keel reads "
            f"versions up to {SCHEMA_VERSION}; upgrade keel to import it.")
    _check_depth(data)
    try:
        export = _ExportModel.model_validate(data)
    except pydantic.ValidationError as exc:
        raise StoreError(f"not a valid keel run export: {_problems(exc)}.") from None
    _check_journal(export.journal)
    return export


def _check_journal(journal: list[_EntryModel]) -> None:
    seen: set[tuple[str, str]] = set()
    seqs: set[int] = set()
    for i, e in enumerate(journal):
        # entries are in append order; a person's decision, written by another process, may
        # carry the seq its run kept free right after the request (lower than its neighbours)
        if e.seq in seqs:
            raise StoreError(f"not a valid keel run export: journal.{i}.seq: {e.seq} is "
                             "repeated; every entry has its own seq.")
        seqs.add(e.seq)
        if (e.key, e.phase) in seen:
            raise StoreError(f"not a valid keel run export: journal.{i}: step {e.key!r} has "
                             f"two {e.phase} entries; a step records at most one of each.")
        seen.add((e.key, e.phase))


def _record(run: _RunModel, run_id: str, *, imported_from: str | None) -> RunRecord:
    metadata: dict[str, Any] = dict(run.metadata)
    if imported_from is not None:
        metadata["imported_from"] = imported_from
    return RunRecord(run_id=run_id, agent=run.agent, status=run.status, input=run.input,
                     created_at=run.created_at, updated_at=run.updated_at, target=run.target,
                     output=run.output, error=run.error, usage=dict(run.usage),
                     metadata=metadata, deadline_at=run.deadline_at, tenant=run.tenant,
                     user=run.user, conversation=run.conversation)


def _entry(e: _EntryModel) -> JournalEntry:
    return JournalEntry(seq=e.seq, key=e.key, phase=e.phase, kind=e.kind, name=e.name,
                        input_hash=e.input_hash, data=e.data, created_at=e.created_at,
                        latency_ms=e.latency_ms)


async def _exists(store: RunStore, run_id: str) -> bool:
    from keel.core import RunNotFound

    try:
        await store.get_run(run_id)
    except RunNotFound:
        return False
    return True


# ---------------------------------------------------------------------------- helpers


class _BadJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _BadJson(f"the key {_short(key)} appears twice in one object")
        out[key] = value
    return out


def _check_depth(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH (iteratively: the check itself cannot overflow)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise StoreError(f"not a valid keel run export: data nested deeper than "
                             f"{MAX_DEPTH} levels.")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def _problems(exc: pydantic.ValidationError, limit: int = 5) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    shown = []
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"] if p not in _JSON_TAGS) or "(top level)"
        shown.append(f"{loc}: {err['msg']}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(shown) + more


#: Tags pydantic puts into the location of errors inside JsonValue fields.
_JSON_TAGS = frozenset({"list", "dict", "str", "int", "float", "bool", "[key]"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _short(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = json.dumps(value, default=lambda v: type(v).__name__)
    return text if len(text) <= 40 else text[:40] + "…"
