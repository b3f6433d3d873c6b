"""Normalise text before it is inspected for injected instructions.

Attackers hide instructions from filters in ways a person reading the text does not notice:
look-alike letters from other scripts, invisible characters between letters, bidi controls that
reorder what is shown, terminal escape sequences, and payloads encoded as base64, hex, percent
escapes, rot13 or Unicode tag characters. :func:`normalize` undoes these so that the detectors
see the plain instruction, and counts what it undid: the presence of hiding is itself a signal.

The work is bounded: the input is cut to ``max_chars`` (noted in the result), every pattern runs
in linear time, and decoded payloads are limited in number, size and nesting depth.

The confusables table is a small, hand-picked subset of the Unicode TR39 ``confusables.txt``
data (https://www.unicode.org/Public/security/latest/confusables.txt): the Cyrillic and Greek
letters that render like ASCII letters in common fonts. Fullwidth and mathematical letters need
no table: NFKC folds them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from keel.core import UserError

__all__ = ["MAX_CHARS", "Decoded", "Normalized", "normalize"]

MAX_CHARS = 262_144
"""Default cap on the characters inspected; the rest is cut off (``Normalized.truncated``)."""

_MAX_PAYLOADS = 32  # decoded payloads kept per call, all depths together
_MAX_PAYLOAD_CHARS = 16_384  # longest encoded run that is decoded
_MAX_DEPTH = 3  # a payload inside a payload inside a payload
_MIN_PAYLOAD_TEXT = 8  # decoded text shorter than this is not worth a look

# Zero-width and other invisible format characters, and the bidi controls.
_INVISIBLE = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f"
_BIDI = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_DROP = re.compile(f"[{_INVISIBLE}{_BIDI}]")
_BIDI_RE = re.compile(f"[{_BIDI}]")

# Unicode tag characters (U+E0000..U+E007F) mirror ASCII and render as nothing: "ASCII smuggling".
_TAGS = re.compile("[\U000e0000-\U000e007f]+")

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), two-byte escapes, and the 8-bit CSI.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)

# Cyrillic and Greek letters that look like ASCII letters (subset of TR39 confusables.txt).
_CONFUSABLE_PAIRS = (
    "аa вB еe кK мM нH оo рp сc тT уy хx ѕs іi јj ԁd ɡg һh ӏl ԛq ԝw ѵv ҽe ӽx"
    " АA ВB ЕE КK МM НH ОO РP СC ТT УY ХX ЅS ІI ЈJ ԜW ԚQ"
    " αa βB εe ιi κk νv οo ρp τt υu χx ϲc ϳj"
    " ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX ϹC"
)
_CONFUSABLES = {
    ord(pair[0]): pair[1] for pair in _CONFUSABLE_PAIRS.split()
}
_CONFUSABLE_CHARS = frozenset(chr(c) for c in _CONFUSABLES)
_CONFUSABLE_RE = re.compile("[" + "".join(sorted(_CONFUSABLE_CHARS)) + "]")
_WORD = re.compile(r"\w+")

# The look-behind starts a match only where a run starts (the same matches, in linear time).
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX = re.compile(r"(?:\\x[0-9a-fA-F]{2}){8,}|\b(?:[0-9a-fA-F]{2}){12,}\b")
_HEX_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2}){8,}")  # _HEX without a base64-like run
_PERCENT = re.compile(r"(?:%[0-9a-fA-F]{2}[^\s%]{0,16}){4,}")
_INSTRUCTION_WORDS = re.compile(
    r"\b(?:ignore|disregard|forget|instructions?|previous|prior|system|prompt|reveal|"
    r"password|rules|assistant|override|secret|send|forward)\b",
    re.IGNORECASE,
)


_ROT13_INSTRUCTION_WORDS = re.compile(
    codecs.encode(_INSTRUCTION_WORDS.pattern, "rot13").replace(r"\o", r"\b"), re.IGNORECASE
)


@dataclass(frozen=True, kw_only=True)
class Decoded:
    """A payload found encoded in the text and decoded for inspection.

    ``encoding`` is ``"base64"``, ``"hex"``, ``"url"``, ``"rot13"`` or ``"unicode-tags"``;
    ``start``/``end`` is the span of the encoded run in the text it was found in (the whole
    text for rot13); ``depth`` is 1 for a payload in the input, 2 for one inside that, and so on.
    """

    encoding: str
    start: int
    end: int
    text: str
    depth: int = 1


@dataclass(frozen=True, kw_only=True)
class Normalized:
    """The cleaned text, the payloads decoded from it, and counts of what was undone."""

    text: str
    original_length: int
    truncated: bool = False
    invisible: int = 0
    bidi: int = 0
    ansi: int = 0
    confusables: int = 0
    mixed_script_words: int = 0
    decoded: tuple[Decoded, ...] = ()

    @property
    def obfuscated(self) -> bool:
        """Whether any hiding technique was found (invisible, bidi, ANSI, look-alikes, payloads)."""
        return bool(
            self.invisible or self.bidi or self.ansi or self.mixed_script_words or self.decoded
        )

    def texts(self) -> tuple[str, ...]:
        """The cleaned text followed by every decoded payload: what a detector should read."""
        return (self.text, *(d.text for d in self.decoded))


def normalize(text: str, *, max_chars: int = MAX_CHARS) -> Normalized:
    """Clean ``text`` for inspection and decode the payloads hidden in it.

    Raises :class:`keel.UserError` when ``text`` is not a ``str`` (decode bytes first). Text
    longer than ``max_chars`` is cut to that length and ``truncated`` is set.
    """
    if not isinstance(text, str):
        raise UserError(
            f"normalize() takes a str, got {type(text).__name__}; decode bytes first "
            "(for example data.decode('utf-8', errors='replace'))"
        )
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise UserError(f"normalize(max_chars=...) must be a positive int, got {max_chars!r}")
    budget = [_MAX_PAYLOADS]
    return _normalize(text, max_chars=max_chars, depth=1, budget=budget)


def _normalize(text: str, *, max_chars: int, depth: int, budget: list[int]) -> Normalized:
    original_length = len(text)
    truncated = original_length > max_chars
    if truncated:
        text = text[:max_chars]
    payloads: list[Decoded] = []

    def tag_payload(match: re.Match[str]) -> str:
        hidden = "".join(chr(ord(c) - 0xE0000) for c in match.group() if ord(c) >= 0xE0020)
        if hidden.strip() and budget[0] > 0:
            budget[0] -= 1
            payloads.append(
                Decoded(
                    encoding="unicode-tags",
                    start=match.start(),
                    end=match.end(),
                    text=hidden,
                    depth=depth,
                )
            )
        return ""

    tags = bidi = invisible = confusables = mixed = ansi = 0
    if text.isascii():
        # No tag, invisible, bidi or look-alike character, and NFKC leaves ASCII as it is.
        if "\x1b" in text:
            text, ansi = _ANSI.subn("", text)
    else:
        length = len(text)
        text = _TAGS.sub(tag_payload, text)
        tags = length - len(text)
        text, ansi = _ANSI.subn("", text)
        bidi = len(_BIDI_RE.findall(text)) if not text.isascii() else 0
        length = len(text)
        text = _DROP.sub("", text)
        invisible = length - len(text) - bidi + tags
        text = unicodedata.normalize("NFKC", text)
        if not text.isascii():
            confusables = len(_CONFUSABLE_RE.findall(text))
            if confusables:
                mixed = _count_mixed_words(text)
                text = text.translate(_CONFUSABLES)
    found = _decode_payloads(text, depth=depth, budget=budget)
    nested: list[Decoded] = []
    if depth < _MAX_DEPTH:
        for payload in (*payloads, *found):
            inner = _normalize(payload.text, max_chars=max_chars, depth=depth + 1, budget=budget)
            nested.extend(inner.decoded)
    return Normalized(
        text=text,
        original_length=original_length,
        truncated=truncated,
        invisible=invisible,
        bidi=bidi,
        ansi=ansi,
        confusables=confusables,
        mixed_script_words=mixed,
        decoded=(*payloads, *found, *nested),
    )


def _count_mixed_words(text: str) -> int:
    """Words that mix ASCII letters with look-alike letters: "pаypal" with a Cyrillic а."""
    count = 0
    for match in _WORD.finditer(text):
        word = match.group()
        if word.isascii():
            continue
        has_fake = any(c in _CONFUSABLE_CHARS for c in word)
        if has_fake and any(c.isascii() and c.isalpha() for c in word):
            count += 1
    return count


def _printable_text(data: bytes) -> str | None:
    """``data`` as text when it is UTF-8 and at least 90% printable, else None."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < _MIN_PAYLOAD_TEXT:
        return None
    printable = sum(1 for c in decoded if c.isprintable() or c in "\n\r\t")
    letters = sum(1 for c in decoded if c.isalpha())
    if printable < 0.9 * len(decoded) or letters < 0.4 * len(decoded):
        return None
    return decoded


