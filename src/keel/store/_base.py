"""The RunStore seam: runs and their append-only journals.

A run record holds the run's identity, status, input, output and totals. Its journal is an
ordered list of entries; each journal step writes a ``result`` entry, and steps whose effect
must not be repeated (non-idempotent tools) first write an ``intent`` entry. ``append`` of a
batch is atomic: a batch is either wholly in the store or not at all.
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from keel.core import StoreError, UserError
from keel.store._ids import check_id
from keel.store._records import Feedback, Setting

if TYPE_CHECKING:
    from keel.store._outbox import Event
    from keel.store._stats import StatsQuery, StatsResult

#: Bump when the stored layout changes; stores refuse files written with a newer version.
#: 2: leases, deadlines and cancel requests on runs; the human task table (approvals and
#: escalations). 3: each run's tenant and user, in columns of their own. 4: each run's
#: conversation (thread) id, in a column of its own. 5: the outbox table (run events written
#: with the journal; see :mod:`keel.store._outbox`). 6: feedback on runs and versioned
#: settings (see :mod:`keel.store._records`). Stores of an older version are upgraded in
#: place when opened.
SCHEMA_VERSION = 6

RunStatus: TypeAlias = Literal["running", "suspended", "completed", "failed", "cancelled"]
#: The metadata key under which :meth:`RunStore.request_cancel` keeps why and by whom.
CANCEL_REQUEST = "cancel_request"
#: The metadata key naming the engine that drives a run other than keel's own workers
#: (``"temporal"``): :meth:`RunStore.claim_runs` never hands such a run out.
ENGINE_KEY = "engine"
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "suspended", "completed", "failed", "cancelled")
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Phase: TypeAlias = Literal["intent", "result"]
TaskKind: TypeAlias = Literal["approval", "escalation"]
TaskStatus: TypeAlias = Literal["open", "claimed", "resolved"]
TASK_KINDS: tuple[TaskKind, ...] = ("approval", "escalation")
TASK_STATUSES: tuple[TaskStatus, ...] = ("open", "claimed", "resolved")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One record in a run's journal.

    ``key`` is the step's deterministic path (``support/turn:3/tool:refund#0``); ``kind`` and
    ``name`` say what the step is (``model``/``gpt-4o``, ``tool``/``refund``); ``input_hash``
    lets a resumed run detect that the code now asks for something else (a divergence).
    ``data`` is the step's JSON-able payload: the arguments for an intent, the output for a
    result.
    """

    seq: int
    key: str
    phase: Phase
    kind: str
    name: str
    input_hash: str
    data: Any
    created_at: float
    latency_ms: float = 0.0
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A run's identity and outcome. ``target`` names the code that runs it (for
    ``module:attr`` agents: what ``keel resume`` imports); ``metadata`` is free-form JSON.

    ``lease_owner`` / ``lease_expires_at`` say which worker is continuing the run and until
    when; they are managed by the lease methods only (``update_run`` and ``finish_run`` leave
    them alone, except that a run leaving ``running`` loses its lease). ``deadline_at`` is the
    whole-run deadline (epoch seconds), stored so that it survives restarts.
    ``cancel_requested`` is set by :meth:`RunStore.request_cancel` for the lease holder to see
    (with the reason and who asked in ``metadata["cancel_request"]``).
    ``tenant`` and ``user`` say whose run it is (``run(..., tenant=, user=)``); they are set
    when the run is created and never change: ``update_run`` and the other writes that
    replace a record keep the stored ones. ``conversation`` is the thread the run is a turn
    of (``run(..., conversation=)``), likewise fixed when the run is created.
    """

    run_id: str
    agent: str
    status: RunStatus
    input: Any
    created_at: float
    updated_at: float
    target: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    deadline_at: float | None = None
    cancel_requested: bool = False
    schema_version: int = SCHEMA_VERSION
    tenant: str | None = None
    user: str | None = None
    conversation: str | None = None

    def with_status(self, status: RunStatus, **changes: Any) -> RunRecord:
        fields = {f: getattr(self, f) for f in _RECORD_FIELDS}
        fields.update(changes, status=status)
        return RunRecord(**fields)


_RECORD_FIELDS = tuple(RunRecord.__dataclass_fields__)


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanTask:
    """Something a person must decide for a run: an ``approval`` of a tool call or an
    ``escalation`` packet. ``data`` is the request (JSON) as the person sees it; ``queue``
    and ``due_at`` (the SLA deadline, epoch seconds) route it; ``resolution`` is the decision.
    The run's journal holds the same request as an intent entry at ``step_key`` and the
    decision as its result entry: the journal is what a resumed run reads."""

    task_id: str
    run_id: str
    kind: TaskKind
    step_key: str
    queue: str
    status: TaskStatus
    created_at: float
    data: Any
    due_at: float | None = None
    claimed_by: str | None = None
    claimed_at: float | None = None
    resolution: Any = None
    by: str | None = None
    resolved_at: float | None = None

    @property
    def resolved_by(self) -> str | None:
        """Deprecated: use :attr:`by` (who decided; one name for who acted everywhere)."""
        warnings.warn("HumanTask.resolved_by is deprecated; use HumanTask.by",
                      DeprecationWarning, stacklevel=2)
        return self.by


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFilter:
    """Which tasks ``list_tasks`` returns: oldest first (``created_at`` ascending, ties by
    ``task_id``), like a queue."""

    kind: TaskKind | None = None
    status: TaskStatus | None = None
    queue: str | None = None
    run_id: str | None = None
    #: Only the tasks of this tenant's runs (filtered in the store's query, never after it;
    #: a task of a run without a tenant is never one of them).
    tenant: str | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        _check_page(self.limit, self.offset)
        if self.tenant is not None:
            check_id("tenant", self.tenant)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Which runs ``list_runs`` returns: newest first (``created_at`` descending, ties broken
    by ``run_id`` descending, so paging never repeats or skips a run), ``limit`` at a time
    from ``offset``."""

    status: RunStatus | None = None
    agent: str | None = None
    #: Only this tenant's runs (filtered in the store's query, never after it).
    tenant: str | None = None
    #: Only the runs (turns) of this conversation, filtered in the store's query.
    conversation: str | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        _check_page(self.limit, self.offset)
        if self.tenant is not None:
            check_id("tenant", self.tenant)
        if self.conversation is not None:
            check_id("conversation", self.conversation)


