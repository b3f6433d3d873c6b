"""``python -m keel.cli``: the same as the ``keel`` command."""

from keel.cli._app import main

main()
