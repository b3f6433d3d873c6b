"""``keel audit``: the gated, approved, denied and blocked calls of real runs, read from the
journal of a real SQLite store and of a real Postgres store, filtered from the command line;
bad options get one-line usage errors."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from keel import Agent, ApprovalRequired, tool
from keel.cli._audit import parse_since
from keel.guard import Limit, ToolPolicy
from keel.runtime import decide_approval
from keel.store import JournalEntry, RunRecord, RunStore, TaskFilter, open_store
from keel.testing import ScriptedModel, call
from tests.cli.conftest import Invoke

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def agents() -> tuple[Agent[Any], Agent[Any], Agent[Any], list[Any]]:
    effects: list[Any] = []

    @tool(risk="irreversible")
    def wire(amount: int, to: str) -> str:
        """Send money."""
        effects.append(("wire", amount, to))
        return "sent"

    @tool(risk="write")
    def refund(order: str, amount: float) -> str:
        """Refund an order."""
        effects.append(("refund", order, amount))
        return "refunded"

    approved = Agent("pay", model=ScriptedModel([call("wire", {"amount": 50, "to": "bob"}),
                                                 "done"]), tools=[wire])
    denied = Agent("pay", model=ScriptedModel([call("wire", {"amount": 9000, "to": "eve"}),
                                               "ok"]), tools=[wire])
    policy = ToolPolicy(constraints={"refund": {"amount": Limit(max=100)}})
    support = Agent("support", model=ScriptedModel([call("refund", {"order": "A",
                                                                     "amount": 500}),
                                                    call("refund", {"order": "A",
                                                                     "amount": 20}),
                                                    "done"]),
                    tools=[refund], middleware=[policy])
    return approved, denied, support, effects


async def fill(store: RunStore) -> list[Any]:
    """Four runs: a wire approved by ann, a wire denied by bob, a refund over the policy's
    limit (then one within it), and a call a guardrail blocked."""
    approved, denied, support, effects = agents()
    for agent, approve, by in ((approved, True, "ann"), (denied, False, "bob")):
        with pytest.raises(ApprovalRequired) as info:
            await agent.run("pay", store=store)
        [task] = [t for t in await store.list_tasks(TaskFilter(kind="approval"))
                  if t.run_id == info.value.run_id]
        await decide_approval(task.task_id, store=store, approve=approve, by=by,
                              comment="" if approve else "not to eve")
        await agent.resume(info.value.run_id, store=store)
    await support.run("refund A", store=store)
    # A guardrail's block, as the guard seam journals it (the tool's result).
    now = time.time()
    await store.create_run(RunRecord(run_id="run-guarded", agent="mail", status="completed",
                                     input="x", created_at=now, updated_at=now))
    blocked = {"content": "", "value": None, "truncated": False,
               "failure": {"error_type": "guardrail_blocked", "retryable": False, "hint": None,
                           "message": "injection detector: instructions in tool output"}}
    await store.append("run-guarded", [JournalEntry(
        seq=0, key="mail/turn:0/tool:send#0", phase="result", kind="tool", name="send",
        input_hash="h", data=blocked, created_at=now)])
    return effects


def audit_json(keel: Invoke, url: str, *args: str) -> list[dict[str, Any]]:
    out = keel("audit", "--json", "--store", url, *args)
    assert out.exit_code == 0, out
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def check_trail(keel: Invoke, url: str) -> None:
    rows = audit_json(keel, url)
    outcomes = sorted((r["outcome"], r["tool"], r["by"]) for r in rows)
    assert outcomes == [("approved", "wire", "ann"), ("blocked", "send", "guardrail"),
                        ("denied", "refund", "tool-policy"), ("denied", "wire", "bob"),
                        ("gated", "wire", "approval-policy"),
                        ("gated", "wire", "approval-policy")]
    assert [r["at"] for r in rows] == sorted((r["at"] for r in rows), reverse=True)
    gated = [r for r in rows if r["outcome"] == "gated"]
    assert {r["arguments"]["to"] for r in gated} == {"bob", "eve"}
    assert all(r["approval_id"] and "irreversible" in r["reason"] for r in gated)
    [bob] = [r for r in rows if r["by"] == "bob"]
    assert bob["reason"] == "not to eve" and bob["step_key"].endswith("/tool:wire#0")
    assert bob["approval_id"] in {r["approval_id"] for r in gated}
    [policy] = [r for r in rows if r["by"] == "tool-policy"]
    assert policy["agent"] == "support" and "amount: 500 is above the limit of 100" in \
        policy["reason"]

    assert {r["outcome"] for r in audit_json(keel, url, "--agent", "pay")} == \
        {"gated", "approved", "denied"}
    assert {r["agent"] for r in audit_json(keel, url, "--tool", "refund")} == {"support"}
    assert [r["by"] for r in audit_json(keel, url, "--outcome", "approved")] == ["ann"]
    assert [r["tool"] for r in audit_json(keel, url, "--outcome", "blocked")] == ["send"]
    assert len(audit_json(keel, url, "--outcome", "denied")) == 2
    assert len(audit_json(keel, url, "--since", "1h")) == 6
    assert audit_json(keel, url, "--since", "2999-01-01") == []
    assert len(audit_json(keel, url, "--limit", "2")) == 2

    table = keel("audit", "--store", url)
    assert table.exit_code == 0
    for word in ("approved", "denied", "blocked", "gated", "ann", "bob", "tool-policy",
                 "guardrail"):
        assert word in table.stdout


def test_audit_on_sqlite(keel: Invoke, store: str) -> None:
    async def build() -> list[Any]:
        async with open_store(store) as opened:
            return await fill(opened)

    effects = asyncio.run(build())
    assert effects == [("wire", 50, "bob"), ("refund", "A", 20)]  # nothing refused ran
    check_trail(keel, store)


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"keel_audit_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_audit_on_postgres(keel: Invoke, pg_url: str) -> None:
    async def build() -> list[Any]:
        async with open_store(pg_url) as opened:
            return await fill(opened)

    asyncio.run(build())
    check_trail(keel, pg_url)


@pytest.mark.parametrize(("args", "words"), [
    (["--outcome", "maybe"], "--outcome 'maybe' is not one of: approved, denied, blocked, gated"),
    (["--since", "yesterday"], "--since 'yesterday' is not a duration"),
    (["--since", "5 parsecs"], "is not a duration"),
    (["--limit", "0"], "--limit"),
])
def test_bad_options_are_one_line_usage_errors(keel: Invoke, store: str, args: list[str],
                                               words: str) -> None:
    out = keel("audit", "--store", store, *args)
    assert out.exit_code == 2
    assert words in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.strip()]) <= 2
    assert "Traceback" not in out.output


def test_no_store_yet_and_nothing_matching(keel: Invoke, store: str) -> None:
    out = keel("audit", "--store", store)
    assert out.exit_code == 0 and "no run store there yet" in out.stdout
    assert audit_json(keel, store) == []


@pytest.mark.parametrize(("text", "seconds_back"), [("30m", 1800), ("24h", 86_400),
                                                   ("7d", 604_800), ("2w", 1_209_600),
                                                   ("10s", 10)])
def test_since_durations(text: str, seconds_back: int) -> None:
    assert parse_since(text, 10_000_000.0) == 10_000_000.0 - seconds_back


def test_since_dates_are_utc_unless_they_say_otherwise() -> None:
    assert parse_since("1970-01-02", 0.0) == 86_400
    assert parse_since("1970-01-01T01:00:00Z", 0.0) == 3600
    assert parse_since("1970-01-01T01:00:00+01:00", 0.0) == 0
