"""The evaluation layer's errors (drawn in the tree in ``keel.core._errors``)."""

from __future__ import annotations

from keel.core import UserError


class EvalError(UserError):
    """An evaluation cannot run as asked: a threshold outside its range, a baseline report
    from another dataset, an agent the dataset cannot be run on. The message says the fix."""


class DatasetError(EvalError):
    """A dataset file or case is malformed. ``source`` names the file (or ``"<cases>"``) and
    ``line`` the 1-based line (JSONL) or case number (YAML) when there is one."""

    def __init__(self, message: str, *, source: str | None = None,
                 line: int | None = None) -> None:
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        super().__init__(where + message)
        self.source = source
        self.line = line
