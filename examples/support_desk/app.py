"""The desk as a keel server: ``keel serve examples.support_desk.app:app``.

``build_app(folder, model=None)`` creates (once) the shop's database ``desk.db``, the
run store ``runs.db`` and the customers' memory ``memory.db`` in ``folder`` and returns a
``keel.server.App`` serving the desk flow (customers may chat with it). ``app`` is the
same for the folder named by ``KEEL_DESK_DIR`` (default: ``keel-desk`` under the user's
temporary folder), built when the server first asks for it, so importing this module
creates nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Final

from keel import Model, UserError
from keel.context import SQLiteMemory

from .db import Database, create_database
from .desk import Desk, build_desk

#: The environment variable naming the desk's folder.
DIR_ENV: Final = "KEEL_DESK_DIR"


def default_folder() -> Path:
    """Where ``app`` keeps the desk's files: ``$KEEL_DESK_DIR``, else ``keel-desk`` in the
    temporary folder."""
    chosen = os.environ.get(DIR_ENV)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / "keel-desk"


def open_desk(folder: str | os.PathLike[str], *, model: str | Model | None = None,
              **options: Any) -> Desk:
    """The desk over ``folder``'s database (created on first use) and run store."""
    if not isinstance(folder, str | os.PathLike) or not str(folder).strip():
        raise UserError(f"the desk's folder must be a path, not {folder!r}")
    base = Path(folder)
    if base.exists() and not base.is_dir():
        raise UserError(f"{str(base)!r} is a file; give the desk a folder (or set "
                        f"{DIR_ENV} to one)")
    base.mkdir(parents=True, exist_ok=True)
    db_path = base / "desk.db"
    if not db_path.exists():
        create_database(db_path)
    store = f"sqlite:///{(base / 'runs.db').resolve()}"
    options.setdefault("memory", SQLiteMemory(base / "memory.db"))
    return build_desk(Database(db_path), store=store, model=model, **options)


def build_app(folder: str | os.PathLike[str], model: str | Model | None = None,
              **options: Any) -> Any:
    """A ``keel.server.App`` serving the desk of ``folder`` (see the module)."""
    from keel.server import App

    desk = open_desk(folder, model=model, **options)
    return App(desk.flows, store=desk.store, title="Northwind support desk",
               chat_agents=[f.name for f in desk.flows])


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access (keel serve reads it), never at import.
    if name == "app":
        built = build_app(default_folder())
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
