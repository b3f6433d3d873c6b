"""The app ``bench/support_desk_load.py`` serves: the support desk with its scripted
specialist model, each model request taking ``KEEL_BENCH_DELAY_MS`` (default 50) first.

    KEEL_BENCH_DESK_DIR=FOLDER KEEL_BENCH_STORE=URL python -m keel.cli serve \\
        bench.support_desk_app:app --port N

``FOLDER`` holds the shop's ``desk.db`` (created if missing); ``URL`` is the run store (an
SQLite path or URL, or a Postgres URL). The per-key rate limit is raised so that one
operator key can mint every customer's token. Built when imported: this module exists to
be served.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from examples.support_desk import create_database
from examples.support_desk.day import warm_up
from examples.support_desk.db import Database
from examples.support_desk.desk import build_desk
from examples.support_desk.scripted import specialist_model

from keel.server import App
from keel.testing import FunctionModel

#: requests per second (and burst) one key may make; far above what the benchmark sends
RATE_PER_S = 100_000.0


def delayed_model(delay_s: float) -> FunctionModel:
    """The desk's scripted specialist, thinking ``delay_s`` seconds per request."""
    inner = specialist_model()

    async def respond(messages: Any, tools: Any, settings: Any) -> Any:
        await asyncio.sleep(delay_s)
        return inner.fn(messages, tools, settings)

    return FunctionModel(respond, name="test:desk-specialist")


def make_app(folder: Path, store: str, delay_s: float) -> App:
    """The desk over ``folder``'s database, journaled in ``store``."""
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / "desk.db"
    if not db_path.exists():
        create_database(db_path)
    desk = build_desk(Database(db_path), store=store, model=delayed_model(delay_s), caps=[])
    # The URL, not desk.store: the server keeps its keys in the store's database and reads
    # the URL of an SQLite store object only.
    app = App(desk.flows, store=store, title="Northwind support desk (load)",
              chat_agents=[f.name for f in desk.flows], rate_per_s=RATE_PER_S,
              burst=int(RATE_PER_S))
    warm_up(app)
    return app


app = make_app(Path(os.environ.get("KEEL_BENCH_DESK_DIR", ".keel/bench-desk")),
               os.environ.get("KEEL_BENCH_STORE", ".keel/bench-desk/runs.db"),
               float(os.environ.get("KEEL_BENCH_DELAY_MS", "50")) / 1000)
