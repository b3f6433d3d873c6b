"""L3: context engineering — token counting, conversations' history policies, long-term
memory and tool-output paging (docs/context.md)."""

from keel.context._calibration import (
    CalibrationState,
    TokenCalibration,
    default_calibration,
    observe_usage,
)
from keel.context._history import History, Summarize, transcript
from keel.context._history_state import Plan
from keel.context._memory import METADATA_KEY, Injected, Memory, remember_tool
from keel.context._memory_base import (
    MemoryBackend,
    MemoryHit,
    MemoryItem,
    MemoryKind,
    Ranking,
)
from keel.context._memory_inmem import InMemoryMemory
from keel.context._memory_postgres import PostgresMemory
from keel.context._memory_sqlite import DEFAULT_MEMORY_PATH, SQLiteMemory
from keel.context._paging import Paging
from keel.context._policies import (
    PIN_MARK,
    Importance,
    Policy,
    RequestBudget,
    SlidingWindow,
    TokenBudget,
    Turn,
    default_reserve,
    is_pinned,
    is_small_talk,
    pin,
)
from keel.context._tokenizers import (
    BPETokenizer,
    EstimateTokenizer,
    ScaledTokenizer,
    Tokenizer,
    get_tokenizer,
    known_tokenizers,
    register_tokenizer,
)
from keel.context._tokens import (
    context_window,
    count_message_tokens,
    count_tokens,
    message_tokens,
    tokenizer_for,
    tool_spec_tokens,
)

__all__ = [
    "DEFAULT_MEMORY_PATH",
    "METADATA_KEY",
    "PIN_MARK",
    "BPETokenizer",
    "CalibrationState",
    "EstimateTokenizer",
    "History",
    "Importance",
    "InMemoryMemory",
    "Injected",
    "Memory",
    "MemoryBackend",
    "MemoryHit",
    "MemoryItem",
    "MemoryKind",
    "Paging",
    "Plan",
    "Policy",
    "PostgresMemory",
    "Ranking",
    "RequestBudget",
    "SQLiteMemory",
    "ScaledTokenizer",
    "SlidingWindow",
    "Summarize",
    "TokenBudget",
    "TokenCalibration",
    "Tokenizer",
    "Turn",
    "context_window",
    "count_message_tokens",
    "count_tokens",
    "default_calibration",
    "default_reserve",
    "get_tokenizer",
    "is_pinned",
    "is_small_talk",
    "known_tokenizers",
    "message_tokens",
    "observe_usage",
    "pin",
    "register_tokenizer",
    "remember_tool",
    "tokenizer_for",
    "tool_spec_tokens",
    "transcript",
]
