"""`keel events publish | tail | listen | relay` against real Redis and SQLite: bad input is a
clear message and a non-zero exit with nothing sent; the commands do what they say."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from keel import Agent
from keel.store import RunFilter, open_store
from keel.testing import ScriptedModel
from tests.cli.conftest import REPO, InvokeResult

Keel = Callable[..., InvokeResult]


@pytest.fixture
def bus() -> str:
    return f"redis://127.0.0.1:6379/0?stream=keel:test:cli:{uuid.uuid4().hex[:10]}"


def tail_all(keel: Keel, bus: str, *more: str) -> list[dict[str, object]]:
    result = keel("events", "tail", "--bus", bus, "--from-start", "--idle", "0.6", *more)
    assert result.exit_code == 0, result
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_publish_then_tail_round_trips_events_with_their_ids(keel: Keel, bus: str) -> None:
    ok = keel("events", "publish", "order_processed", "--data", '{"order_id": "A-1"}',
              "--id", "evt-1", "--tenant", "acme", "--bus", bus)
    assert ok.exit_code == 0, ok
    assert "published order_processed evt-1" in ok.stdout
    as_json = keel("events", "publish", "order_shipped", "--bus", bus, "--json")
    assert json.loads(as_json.stdout)["type"] == "order_shipped"
    events = tail_all(keel, bus, "--type", "order_processed")
    assert [(e["id"], e["data"], e["tenant"]) for e in events] == [
        ("evt-1", {"order_id": "A-1"}, "acme")]
    assert len(tail_all(keel, bus)) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["order_processed", "--data", '{"a": 1'], "not valid JSON"),
    (["order_processed", "--data", "[1, 2]"], "must be a JSON object"),
    (["order_processed", "--data", json.dumps({"x": "y" * 1_100_000})], "at most"),
    (["Order Processed!"], "event type"),
    (["order_processed", "--id", ""], "event id"),
    (["order_processed", "--tenant", "x" * 300], "tenant"),
])
def test_bad_publish_input_exits_2_and_sends_nothing(keel: Keel, bus: str, args: list[str],
                                                     message: str) -> None:
    result = keel("events", "publish", *args, "--bus", bus)
    assert result.exit_code == 2, result
    assert message in result.stderr and "Traceback" not in result.output
    assert tail_all(keel, bus) == []


@pytest.mark.parametrize(("url", "message", "code"), [
    ("kafka://127.0.0.1:9092", "no event bus for the scheme", 2),
    ("redis://", "names a host", 2),
    ("nats://127.0.0.1:4222?bogus=1", "takes ?stream=", 2),
    ("redis://127.0.0.1:1/0", "could not connect", 1),
])
@pytest.mark.parametrize("command", ["publish", "tail", "listen", "relay"])
def test_a_bad_or_unreachable_bus_is_a_clear_error(keel: Keel, store: str, url: str,
                                                   message: str, code: int,
                                                   command: str) -> None:
    args = {"publish": ["order_processed"], "tail": ["--idle", "0.5"],
            "listen": ["nowhere:trigger", "--store", store], "relay": ["--store", store,
                                                                     "--once"]}[command]
    result = keel("events", command, *args, "--bus", url)
    if command == "listen" and code == 1:
        code = 2  # the target is loaded before the bus is reached: it fails first
        message = "no module named"
    assert result.exit_code == code, result
    assert message in result.stderr and "Traceback" not in result.output


def test_no_bus_at_all_names_the_fix(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_BUS", raising=False)
    result = keel("events", "publish", "order_processed")
    assert result.exit_code == 2 and "--bus URL" in result.stderr


def test_tail_refuses_bad_options(keel: Keel, bus: str) -> None:
    for args, message in ((["--type", "Bad Type"], "event type"), (["--count", "0"], "--count"),
                          (["--idle", "-1"], "--idle"), (["--group", "no spaces!"], "group")):
        result = keel("events", "tail", "--bus", bus, *args)
        assert result.exit_code == 2, result
        assert message in result.stderr


TRIGGERS = '''
    from keel import Agent
    from keel.events import Trigger, Triggers
    from keel.testing import FunctionModel

    agent = Agent("greeter", model=FunctionModel(lambda messages, tools, settings: "hello"))
    trigger = Trigger("user_signed_up", agent=agent)
    several = [trigger]
    not_a_trigger = 42
'''


@pytest.mark.parametrize(("target", "message"), [
    ("triggers_mod:not_a_trigger", "not a keel.events.Trigger"),
    ("triggers_mod:missing", "has no attribute"),
    ("no_such_module:trigger", "no module named"),
    ("no-colon", "does not name"),
])
def test_listen_refuses_a_target_that_is_not_triggers(keel: Keel, store: str, bus: str,
                                                      write_module: Callable[[str, str], Path],
                                                      target: str, message: str) -> None:
    write_module("triggers_mod", TRIGGERS)
    result = keel("events", "listen", target, "--store", store, "--bus", bus)
    assert result.exit_code == 2, result
    assert message in result.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists()  # nothing half-done


def test_listen_starts_one_run_per_event_and_stops_cleanly_on_sigterm(
        store: str, bus: str, write_module: Callable[[str, str], Path],
        tmp_path: Path) -> None:
    write_module("triggers_mod", TRIGGERS)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "events", "listen", "triggers_mod:several",
         "--store", store, "--bus", bus, "--from-start", "--concurrency", "4"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i in range(5):
            for _ in range(2):  # each event twice
                publish = subprocess.run(
                    [sys.executable, "-m", "keel.cli", "events", "publish", "user_signed_up",
                     "--data", json.dumps({"user": f"u{i}"}), "--id", f"signup-{i}",
                     "--bus", bus], cwd=tmp_path, env=env, capture_output=True, check=False)
                assert publish.returncode == 0, publish.stderr
        asyncio.run(_until_completed(store, 5))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "5 started" in err and "5 duplicates" in err
    records = asyncio.run(_runs(store))
    assert sorted(r.metadata["event_id"] for r in records) == [f"signup-{i}" for i in range(5)]


async def _runs(url: str) -> list:  # type: ignore[type-arg]
    async with open_store(url) as opened:
        return await opened.list_runs(RunFilter(limit=100))


async def _until_completed(url: str, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = await _runs(url)
        if len([r for r in runs if r.status == "completed"]) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the runs did not complete")


def test_relay_once_moves_the_outbox_to_the_bus(keel: Keel, store: str, bus: str) -> None:
    async def produce() -> str:
        async with open_store(store, outbox=True) as opened:
            agent = Agent("relayed", model=ScriptedModel(["done"]))
            return (await agent.run("go", store=opened)).run_id

    run_id = asyncio.run(produce())
    result = keel("events", "relay", "--store", store, "--bus", bus, "--once")
    assert result.exit_code == 0, result
    assert "event(s) relayed" in result.stdout
    events = tail_all(keel, bus)
    assert {e["type"] for e in events} >= {"run.started", "run.completed"}
    assert all(e["run_id"] == run_id for e in events)
    again = keel("events", "relay", "--store", store, "--bus", bus, "--once")
    assert "0 event(s) relayed" in again.stdout


TRIGGERS_OBJECT = '''
    from keel import Agent
    from keel.events import MemoryBus, Trigger, Triggers
    from keel.store import MemoryStore
    from keel.testing import FunctionModel

    agent = Agent("greeter", model=FunctionModel(lambda messages, tools, settings: "hello"))
    # the command keeps the group and concurrency of a Triggers; its bus and store are the
    # command's own
    desk = Triggers([Trigger("user_signed_up", agent=agent)], bus=MemoryBus(),
                    store=MemoryStore(), group="signups", concurrency=3)
'''


def test_listen_in_this_process_serves_a_triggers_with_its_group_until_sigterm(
        keel: Keel, store: str, bus: str, write_module: Callable[[str, str], Path],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`keel events listen MODULE:TRIGGERS` in-process: the Triggers' group and concurrency
    are kept, events published before it starts are served (--from-start), each once, and a
    SIGTERM (sent until the command's own handler has it) stops it cleanly."""
    import threading

    write_module("desk_mod", TRIGGERS_OBJECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in range(2):
        for _ in range(2):
            published = keel("events", "publish", "user_signed_up", "--data",
                             json.dumps({"user": f"u{i}"}), "--id", f"in-{i}", "--bus", bus)
            assert published.exit_code == 0, published
    done = threading.Event()

    def stop_when_served() -> None:
        while not done.is_set():
            if len(asyncio.run(_runs(store)) if Path(store.removeprefix("sqlite:///"))
                   .exists() else []) >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
            done.wait(0.3)

    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # early ones are harmless
    stopper = threading.Thread(target=stop_when_served, daemon=True)
    stopper.start()
    try:
        result = keel("events", "listen", "desk_mod:desk", "--store", store, "--bus", bus,
                      "--from-start")
    finally:
        done.set()
        stopper.join(10)
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 0, result
    assert "group signups, concurrency 3" in result.output
    # each event's two copies arrive in one fetch: the second joins the first's handler
    # (once, a KeyError when the first finished) and is acked with it
    assert "2 started" in result.output and "0 rejected" in result.output
    records = asyncio.run(_runs(store))
    assert sorted(r.metadata["event_id"] for r in records) == ["in-0", "in-1"]


def test_listen_loads_a_single_trigger_a_list_or_a_triggers(
        write_module: Callable[[str, str], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.cli._events import load_triggers
    from keel.events import Triggers

    write_module("triggers_mod", TRIGGERS)
    write_module("desk_mod", TRIGGERS_OBJECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    one, listed = load_triggers("triggers_mod:trigger"), load_triggers("triggers_mod:several")
    assert isinstance(one, list) and isinstance(listed, list)
    assert [t.type for t in one] == [t.type for t in listed] == ["user_signed_up"]
    assert isinstance(load_triggers("desk_mod:desk"), Triggers)
