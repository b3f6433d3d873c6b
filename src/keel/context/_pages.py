"""A large tool result seen as pages: records of a JSON list, or lines of text.

Pure functions over a recorded value: :func:`shape` decides what the records are,
:class:`Pages` splits them into pages and answers the drill-down questions (a page, a
filter, one record). Everything here is deterministic in the value and the limits, so a
drill-down made after a resume, in another process, sees the same pages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.core import RetryWithFeedback, to_text
from keel.tools import project

#: Every handle's rendering starts with this, which is how the middleware knows a
#: conversation holds a handle and how the drill-down tools find the step it names.
MARK = '{"keel_handle": "'
_ID_FIELDS = ("id", "_id", "uuid", "key")
_MAX_FIELD_NAMES = 40
_MISSING: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How big a page may be: at most ``page_size`` records and ``page_chars`` characters
    (a record bigger than that is shown as a stub that names it), ``preview`` records in the
    summary, ``record_chars`` characters of one record before it is outlined instead."""

    page_size: int = 20
    page_chars: int = 4_000
    preview: int = 3
    record_chars: int = 8_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    """What the records of a value are: ``kind`` ``records`` (a JSON list, perhaps the
    biggest list of a wrapping object, under ``path``) or ``text`` (lines)."""

    kind: Literal["records", "text"]
    items: list[Any]
    path: str | None = None
    rest: dict[str, Any] = field(default_factory=dict)


def as_data(value: Any, content: str) -> Any:
    """The recorded value as JSON data: a string holding JSON is parsed; no value at all
    (a tool that gives only text) is its content."""
    if value is None:
        value = content
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def record_list(value: Any) -> tuple[list[Any], str | None] | None:
    """The records of a JSON value: the value itself if a list, the longest list of an
    object (``{"items": [...], "total": 9}``) and its key; None for anything else."""
    if isinstance(value, list):
        return value, None
    if isinstance(value, dict):
        best: tuple[list[Any], str] | None = None
        for k, v in value.items():
            if isinstance(v, list) and (best is None or len(v) > len(best[0])):
                best = (v, str(k))
        if best is not None and len(best[0]) > 1:
            return best
    return None


def shape(value: Any, limits: Limits) -> Shape:
    """The records of ``value`` (as :func:`as_data` gave it): a record list, or lines of its
    text (a JSON object without a record list is shown indented, one key a line)."""
    found = record_list(value)
    if found is not None:
        items, path = found
        rest = {} if path is None else {k: v for k, v in value.items() if k != path}
        return Shape(kind="records", items=items, path=path, rest=rest)
    text = value if isinstance(value, str) else to_text(value, indent=1)
    return Shape(kind="text", items=_lines(text, limits.page_chars))


def _lines(text: str, width: int) -> list[str]:
    """The lines of ``text``, a line longer than ``width`` split into pieces of it."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
        else:
            out.extend(line[i:i + width] for i in range(0, len(line), width))
    return out


def field_names(items: list[Any]) -> list[str]:
    """The top-level field names of the first records, in the order first seen."""
    names: dict[str, None] = {}
    for rec in items[:100]:
        if isinstance(rec, dict):
            names.update(dict.fromkeys(str(k) for k in rec))
        if len(names) >= _MAX_FIELD_NAMES:
            break
    return list(names)[:_MAX_FIELD_NAMES]


def id_field(items: list[Any]) -> str | None:
    first = next((r for r in items if isinstance(r, dict)), None)
    if first is None:
        return None
    return next((f for f in _ID_FIELDS if f in first), None)


def get_path(value: Any, path: str) -> Any:
    """``value`` at a dotted path (a list is indexed by a number), or ``_MISSING``."""
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            i = int(part)
            value = value[i] if -len(value) <= i < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def echo(value: Any) -> str:
    """``value`` as quoted in a message to the model: its repr, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _equal(have: Any, want: Any) -> bool:
    """Equal, or equal as text (the model wrote ``"42"`` for 42, ``"true"`` for true)."""
    if have == want and type(have) is type(want):
        return True
    return not isinstance(have, dict | list) and to_text(have) == to_text(want)


