"""L3: context engineering — token counting, conversations' history policies, long-term
memory and tool-output paging (docs/context.md)."""

from keel.context._tokens import (
    EstimateTokenizer,
    Tokenizer,
    context_window,
    count_message_tokens,
    count_tokens,
    message_tokens,
    tokenizer_for,
)

__all__ = [
    "EstimateTokenizer",
    "Tokenizer",
    "context_window",
    "count_message_tokens",
    "count_tokens",
    "message_tokens",
    "tokenizer_for",
]
