"""Datasets: an ordered list of :class:`~keel.evals.Case` with a content hash, read from and
written to JSONL (one case object per line) or YAML (a list of case objects).

The hash (``Dataset.hash``) is a sha256 over the cases' fingerprints in order: a baseline
report remembers it, and the gate refuses to compare reports of different datasets.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.evals._case import Case
from keel.evals._errors import DatasetError

#: The largest dataset file read (bytes).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: The longest JSONL line read (bytes).
MAX_LINE_BYTES = 1024 * 1024
_SUFFIXES = (".jsonl", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named, ordered set of cases. Build one with :func:`load_dataset` or
    :meth:`Dataset.from_cases`; ``select`` keeps a subset."""

    name: str
    cases: tuple[Case, ...]
    hash: str
    source: str | None = None

    @classmethod
    def from_cases(cls, name: str, cases: Iterable[Case | dict[str, Any]], *,
                   source: str | None = None) -> Dataset:
        """A dataset from cases (or their dict form, checked as a file's would be). Ids must
        be unique and there must be at least one case (else :class:`DatasetError`)."""
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"a dataset needs a name (text), not {name!r}")
        where = source or "<cases>"
        built: list[Case] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(cases, start=1):
            case = raw if isinstance(raw, Case) else Case.from_dict(raw, source=where, line=i)
            if case.id in seen:
                raise DatasetError(f"duplicate case id {case.id!r} (case {seen[case.id]} and "
                                   f"case {i}); give every case its own id", source=where)
            seen[case.id] = i
            built.append(case)
        if not built:
            raise DatasetError("the dataset has no cases; add at least one", source=where)
        return cls(name=name, cases=tuple(built), hash=dataset_hash(built), source=source)

    def __len__(self) -> int:
        return len(self.cases)

    def select(self, *, tags: Iterable[str] | None = None,
               ids: Iterable[str] | None = None) -> Dataset:
        """The cases having any of ``tags`` and (if given) whose id is in ``ids``, in the
        dataset's order; a selection that keeps nothing is a :class:`DatasetError`."""
        if isinstance(tags, str) or isinstance(ids, str):
            raise DatasetError("select() takes lists: tags=['billing'], ids=['case-1']")
        want_tags = None if tags is None else set(tags)
        want_ids = None if ids is None else set(ids)
        if want_ids is not None:
            unknown = sorted(want_ids - {c.id for c in self.cases})
            if unknown:
                raise DatasetError(f"no case with id {', '.join(map(repr, unknown[:5]))} in "
                                   f"dataset {self.name!r}", source=self.source)
        kept = [c for c in self.cases
                if (want_tags is None or want_tags & set(c.tags))
                and (want_ids is None or c.id in want_ids)]
        if not kept:
            raise DatasetError(f"no case of dataset {self.name!r} has tag(s) "
                               f"{sorted(want_tags or ())}", source=self.source)
        return Dataset(name=self.name, cases=tuple(kept), hash=dataset_hash(kept),
                       source=self.source)

    def to_jsonl(self) -> str:
        """The dataset as JSONL text (one case per line, in order)."""
        return "".join(json.dumps(c.to_dict(), ensure_ascii=False, sort_keys=True) + "\n"
                       for c in self.cases)

    def save_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Write the dataset to ``path`` as JSONL (replacing it) and return the path."""
        target = Path(path)
        target.write_text(self.to_jsonl(), encoding="utf-8")
        return target


def dataset_hash(cases: Sequence[Case]) -> str:
    """sha256 over the cases' fingerprints, in order."""
    h = hashlib.sha256()
    for c in cases:
        h.update(c.fingerprint().encode())
        h.update(b"\n")
    return h.hexdigest()


