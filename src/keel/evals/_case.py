"""A dataset case: what goes in, and what should come out or happen.

The file format (one JSON object per JSONL line, or a YAML list of the same objects)::

    {"id": "refund-1",                       # unique in the dataset (required)
     "input": "Refund order 1234",           # a message, or a conversation:
                                             #   [{"role": "user", "content": "..."}, ...]
     "expected": "Refunded",                 # optional: the reference answer (text or JSON)
     "expect": {                             # optional: expected behaviour
        "tools": [{"name": "refund", "args": {"order": "1234", "amount": {"$lte": 100}}}],
        "forbid_tools": ["delete_account"],
        "ordered": true,                     # tool trajectory order matters
        "escalate": false, "approval": true, "refuse": false,
        "output_schema": {"type": "object"}},
     "tags": ["billing"], "weight": 2.0,     # optional
     "metadata": {"source": "run:abc"}}      # optional, free JSON

Argument constraints in ``expect.tools[].args``: a plain value must be equal; an object with
one operator key tests it: ``$eq``, ``$ne``, ``$lt``, ``$lte``, ``$gt``, ``$gte``, ``$in``,
``$regex``, ``$contains``, ``$exists``. A key not listed is not checked.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from keel.evals._errors import DatasetError

#: The operators an argument constraint may use.
ARG_OPERATORS = frozenset({"$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$regex",
                           "$contains", "$exists"})
_CASE_KEYS = frozenset({"id", "input", "expected", "expect", "tags", "weight", "metadata"})
_EXPECT_KEYS = frozenset({"tools", "forbid_tools", "ordered", "escalate", "approval",
                          "refuse", "output_schema"})
_ROLES = frozenset({"user", "assistant", "system"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExpect:
    """A tool that must be called, with constraints on some of its arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args} if self.args else {"name": self.name}


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """Expected behaviour; ``None`` means "not checked"."""

    tools: tuple[ToolExpect, ...] = ()
    forbid_tools: tuple[str, ...] = ()
    ordered: bool = False
    escalate: bool | None = None
    approval: bool | None = None
    refuse: bool | None = None
    output_schema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tools:
            out["tools"] = [t.to_dict() for t in self.tools]
        if self.forbid_tools:
            out["forbid_tools"] = list(self.forbid_tools)
        if self.ordered:
            out["ordered"] = True
        for name in ("escalate", "approval", "refuse", "output_schema"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One evaluation case. ``input`` is a message, or a conversation as a tuple of
    ``{"role", "content"}`` dicts whose user turns are played in order in one conversation."""

    id: str
    input: str | tuple[dict[str, str], ...]
    expected: Any = None
    expect: Expect = field(default_factory=Expect)
    tags: tuple[str, ...] = ()
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def turns(self) -> list[str]:
        """The user messages to send, in order."""
        if isinstance(self.input, str):
            return [self.input]
        return [m["content"] for m in self.input if m["role"] == "user"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id,
                               "input": self.input if isinstance(self.input, str)
                               else [dict(m) for m in self.input]}
        if self.expected is not None:
            out["expected"] = self.expected
        expect = self.expect.to_dict()
        if expect:
            out["expect"] = expect
        if self.tags:
            out["tags"] = list(self.tags)
        if self.weight != 1.0:
            out["weight"] = self.weight
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    @classmethod
    def from_dict(cls, raw: object, *, source: str | None = None,
                  line: int | None = None) -> Case:
        """Build a case from its file form; a malformed one raises :class:`DatasetError`
        naming ``source`` and ``line`` and what to fix."""
        def bad(msg: str) -> DatasetError:
            return DatasetError(msg, source=source, line=line)

        if not isinstance(raw, dict):
            raise bad(f"a case is a JSON object, not {type(raw).__name__}")
        unknown = set(raw) - _CASE_KEYS
        if unknown:
            raise bad(f"unknown case field(s) {sorted(unknown)}; the fields are "
                      f"{sorted(_CASE_KEYS)}")
        cid = raw.get("id")
        if not isinstance(cid, str | int) or isinstance(cid, bool) or not str(cid).strip() \
                or len(str(cid)) > 200:
            raise bad(f"every case needs an 'id' (text of 1 to 200 characters), got {cid!r}")
        weight = raw.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight) or weight <= 0:
            raise bad(f"case {cid}: 'weight' must be a positive number, not {weight!r}")
        tags = raw.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise bad(f"case {cid}: 'tags' must be a list of text")
        metadata = raw.get("metadata", {})
        if not isinstance(metadata, dict):
            raise bad(f"case {cid}: 'metadata' must be an object")
        return cls(id=str(cid), input=_input(raw.get("input"), bad, cid),
                   expected=raw.get("expected"), expect=_expect(raw.get("expect"), bad, cid),
                   tags=tuple(tags), weight=float(weight), metadata=metadata)

    def fingerprint(self) -> str:
        """A hash of the case's content (what a baseline is matched on)."""
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def _input(value: object, bad: Any, cid: object) -> str | tuple[dict[str, str], ...]:
    if isinstance(value, str):
        if not value.strip():
            raise bad(f"case {cid}: 'input' is empty; give the user's message")
        return value
    if isinstance(value, list) and value:
        turns = []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in _ROLES \
                    or not isinstance(m.get("content"), str):
                raise bad(f"case {cid}: input message {i} must be {{'role': "
                          f"'user'|'assistant'|'system', 'content': text}}")
            turns.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "user" for m in turns):
            raise bad(f"case {cid}: the conversation has no user message")
        return tuple(turns)
    raise bad(f"case {cid}: 'input' must be a message (text) or a conversation (a list of "
              f"{{'role', 'content'}} objects)")


