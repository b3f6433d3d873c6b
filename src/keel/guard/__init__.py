"""L3: the security layer.

Guards are middleware with ``check`` (the seam is ``keel.runtime``'s: ``GuardInput``,
``GuardDecision``, ``Guardrail``). ``keel.defaults()`` puts :func:`default_guards` on every
``keel.Agent``: size limits, injection detection on input and tool output, secrets masked in
tool output and answers, taint gating of calls with effects whose arguments came from tool
output, and tool output delimited as untrusted when the model reads it. The building blocks
(normalisation, detectors, redaction, argument validators) are usable on their own.

Middleware you add yourself: :class:`ToolPolicy` (least privilege: allow-lists, scopes and
argument constraints per agent and tenant) and :class:`Credentials` (short-lived scoped
credentials for tools, masked everywhere keel writes).
"""

from keel.guard._classifier import ClassifierHit, InjectionClassifier
from keel.guard._classifier import load_classifier as load_injection_classifier
from keel.guard._credentials import Credentials
from keel.guard._data_guard import DataGuard
from keel.guard._data_policy import (
    DATA_ACTIONS,
    DATA_GROUPS,
    DEFAULT_RULES,
    DESTINATIONS,
    DataPolicy,
    DataScope,
)
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
from keel.guard._policy import EmailDomains, Limit, Matches, OneOf, ToolPolicy, ToolRules
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
    "ACTIONS",
    "CLASSIFIER_FLOOR",
    "DATA_ACTIONS",
    "DATA_GROUPS",
    "DEFAULT_ACTIONS",
    "DEFAULT_RULES",
    "DEFAULT_THRESHOLD",
    "DESTINATIONS",
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
    "ClassifierHit",
    "Credentials",
    "DataGuard",
    "DataPolicy",
    "DataScope",
    "Decoded",
    "EmailDomains",
    "Finding",
    "InMemoryMonitorStore",
    "InjectionClassifier",
    "InjectionDetector",
    "InjectionEvidence",
    "InjectionGuard",
    "InjectionResult",
    "InjectionRule",
    "Limit",
    "LimitsGuard",
    "LogNotifier",
    "Matches",
    "Monitor",
    "MonitorPolicy",
    "MonitorStore",
    "Normalized",
    "Notifier",
    "OneOf",
    "PathInRoot",
    "ReadOnlySQL",
    "Redactor",
    "RedisMonitorStore",
    "ScreenSource",
    "SecretsGuard",
    "SensitiveDataBlocked",
    "Source",
    "TaintGuard",
    "TextLimits",
    "ToolPolicy",
    "ToolRules",
    "ToolSwitch",
    "UntrustedContent",
    "ValueOrigin",
    "WebhookNotifier",
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
