"""The desk's CI gate for ``keel eval``: a fresh desk and database per process.

::

    keel eval examples.support_desk.eval_gate:desk \\
        examples/support_desk/evalset/heldout.jsonl \\
        --scorer examples.support_desk.eval_gate:scorers \\
        --baseline examples/support_desk/evalset/baseline-none.json

``desk`` is the no-model desk (``scripted_desk`` the scripted-model one) over a new
database in a temporary folder (removed when the process exits), and ``scorers`` /
``scripted_scorers`` the desk's scorers over that same database; both are built on first
access, so importing this module creates nothing.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

from .db import Database, create_database
from .desk import build_desk
from .evaluation import EvalDesk, desk_scorers, desk_subject
from .scripted import specialist_model

_BUILT: Final[dict[str, Any]] = {}


def _database() -> Database:
    if "db" not in _BUILT:
        folder = Path(tempfile.mkdtemp(prefix="keel-desk-eval-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _BUILT["db"] = Database(create_database(folder / "desk.db"))
    db: Database = _BUILT["db"]
    return db


def _desk(path: str) -> EvalDesk:
    key = f"desk-{path}"
    if key not in _BUILT:
        model = specialist_model() if path == "scripted" else None
        _BUILT[key] = desk_subject(build_desk(_database(), model=model))
    flow: EvalDesk = _BUILT[key]
    return flow


def __getattr__(name: str) -> Any:
    if name == "desk":
        return _desk("none")
    if name == "scripted_desk":
        return _desk("scripted")
    if name == "scorers":
        return desk_scorers(_database(), path="none")
    if name == "scripted_scorers":
        return desk_scorers(_database(), path="scripted")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
