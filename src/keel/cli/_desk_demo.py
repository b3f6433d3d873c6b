"""``keel demo``: a day at Northwind Outfitters' support desk, served and played offline.

The demo creates the shop's database and a run store in a temporary folder (or ``--dir``),
serves the desk (``examples/support_desk``: its ``build_app``) on a free port of 127.0.0.1
with its console and chat page, and plays the scripted day of ``support_desk/day.py``
through the HTTP API: every customer at once through the chat API, two reviewers approving
refunds, a person answering escalations. The specialists' "model" is the desk's scripted
one (a ``keel.testing.FunctionModel``): nothing calls an LLM or the network. It ends with a
summary read from the journals and the shop's database; ``--keep`` leaves the server up.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from keel.cli._demo import examples_dir
from keel.cli._text import Screen, safe
from keel.core import UserError
from keel.store import open_store

#: The names the demo's keys carry (the console and the journal show who decided what).
OPERATOR, REVIEWERS, PERSON = "demo operator", ("ana", "ben"), "sam"
_TENANT = "northwind"
#: The customer the --keep chat link signs in (a parcel on its way, a return, a refund...).
_CUSTOMER = "C-00003"


def desk_module(name: str) -> ModuleType:
    """``support_desk.<name>`` from the package (``keel.examples`` in a wheel) or the
    checkout's ``examples/``; a :class:`~keel.UserError` naming what is missing."""
    for base in ("keel.examples.support_desk", "examples.support_desk"):
        try:
            return importlib.import_module(f"{base}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name is None or not base.startswith(exc.name):
                return _missing(exc)
    directory = examples_dir()
    if directory is None or not (directory / "support_desk").is_dir():
        raise UserError("the support desk is not installed: it ships inside keel-agents "
                        "(keel/examples/support_desk) and in the repository's examples/; "
                        "reinstall keel-agents, or run `keel demo --examples`")
    sys.path.insert(0, str(directory.parent))
    try:
        return importlib.import_module(f"{directory.name}.support_desk.{name}")
    except ModuleNotFoundError as exc:
        return _missing(exc)


def _missing(exc: ModuleNotFoundError) -> ModuleType:
    raise UserError(f"the desk demo needs {exc.name!r}: pip install 'keel-agents[server,rag]' "
                    "(or `keel demo --examples`, which needs neither)") from None


class _Server:
    """uvicorn serving the desk on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, asgi: Any) -> None:
        import uvicorn

        config = uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=10)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise UserError("the desk's server did not start (see the log above)")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def _make_keys(runs_db: Path) -> dict[str, str]:
    from keel.server import KeyStore

    async with KeyStore(str(runs_db)) as keys:
        made = {OPERATOR: (await keys.create_key(_TENANT, "operator", name=OPERATOR,
                                                 by="keel demo"))[1]}
        for name in (*REVIEWERS, PERSON):
            made[name] = (await keys.create_key(_TENANT, "reviewer", name=name,
                                                by="keel demo"))[1]
    return made


@dataclass
class Board:
    """The live view: one row per conversation, and the staff's last actions."""

    titles: dict[str, str]
    state: dict[str, tuple[str, str]] = field(default_factory=dict)
    staff: list[str] = field(default_factory=list)
    live: Live | None = None

    def update(self, visit: str, state: str, detail: str) -> None:
        self.state[visit] = (state, detail)
        if state == "waiting" and detail not in ("waits for approval", "waits for person"):
            self.staff.append(f"{visit}: {detail}")
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Table:
        table = Table(title="the day, live", title_justify="left", expand=True,
                      caption="  ".join(self.staff[-2:]) or None, caption_justify="left")
        table.add_column("conversation", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("latest", overflow="ellipsis", no_wrap=True, ratio=1)
        styles = {"asking": "cyan", "waiting": "yellow", "answered": "green"}
        for name, title in self.titles.items():
            state, detail = self.state.get(name, ("queued", ""))
            table.add_row(safe(title), safe(state, styles.get(state, "dim")),
                          safe(" ".join(detail.split())[:200], "dim"))
        return table


def _summary_table(summary: dict[str, Any], timing: dict[str, float]) -> Table:
    grid = Table(title="the day at the desk", title_justify="left", show_header=False)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    refunds = [e for e in summary["effects"] if e[0] == "refund"]
    rows = [
        ("conversations", f"{summary['conversations']} ({summary['turns']} turns)"),
        ("resolved without a person", str(summary["resolved_without_a_person"])),
        ("escalated to a person", str(summary["escalated"])),
        ("approvals", f"{summary['approval_requests']} requests, "
                      f"{summary['reviews_accepted']} reviews accepted, "
                      f"{summary['reviews_refused']} refused (the same reviewer twice)"),
        ("refunds paid", ", ".join(f"{e[2]} EUR {e[3] / 100:,.2f}" for e in refunds)
         or "none"),
        ("guard trips", f"{summary['guard_trips']} (an instruction in a message, one in an "
                        "uploaded note)" if summary["guard_trips"] == 2
         else str(summary["guard_trips"])),
        ("answers citing the help centre", str(summary["answers_with_citations"])),
        ("cost", f"${summary['cost_usd']:.4f} (scripted model: no tokens are billed)"),
        ("latency per turn", f"p50 {timing['p50_s'] * 1000:.0f} ms, p95 "
                             f"{timing['p95_s'] * 1000:.0f} ms (to the answer or the "
                             f"hand-off; day {timing['wall_s']:.1f} s)"),
    ]
    for name, value in rows:
        grid.add_row(name, safe(value))
    return grid


def _banner(screen: Screen, url: str, keys: dict[str, str], folder: Path) -> None:
    body = Text()
    body.append("Northwind Outfitters' support desk, served on this machine. ", style="bold")
    body.append("The specialists' model is scripted (keel.testing.FunctionModel): no LLM or "
                "network is used. Everything else is real: routing, workflows, guards, "
                "approvals by two different reviewers, the journal, the HTTP API.\n")
    body.append(f"console  {url}/console   (sign in with the operator key below)\n")
    body.append(f"chat     {url}/chat\n")
    body.append(f"operator key  {keys[OPERATOR]}\n")
    body.append(f"reviewer keys {', '.join(f'{n}: {keys[n]}' for n in REVIEWERS)}\n")
    body.append(f"files    {folder}", style="dim")
    screen.out.print(Panel(body, title="keel demo · the support desk", title_align="left",
                           border_style="yellow"))


async def _customer_link(url: str, operator: str, customer: str) -> str:
    """A link that signs ``customer`` in to the chat page (a customer token, one hour)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.post("/v1/auth/token", headers={"Authorization": f"Bearer {operator}"})
        r.raise_for_status()
        minted = await c.post("/v1/chat/tokens", json={"user": customer, "ttl_s": 3600},
                              headers={"Authorization": f"Bearer {r.json()['token']}"})
        minted.raise_for_status()
    return f"{url}/chat/login?next=/chat%3Fagent%3Ddesk#token={minted.json()['token']}"


def _where_to_look(screen: Screen, url: str, keep: bool, chat_link: str) -> None:
    lines = [f"{url}/console/runs         every turn, its steps and the journal",
             f"{url}/console/approvals    the refunds, with who approved (ana, ben)",
             f"{url}/console/escalations  what went to a person, with its context packet",
             f"{url}/console/flows/desk   the desk drawn as a graph, with live counts"]
    head = "Where to look in the console:" if keep else \
        "Where to look (with `keel demo --keep`, the server stays up):"
    screen.out.print(safe(head, "bold"))
    for line in lines:
        screen.out.print(safe("  " + line))
    if keep:
        screen.out.print(safe(f"Chat as customer {_CUSTOMER} (an hour): ", "bold")
                         + safe(chat_link), soft_wrap=True)


def run_desk_demo(screen: Screen, *, keep: bool = False, folder: Path | None = None,
                  wait: Callable[[str, dict[str, str]], None] | None = None
                  ) -> dict[str, Any]:
    """Serve the desk, play the day, print the summary; the summary (with ``ok``: every
    conversation ended as scripted). ``folder``: where to keep the files (a new or empty
    folder; default: a temporary one, deleted at the end). ``wait``: called with the
    server's URL and the keys (by name) while it stays up with ``keep`` (default: waits
    for Ctrl-C)."""
    app_module, day = desk_module("app"), desk_module("day")
    scripted = desk_module("scripted")
    if folder is not None:
        _check_folder(folder)
    base = folder or Path(tempfile.mkdtemp(prefix="keel-desk-demo-"))
    try:
        return _serve_and_play(screen, app_module, day, scripted, base, keep, wait)
    finally:
        if folder is None:
            shutil.rmtree(base, ignore_errors=True)


def _check_folder(folder: Path) -> None:
    """``folder`` if the demo may create its files there: new, or an empty folder."""
    shown = repr(str(folder))[:200]
    try:
        used = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
        if not folder.exists():
            folder.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot use {shown} for the demo's files ({exc.strerror or exc}); "
                        "give --dir a new or empty folder you can write to") from None
    if used:
        raise UserError(f"{shown} is not an empty folder; give --dir a new or empty folder "
                        "(the demo creates a fresh database in it)")


def _serve_and_play(screen: Screen, app_module: ModuleType, day: ModuleType,
                    scripted: ModuleType, base: Path, keep: bool,
                    wait: Callable[[str, dict[str, str]], None] | None) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    app = app_module.build_app(base, model=scripted.specialist_model(), caps=[])
    day.warm_up(app)
    keys = asyncio.run(_make_keys(base / "runs.db"))
    server = _Server(app.asgi())
    url = server.start()
    try:
        _banner(screen, url, keys, base)
        board = Board({v.name: v.title for v in day.DAY})
        with Live(board.render(), console=screen.out, refresh_per_second=8,
                  transient=False) as live:
            board.live = live
            log = asyncio.run(day.play_day(
                url, operator=keys[OPERATOR], reviewers={n: keys[n] for n in REVIEWERS},
                person=keys[PERSON], progress=board.update))
            board.live = None
        screen.out.print()
        summary = asyncio.run(_summarise(day, log, base))
        timing = day.latencies(log)
        screen.out.print(_summary_table(summary, timing))
        wrong = day.mismatches(summary)
        for problem in wrong:
            screen.error(f"the day did not go as scripted: {problem}")
        link = asyncio.run(_customer_link(url, keys[OPERATOR], _CUSTOMER)) if keep else ""
        _where_to_look(screen, url, keep, link)
        if keep:
            screen.out.print(safe(f"The desk is still being served at {url} (files in "
                                  f"{base}). Press Ctrl-C to stop it.", "bold yellow"))
            (wait or _until_interrupted)(url, keys)
        return {**summary, "ok": not wrong, "latency": timing}
    finally:
        server.stop()


async def _summarise(day: ModuleType, log: Any, base: Path) -> dict[str, Any]:
    async with open_store(f"sqlite:///{base / 'runs.db'}") as store:
        summary: dict[str, Any] = await day.day_summary(log, store, base / "desk.db")
    return summary


def _until_interrupted(url: str, keys: dict[str, str]) -> None:
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
