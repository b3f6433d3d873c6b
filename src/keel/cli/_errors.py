"""Every failure becomes a red line that names the fix and an exit code; never a traceback.

Exit codes: 0 success, 1 the run failed or the attempt did (:class:`keel.RunError`, which
includes :class:`keel.StoreUnavailable`: a database outage is not a usage error), 2 usage or
user error (:class:`keel.UserError`: bad target, unknown run, unusable store, unknown model,
missing API key ...), 3 the run is suspended (a signal such as an approval stopped it), 130
interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from keel.cli._text import Screen, to_json
from keel.core import Divergence, KeelError, RunError, Signal, UserError, to_jsonable

EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_SUSPENDED = 3
EXIT_INTERRUPTED = 130


class CliError(UserError):
    """A misuse of the CLI itself (bad option values); exit code 2."""


def run_error_json(exc: RunError | Signal, run_id: str | None) -> dict[str, Any]:
    """What ``--json`` prints for a run that did not complete."""
    status = "suspended" if isinstance(exc, Signal) else "failed"
    return {"run_id": getattr(exc, "run_id", None) or run_id, "status": status,
            "error": {"type": type(exc).__name__, "message": exc.message,
                      "step_key": getattr(exc, "step_key", None),
                      "retryable": exc.retryable}}


def report_run_error(screen: Screen, exc: RunError, run_id: str | None) -> None:
    run_id = exc.run_id or run_id
    screen.error(f"{type(exc).__name__}: {exc.message}")
    where = [f"run {run_id}"] if run_id else []
    if exc.step_key:
        where.append(f"step {exc.step_key}")
    if where:
        screen.note("  " + " · ".join(where), style="red")
    if isinstance(exc, Divergence):
        screen.note(f"  recorded:  {to_jsonable(exc.recorded)}", style="dim")
        screen.note(f"  requested: {to_jsonable(exc.requested)}", style="dim")
    if run_id:
        screen.note(f"  see its journal: keel runs show {run_id}", style="dim")


@contextmanager
def reported(screen: Screen, *, run_id: Callable[[], str | None] = lambda: None,
             as_json: bool = False) -> Iterator[None]:
    """Turn exceptions into an error line and an exit code. ``run_id`` tells which run was
    going (for the interrupt note); with ``as_json`` a failed run is also printed as JSON."""
    try:
        yield
    except (typer.Exit, typer.TyperException, typer.Abort):  # typer's (vendored click's) own
        raise
    except KeyboardInterrupt:
        rid = run_id()
        if rid:
            screen.note(f"interrupted; the run is saved: `keel resume {rid}` continues it.")
        else:
            screen.note("interrupted.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except RunError as exc:
        if as_json:
            typer.echo(to_json(run_error_json(exc, run_id())))
        report_run_error(screen, exc, run_id())
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except Signal as exc:
        rid = run_id()
        if as_json:
            typer.echo(to_json(run_error_json(exc, rid)))
        screen.note(f"run {rid or '?'} is suspended: {type(exc).__name__}: {exc.message}")
        if rid:
            screen.note(f"  see where it stopped: keel runs show {rid}", style="dim")
        raise typer.Exit(EXIT_SUSPENDED) from None
    except UserError as exc:
        screen.error(exc.message)
        raise typer.Exit(EXIT_USAGE) from None
    except KeelError as exc:
        screen.error(f"{type(exc).__name__}: {exc.message}")
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except Exception as exc:
        if os.environ.get("KEEL_DEBUG"):
            raise
        rid = run_id()
        screen.error(
            f"unexpected {type(exc).__name__}: {exc}",
            hint="  This looks like a bug in keel or in the agent's code; set KEEL_DEBUG=1 "
                 "to see the traceback." + (f" The run's journal: keel runs show {rid}"
                                            if rid else ""))
        raise typer.Exit(EXIT_RUN_FAILED) from None