class Pages:
    """A recorded value split into pages, with the drill-down answers (each a JSON-able
    object the tool renders)."""

    def __init__(self, handle: str, value: Any, projected: tuple[str, ...],
                 limits: Limits) -> None:
        self.handle = handle
        self.limits = limits
        self.projected = projected
        self.shape = shape(value, limits)
        self.text = self.shape.kind == "text"
        self._shown = [self._show(i, r) for i, r in enumerate(self.shape.items)]
        self.starts = self._split(range(len(self._shown)))

    # ----------------------------------------------------------------------- rendering

    def _show(self, index: int, rec: Any) -> str:
        """One record as the model sees it in a page: projected, or a stub when too big."""
        if self.text:
            return str(rec)
        if self.projected and isinstance(rec, dict):
            shown, found = project(rec, self.projected)
            rec = shown if found else {}
        text = to_text(rec)
        if type(rec) is str:
            text = json.dumps(rec, ensure_ascii=False)
        if len(text) > self.limits.page_chars:
            return json.dumps({"record": index, "chars": len(text),
                               "cut": "too big for a page; ask for this record alone"})
        return text

    def _split(self, indices: range | list[int]) -> list[int]:
        """Positions in ``indices`` where each page starts: at most ``page_size`` records
        and ``page_chars`` characters a page (one record at least)."""
        starts: list[int] = []
        size = count = 0
        cap, width = self.limits.page_size, self.limits.page_chars
        for pos, i in enumerate(indices):
            n = len(self._shown[i]) + 1
            if not starts or count >= cap or size + n > width:
                starts.append(pos)
                size = count = 0
            size += n
            count += 1
        return starts or [0]

    def _render(self, indices: list[int] | range) -> str | list[Any]:
        if self.text:
            return "\n".join(self._shown[i] for i in indices)
        return [json.loads(self._shown[i]) for i in indices]

    def _page_of(self, indices: list[int] | range, starts: list[int], page: int,
                 ) -> list[int] | range:
        if not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= len(starts):
            raise RetryWithFeedback(
                f"page {echo(page)} does not exist: this has {len(starts)} page(s), 1 to "
                f"{len(starts)}", hint="Ask for a page in that range.")
        end = starts[page] if page < len(starts) else len(indices)
        return indices[starts[page - 1]:end]

    # ----------------------------------------------------------------------- answers

    def summary(self, tool: str, size_chars: int) -> dict[str, Any]:
        """What the model gets instead of the value: its size and fields, the first few
        records, and how to ask for more."""
        s = self.shape
        out: dict[str, Any] = {"keel_handle": self.handle, "tool": tool}
        unit = "lines" if self.text else "records"
        out[unit] = len(s.items)
        out["pages"] = len(self.starts)
        out["chars"] = size_chars
        if not self.text:
            if s.path is not None:
                out["records_at"] = s.path
                rest = to_text(s.rest)
                out["other_fields"] = s.rest if len(rest) <= 500 else sorted(s.rest)
            out["fields"] = field_names(s.items)
            if self.projected:
                out["shown_fields"] = list(self.projected)
            ident = id_field(s.items)
            if ident is not None:
                out["id_field"] = ident
        out["first"] = self._preview()
        out["more"] = ("result_page(handle, page); result_filter(handle, field, equals|"
                       "contains); result_record(handle, index|id)" if not self.text else
                       "result_page(handle, page); result_filter(handle, contains|equals) "
                       "finds lines; result_record(handle, index) gives one line")
        return out

    def _preview(self) -> str | list[Any]:
        budget = self.limits.page_chars // 2
        chosen: list[int] = []
        used = 0
        limit = self.limits.preview if not self.text else self.limits.page_size
        for i in range(min(limit, len(self._shown))):
            used += len(self._shown[i]) + 1
            if chosen and used > budget:
                break
            chosen.append(i)
        return self._render(chosen)

    def page(self, page: int) -> dict[str, Any]:
        indices = range(len(self._shown))
        part = self._page_of(indices, self.starts, page)
        first = part[0] if len(part) else 0
        return {"keel_handle": self.handle, "page": page, "pages": len(self.starts),
                "from": first, "to": first + len(part) - 1, "of": len(self._shown),
                "items": self._render(part)}

    def filter(self, field_path: str | None, equals: Any, contains: str | None,
               page: int) -> dict[str, Any]:
        if (equals is None) == (contains is None):
            raise RetryWithFeedback("give exactly one of equals and contains",
                                    hint="equals matches a whole value, contains a part of it.")
        values = self._filter_values(field_path)
        if contains is not None:
            needle = str(contains).lower()
            hits = [i for i, v in enumerate(values)
                    if v is not _MISSING and needle in to_text(v).lower()]
        else:
            hits = [i for i, v in enumerate(values) if v is not _MISSING and _equal(v, equals)]
        starts = self._split(hits)
        part = self._page_of(hits, starts, page) if hits else []
        return {"keel_handle": self.handle, "matches": len(hits), "page": page if hits else 0,
                "pages": len(starts) if hits else 0, "indices": list(part),
                "items": self._render(part)}

    def _filter_values(self, field_path: str | None) -> list[Any]:
        items = self.shape.items
        if self.text or field_path is None or field_path == "":
            if not self.text and any(isinstance(r, dict) for r in items[:100]):
                raise RetryWithFeedback(
                    "these records are objects: say which field to filter on",
                    hint=f"Fields: {', '.join(field_names(items))}.")
            return list(items)
        values = [get_path(r, field_path) for r in items]
        if all(v is _MISSING for v in values):
            raise RetryWithFeedback(
                f"no record has a field {echo(field_path)}",
                hint=f"Fields: {', '.join(field_names(items)) or '(none)'}; a nested field "
                     "is a dotted path such as 'customer.name'.")
        return values

    def record(self, index: int | None, ident: Any, path: str | None) -> dict[str, Any]:
        items = self.shape.items
        if (index is None) == (ident is None):
            raise RetryWithFeedback("give exactly one of index and id")
        if index is not None:
            if not 0 <= index < len(items):
                raise RetryWithFeedback(
                    f"there is no record {index}: indices go from 0 to {len(items) - 1}")
        else:
            index = self._index_of(ident)
        rec = items[index]
        out: dict[str, Any] = {"keel_handle": self.handle, "index": index}
        if path:
            got = get_path(rec, path)
            if got is _MISSING:
                keys = sorted(rec) if isinstance(rec, dict) else []
                raise RetryWithFeedback(
                    f"record {index} has nothing at {echo(path)}",
                    hint=f"Its fields: {', '.join(keys) or '(none: it is not an object)'}.")
            out["path"] = path
            rec = got
        out["record"] = self._whole(rec)
        return out

    def _index_of(self, ident: Any) -> int:
        name = None if self.text else id_field(self.shape.items)
        if name is None:
            raise RetryWithFeedback("these records have no id field: ask by index")
        for i, rec in enumerate(self.shape.items):
            if isinstance(rec, dict) and name in rec and _equal(rec[name], ident):
                return i
        raise RetryWithFeedback(f"no record has {name} = {echo(ident)}",
                                hint="result_filter finds records by any field.")

    def _whole(self, rec: Any) -> Any:
        """A record whole, or (over ``record_chars``) an outline to ask for parts by path."""
        text = to_text(rec)
        limit = self.limits.record_chars
        if len(text) <= limit:
            return rec
        if isinstance(rec, dict):
            return {"cut": f"{len(text)} characters; ask for a part with path",
                    "sizes": {str(k): len(to_text(v)) for k, v in rec.items()}}
        if isinstance(rec, list):
            return {"cut": f"{len(rec)} items, {len(text)} characters; ask for one with "
                           "path (its index)"}
        return {"cut": f"{len(text)} characters, showing the first {limit}",
                "text": text[:limit]}
