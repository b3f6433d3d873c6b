"""The demo's day as a test: ``keel demo``'s desk served on 127.0.0.1, the scripted day
played through the HTTP API, every conversation ending as scripted, the shop's database
ending as the reviewers approved, and a second day on a fresh database with the same
summary."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.support_desk import SCENARIOS as S
from examples.support_desk import templates
from examples.support_desk.day import DAY, Visit, play_day

from keel import UserError
from keel.cli._desk_demo import run_desk_demo
from keel.cli._text import Screen
from keel.store import RunFilter, TaskFilter, open_store

#: Everything the day may write, and nothing else: three refunds (59.90 without approval,
#: 399.00 after one reviewer, 2,490.00 after two) and the club member's return case.
EXPECTED_EFFECTS = [
    ["refund", S["refund_small"].customer_id, S["refund_small"].order_id, 5990],
    ["refund", S["refund_one_approval"].customer_id, S["refund_one_approval"].order_id, 39900],
    ["refund", S["refund_two_approvals"].customer_id, S["refund_two_approvals"].order_id,
     249000],
    ["ticket_created", S["subscription"].customer_id, S["subscription"].order_id, None],
]


def refunds(folder: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / "desk.db") as conn:
        return conn.execute(
            "SELECT order_id, amount_cents, status FROM refunds WHERE customer_id IN "
            "(SELECT id FROM customers WHERE id <= 'C-00012') ORDER BY order_id").fetchall()


async def human_tasks(folder: Path) -> tuple[list[Any], list[Any]]:
    async with open_store(f"sqlite:///{folder / 'runs.db'}") as store:
        approvals = await store.list_tasks(TaskFilter(kind="approval"))
        escalations = await store.list_tasks(TaskFilter(kind="escalation"))
        runs = {t.run_id: await store.get_run(t.run_id) for t in [*approvals, *escalations]}
    return ([(t, runs[t.run_id]) for t in approvals], [(t, runs[t.run_id]) for t in escalations])


async def answers(folder: Path) -> dict[str, list[Any]]:
    """What each customer was answered, turn by turn (the runs' outputs)."""
    async with open_store(f"sqlite:///{folder / 'runs.db'}") as store:
        runs = await store.list_runs(RunFilter(limit=100))
    out: dict[str, list[Any]] = {}
    for r in sorted(runs, key=lambda r: r.created_at):
        out.setdefault(r.user or "", []).append(r.output)
    return out


def bad_days(url: str, keys: dict[str, str]) -> list[str]:
    """play_day's answers to a bad key and to visits the desk refuses."""
    good = {"operator": keys["demo operator"], "person": keys["sam"],
            "reviewers": {"ana": keys["ana"], "ben": keys["ben"]}}
    cases: list[tuple[dict[str, Any], list[Visit]]] = [
        ({**good, "operator": "keel_0000000000000000_not-a-key"}, list(DAY[:1])),
        (good, [Visit(name="long_id", title="t", customer="x" * 500, turns=("hi there",),
                      expect=("answered",))]),
        (good, [Visit(name="huge", title="t", customer="C-00001", turns=("z" * 20_000,),
                      expect=("refused",))]),
        (good, [Visit(name="blank", title="t", customer="C-00001", turns=("   ",),
                      expect=("refused",))])]
    out = []
    for options, day in cases:
        with pytest.raises(UserError) as refused:
            asyncio.run(play_day(url, day=day, **options))
        out.append(str(refused.value))
    with pytest.raises(UserError, match="two reviewer keys"):
        asyncio.run(play_day(url, operator="k", reviewers={"ana": "k"}, person="k"))
    return out


def test_the_demo_day_ends_as_scripted_and_a_second_day_gives_the_same_summary(
        tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def while_kept(url: str, keys: dict[str, str]) -> None:  # --keep: still served
        seen["console"] = httpx.get(f"{url}/console/login", timeout=30).status_code
        seen["health"] = httpx.get(f"{url}/v1/approvals", timeout=30).status_code
        seen["bad"] = bad_days(url, keys)

    first = run_desk_demo(Screen(), folder=tmp_path / "a", keep=True, wait=while_kept)
    assert seen["console"] == 200 and seen["health"] == 401  # served; the API wants a key
    starts = ["the desk refused the key (401",
              "the desk refused a customer token for 'xxxxxxxx",
              "the desk refused 'huge''s message (400: the message is 20,000 characters",
              "the desk refused 'blank''s message (400: the message is empty"]
    assert [m[:len(s)] for m, s in zip(seen["bad"], starts, strict=True)] == starts
    assert first["ok"], first
    assert first["outcomes"] == {v.name: list(v.expect) for v in DAY}
    assert (first["conversations"], first["turns"]) == (12, 13)
    assert (first["resolved_without_a_person"], first["escalated"]) == (10, 2)
    assert (first["approval_requests"], first["reviews_accepted"],
            first["reviews_refused"]) == (2, 3, 1)
    assert first["guard_trips"] == 2 and first["answers_with_citations"] >= 1
    # The database: refunds exactly as approved, nothing for the hidden note or the
    # instruction in a message (their customers have no effect at all).
    assert first["effects"] == EXPECTED_EFFECTS
    assert refunds(tmp_path / "a") == [
        (S["refund_small"].order_id, 5990, "issued"),
        (S["refund_one_approval"].order_id, 39900, "issued"),
        (S["refund_two_approvals"].order_id, 249000, "issued")]
    approvals, escalations = asyncio.run(human_tasks(tmp_path / "a"))
    by_customer = {run.user: task for task, run in approvals}
    assert set(by_customer) == {S["refund_one_approval"].customer_id,
                                S["refund_two_approvals"].customer_id}
    two = by_customer[S["refund_two_approvals"].customer_id]
    assert two.status == "resolved" and two.data["reviewers"] == 2
    who = [r["by"].split(" (key")[0] for r in two.resolution["reviews"]]
    assert who == ["ana", "ben"]  # two different people; ana's second approval was refused
    assert {run.user for _, run in escalations} == {
        S["return_eligible"].customer_id, S["return_expired"].customer_id}
    noted = next(t for t, run in escalations if run.user == S["return_eligible"].customer_id)
    assert "the uploaded note holds instructions" in str(noted.data)
    assert all(t.status == "resolved" for t, _ in escalations)

    # What the customers read.
    said = asyncio.run(answers(tmp_path / "a"))
    injected = next(v for v in DAY if v.name == "injection")
    assert said[injected.customer] == [templates.HOSTILE]
    hidden = next(v for v in DAY if v.name == "hidden_note")
    assert said[hidden.customer] == [hidden.person_note]
    status = said[S["in_transit"].customer_id]
    assert len(status) == 2 and all("NW-100001" in str(a) for a in status)
    assert "refund of 2490.0 EUR" in str(said[S["refund_two_approvals"].customer_id][0])

    second = run_desk_demo(Screen(), folder=tmp_path / "b")
    same = {k: v for k, v in first.items() if k != "latency"}
    assert {k: v for k, v in second.items() if k != "latency"} == same
    assert second["latency"]["p50_s"] > 0
