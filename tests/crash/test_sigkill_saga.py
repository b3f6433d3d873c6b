"""SIGKILL a real process in the middle of a saga's compensation, resume it in a new process,
and check the travel database ends exactly as before, no compensation applied twice.

The run books a flight, a hotel and charges a card; then the model fails, so the run
compensates: refund, cancel the hotel, cancel the flight. The child kills itself at each
point of that compensation: before an effect, after the effect but before its result is
journaled (the resume finds an intent without a result and calls the compensation again with
the same idempotency key, which the travel system honours), and right after a result is
committed (the resume skips it). SQLite store only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crash._forkserver import ForkServer
from tests.crash._harness import Harness, check_journal_only_grew

pytestmark = pytest.mark.slow  # the crash matrix: each case forks and SIGKILLs real processes

RUN = "run-1"
AGENT = "trip"
FLIGHT = f"{AGENT}/turn:0/tool:book_flight#0"
HOTEL = f"{AGENT}/turn:1/tool:book_hotel#0"
CHARGE = f"{AGENT}/turn:2/tool:charge_card#0"
COMP = [f"{AGENT}/compensate:{k}" for k in (CHARGE, HOTEL, FLIGHT)]
UNDO = ("refund_card", "cancel_hotel", "cancel_flight")

POINTS = [
    *(f"op:{op}:{when}" for op in UNDO for when in ("before", "after")),
    *(f"append:{k}:{phase}" for k in COMP for phase in ("intent", "result")),
    f"append:{AGENT}/saga:intent",
    f"append:{AGENT}/saga:result",
]


@pytest.fixture(scope="module")
def saga_forker() -> Iterator[ForkServer]:
    server = ForkServer(["saga_agent"])
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def trip(saga_forker: ForkServer, tmp_path: Path) -> Harness:
    harness = Harness(saga_forker, f"sqlite:///{tmp_path / 'runs.db'}", tmp_path, "saga_agent",
                      RUN)
    assert harness.child("init").returncode == 0
    return harness


def _state(h: Harness) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(h.outside, timeout=30)
    try:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
                for t in ("flights", "hotels", "cards", "payments")}
    finally:
        db.close()


def _effects(h: Harness) -> list[tuple[str, str]]:
    db = sqlite3.connect(h.outside, timeout=30)
    try:
        return db.execute("SELECT op, idem FROM applications ORDER BY rowid").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("kill", POINTS)
async def test_sigkill_mid_compensation_then_resume_restores_the_database(
        trip: Harness, kill: str) -> None:
    before = _state(trip)
    crashed = trip.child("run", RUN, kill=kill)
    assert crashed.killed, crashed.stderr
    at_kill = await trip.snapshot()
    assert at_kill.status == "running"

    resumed = trip.child("resume", RUN)
    assert resumed.returncode == 4, resumed.stderr
    assert resumed.reply() == {"error": "RunError", "message": "the model is down"}
    after = await trip.snapshot()
    check_journal_only_grew(at_kill, after)
    assert _state(trip) == before
    effects = _effects(trip)
    ops = [op for op, _ in effects]
    assert ops == ["book_flight", "book_hotel", "charge_card", *UNDO], "applied exactly once"
    assert [idem for _, idem in effects[3:]] == [f"{RUN}/{k}" for k in COMP]
    assert after.status == "failed"
    results = [k for k, p in after.entries() if p == "result"]
    assert [k for k in results if "/compensate:" in k and "/attempt:" not in k] == COMP
    assert results[-1] == f"{AGENT}/saga"


async def test_without_a_kill_the_run_fails_compensated_and_resume_changes_nothing(
        trip: Harness) -> None:
    before = _state(trip)
    ran = trip.child("run", RUN)
    assert ran.returncode == 4, ran.stderr
    assert ran.reply()["error"] == "ModelError"
    assert _state(trip) == before
    first = await trip.snapshot()
    again = trip.child("resume", RUN)
    assert again.returncode == 4, again.stderr
    assert len(_effects(trip)) == 6
    assert (await trip.snapshot()).entries() == first.entries()
