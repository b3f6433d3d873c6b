"""Detectors of personal data in text: each returns typed findings, validated where a rule exists.

Kinds: ``email``, ``phone``, ``card`` (Luhn and issuer prefix), ``iban`` (ISO 13616 country
length and mod-97), ``ip_address`` (IPv4/IPv6 via :mod:`ipaddress`; loopback and unspecified
addresses are not personal data and are left alone), ``us_ssn`` (SSA area, group and serial
rules), ``uk_nino`` (HMRC prefix rules), ``es_dni`` (DNI/NIE control letter) and
``postal_address`` (English-language street addresses with a street suffix; see the limits in
docs/security.md).

Phone numbers use patterns of our own rather than the ``phonenumbers`` library: it is not a
keel dependency, its text matcher is slow on large inputs, and the shapes below (E.164-style
``+`` numbers, North American numbers with separators, national numbers with a trunk ``0``)
cover what support conversations carry. Every pattern here is linear: no nested, ambiguous
repetition, so a megabyte of hostile text is scanned in milliseconds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One piece of sensitive data found in a text: its ``kind``, the span ``[start, end)``,
    the matched ``text`` and the detector's ``confidence`` (0..1). The text is left out of the
    repr, so logging a finding does not log the value."""

    kind: str
    start: int
    end: int
    text: str = field(repr=False)
    confidence: float


Detector = Callable[[str], list[Finding]]


def _finding(kind: str, m: re.Match[str], confidence: float, group: int = 0) -> Finding:
    return Finding(kind=kind, start=m.start(group), end=m.end(group), text=m.group(group),
                   confidence=confidence)


# ------------------------------------------------------------------------------------- e-mail

_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])"
)


def detect_email(text: str) -> list[Finding]:
    if "@" not in text:
        return []
    return [_finding("email", m, 0.95) for m in _EMAIL.finditer(text)]


# -------------------------------------------------------------------------------------- phone

# "+" numbers: digit runs joined by one separator or a bracketed area code (no ambiguity).
_PHONE_INTL = re.compile(
    r"(?<![\w+])\+[1-9]\d*(?:(?:[ .-]|[ .-]?\(\d{1,4}\)[ .-]?)\d+){0,6}(?![\w-]|\.\d)"
)
# North American: (415) 555-2671, 415-555-2671, 415.555.2671 (area and exchange start 2-9).
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
    r"(?![\w-]|\.\d)"
)
# National numbers with a trunk 0: 020 7946 0958, (030) 1234 5678, 06 12 34 56 78.
_PHONE_NATIONAL = re.compile(
    r"(?<![\w+.-])(?:\(0\d{1,4}\) ?|0\d{1,4}[ -])\d{2,4}(?:[ -]\d{2,4}){0,3}(?![\w-]|\.\d)"
)


# Cheap gates for plain prose: every number-shaped kind has a digit, and all but addresses have
# six digits with at most two separators between neighbours.
_DIGIT = re.compile(r"\d")
_SIX_DIGITS = re.compile(r"\d(?:[ ().-]{0,2}\d){5}")


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def detect_phone(text: str) -> list[Finding]:
    if not _SIX_DIGITS.search(text):
        return []
    found: list[Finding] = []
    for m in _PHONE_INTL.finditer(text):
        if 8 <= len(_digits(m.group())) <= 15:
            found.append(_finding("phone", m, 0.9))
    for m in _PHONE_NANP.finditer(text):
        found.append(_finding("phone", m, 0.85))
    for m in _PHONE_NATIONAL.finditer(text):
        if 10 <= len(_digits(m.group())) <= 11:
            found.append(_finding("phone", m, 0.7))
    return found


# --------------------------------------------------------------------------------------- card

_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# Issuer prefixes (IIN ranges) of the networks in use: a Luhn-valid number with none of them
# is far more likely an order or tracking number than a card.
_CARD_PREFIX = re.compile(
    r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9]|2)"
    r"|35(?:2[89]|[3-8]\d)|5[06-9]|6\d)"
)


# How printed cards group their digits (16: 4-4-4-4, Amex 4-6-5, Diners 4-6-4, 19: 4-4-4-4-3).
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 4, 1)})
_IBAN_HEAD = re.compile(r"[A-Z]{2}\d{2}[ -]$")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def detect_card(text: str) -> list[Finding]:
    if not _SIX_DIGITS.search(text):
        return []
    found: list[Finding] = []
    for m in _CARD.finditer(text):
        raw = m.group()
        seps = {c for c in raw if not c.isdigit()}
        if len(seps) > 1:
            continue  # mixed separators: a list of numbers, not one card
        if seps and tuple(len(g) for g in re.split(r"[ -]", raw)) not in _CARD_GROUPS:
            continue  # grouped unlike any card (an IBAN's tail, a phone list)
        if _IBAN_HEAD.search(text, max(0, m.start() - 5), m.start()):
            continue  # the digits of an IBAN that failed its own checksum
        digits = _digits(raw)
        if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits):
            found.append(_finding("card", m, 0.95))
    return found


# --------------------------------------------------------------------------------------- IBAN

# ISO 13616 registry: country code -> IBAN length.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})\d{2}(?: ?[A-Z0-9]){11,30}")