def _check_page(limit: object, offset: object) -> None:
    from keel.core import ConfigError

    if not isinstance(limit, int) or not 0 <= limit <= 10_000:
        raise ConfigError("limit", f"must be a whole number from 0 to 10000, not {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ConfigError("offset", f"must be a whole number >= 0, not {offset!r}")


class RunStore(ABC):
    """Where runs, their journals and their human tasks live. Backends: memory, SQLite,
    Postgres.

    The contract every backend keeps (``keel.testing.StoreConformance`` checks it):

    * payloads (``input``, ``output``, ``data`` ...) are plain JSON values; a backend may
      store them by reference (memory) or as JSON text, so callers must not mutate them after
      handing them over;
    * ``seq`` is assigned by the caller (the journal numbers its entries); ``read_journal``
      returns entries in append order;
    * within a run each ``(key, phase)`` is recorded at most once; an ``append`` batch that
      repeats one (within itself or against the store) raises ``StoreError`` and stores
      nothing of that batch: batches are atomic;
    * **leases**: a worker continuing a run holds its lease (``acquire_lease``,
      ``claim_runs``); while the lease is live no other owner can acquire it. Writes that
      pass ``lease=OWNER`` are fenced: they raise :class:`keel.LeaseLost` and store nothing
      unless OWNER still holds the lease, so a worker that lost its run (paused past its
      expiry, then taken over) cannot write into it. Lease times are the store's clock.
    * ``update_run`` / ``finish_run`` replace the record except the lease fields and
      ``cancel_requested``; a record whose status is not ``running`` releases the lease.
    * **human tasks** (approvals, escalations) are put once (``put_task`` is idempotent), and
      resolved once: ``resolve_task`` checks, appends the decision and wakes or closes the run
      in one transaction.
    * **tenants**: the methods that read or act on one run or task by id (``get_run``,
      ``read_journal``, ``request_cancel``, ``get_task``, ``claim_task``, ``resolve_task``)
      take ``tenant=``. None (the default) is unscoped; a tenant id restricts the call to that
      tenant's runs and the tasks of those runs, in the store's query: a run of another
      tenant, or one stored without a tenant, is reported exactly like an unknown id
      (RunNotFound / TaskNotFound, the same message) and nothing is changed. A task's tenant
      is its run's.
    """

    # ------------------------------------------------------------------------------ runs

    @abstractmethod
    async def create_run(self, record: RunRecord) -> None:
        """Store a new run (with its lease fields as given). Raises :class:`keel.StoreError`
        if the id exists."""

    @abstractmethod
    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        """Append entries to a run's journal, atomically. Raises :class:`keel.RunNotFound`,
        and :class:`keel.LeaseLost` if ``lease`` is given and no longer holds the run."""

    @abstractmethod
    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        """Raises :class:`keel.RunNotFound` for an unknown id, and (with ``tenant``) for a
        run that is not that tenant's."""

    @abstractmethod
    async def read_journal(self, run_id: str, *,
                           tenant: str | None = None) -> list[JournalEntry]:
        """The run's entries in append order. Raises :class:`keel.RunNotFound` (with
        ``tenant``: also for a run that is not that tenant's)."""

    @abstractmethod
    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]: ...

    @abstractmethod
    async def update_run(self, record: RunRecord, *, lease: str | None = None) -> None:
        """Replace a run's record (status, output, error, usage, metadata, deadline); see the
        class docstring for the lease fields. Raises RunNotFound, LeaseLost."""

    @abstractmethod
    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                         lease: str | None = None) -> None:
        """Append ``entries`` and replace the record in one transaction (so a run's last
        steps and its final status land together). Raises RunNotFound, LeaseLost, and
        StoreError for a repeated ``(key, phase)``, changing nothing."""

    @abstractmethod
    async def prune_runs(self, *, before: float,
                         statuses: Collection[str] = TERMINAL_STATUSES) -> int:
        """Delete runs in ``statuses`` last updated before ``before`` (epoch seconds), with
        their journals and tasks. Returns how many runs were deleted."""

    async def read_journals(self, run_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """The journals of several runs (each in append order), keyed by run id; a run id
        that is not in the store is left out (never an error: a conversation's earlier turn
        may have been pruned). This default reads them one by one; SQL backends read them
        in one query."""
        from keel.core import RunNotFound

        out: dict[str, list[JournalEntry]] = {}
        for run_id in dict.fromkeys(run_ids):
            try:
                out[run_id] = await self.read_journal(run_id)
            except RunNotFound:
                continue
        return out

    async def delete_conversation(self, conversation: str, *, tenant: str | None) -> int:
        """Delete every run of ``conversation`` that belongs to ``tenant`` (None: the runs
        stored without a tenant; never another tenant's), with their journal entries and
        human tasks, in one transaction: what a data-protection request for a
        conversation asks of the run store. Returns how many runs were deleted (0 for an
        unknown conversation). Backends written before conversations existed raise
        :class:`keel.StoreError`."""
        check_conversation(conversation, tenant)
        raise StoreError(f"{type(self).__name__} cannot delete conversations; use a keel "
                         "store (memory, SQLite, Postgres) or implement delete_conversation.")

    # ---------------------------------------------------------------------------- leases

    @abstractmethod
    async def acquire_lease(self, run_id: str, owner: str, seconds: float, *,
                            steal_from: str | None = None) -> RunRecord:
        """Make ``owner`` the run's lease holder for ``seconds``, if the lease is free,
        expired, already ``owner``'s or held by ``steal_from`` (a holder known to be dead).
        Returns the updated record. Raises :class:`keel.RunLeased` (naming the holder and the
        expiry) otherwise, and RunNotFound. The run's status is not changed."""

    @abstractmethod
    async def renew_leases(self, owner: str, seconds: float) -> set[str]:
        """Extend every lease ``owner`` holds to now + ``seconds``; returns the run ids it
        still holds (a run missing from the set was taken over or released)."""

    @abstractmethod
    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it; otherwise do nothing."""

    @abstractmethod
    async def claim_runs(self, owner: str, seconds: float, *,
                         agents: Collection[str] | None = None,
                         limit: int = 1) -> list[RunRecord]:
        """Atomically lease up to ``limit`` runnable runs for ``owner``: status ``running``
        with no live lease (a suspended run whose decision arrived, or a dead worker's run),
        of the given agents, least recently updated first. Two concurrent callers never get
        the same run. A run whose metadata names an engine (:data:`ENGINE_KEY`, e.g. a run
        on Temporal) is never claimed: that engine continues it."""

    @abstractmethod
    async def request_cancel(self, run_id: str, *, reason: str | None = None,
                             by: str | None = None,
                             tenant: str | None = None) -> RunRecord:
        """Set ``cancel_requested`` on the run (for its lease holder to act on) and return
        the updated record. ``reason`` and ``by`` (who asked), when given, are kept in the
        record's metadata under :data:`CANCEL_REQUEST` (``{"reason": ..., "by": ...}``) in
        the same write, so that the worker that stops the run journals them. Raises
        RunNotFound (with ``tenant``: also for another tenant's run, changing nothing)."""

    # ------------------------------------------------------------------------ human tasks

    @abstractmethod
    async def put_task(self, task: HumanTask) -> bool:
        """Store a task unless one with its id exists; True if it was stored. Raises
        RunNotFound if its run is unknown."""

    @abstractmethod
    async def get_task(self, task_id: str, *, tenant: str | None = None) -> HumanTask:
        """Raises :class:`keel.TaskNotFound` for an unknown id, and (with ``tenant``) for a
        task whose run is not that tenant's."""

    @abstractmethod
    async def list_tasks(self, filt: TaskFilter | None = None) -> list[HumanTask]: ...

    @abstractmethod
    async def claim_task(self, task_id: str, who: str, *,
                         tenant: str | None = None) -> HumanTask:
        """Mark an open task claimed by ``who`` (claiming one's own claim again is allowed).
        Raises TaskNotFound (with ``tenant``: also for a task of another tenant's run,
        changing nothing), and :class:`keel.TaskConflict` if it is resolved or claimed by
        someone else."""

    @abstractmethod
    async def resolve_task(self, task_id: str, resolution: Any, *, by: str,
                           entry: JournalEntry | None = None,
                           close: RunRecord | None = None,
                           tenant: str | None = None) -> HumanTask:
        """Decide a task (``by``: who decided), in one transaction: it must exist (TaskNotFound;
        with ``tenant``, also for a task of another tenant's run) and not be resolved, and its
        run must not be finished (TaskConflict otherwise);
        ``entry`` (the decision's journal record) is appended, the task marked resolved, and
        then either the run record is replaced by ``close`` (a terminal record: the decision
        ends the run) or, if the run is ``suspended``, it becomes ``running`` with no lease
        (runnable: any worker may claim it). A repeated ``(key, phase)`` raises TaskConflict.
        Nothing changes on any error."""

    @abstractmethod
    async def suspend_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                          waiting_on: Collection[str], lease: str | None = None) -> str:
        """Park a run that waits for humans, in one transaction: append ``entries``, write
        ``record`` with status ``suspended`` if any task in ``waiting_on`` is still
        unresolved, else with status ``running`` (every decision already arrived: the run is
        runnable); either way the lease is released. Returns the status written."""

    # ---------------------------------------------------------------------------- outbox

    @property
    def outbox(self) -> bool:
        """Whether this store writes run events to its outbox (off unless asked for:
        ``open_store(url, outbox=True)``)."""
        return False

    async def read_outbox(self, after: int = 0, limit: int = 500, *,
                          claim_s: float = 30.0) -> list[tuple[int, Event]]:
        """Up to ``limit`` unpublished outbox rows with a position above ``after``, in
        position order, as ``(position, event)``. The rows are claimed for ``claim_s``
        seconds: a concurrent reader (another relay) skips them until the claim runs out
        (then they are read again: at least once). Stores without an outbox raise
        :class:`keel.StoreError`."""
        raise no_outbox(self)

    async def mark_published(self, positions: Collection[int]) -> int:
        """Mark the rows at ``positions`` published (they are read no more); returns how
        many were marked."""
        raise no_outbox(self)

    async def prune_outbox(self, before: float) -> int:
        """Delete the rows published before ``before`` (epoch seconds); returns how many."""
        raise no_outbox(self)

    # ------------------------------------------------------------- feedback and settings

    async def put_feedback(self, feedback: Feedback, *, tenant: str | None = None) -> Feedback:
        """Keep a person's feedback on a run and return it as stored (with the run's tenant).
        The run must exist (within ``tenant`` when one is given: another tenant's run raises
        :class:`keel.RunNotFound`); a ``feedback_id`` already kept is a no-op that returns the
        stored record (a retried call adds nothing)."""
        raise not_kept(self, "feedback")

    async def list_feedback(self, *, run_ids: Collection[str] | None = None,
                            tenant: str | None = None, since: float | None = None,
                            limit: int = 10_000) -> list[Feedback]:
        """Feedback records, oldest first: of the runs ``run_ids`` (all runs when None),
        within ``tenant``, created at or after ``since``; at most ``limit``."""
        raise not_kept(self, "feedback")

    async def get_setting(self, key: str) -> Setting | None:
        """The newest version of the setting under ``key``, or None."""
        raise not_kept(self, "settings")

    async def put_setting(self, key: str, value: Any, *, expect_version: int,
                          by: str | None = None, reason: str | None = None) -> Setting:
        """Write version ``expect_version + 1`` of ``key`` if its newest version is
        ``expect_version`` (0: the key must not exist yet), in one transaction; otherwise
        raise :class:`keel.SettingConflict` and change nothing. Every version is kept."""
        raise not_kept(self, "settings")

    async def list_settings(self, prefix: str = "") -> list[Setting]:
        """The newest version of every setting whose key starts with ``prefix``, by key."""
        raise not_kept(self, "settings")

    async def setting_history(self, key: str, *, limit: int = 1000) -> list[Setting]:
        """Every kept version of ``key``, oldest first (the last ``limit``)."""
        raise not_kept(self, "settings")

    # ------------------------------------------------------------------------- analytics

    async def stats(self, query: StatsQuery | None = None) -> StatsResult:
        """Run analytics (success and escalation rates, latency percentiles, tokens, cost,
        failing tools) over the runs ``query`` picks; see :mod:`keel.store._stats` for the
        definitions. SQL backends aggregate in the database; this default (for stores
        written before keel had stats) pages through ``list_runs`` and the journals in
        Python, which is correct but slow on a large store."""
        from keel.store._stats import StatsQuery, cache_hit, compute, tool_failure

        q = query or StatsQuery()
        runs: list[RunRecord] = []
        while True:
            page = await self.list_runs(RunFilter(agent=q.agent, tenant=q.tenant,
                                                  limit=10_000, offset=len(runs)))
            runs.extend(page)
            if len(page) < 10_000:
                break
        escalated: set[str] = set()
        seen = 0
        while True:
            tasks = await self.list_tasks(TaskFilter(kind="escalation", limit=10_000,
                                                     offset=seen))
            seen += len(tasks)
            escalated.update(t.run_id for t in tasks)
            if len(tasks) < 10_000:
                break
        failures, hits = [], []
        for r in runs:
            for entry in await self.read_journal(r.run_id):
                failed, saved = tool_failure(entry), cache_hit(entry)
                if failed is not None:
                    failures.append((r.run_id, *failed))
                if saved is not None:
                    hits.append((r.run_id, saved))
        return compute(q, runs, escalated, failures, hits)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. Safe to call more than once."""

    async def __aenter__(self) -> RunStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_tenant(tenant: object) -> str | None:
    """The ``tenant=`` of a scoped store call: None (unscoped) or a valid tenant id."""
    return None if tenant is None else check_id("tenant", tenant)


def scoped(method: Callable[..., Any], tenant: str | None) -> dict[str, Any]:
    """The keyword arguments that scope a call of the store method ``method`` to ``tenant``:
    none for an unscoped call (so a store written before keel scoped calls by tenant still
    works), ``{"tenant": tenant}`` otherwise. A store whose method cannot scope the call
    raises :class:`keel.StoreError`: the check is never skipped."""
    if tenant is None:
        return {}
    if "tenant" not in inspect.signature(method).parameters:
        owner = getattr(method, "__self__", None)
        raise StoreError(f"{type(owner).__name__}.{getattr(method, '__name__', '?')} cannot "
                         "scope a call to a tenant (tenant=); use a keel store (memory, "
                         "SQLite, Postgres) or add tenant= to it.")
    return {"tenant": check_id("tenant", tenant)}


def check_conversation(conversation: object, tenant: object) -> tuple[str, str | None]:
    """The arguments of ``delete_conversation``, checked like every run id."""
    return (check_id("conversation", conversation),
            None if tenant is None else check_id("tenant", tenant))


def check_status(status: str) -> RunStatus:
    from keel.core import UserError

    if status not in RUN_STATUSES:
        raise UserError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}.")
    return status  # type: ignore[return-value,unused-ignore]


def cancel_request(reason: str | None, by: str | None) -> dict[str, str] | None:
    """What :meth:`RunStore.request_cancel` keeps in the metadata (None: nothing to keep)."""
    request = {k: v for k, v in (("reason", reason), ("by", by)) if v is not None}
    return request or None


def who_acted(by: str | None, old: str | None, old_name: str, *, stacklevel: int = 3) -> str:
    """``by``, or the value given under a deprecated name for it (``decided_by``,
    ``resolved_by``), with a DeprecationWarning. keel names who acted ``by`` everywhere."""
    if old is not None:
        warnings.warn(f"{old_name}= is deprecated; pass by= (keel names who acted `by` "
                      "everywhere)", DeprecationWarning, stacklevel=stacklevel)
        if by is not None and by != old:
            raise UserError(f"give who acted once: by={by!r} and {old_name}={old!r} differ.")
        return old
    return by or ""


async def resolve_task(store: RunStore, task_id: str, resolution: Any, *, by: str,
                       entry: JournalEntry | None = None,
                       close: RunRecord | None = None,
                       tenant: str | None = None) -> HumanTask:
    """``store.resolve_task`` with ``by`` (and, with ``tenant``, scoped to that tenant: see
    :func:`scoped`); a store written for an older keel, whose ``resolve_task`` takes
    ``resolved_by=``, gets that."""
    scope = scoped(store.resolve_task, tenant)
    if "by" in inspect.signature(store.resolve_task).parameters:
        return await store.resolve_task(task_id, resolution, by=by, entry=entry, close=close,
                                        **scope)
    return await store.resolve_task(task_id, resolution, resolved_by=by,  # type: ignore[call-arg]
                                    entry=entry, close=close, **scope)


def store_moved(func: str, args: Sequence[Any], old: Any, store: Any) -> tuple[list[Any], Any]:
    """The arguments of a call in keel's one form, ``func(ids..., store=store)``, given those
    of a call in the form keel 0.1 used for some functions, ``func(store, ids...)`` (``old``
    is the extra positional argument that form leaves; None for a call in the new form). The
    old form works for one release, with a DeprecationWarning."""
    if old is None:
        return list(args), store
    warnings.warn(f"{func}(store, ...) is deprecated; pass the store as store= "
                  f"({func}(..., store=store)), as every keel function takes it",
                  DeprecationWarning, stacklevel=3)
    if store is not None:
        raise UserError(f"{func}() was given the store twice (first argument and store=).")
    return [*args[1:], old], args[0]


def required_store(func: str, store: RunStore | None) -> RunStore:
    if store is None:
        raise UserError(f"{func}() needs the run store: pass store=... (a RunStore, e.g. "
                        "open_store(url)).")
    return store


def no_outbox(store: object) -> StoreError:
    return StoreError(f"this store ({type(store).__name__}) has no outbox: use a keel store "
                      "(memory, SQLite, Postgres) opened with outbox=True, or implement "
                      "read_outbox, mark_published and prune_outbox.")


def not_kept(store: object, what: str) -> StoreError:
    return StoreError(f"{type(store).__name__} does not keep {what}: use a MemoryStore, "
                      f"SQLiteStore or PostgresStore (schema 6 or later)")
