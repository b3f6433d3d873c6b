"""The planted corpus of personal data and secrets, and a real run that carries one item of it
everywhere: the user's input, a tool's output, the arguments of a tool that needs the real
value, a log line, and an escalation packet.

Extend it for new places: `run_planted` returns the run id (the store is the SQLite file you
gave it); assert with `assert_no_leak` on whatever bytes the new place produced (rows of the
SQLite file, a formatted log line, an HTTP body), and on `received` that a tool needing the
real value still got it. Give `middleware=[...]` (guards) to `run_planted` / `planted_agent`
to test a place inside the loop (tests/guard/test_data_policy_runs.py does it with
`DataGuard` for the input, tool output and answers).
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel import Agent, Escalate, Middleware, tool
from keel.core import JsonFormatter
from keel.guard import DataPolicy, TaintGuard
from keel.runtime import EscalationPolicy
from keel.store import open_store
from keel.testing import ScriptedModel, call

DATA = Path(__file__).parent / "data"
#: Kinds whose value is a number however it is written: also searched for as bare digits.
_NUMBERISH = frozenset({"phone", "card", "iban", "us_ssn", "uk_nino", "es_dni"})


@dataclass(frozen=True)
class Planted:
    id: str
    kind: str
    value: str  # as planted (may hold invisible or look-alike characters)
    secret: str  # the part that must never appear (the value, or a secret's core)
    text: str  # the value in a sentence


def load_planted(name: str) -> list[Planted]:
    """``planted_pii`` or ``planted_secrets``."""
    out = []
    for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        out.append(Planted(id=d["id"], kind=d["kind"], value=d["value"],
                           secret=d.get("secret") or d["canonical"], text=d["text"]))
    return out


PII = load_planted("planted_pii")
SECRETS = load_planted("planted_secrets")
CORPUS = PII + SECRETS


def needles(item: Planted) -> set[bytes]:
    """Every byte form in which the item would show if it leaked: as planted and in its plain
    form, raw UTF-8 and JSON-escaped (ASCII or not), and for numbers their bare digits."""
    forms = {item.value, item.secret}
    if item.kind in _NUMBERISH:
        compact = "".join(str(unicodedata.decimal(c, c)) if c.isdecimal() else c
                          for c in item.secret if c.isalnum())
        forms.add(compact)
    out: set[bytes] = set()
    for form in forms:
        out.add(form.encode())
        out.add(json.dumps(form)[1:-1].encode())
        out.add(json.dumps(form, ensure_ascii=False)[1:-1].encode())
    return out


def assert_no_leak(blob: bytes, items: Iterable[Planted], where: str) -> None:
    leaks = [item.id for item in items for n in needles(item) if n in blob]
    assert not leaks, f"{where} holds planted values in clear: {sorted(set(leaks))}"


def sqlite_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as they are on disk."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def packet_rows(path: Path) -> bytes:
    """The stored escalation packets, as bytes: the human tasks' data and the journal's
    escalation intents (read with sqlite3, not through keel)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT data FROM tasks WHERE kind = 'escalation'").fetchall()
        rows += db.execute("SELECT data FROM journal WHERE kind = 'escalation'").fetchall()
    return b"\n".join(r[0].encode() if isinstance(r[0], str) else r[0] for r in rows)


@contextmanager
def captured_logs(policy: DataPolicy) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Two handlers on the ``keel`` logger, as an app would set them up: keel's JSON lines
    with the policy's scrubber, and a plain text formatter with the policy's filter. Yields
    their output streams."""
    json_out, text_out = io.StringIO(), io.StringIO()
    json_handler = logging.StreamHandler(json_out)
    json_handler.setFormatter(JsonFormatter(scrub=policy.log_scrubber()))
    text_handler = logging.StreamHandler(text_out)
    text_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    text_handler.addFilter(policy.log_filter())
    logger = logging.getLogger("keel")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(json_handler)
    logger.addHandler(text_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield json_out, text_out
    finally:
        logger.removeHandler(json_handler)
        logger.removeHandler(text_handler)
        logger.setLevel(level)
        logger.propagate = propagate


@dataclass
class PlantedRun:
    run_id: str
    item: Planted
    received: list[str] = field(default_factory=list)


def planted_agent(item: Planted, policy: DataPolicy, received: list[str],
                  name: str = "support", middleware: Sequence[Middleware] = ()) -> Agent[Any, Any]:
    """An agent whose scripted model looks a customer up (the tool's output holds the item),
    sends the item's value to a tool that needs it (which logs it), then hands over to a
    person with the item in the reason."""
    log = logging.getLogger("keel.app.payments")

    @tool
    def lookup_customer(customer_id: str) -> str:
        """Look a customer up."""
        return f"customer {customer_id}: {item.text}"

    @tool
    def send_to(destination: str) -> str:
        """Send the documents to a destination."""
        received.append(destination)
        log.info("sending documents to %s", destination, extra={"destination": destination})
        return "sent"

    @tool
    def hand_over(note: str) -> str:
        """Hand the case to a person."""
        raise Escalate(f"the customer needs a person: {note}")

    model = ScriptedModel([
        call("lookup_customer", {"customer_id": "c-1"}),
        call("send_to", {"destination": item.value}),
        call("hand_over", {"note": item.text}),
        "Done.",
    ])
    # The scripted model writes the value in its plain form, which no message holds as
    # written (the corpus plants it with look-alike and invisible characters): taint would
    # rightly ask a person first. These tests are about where the value is written, so the
    # tools that get it are exempted from taint gating.
    return Agent(name, model=model, tools=[lookup_customer, send_to, hand_over],
                 escalation=EscalationPolicy(scrub_packet=policy.packet_scrubber()),
                 middleware=[TaintGuard(exempt=["send_to", "hand_over"]), *middleware])


async def run_planted(item: Planted, policy: DataPolicy, db: Path, agent: str = "support",
                      middleware: Sequence[Middleware] = ()) -> PlantedRun:
    """Run the planted agent for ``item`` on the SQLite store at ``db`` until it escalates."""
    received: list[str] = []
    runnable = planted_agent(item, policy, received, name=agent, middleware=middleware)
    run_id = ""
    async with open_store(f"sqlite:///{db}") as store:
        try:
            await runnable.run(f"Hello, about my account: {item.text}", store=store)
        except Escalate as exc:
            run_id = exc.run_id or ""
    if not run_id:
        raise AssertionError(f"{item.id}: the planted run did not escalate")
    return PlantedRun(run_id=run_id, item=item, received=received)