def iban_valid(iban: str) -> bool:
    """Whether a compact upper-case IBAN has its country's length and passes mod 97."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def detect_iban(text: str) -> list[Finding]:
    if not _SIX_DIGITS.search(text):
        return []
    found: list[Finding] = []
    for m in _IBAN.finditer(text):
        length = IBAN_LENGTHS.get(m.group(1))
        if length is None:
            continue
        # The pattern may run on into a following word: cut at the country's length.
        count, end = 0, m.start()
        while end < m.end() and count < length:
            if text[end] != " ":
                count += 1
            end += 1
        if count < length or (end < len(text) and text[end].isalnum()):
            continue
        raw = text[m.start():end]
        if iban_valid(raw.replace(" ", "")):
            found.append(Finding(kind="iban", start=m.start(), end=end, text=raw,
                                 confidence=0.99))
    return found


# ----------------------------------------------------------------------------------------- IP

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
                   r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![\w:]|\.\w)")


def detect_ip(text: str) -> list[Finding]:
    found: list[Finding] = []
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                v4 = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if not (v4.is_loopback or v4.is_unspecified):
                found.append(_finding("ip_address", m, 0.85))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            raw = m.group()
            if sum(1 for part in raw.split(":") if part) < 2:
                continue  # "::" or "::1"-like fragments of code, not addresses worth masking
            try:
                v6 = ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            if not (v6.is_loopback or v6.is_unspecified):
                found.append(_finding("ip_address", m, 0.9))
    return found


# ------------------------------------------------------------------------------- national ids

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_NINO = re.compile(
    r"(?<![\w])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)"
)
_NINO_BAD_PREFIX = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})
_DNI = re.compile(r"(?<![\w-])([XYZ]?)(\d{7,8})-?([A-Z])(?!\w)")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def detect_us_ssn(text: str) -> list[Finding]:
    """US social security numbers with dashes or spaces: area not 000, 666 or 9xx; group not
    00; serial not 0000."""
    if not _SIX_DIGITS.search(text):
        return []
    found: list[Finding] = []
    for m in _SSN.finditer(text):
        area, group, serial = m.group(1), m.group(3), m.group(4)
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        found.append(_finding("us_ssn", m, 0.85 if m.group(2) == "-" else 0.7))
    return found


def detect_uk_nino(text: str) -> list[Finding]:
    """UK National Insurance numbers (HMRC's excluded letters and prefixes)."""
    if not _SIX_DIGITS.search(text):
        return []
    return [_finding("uk_nino", m, 0.85) for m in _NINO.finditer(text)
            if m.group(1) not in _NINO_BAD_PREFIX]


def detect_es_dni(text: str) -> list[Finding]:
    """Spanish DNI (8 digits and a control letter) and NIE (X/Y/Z, 7 digits, letter)."""
    if not _SIX_DIGITS.search(text):
        return []
    found: list[Finding] = []
    for m in _DNI.finditer(text):
        prefix, number, letter = m.group(1), m.group(2), m.group(3)
        if prefix:
            if len(number) != 7:
                continue
            number = str("XYZ".index(prefix)) + number
        elif len(number) != 8:
            continue
        if _DNI_LETTERS[int(number) % 23] == letter:
            found.append(_finding("es_dni", m, 0.9))
    return found


# ---------------------------------------------------------------------------- postal address

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    r"|Terrace|Parkway|Pkwy|Square|Sq|Highway|Hwy|Close|Crescent|Gardens)"
)
_ADDRESS = re.compile(
    r"(?<![\w-])\d{1,6}[A-Za-z]? (?:[A-Z][a-z]+\.? ){1,4}" + _STREET_SUFFIX + r"\b\.?"
    r"(?:,? (?:Apt|Apartment|Suite|Unit|Flat|#) ?[\w-]{1,6})?"
    r"(?P<city>,? [A-Z][a-z]+(?: [A-Z][a-z]+){0,2},? (?:[A-Z]{2} \d{5}(?:-\d{4})?"
    r"|[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2}))?"
)


def detect_postal_address(text: str) -> list[Finding]:
    """Street addresses in English form: a house number, one to four capitalised words and a
    street suffix, optionally a unit and a city with a US state and ZIP or a UK postcode."""
    if not _DIGIT.search(text):
        return []
    return [_finding("postal_address", m, 0.9 if m.group("city") else 0.7)
            for m in _ADDRESS.finditer(text)]


PII_DETECTORS: dict[str, Detector] = {
    "email": detect_email,
    "phone": detect_phone,
    "card": detect_card,
    "iban": detect_iban,
    "ip_address": detect_ip,
    "us_ssn": detect_us_ssn,
    "uk_nino": detect_uk_nino,
    "es_dni": detect_es_dni,
    "postal_address": detect_postal_address,
}
PII_KINDS: tuple[str, ...] = tuple(PII_DETECTORS)


def find_pii(text: str) -> list[Finding]:
    """Every personal-data finding in ``text`` (possibly overlapping), ordered by position."""
    found: list[Finding] = []
    for detect in PII_DETECTORS.values():
        found.extend(detect(text))
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    return found
