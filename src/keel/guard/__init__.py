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
from keel.guard._normalize import MAX_CHARS, Decoded, Normalized, normalize

__all__: list[str] = [
    "DEFAULT_THRESHOLD",
    "MAX_CHARS",
    "Decoded",
    "InjectionDetector",
    "InjectionEvidence",
    "InjectionResult",
    "InjectionRule",
    "Normalized",
    "detect_injection",
    "normalize",
]
