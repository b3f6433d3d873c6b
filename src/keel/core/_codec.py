"""The one JSON codec: how any Python value becomes plain JSON data and text.

Every place that records, shows or hashes a value (a tool's return value, a run's output, a
workflow or planner step's result, a worker's answer to its lead, the CLI's ``--json``, the
journal's input hashes, log lines) goes through these three functions, so a value looks the
same everywhere:

* :func:`to_jsonable` turns a value into plain JSON data (dicts with string keys, lists,
  str, int, float, bool, None);
* :func:`to_text` is what a model (or a person) is shown: the plain data's string when it is
  one, else its JSON text on one line;
* :func:`dumps` is JSON text of any value, with the few options callers need.

The rules, applied recursively:

==========================  ====================================================================
value                       plain JSON data
==========================  ====================================================================
str, int, float, bool,      itself (subclasses: their plain value; NaN and infinities are kept,
None                        as Python's ``json`` writes them)
dict, other mappings        a dict; keys become strings as ``json`` does (``1`` → ``"1"``,
                            ``True`` → ``"true"``, ``None`` → ``"null"``); other keys by
                            these rules, as text
list, tuple, deque          a list
set, frozenset              a sorted list: strings and numbers in their natural order, any
                            other elements by their canonical JSON text (deterministic
                            whatever the hash seed)
dataclass instance          a dict of its fields (``dataclasses.fields``), by these rules
pydantic model              ``model_dump(mode="python")`` (its aliases config, field
                            serializers and computed fields apply), then these rules: so a
                            date or set inside a model looks as it does anywhere else
Enum member                 its ``value``, by these rules
bytes, bytearray,           standard base64 text (RFC 4648, with padding)
memoryview
datetime, date, time        ISO 8601 text as pydantic writes it (``2024-01-02``,
                            ``2024-01-02T03:04:05Z`` for UTC)
timedelta                   ISO 8601 duration text as pydantic writes it (``P1DT3.5S``)
Decimal                     its exact text (``"1.10"``): lossless, never a float
UUID, Path, IP addresses,   their text
other pydantic-known types  what ``pydantic_core.to_jsonable_python`` gives
anything else               ``str(value)``
==========================  ====================================================================

Plain data comes back unchanged (as a copy), and :func:`dumps` of plain data is exactly what
``json.dumps`` writes, so hashes of journals recorded before the codec existed do not move.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections import deque
from collections.abc import Mapping
from enum import Enum
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python

__all__ = ["dumps", "to_jsonable", "to_text"]

_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float, bool})


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (see the module docstring for each type's form).

    Never fails for an unknown type (it becomes ``str(value)``); raises ``ValueError`` for a
    value that contains itself."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    try:
        return _plain(value)
    except RecursionError:
        raise ValueError(f"cannot turn {kind.__name__} into JSON data: it contains itself "
                         "(or nests too deeply)") from None


def to_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as text for a model or a person: when its plain JSON data is a string (a
    str, a date, a UUID, a Decimal, a string enum, bytes as base64) that string as is,
    anything else its JSON (one line; ``indent`` for people). ``to_text(to_jsonable(v))``
    equals ``to_text(v)``, so text made from recorded data matches the live text."""
    if type(value) is str:
        return value
    text = dumps(value, indent=indent)
    if text.startswith('"'):  # the plain data is a string: show it, not its JSON
        string: str = json.loads(text)
        return string
    return text


def dumps(value: Any, *, indent: int | None = None, ensure_ascii: bool = False,
          sort_keys: bool = False, compact: bool = False, allow_nan: bool = True) -> str:
    """JSON text of any value (converted by :func:`to_jsonable`'s rules).

    ``indent`` as in ``json.dumps``; ``ensure_ascii`` escapes every non-ASCII character (safe
    to print to any terminal); ``sort_keys`` and ``compact`` (no spaces after ``,`` and
    ``:``) together give the canonical form hashed for journal inputs; ``allow_nan=False``
    raises ``ValueError`` for NaN and infinities. Plain data is written exactly as
    ``json.dumps`` with the same options writes it."""
    encoder = _encoder(indent, ensure_ascii, sort_keys, compact, allow_nan)
    try:
        return encoder.encode(value)
    except TypeError:  # a key json cannot write (a tuple, a date), or keys that cannot be sorted
        return encoder.encode(to_jsonable(value))


# ------------------------------------------------------------------------- the conversion


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k if type(k) is str else _key(k): v if type(v) in _SCALARS else _plain(v)
                for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _SCALARS else _plain(v) for v in value]
    return _other(value)


def _other(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return _plain(value.model_dump(mode="python"))
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | deque):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return _sorted([_plain(v) for v in value])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    return to_jsonable_python(value, fallback=str)


def _key(key: Any) -> str:
    """A dict key as the string ``json`` would write for it."""
    if isinstance(key, Enum):
        key = _plain(key)
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    plain = _plain(key)
    return plain if isinstance(plain, str) else _COMPACT.encode(plain)


def _sorted(items: list[Any]) -> list[Any]:
    """A set's elements in an order that does not depend on the hash seed."""
    kinds = {type(i) for i in items}
    if kinds <= {str} or (kinds <= _NUMBERS and all(i == i for i in items)):
        return sorted(items)
    return sorted(items, key=_CANONICAL.encode)


# ----------------------------------------------------------------------------- encoders


def _default(value: Any) -> Any:
    """``json``'s hook for a value it cannot write itself."""
    return to_jsonable(value)


_ENCODERS: dict[tuple[int | None, bool, bool, bool, bool], json.JSONEncoder] = {}


def _encoder(indent: int | None, ensure_ascii: bool, sort_keys: bool, compact: bool,
             allow_nan: bool) -> json.JSONEncoder:
    options = (indent, ensure_ascii, sort_keys, compact, allow_nan)
    encoder = _ENCODERS.get(options)
    if encoder is None:
        encoder = _ENCODERS[options] = json.JSONEncoder(
            indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys, allow_nan=allow_nan,
            separators=(",", ":") if compact else None, default=_default)
    return encoder


_COMPACT = _encoder(None, False, False, True, True)
_CANONICAL = _encoder(None, False, True, True, True)
