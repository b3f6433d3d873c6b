"""L3: the security layer (work in progress, not yet on by default).

What is here so far are building blocks that the guardrail seam will compose: input
normalisation and injection heuristics, PII and secret detection with redaction, and
validators for dangerous tool arguments. None of them runs unless you call it; the guardrail
middleware that puts them on the model and tool seams by default is not built yet.
"""

from keel.guard._classifier import ClassifierHit, InjectionClassifier
from keel.guard._classifier import load_classifier as load_injection_classifier
from keel.guard._injection import (
    CLASSIFIER_FLOOR,
    DEFAULT_THRESHOLD,
    InjectionDetector,
    InjectionEvidence,
    InjectionResult,
    InjectionRule,
    detect_injection,
)
from keel.guard._limits import TextLimits, json_depth, json_text_depth
from keel.guard._normalize import MAX_CHARS, Decoded, Normalized, normalize
from keel.guard._pii import PII_KINDS, Finding, find_pii, iban_valid, luhn_valid
from keel.guard._redaction import Redactor, SensitiveDataBlocked
from keel.guard._screen import ScreenSource, screen_text
from keel.guard._screen import precheck as injection_precheck
from keel.guard._secrets import SECRET_KINDS, find_secrets
from keel.guard._validators import (
    AllowedCommands,
    AllowedURLs,
    ArgumentCheck,
    ArgumentRefused,
    PathInRoot,
    ReadOnlySQL,
)

__all__ = [
    "CLASSIFIER_FLOOR",
    "DEFAULT_THRESHOLD",
    "MAX_CHARS",
    "PII_KINDS",
    "SECRET_KINDS",
    "AllowedCommands",
    "AllowedURLs",
    "ArgumentCheck",
    "ArgumentRefused",
    "ClassifierHit",
    "Decoded",
    "Finding",
    "InjectionClassifier",
    "InjectionDetector",
    "InjectionEvidence",
    "InjectionResult",
    "InjectionRule",
    "Normalized",
    "PathInRoot",
    "ReadOnlySQL",
    "Redactor",
    "ScreenSource",
    "SensitiveDataBlocked",
    "TextLimits",
    "detect_injection",
    "find_pii",
    "find_secrets",
    "iban_valid",
    "injection_precheck",
    "json_depth",
    "json_text_depth",
    "load_injection_classifier",
    "luhn_valid",
    "normalize",
    "screen_text",
]

# Public errors print as keel.guard.X.
ArgumentRefused.__module__ = __name__
SensitiveDataBlocked.__module__ = __name__
