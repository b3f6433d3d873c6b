"""L5: the ``keel`` command line (typer + rich: the ``cli`` extra).

``keel run MODULE:AGENT "input"``, ``keel resume RUN_ID``, ``keel runs list``,
``keel runs show RUN_ID``, ``keel demo`` and more: ``keel --help`` lists them.

typer and rich are imported only when the command runs (or ``keel.cli.app`` is used), so
``import keel`` never needs them; without them ``keel`` says which extra to install.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.cli._app import app

__all__ = ["app", "main"]

#: What ``keel`` says when typer or rich is missing.
MISSING_CLI = ("the keel command needs the 'cli' extra (typer and rich): "
               "pip install 'keel-agents[cli]', or 'keel-agents[all]' for everything.")


def _cli_missing() -> str | None:
    """The name of a missing package the command line needs, else ``None``."""
    for name in ("typer", "rich"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def main() -> None:
    """The ``keel`` console script."""
    missing = _cli_missing()
    if missing is not None:
        sys.stderr.write(f"error: {MISSING_CLI} ({missing} is not installed)\n")
        raise SystemExit(2)
    from keel.cli._app import main as run

    run()


def __getattr__(name: str) -> Any:
    if name == "app":
        missing = _cli_missing()
        if missing is not None:
            raise ImportError(f"{MISSING_CLI} ({missing} is not installed)", name=missing)
        from keel.cli._app import app

        return app
    raise AttributeError(f"module 'keel.cli' has no attribute {name!r}")
