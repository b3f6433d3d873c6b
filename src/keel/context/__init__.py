"""L3: context engineering — token counting, conversations' history policies, long-term
memory and tool-output paging (docs/context.md)."""

from keel.context._calibration import (
    CalibrationState,
    TokenCalibration,
    default_calibration,
    observe_usage,
)
from keel.context._paging import Paging
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
    "BPETokenizer",
    "CalibrationState",
    "EstimateTokenizer",
    "Paging",
    "ScaledTokenizer",
    "TokenCalibration",
    "Tokenizer",
    "context_window",
    "count_message_tokens",
    "count_tokens",
    "default_calibration",
    "get_tokenizer",
    "known_tokenizers",
    "message_tokens",
    "observe_usage",
    "register_tokenizer",
    "tokenizer_for",
    "tool_spec_tokens",
]
