"""L3: the security layer (work in progress, not yet on by default).

What is here so far are building blocks that the guardrail seam will compose: input
normalisation and injection heuristics, PII and secret detection with redaction, and
validators for dangerous tool arguments. None of them runs unless you call it; the guardrail
middleware that puts them on the model and tool seams by default is not built yet.
"""

from keel.guard._pii import PII_KINDS, Finding, find_pii, iban_valid, luhn_valid
from keel.guard._redaction import Redactor, SensitiveDataBlocked
from keel.guard._secrets import SECRET_KINDS, find_secrets

SensitiveDataBlocked.__module__ = __name__  # prints as keel.guard.SensitiveDataBlocked

__all__ = [
    "PII_KINDS",
    "SECRET_KINDS",
    "Finding",
    "Redactor",
    "SensitiveDataBlocked",
    "find_pii",
    "find_secrets",
    "iban_valid",
    "luhn_valid",
]
