"""The options several ``keel`` commands share, defined once so that their names and help read
the same everywhere, and :func:`store_url`, which resolves ``--store``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from keel.runtime import default_store_url


@dataclass(slots=True)
class State:
    """What the root ``keel`` callback keeps for its subcommands: the ``--store`` given
    before the command (or the default)."""

    store: str


StoreOption = Annotated[str | None, typer.Option(
    "--store", metavar="URL",
    help="Run store: sqlite:///path/runs.db, a file path, "
         "postgresql://user:password@host:5432/dbname, or memory: (nothing kept). "
         "Default: $KEEL_STORE, else sqlite:///.keel/runs.db.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print only JSON (for scripts).")]
LogJsonOption = Annotated[str | None, typer.Option(
    "--log-json", metavar="FILE",
    help="Append structured step logs (JSON lines) to FILE; '-' for stderr.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=10_000,
                                          help="At most this many.")]
ByOption = Annotated[str | None, typer.Option(
    "--by", metavar="NAME", help="Who decides (audited). Default: $USER, else 'cli'.")]


def store_url(ctx: typer.Context, store: str | None) -> str:
    """The run store a command uses: its own ``--store``, else the one given to ``keel``
    (``keel --store URL approvals list``), else ``$KEEL_STORE`` or the default file."""
    if store:
        return store
    state = ctx.find_object(State)
    return state.store if state is not None and state.store else default_store_url()
