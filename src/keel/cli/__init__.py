"""L3: the ``keel`` command line (typer + rich).

``keel run MODULE:AGENT "input"``, ``keel resume RUN_ID``, ``keel runs list``,
``keel runs show RUN_ID`` and ``keel demo``. Run ``keel --help`` for the options.
"""

from keel.cli._app import app, main

__all__ = ["app", "main"]
