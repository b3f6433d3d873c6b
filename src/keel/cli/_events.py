"""``keel events publish | tail | listen | relay``: the event bus from the command line.

Every command takes ``--bus URL`` (``memory://``, ``redis://...``, ``nats://...``; default
``$KEEL_BUS``). Bad input (malformed JSON, an invalid event type, an unknown scheme) is a
red line and exit code 2 before anything is sent; an unreachable bus is exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._errors import CliError, reported
from keel.cli._load import is_path, load_file, load_module, split_target
from keel.cli._options import StoreOption, store_url
from keel.cli._text import Screen, safe, to_json
from keel.events import Event, Relay, Trigger, Triggers, open_bus
from keel.store import check_event_type, check_id, open_store

BusOption = Annotated[str | None, typer.Option(
    "--bus", metavar="URL", help="Event bus: memory://, redis://HOST:6379/0?stream=NAME or "
                                 "nats://HOST:4222?stream=NAME. Default: $KEEL_BUS.")]
#: The largest ``--data`` accepted (bytes of JSON).
MAX_DATA_BYTES = 1_000_000


def bus_url(bus: str | None) -> str:
    url = bus or os.environ.get("KEEL_BUS")
    if not url:
        raise CliError("no event bus: give --bus URL (e.g. redis://127.0.0.1:6379/0) or set "
                       "KEEL_BUS.")
    return url


def parse_data(data: str) -> dict[str, Any]:
    if len(data.encode()) > MAX_DATA_BYTES:
        raise CliError(f"--data is {len(data.encode()):,} bytes; an event's data is at most "
                       f"{MAX_DATA_BYTES:,} (put large content elsewhere and send its id).")
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise CliError(f"--data is not valid JSON ({exc}); e.g. --data "
                       """'{"order_id": "A-1"}'.""") from None
    if not isinstance(value, dict):
        raise CliError(f"--data must be a JSON object ({{...}}), not a JSON "
                       f"{type(value).__name__}.")
    return value


async def _publish(url: str, event: Event) -> None:
    async with open_bus(url) as bus:
        await bus.publish([event])


def publish_command(screen: Screen, *, type_: str, data: str, event_id: str | None,
                    tenant: str | None, bus: str | None, as_json: bool) -> None:
    with reported(screen):
        url = bus_url(bus)
        check_event_type(type_)
        event = Event(id=event_id if event_id is not None else uuid.uuid4().hex, type=type_,
                      data=parse_data(data), time=time.time(),
                      tenant=None if tenant is None else check_id("tenant", tenant))
        open_bus(url)  # a bad URL is a usage error before anything else
        asyncio.run(_publish(url, event))
        if as_json:
            typer.echo(to_json(event.to_dict()))
            return
        screen.out.print(safe(f"published {event.type} {event.id}"))


async def _tail(url: str, types: list[str] | None, group: str, start: str, count: int | None,
                idle: float | None) -> int:
    seen = 0
    async with open_bus(url) as bus:
        sub = await bus.subscribe(group, types=types or None, start=start)  # type: ignore[arg-type]
        try:
            last = time.monotonic()
            while count is None or seen < count:
                got = await sub.fetch(100 if count is None else min(100, count - seen),
                                      wait=0.5)
                for delivery in got:
                    typer.echo(delivery.event.to_json().decode())
                seen += len(got)
                if got:
                    await sub.ack(got)
                    last = time.monotonic()
                elif idle is not None and time.monotonic() - last >= idle:
                    break
        finally:
            await sub.close()
    return seen


def tail_command(screen: Screen, *, bus: str | None, types: list[str] | None,
                 group: str | None, from_start: bool, count: int | None,
                 idle: float | None) -> None:
    with reported(screen):
        url = bus_url(bus)
        for t in types or []:
            check_event_type(t)
        if count is not None and count < 1:
            raise CliError("--count must be at least 1.")
        if idle is not None and idle <= 0:
            raise CliError("--idle must be more than 0 seconds.")
        open_bus(url)
        name = group or f"keel-tail-{uuid.uuid4().hex[:12]}"
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_tail(url, types, name, "all" if from_start else "new", count, idle))


def load_triggers(target: str) -> list[Trigger] | Triggers:
    """The Trigger, list of them or Triggers at ``MODULE:ATTR``."""
    module_ref, attr = split_target(target)
    module = load_file(Path(module_ref).expanduser().resolve()) \
        if is_path(module_ref) else load_module(module_ref)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{module_ref} has no attribute {attr!r}; point at a Trigger, a "
                           "list of them or a Triggers.")
        obj = getattr(obj, part)
    if isinstance(obj, Triggers):
        return obj
    if isinstance(obj, Trigger):
        return [obj]
    if isinstance(obj, list | tuple) and obj and all(isinstance(t, Trigger) for t in obj):
        return list(obj)
    raise CliError(f"{module_ref}:{attr} is a {type(obj).__name__}, not a keel.events.Trigger, "
                   "a list of them or a Triggers.")


async def _listen(target: str, store: str, url: str, group: str | None,
                  concurrency: int | None, start: str, screen: Screen) -> None:
    loaded = load_triggers(target)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with open_store(store) as opened, open_bus(url) as bus:
        listed = loaded.triggers if isinstance(loaded, Triggers) else loaded
        triggers = Triggers(
            listed, bus=bus, store=opened,
            group=group or (loaded.group if isinstance(loaded, Triggers) else "keel-triggers"),
            concurrency=concurrency or (loaded.concurrency if isinstance(loaded, Triggers)
                                        else 16),
            start=start)  # type: ignore[arg-type]
        names = ", ".join(f"{t.type} -> {t.agent.name}" for t in triggers.triggers)
        screen.note(f"listening on {url} (group {triggers.group}, concurrency "
                    f"{triggers.concurrency}): {names}", style="dim")
        await triggers.run(stop)
        s = triggers.stats
        screen.note(f"stopped: {s.started} started, {s.resumed} resumed, {s.duplicates} "
                    f"duplicates, {s.rejected} rejected", style="dim")


def listen_command(screen: Screen, *, target: str, store: str, bus: str | None,
                   group: str | None, concurrency: int | None, from_start: bool) -> None:
    with reported(screen):
        url = bus_url(bus)
        if concurrency is not None and not 1 <= concurrency <= 10_000:
            raise CliError("--concurrency must be from 1 to 10000.")
        open_bus(url)
        asyncio.run(_listen(target, store, url, group, concurrency,
                            "all" if from_start else "new", screen))


async def _relay(store: str, url: str, once: bool, screen: Screen) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with open_store(store, outbox=True) as opened, open_bus(url) as bus:
        relay = Relay(opened, bus)
        await relay.check()
        if once:
            moved = total = await relay.run_once()
            while moved:
                moved = await relay.run_once()
                total += moved
            screen.out.print(safe(f"{total} event(s) relayed to {url}"))
            return total
        screen.note(f"relaying the outbox of {store} to {url}", style="dim")
        await relay.run(stop)
    return 0


def relay_command(screen: Screen, *, store: str, bus: str | None, once: bool) -> None:
    with reported(screen):
        url = bus_url(bus)
        open_bus(url)
        asyncio.run(_relay(store, url, once, screen))


def register(app: typer.Typer) -> None:
    """Add ``keel events ...`` to ``keel``."""
    events_app = typer.Typer(help="Publish, watch and act on events: the event bus, the "
                                  "outbox relay and triggers.", no_args_is_help=True)
    app.add_typer(events_app, name="events")

    @events_app.command("publish")
    def publish(
        type_: Annotated[str, typer.Argument(metavar="TYPE", help="The event type, e.g. "
                                                                 "order_processed.")],
        data: Annotated[str, typer.Option("--data", metavar="JSON",
                                          help="The event's data: a JSON object.")] = "{}",
        event_id: Annotated[str | None, typer.Option(
            "--id", help="The event id (consumers de-duplicate by it). Default: a new one.")]
        = None,
        tenant: Annotated[str | None, typer.Option("--tenant", help="Whose event it is.")]
        = None,
        bus: BusOption = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the event as JSON.")]
        = False,
    ) -> None:
        """Publish one event."""
        publish_command(Screen(), type_=type_, data=data, event_id=event_id, tenant=tenant,
                        bus=bus, as_json=as_json)

    @events_app.command("tail")
    def tail(
        bus: BusOption = None,
        types: Annotated[list[str] | None, typer.Option(
            "--type", metavar="TYPE", help="Only events of this type (repeat for more).")]
        = None,
        group: Annotated[str | None, typer.Option(
            "--group", help="Read as this consumer group (events it acknowledged are not "
                            "shown again). Default: a new group that sees new events.")] = None,
        from_start: Annotated[bool, typer.Option(
            "--from-start", help="A new group starts with every event the bus holds.")]
        = False,
        count: Annotated[int | None, typer.Option("--count", help="Stop after N events.")]
        = None,
        idle: Annotated[float | None, typer.Option(
            "--idle", metavar="SECONDS", help="Stop after this long with no event.")] = None,
    ) -> None:
        """Print events as they arrive, one JSON object a line."""
        tail_command(Screen(), bus=bus, types=types, group=group, from_start=from_start,
                     count=count, idle=idle)

    @events_app.command("listen")
    def listen(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(
            metavar="MODULE:ATTR", help="A Trigger, a list of them, or a Triggers.")],
        store: StoreOption = None,
        bus: BusOption = None,
        group: Annotated[str | None, typer.Option(
            "--group", help="The consumer group (default keel-triggers).")] = None,
        concurrency: Annotated[int | None, typer.Option(
            "--concurrency", help="Runs in flight at once (default 16).")] = None,
        from_start: Annotated[bool, typer.Option(
            "--from-start", help="A new group starts with every event the bus holds.")]
        = False,
    ) -> None:
        """Start runs from events: each event starts its trigger's run exactly once.

        Stops on Ctrl-C or SIGTERM after the runs in flight come to rest."""
        listen_command(Screen(), target=target, store=store_url(ctx, store), bus=bus,
                       group=group, concurrency=concurrency, from_start=from_start)

    @events_app.command("relay")
    def relay(
        ctx: typer.Context,
        store: StoreOption = None,
        bus: BusOption = None,
        once: Annotated[bool, typer.Option(
            "--once", help="Relay what the outbox holds now, then exit.")] = False,
    ) -> None:
        """Move the run store's outbox to the event bus (at least once, stable ids)."""
        relay_command(Screen(), store=store_url(ctx, store), bus=bus, once=once)