def _expect(value: object, bad: Any, cid: object) -> Expect:
    if value is None:
        return Expect()
    if not isinstance(value, dict):
        raise bad(f"case {cid}: 'expect' must be an object")
    unknown = set(value) - _EXPECT_KEYS
    if unknown:
        raise bad(f"case {cid}: unknown expect field(s) {sorted(unknown)}; the fields are "
                  f"{sorted(_EXPECT_KEYS)}")
    tools = _tool_expects(value.get("tools", []) or [], bad, cid)
    forbid = value.get("forbid_tools", []) or []
    if not isinstance(forbid, list) or not all(isinstance(n, str) for n in forbid):
        raise bad(f"case {cid}: expect.forbid_tools must be a list of tool names")
    flags = {}
    for name in ("escalate", "approval", "refuse"):
        flag = value.get(name)
        if flag is not None and not isinstance(flag, bool):
            raise bad(f"case {cid}: expect.{name} must be true or false")
        flags[name] = flag
    schema = value.get("output_schema")
    if schema is not None and not isinstance(schema, dict):
        raise bad(f"case {cid}: expect.output_schema must be a JSON Schema object")
    ordered = value.get("ordered", False)
    if not isinstance(ordered, bool):
        raise bad(f"case {cid}: expect.ordered must be true or false")
    return Expect(tools=tuple(tools), forbid_tools=tuple(forbid), ordered=ordered,
                  output_schema=schema, **flags)


def _tool_expects(entries: object, bad: Any, cid: object) -> list[ToolExpect]:
    if not isinstance(entries, list):
        raise bad(f"case {cid}: expect.tools must be a list")
    tools = []
    for t in entries:
        if isinstance(t, str):
            t = {"name": t}
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) \
                or not isinstance(t.get("args", {}), dict):
            raise bad(f"case {cid}: expect.tools entries are {{'name': text, 'args': object}}")
        for arg, rule in t.get("args", {}).items():
            if isinstance(rule, dict) and (len(rule) != 1 or next(iter(rule)) not in
                                           ARG_OPERATORS):
                raise bad(f"case {cid}: constraint on {t['name']}.{arg} must have one "
                          f"operator of {sorted(ARG_OPERATORS)}, not {sorted(rule)}")
        tools.append(ToolExpect(name=t["name"], args=dict(t.get("args", {}))))
    return tools
