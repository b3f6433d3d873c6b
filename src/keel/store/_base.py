"""The RunStore seam: runs and their append-only journals.

A run record holds the run's identity, status, input, output and totals. Its journal is an
ordered list of entries; each journal step writes a ``result`` entry, and steps whose effect
must not be repeated (non-idempotent tools) first write an ``intent`` entry. ``append`` of a
batch is atomic: a batch is either wholly in the store or not at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

#: Bump when the stored layout changes; stores refuse files written with a newer version.
SCHEMA_VERSION = 1

RunStatus: TypeAlias = Literal["running", "suspended", "completed", "failed", "cancelled"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "suspended", "completed", "failed", "cancelled")
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Phase: TypeAlias = Literal["intent", "result"]


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
    ``module:attr`` agents: what ``keel resume`` imports); ``metadata`` is free-form JSON."""

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
    schema_version: int = SCHEMA_VERSION

    def with_status(self, status: RunStatus, **changes: Any) -> RunRecord:
        fields = {f: getattr(self, f) for f in _RECORD_FIELDS}
        fields.update(changes, status=status)
        return RunRecord(**fields)


_RECORD_FIELDS = tuple(RunRecord.__dataclass_fields__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Which runs ``list_runs`` returns: newest first (``created_at`` descending, ties broken
    by ``run_id`` descending, so paging never repeats or skips a run), ``limit`` at a time
    from ``offset``."""

    status: RunStatus | None = None
    agent: str | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        from keel.core import ConfigError

        if not isinstance(self.limit, int) or not 0 <= self.limit <= 10_000:
            raise ConfigError("limit", f"must be a whole number from 0 to 10000, not "
                              f"{self.limit!r}")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError("offset", f"must be a whole number >= 0, not {self.offset!r}")


class RunStore(ABC):
    """Where runs and their journals live. Implementations: memory, SQLite (and Postgres).

    The contract every backend keeps (``keel.testing.StoreConformance`` checks it):

    * payloads (``input``, ``output``, ``data`` ...) are plain JSON values; a backend may
      store them by reference (memory) or as JSON text (SQLite), so callers must not mutate
      them after handing them over;
    * ``seq`` is assigned by the caller (the journal numbers its entries); ``read_journal``
      returns entries in append order;
    * within a run each ``(key, phase)`` is recorded at most once; an ``append`` batch that
      repeats one (within itself or against the store) raises ``StoreError`` and stores
      nothing of that batch: batches are atomic;
    * ``update_run`` replaces the record (last writer wins; leases that stop two workers
      from continuing one run come with the Postgres store).
    """

    @abstractmethod
    async def create_run(self, record: RunRecord) -> None:
        """Store a new run. Raises :class:`keel.StoreError` if the id exists."""

    @abstractmethod
    async def append(self, run_id: str, entries: Sequence[JournalEntry]) -> None:
        """Append entries to a run's journal, atomically. Raises :class:`keel.RunNotFound`."""

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord:
        """Raises :class:`keel.RunNotFound` for an unknown id."""

    @abstractmethod
    async def read_journal(self, run_id: str) -> list[JournalEntry]:
        """The run's entries in append order. Raises :class:`keel.RunNotFound`."""

    @abstractmethod
    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]: ...

    @abstractmethod
    async def update_run(self, record: RunRecord) -> None:
        """Replace a run's record (status, output, error, usage). Raises RunNotFound."""

    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry]) -> None:
        """Append ``entries`` and replace the record, as one transaction where the backend
        has them (so a run's last steps and its final status land together). The default
        appends, then updates."""
        if entries:
            await self.append(record.run_id, entries)
        await self.update_run(record)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. Safe to call more than once."""

    async def __aenter__(self) -> RunStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_status(status: str) -> RunStatus:
    from keel.core import UserError

    if status not in RUN_STATUSES:
        raise UserError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}.")
    return status  # type: ignore[return-value,unused-ignore]
