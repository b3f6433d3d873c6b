"""``keel runs export --as-dataset FILE``: journaled runs as an evaluation dataset (JSONL, one
:class:`keel.evals.Case` a line), chosen by filters; see :mod:`keel.evals._harvest` for what a
case holds. Personal data is masked by the data policy (``$KEEL_DATA_POLICY``) unless
``--no-redact`` says otherwise. Reads only."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import typer

from keel.cli._audit import parse_since
from keel.cli._commands import open_existing
from keel.cli._errors import CliError
from keel.cli._scrub import data_policy
from keel.cli._text import Screen
from keel.evals import Case, HarvestFilter, harvest
from keel.store import RunStore


def dataset_filter(options: dict[str, Any], now: float) -> HarvestFilter:
    """The ``--as-dataset`` filters (``{"--agent": ..., ...}``, as given) as a
    :class:`HarvestFilter`; bad values raise a user error naming the option."""
    feedback = options.get("--feedback")
    if feedback is not None and feedback not in ("negative", "positive"):
        raise CliError(f"--feedback is 'negative' or 'positive', not {feedback[:40]!r}.")
    since = options.get("--since")
    return HarvestFilter(agent=options.get("--agent"), status=options.get("--status"),
                         escalated=True if options.get("--escalated") else None,
                         approval=True if options.get("--approval") else None,
                         feedback=feedback,
                         since=None if since is None else parse_since(since, now),
                         tenant=options.get("--tenant"),
                         limit=options.get("--limit") or 1000)


def export_dataset(screen: Screen, url: str, target: str, filt: HarvestFilter, *,
                   redact: bool) -> None:
    """Harvest the runs ``filt`` picks from the store at ``url`` and write them to ``target``
    (a file path, or ``-`` for standard output) as JSONL."""
    path = None if target == "-" else Path(target)
    if path is not None and path.is_dir():
        raise CliError(f"{target} is a directory; give --as-dataset a file path "
                       "(e.g. dataset.jsonl).")
    policy = data_policy() if redact else None
    opened = open_existing(url)
    if opened is None:
        raise CliError(f"there is no run store at {url} yet; pass --store (or set KEEL_STORE) "
                       "to the store the runs were written to. Nothing was written.")
    cases = asyncio.run(_harvest(opened, filt, redact, policy))
    text = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in cases)
    if path is None:
        typer.echo(text, nl=False)
    else:
        try:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise CliError(f"cannot write {target} ({exc.strerror}); give --as-dataset a "
                           "writable file path.") from None
    where = "standard output" if path is None else str(path)
    masked = "personal data masked" if redact else "personal data IN CLEAR (--no-redact)"
    screen.note(f"wrote {len(cases)} case(s) to {where} ({masked})",
                style="green" if cases else "yellow")
    if not cases:
        screen.note("No runs match the filters.")


async def _harvest(opened: RunStore, filt: HarvestFilter, redact: bool,
                   policy: Any) -> list[Case]:
    async with opened:
        return await harvest(opened, filt, redact=redact, policy=policy)
