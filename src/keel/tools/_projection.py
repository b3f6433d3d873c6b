"""Projection of JSON results to the fields a tool declares (``@tool(fields=[...])``).

A field is a dotted path (``"customer.name"``). Projection keeps, in each object, only the
declared paths, in the declared order; a list is projected element by element, so
``"items.id"`` on ``{"items": [{"id": 1, "x": 2}]}`` keeps ``{"items": [{"id": 1}]}`` and a
top-level list of records keeps the fields of each record. A path a record lacks is left out
of that record; an element of a list that is not an object is kept as it is. Text and
other scalars are not projected.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, TypeAlias

from keel.core import ToolDefinitionError

#: A compiled projection: field name -> the projection of its value ({} keeps it whole).
Tree: TypeAlias = dict[str, "Tree"]
_MISSING: Any = object()
_MAX_FIELDS = 200


def check_fields(fields: Iterable[str] | None, tool_name: str) -> tuple[str, ...]:
    """The declared fields as a tuple, or :class:`ToolDefinitionError` saying what is wrong."""
    if fields is None:
        return ()
    if isinstance(fields, str | bytes):
        raise ToolDefinitionError(
            f"tool {tool_name!r}: fields must be a list of field names, not one string "
            f"(write fields=[{fields!r}]).")
    try:
        out = tuple(fields)
    except TypeError:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: fields must be a list of field names, not "
            f"{type(fields).__name__}.") from None
    if len(out) > _MAX_FIELDS:
        raise ToolDefinitionError(f"tool {tool_name!r}: at most {_MAX_FIELDS} fields.")
    for f in out:
        if not isinstance(f, str) or not f or any(not p for p in f.split(".")):
            raise ToolDefinitionError(
                f"tool {tool_name!r}: field {f!r} is not a field name or a dotted path "
                "such as 'customer.name'.")
    if len(set(out)) != len(out):
        raise ToolDefinitionError(f"tool {tool_name!r}: fields has duplicates: {list(out)}.")
    return out


@functools.lru_cache(maxsize=256)
def compile_fields(fields: tuple[str, ...]) -> Tree:
    """The projection tree of ``fields`` (a path that a shorter declared path covers adds
    nothing: ``["a", "a.b"]`` keeps all of ``a``)."""
    tree: Tree = {}
    whole: set[tuple[str, ...]] = set()
    for f in sorted(fields, key=lambda p: p.count(".")):
        parts = tuple(f.split("."))
        if any(parts[:i] in whole for i in range(1, len(parts) + 1)):
            continue
        whole.add(parts)
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = {}
    return _ordered(tree, fields)


def _ordered(tree: Tree, fields: tuple[str, ...]) -> Tree:
    """``tree`` with its top-level keys in the order the fields were declared."""
    order = list(dict.fromkeys(f.split(".", 1)[0] for f in fields))
    return {k: tree[k] for k in order if k in tree}


def project(value: Any, fields: tuple[str, ...]) -> tuple[Any, bool]:
    """``value`` projected to ``fields``, and whether any declared field was found in it
    (when none is, the projection would show nothing: the caller keeps the whole value)."""
    if not fields or not isinstance(value, dict | list):
        return value, False
    found = [False]
    out = _apply(value, compile_fields(fields), found)
    return (out, True) if found[0] else (value, False)


def _apply(value: Any, tree: Tree, found: list[bool]) -> Any:
    if not tree:
        return value
    if isinstance(value, list):
        # an element that is not an object stays as it is (indices keep their meaning)
        return [item if v is _MISSING else v
                for item, v in ((item, _apply(item, tree, found)) for item in value)]
    if not isinstance(value, dict):
        return _MISSING  # a path through a scalar: not in this record
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        if key in value:
            kept = _apply(value[key], sub, found)
            if kept is not _MISSING:
                out[key] = kept
                if not sub:
                    found[0] = True
    return out
