"""Size and encoding limits for text that arrives from outside (user input, tool output,
tool arguments): characters, UTF-8 bytes, binary content, invalid UTF-8 and lone
surrogates, and JSON nesting depth, each refused or safely truncated. Nothing here
recurses, so deeply nested input cannot exhaust the stack."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from typing import Any, Literal

from keel.core import ConfigError
from keel.guard._validators import ArgumentCheck, ArgumentRefused

OnExcess = Literal["reject", "truncate"]
_CONTROL = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r") | {"\x7f"}


def json_depth(value: Any, *, stop_at: int | None = None) -> int:
    """The nesting depth of a JSON-like value (a scalar is 0, ``[]`` is 1), counted without
    recursion; stops counting once past ``stop_at``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            deepest = max(deepest, depth)
            if stop_at is not None and deepest > stop_at:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def json_text_depth(text: str, *, stop_at: int | None = None) -> int:
    """The bracket nesting depth of JSON text, read without parsing it (strings skipped)."""
    deepest = depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_at is not None and deepest > stop_at:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


class TextLimits(ArgumentCheck):
    """Limits on a piece of text: at most ``max_chars`` characters and ``max_bytes`` UTF-8
    bytes, no binary content (NUL and other control characters except tab and newlines),
    valid UTF-8 without lone surrogates, and (for JSON) at most ``max_depth`` levels of
    nesting. ``on_excess="reject"`` refuses what breaks a limit; ``"truncate"`` cuts what is
    too long at a character boundary and replaces invalid or binary characters with U+FFFD
    (nesting too deep is always refused). ``clean`` returns the safe text."""

    kind = "text"

    def __init__(self, *, max_chars: int | None = 100_000, max_bytes: int | None = None,
                 max_depth: int = 32, on_excess: OnExcess = "reject",
                 allow_control: bool = False) -> None:
        for field, limit in (("max_chars", max_chars), ("max_bytes", max_bytes)):
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise ConfigError(field, f"must be a positive number or None, not {limit!r}")
        if not isinstance(max_depth, int) or max_depth < 1:
            raise ConfigError("max_depth", f"must be a positive number, not {max_depth!r}")
        if on_excess not in ("reject", "truncate"):
            raise ConfigError("on_excess", f"must be 'reject' or 'truncate', not {on_excess!r}")
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.on_excess = on_excess
        self.allow_control = allow_control

    def check(self, value: Any) -> str | None:
        try:
            self.clean(value)
        except ArgumentRefused as exc:
            return exc.reason
        return None

    def validate(self, value: Any) -> str:
        return self.clean(value)

    def _refusal(self, value: str) -> str | None:  # pragma: no cover - check is overridden
        return self.check(value)

    def clean(self, value: str | bytes | bytearray) -> str:
        """The text within the limits (truncated or repaired when ``on_excess`` says so),
        or :class:`ArgumentRefused` saying which limit it breaks."""
        truncate = self.on_excess == "truncate"
        if isinstance(value, bytes | bytearray):
            value = self._decode(bytes(value), truncate)
        elif not isinstance(value, str):
            raise ArgumentRefused(f"expected text, not {type(value).__name__}")
        if self.max_chars is not None and len(value) > self.max_chars:
            if not truncate:
                raise ArgumentRefused(f"text is {len(value)} characters, over the limit of "
                                      f"{self.max_chars}; send less")
            value = value[: self.max_chars]
        value = self._repair(value, truncate)
        if self.max_bytes is not None:
            size = len(value.encode("utf-8"))
            if size > self.max_bytes:
                if not truncate:
                    raise ArgumentRefused(f"text is {size} bytes, over the limit of "
                                          f"{self.max_bytes}; send less")
                value = value.encode("utf-8")[: self.max_bytes].decode("utf-8", "ignore")
        return value

    def _decode(self, data: bytes, truncate: bool) -> str:
        if self.max_bytes is not None and len(data) > self.max_bytes and not truncate:
            raise ArgumentRefused(f"text is {len(data)} bytes, over the limit of "
                                  f"{self.max_bytes}; send less")
        limit = self.max_bytes if self.max_bytes is not None else self.max_chars
        if truncate and limit is not None and len(data) > limit:
            data = data[: limit * (1 if self.max_bytes is not None else 4)]
            # final=False drops a character cut in half at the end instead of mangling it
            return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not truncate:
                raise ArgumentRefused(f"text is not valid UTF-8 (byte {exc.start}); send "
                                      "text, not binary data") from None
            return data.decode("utf-8", "replace")

    def _repair(self, value: str, truncate: bool) -> str:
        bad = [i for i, c in enumerate(value)
               if 0xD800 <= ord(c) <= 0xDFFF or (not self.allow_control and c in _CONTROL)]
        if not bad:
            return value
        if not truncate:
            kind = "a lone surrogate" if 0xD800 <= ord(value[bad[0]]) <= 0xDFFF else \
                "binary or control characters"
            raise ArgumentRefused(f"text contains {kind} (at character {bad[0]}); send "
                                  "plain UTF-8 text")
        chars = list(value)
        for i in bad:
            chars[i] = "\ufffd"
        return "".join(chars)

    def parse_json(self, text: str | bytes | bytearray) -> Any:
        """Parse JSON text after the text limits, refusing nesting deeper than
        ``max_depth`` before the parser sees it (so it cannot hit the recursion limit)."""
        clean = TextLimits(max_chars=self.max_chars, max_bytes=self.max_bytes,
                           max_depth=self.max_depth, on_excess="reject",
                           allow_control=True).clean(text)
        depth = json_text_depth(clean, stop_at=self.max_depth)
        if depth > self.max_depth:
            raise ArgumentRefused(f"JSON is nested over {self.max_depth} levels deep")
        try:
            return json.loads(clean)
        except (ValueError, RecursionError) as exc:
            raise ArgumentRefused(f"not valid JSON ({exc})") from None

    def check_value(self, value: Any) -> str | None:
        """The reason a parsed value (dicts, lists, strings) breaks the limits, or None:
        nesting depth, then every string in it."""
        if json_depth(value, stop_at=self.max_depth) > self.max_depth:
            return f"the value is nested over {self.max_depth} levels deep"
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                reason = self.check(item)
                if reason is not None:
                    return reason
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list | tuple):
                stack.extend(item)
        return None

    def on(self, *names: str) -> Callable[[Any], str | None]:
        """A tool validator checking the named arguments, whatever their type: strings
        against the size and encoding limits, lists and dicts for depth and every string
        inside (models are checked as their field values)."""
        base = super().on(*names)

        def validator(args: Any) -> str | None:
            for name in names:
                if not hasattr(args, name):
                    return base(args)  # raises the ConfigError naming the argument
                value = getattr(args, name)
                if hasattr(value, "model_dump"):
                    value = value.model_dump()
                reason = None if value is None else self.check_value(value)
                if reason is not None:
                    return f"{name}: {reason}"
            return None

        validator.__name__ = f"TextLimits.on({', '.join(names)})"
        return validator
