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
from keel.guard._monitor import Monitor, ToolSwitch
from keel.guard._monitor_policy import ACTIONS, DEFAULT_ACTIONS, DEVIATIONS, MonitorPolicy
from keel.guard._monitor_state import (
    Baseline,
    InMemoryMonitorStore,
    MonitorStore,
    RedisMonitorStore,
)
from keel.guard._normalize import MAX_CHARS, Decoded, Normalized, normalize
from keel.guard._notify import Alert, LogNotifier, Notifier, WebhookNotifier
from keel.guard._pii import PII_KINDS, Finding, find_pii, iban_valid, luhn_valid
from keel.guard._redaction import Redactor, SensitiveDataBlocked
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
    "ACTIONS",
    "DEFAULT_ACTIONS",
    "DEFAULT_THRESHOLD",
    "DEVIATIONS",
    "MAX_CHARS",
    "PII_KINDS",
    "SECRET_KINDS",
    "Alert",
    "AllowedCommands",
    "AllowedURLs",
    "ArgumentCheck",
    "ArgumentRefused",
    "Baseline",
    "Decoded",
    "Finding",
    "InMemoryMonitorStore",
    "InjectionDetector",
    "InjectionEvidence",
    "InjectionResult",
    "InjectionRule",
    "LogNotifier",
    "Monitor",
    "MonitorPolicy",
    "MonitorStore",
    "Normalized",
    "Notifier",
    "PathInRoot",
    "ReadOnlySQL",
    "Redactor",
    "RedisMonitorStore",
    "SensitiveDataBlocked",
    "TextLimits",
    "ToolSwitch",
    "WebhookNotifier",
    "detect_injection",
    "find_pii",
    "find_secrets",
    "iban_valid",
    "json_depth",
    "json_text_depth",
    "luhn_valid",
    "normalize",
]

# Public errors print as keel.guard.X.
ArgumentRefused.__module__ = __name__
SensitiveDataBlocked.__module__ = __name__
