"""L3: the security layer (work in progress, not yet on by default).

What is here so far are building blocks that the guardrail seam will compose: input
normalisation and injection heuristics, PII and secret detection with redaction, and
validators for dangerous tool arguments. None of them runs unless you call it; the guardrail
middleware that puts them on the model and tool seams by default is not built yet.
"""

from keel.guard._injection import (
    DEFAULT_THRESHOLD,
    InjectionDetector,
    InjectionEvidence,
    InjectionResult,
    InjectionRule,
    detect_injection,
)
from keel.guard._limits import TextLimits, json_depth, json_text_depth
from keel.guard._normalize import MAX_CHARS, Decoded, Normalized, normalize
from keel.guard._validators import (
    AllowedCommands,
    AllowedURLs,
    ArgumentCheck,
    ArgumentRefused,
    PathInRoot,
    ReadOnlySQL,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_CHARS",
    "AllowedCommands",
    "AllowedURLs",
    "ArgumentCheck",
    "ArgumentRefused",
    "Decoded",
    "InjectionDetector",
    "InjectionEvidence",
    "InjectionResult",
    "InjectionRule",
    "Normalized",
    "PathInRoot",
    "ReadOnlySQL",
    "TextLimits",
    "detect_injection",
    "json_depth",
    "json_text_depth",
    "normalize",
]

ArgumentRefused.__module__ = __name__  # prints as keel.guard.ArgumentRefused
