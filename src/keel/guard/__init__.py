"""L3: the security layer.

Guards are middleware with ``check`` (the seam is ``keel.runtime``'s: ``GuardInput``,
``GuardDecision``, ``Guardrail``). ``keel.defaults()`` puts :func:`default_guards` on every
``keel.Agent``: size limits, injection detection on input and tool output, secrets masked in
tool output and answers, taint gating of calls with effects whose arguments came from tool
output, and tool output delimited as untrusted when the model reads it. The building blocks
(normalisation, detectors, redaction, argument validators) are usable on their own.
"""

from keel.guard._classifier import ClassifierHit, InjectionClassifier
from keel.guard._classifier import load_classifier as load_injection_classifier
from keel.guard._guards import (
    InjectionGuard,
    LimitsGuard,
    SecretsGuard,
    default_guards,
)
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
from keel.guard._provenance import Source, ValueOrigin, provenance
from keel.guard._redaction import Redactor, SensitiveDataBlocked
from keel.guard._screen import ScreenSource, screen_text
from keel.guard._screen import precheck as injection_precheck
from keel.guard._secrets import SECRET_KINDS, find_secrets
from keel.guard._taint import TaintGuard, UntrustedContent, delimit, undelimit
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
    "InjectionGuard",
    "InjectionResult",
    "InjectionRule",
    "LimitsGuard",
    "Normalized",
    "PathInRoot",
    "ReadOnlySQL",
    "Redactor",
    "ScreenSource",
    "SecretsGuard",
    "SensitiveDataBlocked",
    "Source",
    "TaintGuard",
    "TextLimits",
    "UntrustedContent",
    "ValueOrigin",
    "default_guards",
    "delimit",
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
    "provenance",
    "screen_text",
    "undelimit",
]

# Public errors print as keel.guard.X.
ArgumentRefused.__module__ = __name__
SensitiveDataBlocked.__module__ = __name__
