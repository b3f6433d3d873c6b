"""The Postgres run store's layout (schema 5) and every statement it runs.

Layout
    All tables live in one schema (``?schema=NAME`` in the URL, else the connection's current
    schema, usually ``public``) and carry a ``keel_`` prefix so that they sit safely next to an
    application's own tables.

    ``keel_meta(key, value)`` holds ``schema_version``. ``keel_runs`` holds one row per run:
    JSON text in ``input``, ``output``, ``error``, ``usage`` and ``metadata``; the lease
    (``lease_owner``, ``lease_expires_at``), ``deadline_at``, ``cancel_requested``, and the
    run's ``tenant``, ``"user"`` (quoted: ``user`` is a keyword) and ``conversation``.
    ``keel_journal`` holds
    the entries: its primary key ``(run_id, key, phase)`` makes a step's
    intent and result each recordable once and finds a run's entries; ``id`` (an identity
    column) gives the append order. ``keel_tasks`` holds the human tasks, with JSON text in
    ``data`` and ``resolution``. Journal entries and tasks go with their run
    (``ON DELETE CASCADE``). ``keel_outbox`` holds the run events (schema 5; see
    :mod:`keel.store._postgres_outbox`); its rows stay when a run is pruned, until the relay
    has published them.

    Payloads are JSON *text* (``text`` columns, never ``jsonb``: jsonb reorders keys, drops
    duplicates and cannot hold ``\\u0000``), written with ``ensure_ascii`` so that NUL and lone
    surrogates travel as escapes and come back exactly.

Indexes
    ``keel_runs_by_created`` / ``_by_status`` / ``_by_agent`` serve ``list_runs`` (newest
    first, optionally filtered); ``keel_runs_runnable (status, updated_at, run_id)`` lets
    ``claim_runs`` walk the running runs least recently updated first and serves
    ``prune_runs``; ``keel_runs_by_lease_owner`` (partial: leased runs only) serves
    ``renew_leases``; ``keel_runs_by_tenant (tenant, created_at, run_id)`` serves ``list_runs``
    for one tenant; ``keel_runs_by_conversation (conversation, created_at, run_id)`` serves
    ``list_runs`` of one conversation and ``delete_conversation``. ``keel_tasks_by_*`` serve
    ``list_tasks`` filtered by status, queue or
    run (oldest first), and the cascade from a pruned run.

Tenants
    The ``*_of`` statements are the tenant-scoped forms of a read or write of one run or task
    (the tenant bound last): the tenant is a condition of the statement itself (a task's
    tenant is its run's, by a sub-select of ``keel_runs``), so another tenant's run or task
    is never read, locked or changed.

Times
    Lease expiries, claim and resolve times are taken from the database clock
    (``clock_timestamp()``, see :data:`NOW`), never the worker's: workers whose clocks are
    skewed still agree on whether a lease has expired.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from keel.store import _postgres_outbox as outbox
from keel.store import _records_sql as records

#: The database clock as epoch seconds (float8). ``clock_timestamp()`` rather than ``now()``
#: so that a statement inside a longer transaction still sees the current time.
NOW = "extract(epoch FROM clock_timestamp())::float8"

#: The keel tables, in creation order.
TABLES = ("keel_meta", "keel_runs", "keel_journal", "keel_tasks", "keel_outbox", "keel_feedback",
          "keel_settings")

#: Schema 6 (a new store). ``{s}`` stands for the quoted schema name and a dot.
DDL: tuple[str, ...] = (
    """CREATE TABLE {s}keel_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE {s}keel_runs (
        run_id           text PRIMARY KEY,
        agent            text NOT NULL,
        status           text NOT NULL CHECK (status IN
                             ('running', 'suspended', 'completed', 'failed', 'cancelled')),
        target           text,
        input            text NOT NULL,
        output           text NOT NULL,
        error            text,
        usage            text NOT NULL,
        metadata         text NOT NULL,
        created_at       double precision NOT NULL,
        updated_at       double precision NOT NULL,
        lease_owner      text,
        lease_expires_at double precision,
        deadline_at      double precision,
        cancel_requested boolean NOT NULL DEFAULT false,
        schema_version   integer NOT NULL,
        tenant           text,
        "user"           text,
        conversation     text
    )""",
    "CREATE INDEX keel_runs_by_tenant ON {s}keel_runs (tenant, created_at, run_id)",
    """CREATE INDEX keel_runs_by_conversation
        ON {s}keel_runs (conversation, created_at, run_id)""",
    "CREATE INDEX keel_runs_by_created ON {s}keel_runs (created_at, run_id)",
    "CREATE INDEX keel_runs_by_status ON {s}keel_runs (status, created_at, run_id)",
    "CREATE INDEX keel_runs_by_agent ON {s}keel_runs (agent, created_at, run_id)",
    "CREATE INDEX keel_runs_runnable ON {s}keel_runs (status, updated_at, run_id)",
    """CREATE INDEX keel_runs_by_lease_owner ON {s}keel_runs (lease_owner)
        WHERE lease_owner IS NOT NULL""",
    """CREATE TABLE {s}keel_journal (
        run_id         text NOT NULL REFERENCES {s}keel_runs (run_id) ON DELETE CASCADE,
        key            text NOT NULL,
        phase          text NOT NULL CHECK (phase IN ('intent', 'result')),
        id             bigint GENERATED ALWAYS AS IDENTITY,
        seq            bigint NOT NULL,
        kind           text NOT NULL,
        name           text NOT NULL,
        input_hash     text NOT NULL,
        data           text NOT NULL,
        created_at     double precision NOT NULL,
        latency_ms     double precision NOT NULL,
        schema_version integer NOT NULL,
        PRIMARY KEY (run_id, key, phase)
    )""",
    """CREATE TABLE {s}keel_tasks (
        task_id     text PRIMARY KEY,
        run_id      text NOT NULL REFERENCES {s}keel_runs (run_id) ON DELETE CASCADE,
        kind        text NOT NULL CHECK (kind IN ('approval', 'escalation')),
        step_key    text NOT NULL,
        queue       text NOT NULL,
        status      text NOT NULL CHECK (status IN ('open', 'claimed', 'resolved')),
        created_at  double precision NOT NULL,
        data        text NOT NULL,
        due_at      double precision,
        claimed_by  text,
        claimed_at  double precision,
        resolution  text NOT NULL,
        resolved_by text,
        resolved_at double precision
    )""",
    "CREATE INDEX keel_tasks_by_created ON {s}keel_tasks (created_at, task_id)",
    "CREATE INDEX keel_tasks_by_status ON {s}keel_tasks (status, created_at, task_id)",
    "CREATE INDEX keel_tasks_by_queue ON {s}keel_tasks (queue, status, created_at, task_id)",
    "CREATE INDEX keel_tasks_by_run ON {s}keel_tasks (run_id, created_at, task_id)",
    outbox.TABLE,
    *outbox.INDEXES,
    *records.POSTGRES_TABLES,
)

#: The step that takes a store from version ``v`` to ``v + 1`` (run under the advisory lock,
#: in one transaction). 2 -> 3: each run's tenant and user, NULL for the runs stored before;
#: 3 -> 4: each run's conversation, likewise; 4 -> 5: the outbox table; 5 -> 6: feedback
#: and settings.
UPGRADES: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE {s}keel_runs ADD COLUMN tenant text",
        'ALTER TABLE {s}keel_runs ADD COLUMN "user" text',
        "CREATE INDEX keel_runs_by_tenant ON {s}keel_runs (tenant, created_at, run_id)",
        "UPDATE {s}keel_meta SET value = '3' WHERE key = 'schema_version'",
    ),
    3: (
        "ALTER TABLE {s}keel_runs ADD COLUMN conversation text",
        """CREATE INDEX keel_runs_by_conversation
        ON {s}keel_runs (conversation, created_at, run_id)""",
        "UPDATE {s}keel_meta SET value = '4' WHERE key = 'schema_version'",
    ),
    4: outbox.V4_TO_V5,
    5: records.POSTGRES_V5_TO_V6,
}

RUN_COLUMNS = (
    "run_id, agent, status, target, input, output, error, usage, metadata, created_at, "
    "updated_at, lease_owner, lease_expires_at, deadline_at, cancel_requested, schema_version, "
    'tenant, "user", conversation')
ENTRY_COLUMNS = (
    "seq, key, phase, kind, name, input_hash, data, created_at, latency_ms, schema_version")
TASK_COLUMNS = (
    "task_id, run_id, kind, step_key, queue, status, created_at, data, due_at, claimed_by, "
    "claimed_at, resolution, resolved_by, resolved_at")

_ENTRY_VALUES = ("%s::bigint, %s, %s, %s, %s, %s, %s, %s::float8, %s::float8, "
                 "%s::integer")
#: The entries of a batch as one row set: one array per column, in batch order.
_UNNEST = (
    "unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::float8[], %s::float8[], %s::integer[]) WITH ORDINALITY AS u ("
    f"{ENTRY_COLUMNS}, n)")
_U_COLUMNS = ", ".join(f"u.{c.strip()}" for c in ENTRY_COLUMNS.split(","))
#: The fence: the run, locked FOR SHARE (a concurrent lease change waits for this write to
#: commit, or this write waits for it and reads the lease it wrote), kept if the given owner
#: holds its lease. The lease is tested outside the locking subquery (OFFSET 0 keeps the
#: planner from pushing it in) so that the run is found by its primary key, never by the
#: lease-owner index.
_FENCE = ("(SELECT run_id, lease_owner FROM {s}keel_runs WHERE run_id = %s OFFSET 0 "
          "FOR SHARE) r WHERE r.lease_owner = %s")
#: Replace a run's record, keeping the lease (released when it leaves running) and the
#: cancel flag. Named parameters: the run row's fields and ``lease`` (NULL: unfenced).
_UPDATE_RUN = (
    "UPDATE {s}keel_runs SET agent = %(agent)s, status = %(status)s, target = %(target)s, "
    "input = %(input)s, output = %(output)s, error = %(error)s, usage = %(usage)s, "
    "metadata = %(metadata)s, created_at = %(created_at)s, updated_at = %(updated_at)s, "
    "deadline_at = %(deadline_at)s, schema_version = %(schema_version)s, "
    "lease_owner = CASE WHEN %(status)s = 'running' THEN lease_owner END, "
    "lease_expires_at = CASE WHEN %(status)s = 'running' THEN lease_expires_at END "
    "WHERE run_id = %(run_id)s AND (%(lease)s::text IS NULL OR lease_owner = %(lease)s)")
#: A run's entries (a known run with none gives one row of NULLs); the caller ends it.
_READ_JOURNAL = (
    "SELECT " + ", ".join(f"j.{c.strip()}" for c in ENTRY_COLUMNS.split(",")) +
    " FROM {s}keel_runs r LEFT JOIN {s}keel_journal j ON j.run_id = r.run_id "
    "WHERE r.run_id = %s")
#: The tasks of one tenant's runs, as a condition on ``keel_tasks`` (binds the tenant).
_OF_TENANT = "run_id IN (SELECT run_id FROM {s}keel_runs WHERE tenant = %s)"
_NAMED_UNNEST = _UNNEST.replace("%s", "%(u{})s").format(*range(10))
_INSERT_ENTRY = f"INSERT INTO {{s}}keel_journal (run_id, {ENTRY_COLUMNS})"


#: Batches up to this size go in as one multi-row VALUES (cheaper to send than arrays);
#: larger ones as ``unnest`` of per-column arrays (one statement text for any size).
VALUES_ROWS = 16


@functools.lru_cache(maxsize=256)
def _append_values(s: str, n: int, fenced: bool) -> str:
    """One INSERT of ``n`` entries as VALUES rows, fenced or not, for the schema prefix."""
    if not fenced:
        rows = ", ".join([f"(%s, {_ENTRY_VALUES})"] * n)
        return f"{_INSERT_ENTRY} VALUES {rows}".replace("{s}", s)
    rows = ", ".join(f"({_ENTRY_VALUES}, {i})" for i in range(n))
    columns = ", ".join(f"v.{c.strip()}" for c in ENTRY_COLUMNS.split(","))
    return (f"{_INSERT_ENTRY} SELECT r.run_id, {columns} FROM (VALUES {rows}) AS v "
            f"({ENTRY_COLUMNS}, n) CROSS JOIN {_FENCE} ORDER BY v.n").replace("{s}", s)


def quote_ident(name: str) -> str:
    """``name`` as a Postgres identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement of one store, with its schema filled in."""

    schema: str
    create_run: str
    get_run: str
    get_run_of: str
    update_run: str
    finish_run: str
    run_lease: str
    append_one: str
    append_one_fenced: str
    append_many: str
    append_many_fenced: str
    stored_pairs: str
    read_journal: str
    read_journal_of: str
    read_journals: str
    list_runs: str
    prune_runs: str
    delete_conversation: str
    acquire_lease: str
    renew_leases: str
    release_lease: str
    claim_runs: str
    claim_runs_of: str
    request_cancel: str
    request_cancel_of: str
    lock_run: str
    park_run: str
    put_task: str
    get_task: str
    get_task_of: str
    list_tasks: str
    of_tenant: str
    claim_task: str
    claim_task_of: str
    lock_task_run: str
    lock_task_run_of: str
    lock_task: str
    resolve_task: str
    wake_run: str

    def append_values(self, n: int, *, fenced: bool) -> str:
        """An INSERT of ``n`` (at most :data:`VALUES_ROWS`) entries as VALUES rows: without
        ``fenced`` each row starts with the run id; with it the rows are followed by the run
        id and the lease owner."""
        return _append_values(_prefix(self.schema), n, fenced)


def _prefix(schema: str) -> str:
    return quote_ident(schema).replace("%", "%%") + "."  # the statements all take parameters


def statements(schema: str) -> Statements:
    """The statements for the keel tables in ``schema``."""
    s = _prefix(schema)
    fields = {
        "create_run": f"INSERT INTO {{s}}keel_runs ({RUN_COLUMNS}) VALUES "
                      f"({', '.join(['%s'] * 19)})",
        "get_run": f"SELECT {RUN_COLUMNS} FROM {{s}}keel_runs WHERE run_id = %s",
        "get_run_of": (f"SELECT {RUN_COLUMNS} FROM {{s}}keel_runs WHERE run_id = %s "
                       "AND tenant = %s"),
        "update_run": _UPDATE_RUN,
        # One statement: replace the record if the fence holds, and append the entries to
        # the updated run only. A repeated (key, phase) aborts all of it.
        "finish_run": (
            f"WITH r AS ({_UPDATE_RUN} RETURNING run_id), "
            f"j AS ({_INSERT_ENTRY} SELECT r.run_id, {_U_COLUMNS} FROM r CROSS JOIN "
            f"{_NAMED_UNNEST} ORDER BY u.n) SELECT count(*) FROM r"),
        "run_lease": "SELECT lease_owner, lease_expires_at FROM {s}keel_runs WHERE run_id = %s",
        "append_one": f"{_INSERT_ENTRY} VALUES (%s, {_ENTRY_VALUES})",
        "append_one_fenced": f"{_INSERT_ENTRY} SELECT r.run_id, {_ENTRY_VALUES} FROM {_FENCE}",
        "append_many": f"{_INSERT_ENTRY} SELECT %s, {_U_COLUMNS} FROM {_UNNEST} ORDER BY u.n",
        "append_many_fenced": (
            f"{_INSERT_ENTRY} SELECT r.run_id, {_U_COLUMNS} FROM {_UNNEST} CROSS JOIN "
            f"{_FENCE} ORDER BY u.n"),
        "stored_pairs": ("SELECT key, phase FROM {s}keel_journal "
                         "WHERE run_id = %s AND key = ANY(%s::text[])"),
        "read_journal": _READ_JOURNAL + " ORDER BY j.id",
        "read_journal_of": _READ_JOURNAL + " AND r.tenant = %s ORDER BY j.id",
        # Several runs' entries: the known runs (a run with no entries gives one row of
        # NULLs) in run order, each run's entries in append order.
        "read_journals": (
            "SELECT r.run_id, " + ", ".join(f"j.{c.strip()}" for c in ENTRY_COLUMNS.split(","))
            + " FROM {s}keel_runs r LEFT JOIN {s}keel_journal j ON j.run_id = r.run_id "
            "WHERE r.run_id = ANY(%s::text[]) ORDER BY r.run_id, j.id"),
        # The runs of one conversation of one tenant; journals and tasks go by cascade.
        "delete_conversation": (
            "DELETE FROM {s}keel_runs WHERE conversation = %s "
            "AND tenant IS NOT DISTINCT FROM %s::text"),
        # The head of the statement: the caller adds WHERE, ORDER BY, LIMIT and OFFSET.
        "list_runs": f"SELECT {RUN_COLUMNS} FROM {{s}}keel_runs",
        # Batches keep each transaction short; the outer condition is re-checked on a row
        # that changed while the batch waited for it.
        "prune_runs": (
            "DELETE FROM {s}keel_runs WHERE run_id IN (SELECT run_id FROM {s}keel_runs "
            "WHERE status = ANY(%(statuses)s::text[]) AND updated_at < %(before)s "
            "LIMIT %(batch)s) AND status = ANY(%(statuses)s::text[]) "
            "AND updated_at < %(before)s"),
        **_lease_statements(),
        **_task_statements(),
    }
    return Statements(schema=schema, **{k: v.replace("{s}", s) for k, v in fields.items()})


def _lease_statements() -> dict[str, str]:
    claim = (
        f"WITH c AS (SELECT run_id FROM {{s}}keel_runs WHERE status = 'running' "
        f"AND (lease_owner IS NULL OR coalesce(lease_expires_at, 0) <= {NOW}) "
        "AND (metadata::jsonb ->> 'engine') IS NULL {agents}"
        "ORDER BY updated_at, run_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
        f"UPDATE {{s}}keel_runs AS t SET lease_owner = %(owner)s, "
        f"lease_expires_at = {NOW} + %(seconds)s FROM c WHERE t.run_id = c.run_id "
        "RETURNING " + ", ".join(f"t.{c.strip()}" for c in RUN_COLUMNS.split(",")))
    cancel = ("UPDATE {s}keel_runs SET cancel_requested = true, metadata = "
              "CASE WHEN %s::jsonb IS NULL THEN metadata ELSE (metadata::jsonb "
              "|| %s::jsonb)::text END ")
    return {
        "acquire_lease": (
            f"UPDATE {{s}}keel_runs SET lease_owner = %(owner)s, "
            f"lease_expires_at = {NOW} + %(seconds)s WHERE run_id = %(run_id)s AND ("
            f"lease_owner IS NULL OR coalesce(lease_expires_at, 0) <= {NOW} "
            "OR lease_owner = %(owner)s OR lease_owner = %(steal)s) "
            f"RETURNING {RUN_COLUMNS}"),
        "renew_leases": (f"UPDATE {{s}}keel_runs SET lease_expires_at = {NOW} + %s "
                         "WHERE lease_owner = %s RETURNING run_id"),
        "release_lease": ("UPDATE {s}keel_runs SET lease_owner = NULL, lease_expires_at = NULL "
                          "WHERE run_id = %s AND lease_owner = %s"),
        "claim_runs": claim.replace("{agents}", ""),
        "claim_runs_of": claim.replace("{agents}", "AND agent = ANY(%(agents)s::text[]) "),
        # With a request (JSON), also keep it in the metadata under "cancel_request".
        "request_cancel": cancel + f"WHERE run_id = %s RETURNING {RUN_COLUMNS}",
        "request_cancel_of": (cancel + "WHERE run_id = %s AND tenant = %s "
                              f"RETURNING {RUN_COLUMNS}"),
        "lock_run": ("SELECT status, lease_owner FROM {s}keel_runs WHERE run_id = %s "
                     "FOR UPDATE"),
        # After lock_run, in the same transaction (so it sees every decision committed
        # before the lock): append, then park the run, or leave it runnable if nothing it
        # waits for is still open; either way without a lease.
        "park_run": (
            "WITH w AS (SELECT count(*) AS open FROM {s}keel_tasks "
            "WHERE task_id = ANY(%(waiting)s::text[]) AND status <> 'resolved'), "
            f"j AS ({_INSERT_ENTRY} SELECT %(run_id)s, {_U_COLUMNS} FROM {_NAMED_UNNEST} "
            "ORDER BY u.n) "
            "UPDATE {s}keel_runs SET agent = %(agent)s, status = CASE WHEN "
            "(SELECT open FROM w) > 0 THEN 'suspended' ELSE 'running' END, "
            "target = %(target)s, input = %(input)s, output = %(output)s, error = %(error)s, "
            "usage = %(usage)s, metadata = %(metadata)s, created_at = %(created_at)s, "
            "updated_at = %(updated_at)s, deadline_at = %(deadline_at)s, "
            "schema_version = %(schema_version)s, lease_owner = NULL, lease_expires_at = NULL "
            "WHERE run_id = %(run_id)s RETURNING status"),
    }


def _task_statements() -> dict[str, str]:
    claim = (
        "UPDATE {s}keel_tasks SET status = 'claimed', claimed_by = %(who)s, "
        f"claimed_at = CASE WHEN claimed_by = %(who)s THEN claimed_at ELSE {NOW} END "
        "WHERE task_id = %(task_id)s AND (status = 'open' "
        "OR (status = 'claimed' AND claimed_by = %(who)s)) ")
    lock_run = (f"SELECT {RUN_COLUMNS} FROM {{s}}keel_runs WHERE run_id = "
                "(SELECT run_id FROM {s}keel_tasks WHERE task_id = %s) ")
    return {
        "put_task": (f"INSERT INTO {{s}}keel_tasks ({TASK_COLUMNS}) VALUES "
                     f"({', '.join(['%s'] * 14)}) ON CONFLICT (task_id) DO NOTHING"),
        "get_task": f"SELECT {TASK_COLUMNS} FROM {{s}}keel_tasks WHERE task_id = %s",
        "get_task_of": (f"SELECT {TASK_COLUMNS} FROM {{s}}keel_tasks WHERE task_id = %s "
                        f"AND {_OF_TENANT}"),
        "list_tasks": f"SELECT {TASK_COLUMNS} FROM {{s}}keel_tasks",
        "of_tenant": _OF_TENANT,
        "claim_task": claim + f"RETURNING {TASK_COLUMNS}",
        "claim_task_of": (claim + "AND " + _OF_TENANT.replace("%s", "%(tenant)s")
                          + f" RETURNING {TASK_COLUMNS}"),
        # Lock order everywhere: the run, then its task.
        "lock_task_run": lock_run + "FOR UPDATE",
        "lock_task_run_of": lock_run + "AND tenant = %s FOR UPDATE",
        "lock_task": f"SELECT {TASK_COLUMNS} FROM {{s}}keel_tasks WHERE task_id = %s FOR UPDATE",
        "resolve_task": (
            "UPDATE {s}keel_tasks SET status = 'resolved', resolution = %s, resolved_by = %s, "
            f"resolved_at = {NOW} WHERE task_id = %s RETURNING {TASK_COLUMNS}"),
        "wake_run": (
            "UPDATE {s}keel_runs SET status = 'running', lease_owner = NULL, "
            f"lease_expires_at = NULL, updated_at = {NOW} "
            "WHERE run_id = %s AND status = 'suspended'"),
    }
