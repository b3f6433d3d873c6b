"""L1: the RunStore seam and its backends (memory, SQLite, Postgres)."""

from typing import TYPE_CHECKING

from keel.store._base import (
    CANCEL_REQUEST,
    ENGINE_KEY,
    RUN_STATUSES,
    SCHEMA_VERSION,
    TASK_KINDS,
    TASK_STATUSES,
    TERMINAL_STATUSES,
    HumanTask,
    JournalEntry,
    Phase,
    RunFilter,
    RunRecord,
    RunStatus,
    RunStore,
    TaskFilter,
    TaskKind,
    TaskStatus,
    check_status,
    check_tenant,
    required_store,
    resolve_task,
    scoped,
    store_moved,
    who_acted,
)
from keel.store._export import (
    EXPORT_FORMAT,
    MAX_EXPORT_BYTES,
    dump_export,
    export_run,
    import_run,
    parse_export,
)
from keel.store._ids import MAX_ID_CHARS, check_id
from keel.store._memory import MemoryStore
from keel.store._open import open_store
from keel.store._outbox import Event, check_event_type
from keel.store._records import (
    MAX_COMMENT_CHARS,
    Feedback,
    Setting,
    Thumbs,
    check_feedback,
    check_setting_key,
)
from keel.store._stats import GROUP_KEYS, StatsQuery, StatsResult, StatsRow, tool_failure

if TYPE_CHECKING:
    from keel.store._postgres import PostgresStore
    from keel.store._sqlite import SQLiteStore

__all__ = [
    "CANCEL_REQUEST",
    "ENGINE_KEY",
    "EXPORT_FORMAT",
    "GROUP_KEYS",
    "MAX_COMMENT_CHARS",
    "MAX_EXPORT_BYTES",
    "MAX_ID_CHARS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TASK_KINDS",
    "TASK_STATUSES",
    "TERMINAL_STATUSES",
    "Event",
    "Feedback",
    "HumanTask",
    "JournalEntry",
    "MemoryStore",
    "Phase",
    "PostgresStore",
    "RunFilter",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "SQLiteStore",
    "Setting",
    "StatsQuery",
    "StatsResult",
    "StatsRow",
    "TaskFilter",
    "TaskKind",
    "TaskStatus",
    "Thumbs",
    "check_event_type",
    "check_feedback",
    "check_id",
    "check_setting_key",
    "check_status",
    "check_tenant",
    "dump_export",
    "export_run",
    "import_run",
    "open_store",
    "parse_export",
    "required_store",
    "resolve_task",
    "scoped",
    "store_moved",
    "tool_failure",
    "who_acted",
]


def __getattr__(name: str) -> object:
    # SQLiteStore is imported on first use so that `import keel` does not load sqlite3.
    if name == "SQLiteStore":
        from keel.store._sqlite import SQLiteStore

        return SQLiteStore
    if name == "PostgresStore":  # likewise psycopg, which is an optional extra
        from keel.store._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'keel.store' has no attribute {name!r}")
