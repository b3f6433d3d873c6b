"""L1: the RunStore seam and its backends (memory, SQLite)."""

from keel.store._base import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    TERMINAL_STATUSES,
    JournalEntry,
    Phase,
    RunFilter,
    RunRecord,
    RunStatus,
    RunStore,
    check_status,
)
from keel.store._memory import MemoryStore
from keel.store._open import open_store

__all__ = [
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "JournalEntry",
    "MemoryStore",
    "Phase",
    "RunFilter",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "check_status",
    "open_store",
]