def _decode_base64(run: str) -> str | None:
    run = run.rstrip("=")
    if len(run) % 4 == 1:
        return None
    padded = run + "=" * (-len(run) % 4)
    altchars = b"-_" if ("-" in run or "_" in run) else None
    if altchars and ("+" in run or "/" in run):
        return None
    try:
        data = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable_text(data)


def _decode_hex(run: str) -> str | None:
    try:
        data = bytes.fromhex(run.replace("\\x", ""))
    except ValueError:
        return None
    return _printable_text(data)


def _decode_percent(run: str) -> str | None:
    decoded = unquote(run, errors="strict") if run else ""
    if decoded == run or len(decoded) < _MIN_PAYLOAD_TEXT:
        return None
    return decoded


def _decode_payloads(text: str, *, depth: int, budget: list[int]) -> list[Decoded]:
    found: list[Decoded] = []
    base64_runs = False  # whether the base64 scan saw any base64-like run
    decoders = (("base64", _BASE64, _decode_base64), ("hex", _HEX, _decode_hex))
    for name, pattern, decode in (*decoders, ("url", _PERCENT, _safe_percent)):
        if not _may_hold(name, text, base64_runs):
            continue
        # Without a base64-like run only the \\x form of hex can match: the same matches, faster.
        scan = _HEX_ESCAPES if name == "hex" and not base64_runs else pattern
        for match in scan.finditer(text):
            base64_runs = True
            if budget[0] <= 0:
                return found
            run = match.group()
            if len(run) > _MAX_PAYLOAD_CHARS:
                continue
            decoded = decode(run)
            if decoded is not None:
                budget[0] -= 1
                found.append(
                    Decoded(
                        encoding=name,
                        start=match.start(),
                        end=match.end(),
                        text=decoded,
                        depth=depth,
                    )
                )
    rot = _rot13_payload(text)
    if rot is not None and budget[0] > 0:
        budget[0] -= 1
        found.append(Decoded(encoding="rot13", start=0, end=len(text), text=rot, depth=depth))
    return found


def _may_hold(encoding: str, text: str, base64_runs: bool) -> bool:
    """Whether ``encoding``'s pattern can match ``text`` at all (cheap tests that skip a scan).

    A hex run of 24 digits is also a base64-like run, so without any base64-like run (the
    base64 scan runs first) only the ``\\x`` form of hex can be there; percent escapes need
    a ``%``.
    """
    if encoding == "hex":
        return base64_runs or "\\x" in text
    if encoding == "url":
        return "%" in text
    return True


def _safe_percent(run: str) -> str | None:
    try:
        return _decode_percent(run)
    except UnicodeDecodeError:
        return None


def _rot13_payload(text: str) -> str | None:
    """The rot13 of ``text`` when that reads as instructions and the text itself does not."""
    if len(text) < _MIN_PAYLOAD_TEXT or len(text) > _MAX_PAYLOAD_CHARS:
        return None
    # The instruction words of the rotated text are the rot13 of those words in the text, so
    # count them there first and rotate only when there are two or more.
    hits = len(_ROT13_INSTRUCTION_WORDS.findall(text))
    if hits >= 2 and hits > len(_INSTRUCTION_WORDS.findall(text)):
        return codecs.encode(text, "rot13")
    return None