def load_dataset(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Read a dataset file: ``.jsonl`` (one case object per line; blank lines and lines
    starting with ``#`` are skipped) or ``.yaml``/``.yml`` (a list of case objects; needs
    the ``evals`` extra). ``name`` defaults to the file's stem. Every problem is a
    :class:`DatasetError` naming the file and the 1-based line (JSONL) or item (YAML)."""
    p = Path(path)
    where = str(p)
    if p.suffix.lower() not in _SUFFIXES:
        shown = repr(p.suffix) if p.suffix else "a file without a suffix"
        raise DatasetError(f"a dataset file is .jsonl, .yaml or .yml, not {shown}",
                           source=where)
    data = _read_bytes(p)
    jsonl = p.suffix.lower() == ".jsonl"
    rows = _jsonl_rows(data, where) if jsonl else _yaml_rows(data, where)
    return _from_rows(name or p.stem, rows, where)


def _read_bytes(p: Path) -> bytes:
    where = str(p)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise DatasetError("not a file; give the path to a .jsonl or .yaml dataset",
                               source=where)
        if size > MAX_FILE_BYTES:
            raise DatasetError(f"the file is {size:,} bytes; a dataset file has at most "
                               f"{MAX_FILE_BYTES:,} (split it, or select with --tag)",
                               source=where)
        return p.read_bytes()
    except FileNotFoundError:
        raise DatasetError("no such file; check the path", source=where) from None
    except PermissionError:
        raise DatasetError("cannot read it (permission denied)", source=where) from None
    except IsADirectoryError:
        raise DatasetError("is a directory; give a .jsonl or .yaml file", source=where) from None


def _jsonl_rows(data: bytes, where: str) -> list[tuple[int, object]]:
    rows: list[tuple[int, object]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise DatasetError(f"the line is {len(raw):,} bytes; a case line has at most "
                               f"{MAX_LINE_BYTES:,}", source=where, line=number)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"not UTF-8 text (byte {exc.start + 1} of the line); save "
                               "the file as UTF-8", source=where, line=number) from None
        text = text.strip().lstrip("\ufeff") if number == 1 else text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"not valid JSON ({exc.msg} at column {exc.colno}); each line "
                               "is one case object", source=where, line=number) from None
        except RecursionError:
            raise DatasetError("the JSON is nested too deeply", source=where,
                               line=number) from None
        rows.append((number, value))
    return rows


def _yaml_rows(data: bytes, where: str) -> list[tuple[int, object]]:
    try:
        import yaml
    except ImportError:
        raise DatasetError("reading YAML datasets needs PyYAML: pip install "
                           "'keel-agents[evals]' (or use a .jsonl file)", source=where) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text (byte {exc.start + 1}); save the file as UTF-8",
                           source=where) from None
    try:
        loaded = yaml.load(text, Loader=_loader(yaml))  # a SafeLoader without aliases
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DatasetError(f"not valid YAML ({problem})", source=where, line=line) from None
    except RecursionError:
        raise DatasetError("the YAML is nested too deeply", source=where) from None
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise DatasetError(f"a YAML dataset is a list of case objects (- id: ...), not a "
                           f"{type(loaded).__name__}", source=where)
    return list(enumerate(loaded, start=1))


def _loader(yaml: Any) -> Any:
    """PyYAML's safe loader without aliases: ``*name`` shares one object many times, and a
    few nested aliases make a small file expand into an exponentially large dataset."""

    class NoAliases(yaml.SafeLoader):  # type: ignore[misc]
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in a dataset; write the "
                    "value out", event.start_mark)
            return super().compose_node(parent, index)

    return NoAliases


def _from_rows(name: str, rows: list[tuple[int, object]], where: str) -> Dataset:
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, value in rows:
        if not isinstance(value, dict):
            raise DatasetError(f"a case is an object ({{\"id\": ..., \"input\": ...}}), not a "
                               f"{_kind(value)}", source=where, line=number)
        case = Case.from_dict(value, source=where, line=number)
        if case.id in seen:
            raise DatasetError(f"duplicate case id {case.id!r}: first at {seen[case.id]}, "
                               f"again at {number}; give every case its own id",
                               source=where, line=number)
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise DatasetError("the dataset has no cases; add at least one", source=where)
    return Dataset(name=name, cases=tuple(cases), hash=dataset_hash(cases), source=where)


def _kind(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
