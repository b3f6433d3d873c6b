"""Argument checks shared by flags and rollouts: each failure is a RolloutError with the fix."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from keel.rollout._errors import RolloutError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def check_name(what: str, name: object) -> str:
    """A flag, rollout or version name: 1 to 100 letters, digits, ``_``, ``-`` or ``.``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        raise RolloutError(f"a {what} name is 1 to 100 letters, digits, '_', '-' or '.', "
                           f"starting with a letter or digit (e.g. 'v2'), not {shown:.120}")
    return name


def check_percent(what: str, value: object) -> float:
    """A share from 0 to 100 (percent)."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= 100:
        raise RolloutError(f"{what} is a percentage from 0 to 100, not {value!r:.80}")
    return float(value)


def check_seconds(what: str, value: object, *, zero: bool = False) -> float:
    """A duration in seconds (> 0, or >= 0 with ``zero``)."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) \
        and math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok:
        bound = ">= 0" if zero else "> 0"
        raise RolloutError(f"{what} is a number of seconds {bound}, not {value!r:.80}")
    return float(value)  # type: ignore[arg-type]


def check_ids(what: str, values: object) -> tuple[str, ...]:
    """A list of tenant or user ids (strings of at most 200 characters, at most 10,000)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise RolloutError(f"{what}= is a list of ids (e.g. ['acme']), not "
                           f"{type(values).__name__}")
    out = tuple(values)
    if len(out) > 10_000:
        raise RolloutError(f"{what}= lists {len(out)} ids; at most 10,000 (use percent= for "
                           "a share of everyone)")
    for v in out:
        if not isinstance(v, str) or not v or len(v) > 200:
            raise RolloutError(f"{what}= holds {v!r:.80}; each id is text of 1 to 200 "
                               "characters")
    return tuple(sorted(set(out)))
