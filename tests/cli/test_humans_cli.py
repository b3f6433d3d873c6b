"""`keel approvals` and `keel escalations` against a real store file: what they show, what a
decision changes, and every way a decision is refused (changing nothing)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from keel.core import Escalate, ModelResponse, TextPart, ToolCallPart
from keel.runtime._approvals import ApprovalPolicy, approval_request, approval_task
from keel.runtime._escalation import EscalationPolicy, build_packet, escalation_task
from keel.store import HumanTask, JournalEntry, RunRecord, RunStore, open_store
from keel.tools import ToolResult, tool
from tests.cli.conftest import InvokeResult

Keel = Callable[..., InvokeResult]
T = TypeVar("T")
HOSTILE = "[bold red]x[/] \x1b[31mRED\x1b[0m \u202eevil"


@tool(risk="irreversible")
def refund(order_id: int, amount: float) -> str:
    """Refund an order (money leaves the company).

    Args:
        order_id: The order to refund.
        amount: How much, in EUR.
    """
    return f"refunded {amount}"


def on_store(url: str, fn: Callable[[RunStore], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_store(url) as store:
            return await fn(store)

    return asyncio.run(go())


def state(url: str, task_id: str) -> tuple[HumanTask, RunRecord, list[JournalEntry]]:
    async def read(store: RunStore) -> tuple[HumanTask, RunRecord, list[JournalEntry]]:
        task = await store.get_task(task_id)
        return task, await store.get_run(task.run_id), await store.read_journal(task.run_id)

    return on_store(url, read)


def new_run(run_id: str, text: Any, *, target: str | None = "agent.py:agent",
            tenant: str | None = None) -> RunRecord:
    now = time.time() - 120
    return RunRecord(run_id=run_id, agent="support", status="running", input=text,
                     created_at=now, updated_at=now, target=target, tenant=tenant,
                     usage={"requests": 1, "input_tokens": 120, "output_tokens": 30,
                            "cost_usd": 0.002, "steps": 2})


def model_entry(seq: int, text: str, calls: list[tuple[str, dict[str, Any]]]) -> JournalEntry:
    parts: list[Any] = [TextPart(text=text)] if text else []
    parts += [ToolCallPart(call_id=f"c{i}", tool_name=n, arguments=json.dumps(a))
              for i, (n, a) in enumerate(calls)]
    return JournalEntry(seq=seq, key="support/turn:0/model", phase="result", kind="model",
                        name="scripted", input_hash="h",
                        data=ModelResponse(parts=tuple(parts)).to_dict(), created_at=time.time())


def seed_approval(url: str, run_id: str, *, arguments: dict[str, Any] | None = None,
                  thought: str = "The parcel is lost; refunding.", reason: str | None = None,
                  text: Any = "My parcel never arrived, order 1234.",
                  due_in: float = 3600.0, queue: str = "approvals",
                  tenant: str | None = None) -> str:
    """A run suspended on an approval of refund(...), as the runtime writes it."""
    arguments = {"order_id": 1234, "amount": 40.0} if arguments is None else arguments

    async def seed(store: RunStore) -> str:
        record = new_run(run_id, text, tenant=tenant)
        await store.create_run(record)
        await store.append(run_id, [model_entry(0, thought, [("refund", arguments)])])
        gate = "support/turn:0/tool:refund#0/approval"
        policy = ApprovalPolicy(queue=queue, sla_seconds=abs(due_in))
        now = time.time() - 60
        request = approval_request(
            run_id=run_id, agent="support", gate_key=gate, tool=refund, arguments=arguments,
            reason=reason or "refund is irreversible", thought=thought, policy=policy, now=now)
        if due_in < 0:
            request["due_at"] = now + due_in
        intent = JournalEntry(seq=1, key=gate, phase="intent", kind="approval", name="refund",
                              input_hash="gate-hash", data=request, created_at=now)
        task = approval_task(request)
        await store.put_task(task)
        await store.suspend_run(record, [intent], waiting_on=[task.task_id])
        return task.task_id

    return on_store(url, seed)


def seed_escalation(url: str, run_id: str, *, trigger: str = "human_requested",
                    reason: str = "the user asked for a person ('talk to a human')",
                    text: Any = "Talk to a human about my refund, please.",
                    queue: str | None = None, proposal: str | None = None) -> str:
    async def seed(store: RunStore) -> str:
        record = new_run(run_id, text)
        await store.create_run(record)
        result = ToolResult(content="order 1234: lost by carrier", value=None).to_dict()
        entries = [
            model_entry(0, "Let me check the order.", [("lookup", {"order_id": 1234})]),
            JournalEntry(seq=1, key="support/turn:0/tool:lookup#0", phase="result",
                         kind="tool", name="lookup", input_hash="h", data=result,
                         created_at=time.time()),
        ]
        await store.append(run_id, entries)
        key = "support/turn:1/escalation"
        exc = Escalate(reason, trigger=trigger, queue=queue, proposal=proposal)
        packet = build_packet(record, entries, exc, EscalationPolicy(), key=key,
                              now=time.time() - 30)
        intent = JournalEntry(seq=2, key=key, phase="intent", kind="escalation", name=trigger,
                              input_hash="esc-hash", data=packet, created_at=time.time())
        task = escalation_task(packet)
        await store.put_task(task)
        await store.suspend_run(record, [intent], waiting_on=[task.task_id])
        return task.task_id

    return on_store(url, seed)


def finish(url: str, run_id: str, status: str = "failed") -> None:
    async def done(store: RunStore) -> None:
        record = await store.get_run(run_id)
        await store.finish_run(record.with_status(status, updated_at=time.time()), [])  # type: ignore[arg-type]

    on_store(url, done)


def assert_refused(r: InvokeResult, *fragments: str) -> None:
    assert r.exit_code == 2, r
    assert r.stdout == "", r
    for fragment in fragments:
        assert fragment in r.stderr, r
    assert "Traceback" not in r.output


# ----------------------------------------------------------------------- approvals list


def test_approvals_list_shows_waiting_calls(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a")
    b = seed_approval(store, "run-b", arguments={"order_id": 99, "amount": 250.5},
                      due_in=-7200, queue="finance")
    decided = seed_approval(store, "run-c")
    keel("--store", store, "approvals", "approve", decided, "--by", "ana")
    gone = seed_approval(store, "run-d")
    finish(store, "run-d")
    r = keel("--store", store, "approvals", "list")
    assert r.exit_code == 0, r
    header = next(line for line in r.stdout.splitlines() if "arguments" in line)
    for column in ("id", "run", "tool", "arguments", "reason", "age", "due"):
        assert column in header
    rows = [line for line in r.stdout.splitlines() if line.startswith("ap-")]
    assert [row.split()[0] for row in rows] == [a, b]  # oldest first; decided and done hidden
    assert '{"order_id": 1234, "amount": 40.0}' in rows[0] and "refund" in rows[0]
    assert re.search(r"  in 5\dm", rows[0]), rows[0]
    assert "overdue 2h" in rows[1]
    assert decided not in r.stdout and gone not in r.stdout
    finance = keel("--store", store, "approvals", "list", "--queue", "finance").stdout
    assert b in finance and a not in finance
    everything = keel("--store", store, "approvals", "list", "--all").stdout
    assert all(i in everything for i in (a, b, decided, gone))
    assert "resolved by ana" in everything and "status" in everything


def test_lists_fit_a_narrow_terminal_with_whole_ids(keel: Keel, store: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a = seed_approval(store, "01J9Z8K2QW3E4R5T6Y7U8I9O0P", reason="r" * 300)
    e = seed_escalation(store, "01J9Z8K2QW3E4R5T6Y7U8I9O0Q", reason="q" * 300)
    monkeypatch.setenv("COLUMNS", "80")
    for args, task_id in ((("approvals", "list"), a), (("escalations", "list"), e)):
        r = keel("--store", store, *args)
        assert r.exit_code == 0, r
        lines = r.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), r.stdout
        row = next(line for line in lines if line.startswith(task_id))
        assert "in 5" in row or "in 3h" in row
        if args[0] == "approvals":  # the reason wraps onto more lines instead of being cut
            assert r.stdout.count("r" * 30) >= 3
        else:
            assert "…" in row
    monkeypatch.setenv("COLUMNS", "160")
    wide = keel("--store", store, "approvals", "list").stdout
    assert "01J9Z8K2QW3E4R5T6Y7U8I9O0P" in wide  # the run column, when there is room


def test_lists_page_past_tasks_of_finished_runs(keel: Keel, store: str) -> None:
    stale = [seed_approval(store, f"run-{i:03}") for i in range(3)]
    for i in range(3):
        finish(store, f"run-{i:03}", "cancelled")
    live = seed_approval(store, "run-live")
    r = keel("--store", store, "approvals", "list", "--limit", "1")
    assert live in r.stdout and not any(s in r.stdout for s in stale), r


def test_approvals_list_json_and_empty_stores(keel: Keel, store: str) -> None:
    r = keel("--store", store, "approvals", "list")
    assert r.exit_code == 0 and "no run store there yet" in r.stdout
    assert json.loads(keel("--store", store, "approvals", "list", "--json").stdout) == []
    a = seed_approval(store, "run-a", due_in=-10)
    data = json.loads(keel("--store", store, "approvals", "list", "--json").stdout)
    assert [d["approval_id"] for d in data] == [a]
    assert data[0]["arguments"] == {"order_id": 1234, "amount": 40.0}
    assert data[0]["overdue"] is True and data[0]["run_status"] == "suspended"
    assert data[0]["tool"] == "refund" and data[0]["risk"] == "irreversible"
    keel("--store", store, "approvals", "approve", a)
    empty = keel("--store", store, "approvals", "list")
    assert empty.exit_code == 0 and "none waiting" in empty.stdout


def test_store_option_before_the_group_and_default_store(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a")
    assert a in keel("approvals", "list", "--store", store).stdout
    assert a in keel("--store", store, "approvals", "list").stdout
    assert "no run store there yet" in keel("approvals", "list").stdout  # ./.keel/runs.db


# ----------------------------------------------------------------------- approvals show


def test_approvals_show_has_everything_to_decide(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a", thought="Carrier confirmed the loss; refund 40.")
    r = keel("--store", store, "approvals", "show", a)
    assert r.exit_code == 0, r
    out = r.stdout
    for fragment in (a, "run-a", "suspended", "refund", "irreversible",
                     "Refund an order (money leaves the company).", '"order_id": 1234',
                     '"amount": 40.0', "refund is irreversible",
                     "Carrier confirmed the loss; refund 40.",
                     "My parcel never arrived, order 1234.", "support/turn:0/tool:refund#0",
                     "in 5", f"keel approvals approve {a}", f"keel approvals deny {a}"):
        assert fragment in out, fragment
    data = json.loads(keel("--store", store, "approvals", "show", a, "--json").stdout)
    assert data["approval_id"] == a and data["run_input"] == "My parcel never arrived, order 1234."
    assert data["thought"] == "Carrier confirmed the loss; refund 40."
    keel("--store", store, "approvals", "deny", a, "--comment", "fraud suspected", "--by", "bo")
    decided = keel("--store", store, "approvals", "show", a).stdout
    assert "denied by bo" in decided and "fraud suspected" in decided


def test_approvals_show_refuses_unknown_ids_and_escalations(keel: Keel, store: str) -> None:
    assert_refused(keel("--store", store, "approvals", "show", "ap-000000000000"),
                   "no approval", "no run store")
    seed_approval(store, "run-a")
    assert_refused(keel("--store", store, "approvals", "show", "ap-000000000000"),
                   "'ap-000000000000'")
    e = seed_escalation(store, "run-e")
    assert_refused(keel("--store", store, "approvals", "show", e), "is an escalation",
                   "keel escalations show")


# ---------------------------------------------------------------------- approve / deny


def test_approve_makes_the_run_runnable(keel: Keel, store: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "tester")
    a = seed_approval(store, "run-a")
    r = keel("--store", store, "approvals", "approve", a, "--comment", "ok")
    assert r.exit_code == 0, r
    assert f"approved {a} (refund) by tester" in r.stdout
    assert "run run-a is runnable: `keel resume run-a`, or a `keel worker` continues it." \
        in r.stdout
    task, run, journal = state(store, a)
    assert (task.status, task.by, run.status) == ("resolved", "tester", "running")
    last = journal[-1]
    assert (last.key, last.phase, last.kind, last.input_hash) == (
        "support/turn:0/tool:refund#0/approval", "result", "approval", "gate-hash")
    assert last.data["approved"] is True and last.data["comment"] == "ok"
    assert last.data["arguments"] == {"order_id": 1234, "amount": 40.0}


def test_by_defaults_to_cli_without_user(keel: Keel, store: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER", raising=False)
    a = seed_approval(store, "run-a")
    assert "by cli" in keel("--store", store, "approvals", "approve", a).stdout
    assert state(store, a)[0].by == "cli"


def test_approve_with_edited_arguments(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a")
    r = keel("--store", store, "approvals", "approve", a, "--edit-args",
             '{"order_id": 1234, "amount": 25}', "--by", "ana")
    assert r.exit_code == 0, r
    assert 'with arguments {"order_id": 1234, "amount": 25}' in r.stdout
    journal = state(store, a)[2]
    assert journal[-1].data["arguments"] == {"order_id": 1234, "amount": 25}
    assert journal[-1].data["edited"] is True


@pytest.mark.parametrize(("edit", "fragment"), [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"text"', "must be a JSON object"),
    ('{"order_id": "x", "amount": 1}', "do not match refund's schema"),
    ('{"amount": 1}', "order_id"),
    ('{"order_id": 1, "amount": 1, "extra": true}', "do not match"),
])
def test_bad_edited_arguments_change_nothing(keel: Keel, store: str, edit: str,
                                             fragment: str) -> None:
    a = seed_approval(store, "run-a")
    before = state(store, a)
    assert_refused(keel("--store", store, "approvals", "approve", a, "--edit-args", edit),
                   fragment)
    assert state(store, a) == before


def test_deny_needs_a_comment_and_records_it(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a")
    before = state(store, a)
    assert_refused(keel("--store", store, "approvals", "deny", a), "needs a comment")
    assert_refused(keel("--store", store, "approvals", "deny", a, "--comment", "   "),
                   "needs a comment")
    assert state(store, a) == before
    r = keel("--store", store, "approvals", "deny", a, "--comment", "over the limit",
             "--by", "bo")
    assert r.exit_code == 0, r
    assert f"denied {a} (refund) by bo" in r.stdout and "model reads your comment" in r.stdout
    assert "keel resume run-a" in r.stdout
    _, run, journal = state(store, a)
    assert journal[-1].data["approved"] is False
    assert journal[-1].data["comment"] == "over the limit"
    assert run.status == "running"


def test_deciding_twice_is_refused(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a")
    assert keel("--store", store, "approvals", "approve", a, "--by", "ana").exit_code == 0
    after = state(store, a)
    assert_refused(keel("--store", store, "approvals", "approve", a), "already decided by ana")
    assert_refused(keel("--store", store, "approvals", "deny", a, "--comment", "no"),
                   "already decided")
    assert state(store, a) == after


def test_a_run_that_no_longer_waits_is_refused(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a")
    finish(store, "run-a", "cancelled")
    before = state(store, a)
    assert_refused(keel("--store", store, "approvals", "approve", a), "run-a is cancelled",
                   "nothing waits")
    assert state(store, a) == before


def test_decisions_refuse_unknown_ids_and_wrong_kinds(keel: Keel, store: str) -> None:
    assert_refused(keel("--store", store, "approvals", "approve", "ap-nope"), "no approval")
    e = seed_escalation(store, "run-e")
    before = state(store, e)
    assert_refused(keel("--store", store, "approvals", "approve", e), "is an escalation",
                   "keel escalations resolve")
    assert_refused(keel("--store", store, "approvals", "approve", "ap-nope"),
                   "no approval or escalation 'ap-nope'")
    assert state(store, e) == before


def test_oversized_and_hostile_input_is_refused_or_shown_literally(keel: Keel,
                                                                   store: str) -> None:
    a = seed_approval(store, "run-a", arguments={"order_id": 1, "amount": 1, "note": HOSTILE},
                      thought=HOSTILE, reason=HOSTILE, text=HOSTILE)
    before = state(store, a)
    assert_refused(keel("--store", store, "approvals", "deny", a, "--comment", "x" * 70_000),
                   "--comment is 70,000 characters long")
    assert_refused(keel("--store", store, "approvals", "approve", a, "--by", "b" * 500),
                   "--by is 500 characters")
    assert_refused(keel("--store", store, "approvals", "show", HOSTILE), "no approval")
    assert_refused(keel("--store", store, "approvals", "show", "ap-" + "z" * 100_000),
                   "no approval")
    assert state(store, a) == before
    for args in (("approvals", "list"), ("approvals", "show", a)):
        r = keel("--store", store, *args)
        assert r.exit_code == 0, r
        assert "\x1b" not in r.output and "\u202e" not in r.output
        assert "\\x1b[31mRED" in r.stdout and "[bold red]x[/]" in r.stdout
    listed = json.loads(keel("--store", store, "approvals", "list", "--json").stdout)
    assert listed[0]["reason"] == HOSTILE  # JSON round-trips the exact text
    assert_refused(keel("--store", store, "approvals", "deny", a, "--comment", "no", "--by",
                        "ana\x1b[2J"), "--by must be a plain name")
    assert state(store, a) == before
    r = keel("--store", store, "approvals", "deny", a, "--comment", HOSTILE, "--by",
             "[bold]ana[/]")
    assert r.exit_code == 0, r
    assert "\x1b" not in r.output and "by [bold]ana[/]" in r.stdout
    assert state(store, a)[0].by == "[bold]ana[/]"
    assert state(store, a)[2][-1].data["comment"] == HOSTILE


# ---------------------------------------------------------------------------- escalations


def test_escalations_list(keel: Keel, store: str) -> None:
    e1 = seed_escalation(store, "run-1")
    e2 = seed_escalation(store, "run-2", trigger="repeated_failure", queue="tier2",
                         reason="the agent kept failing: lookup timed out")
    e3 = seed_escalation(store, "run-3")
    keel("--store", store, "escalations", "claim", e2, "--by", "ana")
    keel("--store", store, "escalations", "resolve", e3, "--resume")
    r = keel("--store", store, "escalations", "list")
    assert r.exit_code == 0, r
    header = next(line for line in r.stdout.splitlines() if "trigger" in line)
    for column in ("id", "run", "trigger", "reason", "queue", "status", "age", "due"):
        assert column in header
    rows = [line for line in r.stdout.splitlines() if line.startswith("es-")]
    assert [row.split()[0] for row in rows] == [e1, e2]
    assert "human_requested" in rows[0] and "support" in rows[0] and "in 3h" in rows[0]
    assert "repeated_failure" in rows[1] and "claimed by ana" in rows[1]
    assert e3 in keel("--store", store, "escalations", "list", "--status", "resolved").stdout
    claimed = keel("--store", store, "escalations", "list", "--status", "claimed").stdout
    assert e2 in claimed and e1 not in claimed
    tier2 = keel("--store", store, "escalations", "list", "--queue", "tier2").stdout
    assert e2 in tier2 and e1 not in tier2
    data = json.loads(keel("--store", store, "escalations", "list", "--json").stdout)
    assert [d["escalation_id"] for d in data] == [e1, e2]
    assert data[0]["packet"]["request"] == "Talk to a human about my refund, please."
    assert_refused(keel("--store", store, "escalations", "list", "--status", "bogus"),
                   "unknown status 'bogus'")
    none = keel("--store", store, "escalations", "list", "--queue", "nobody")
    assert none.exit_code == 0 and "none match" in none.stdout


def test_escalations_show_the_packet(keel: Keel, store: str) -> None:
    e = seed_escalation(store, "run-1", proposal="Refund 40 EUR and apologise.")
    r = keel("--store", store, "escalations", "show", e)
    assert r.exit_code == 0, r
    out = r.stdout
    for fragment in (e, "run-1", "suspended", "human_requested",
                     "the user asked for a person ('talk to a human')", "support",
                     "Talk to a human about my refund, please.", "what the agent did",
                     "turn 0: the agent said: Let me check the order.",
                     "turn 0: lookup returned: order 1234: lost by carrier", "evidence",
                     'lookup {"order_id": 1234}', "the agent's proposal",
                     "Refund 40 EUR and apologise.", "in 3h", "120 in",
                     f"keel escalations resolve {e} with one of", "--answer TEXT"):
        assert fragment in out, fragment
    data = json.loads(keel("--store", store, "escalations", "show", e, "--json").stdout)
    assert data["packet"]["proposal"] == "Refund 40 EUR and apologise."
    assert data["packet"]["evidence"][0]["tool"] == "lookup"
    assert_refused(keel("--store", store, "escalations", "show", "es-nope"), "no approval")
    a = seed_approval(store, "run-a")
    assert_refused(keel("--store", store, "escalations", "show", a), "is an approval")


def test_claim(keel: Keel, store: str) -> None:
    e = seed_escalation(store, "run-1")
    assert_refused(keel("--store", store, "escalations", "claim", e), "--by NAME")
    r = keel("--store", store, "escalations", "claim", e, "--by", "ana")
    assert r.exit_code == 0 and f"claimed {e} by ana" in r.stdout, r
    assert keel("--store", store, "escalations", "claim", e, "--by", "ana").exit_code == 0
    before = state(store, e)
    assert_refused(keel("--store", store, "escalations", "claim", e, "--by", "bo"),
                   "already claimed by ana")
    assert_refused(keel("--store", store, "escalations", "claim", "es-nope", "--by", "bo"),
                   "no approval or escalation")
    assert state(store, e) == before


def test_resolve_with_an_answer_completes_the_run(keel: Keel, store: str) -> None:
    e = seed_escalation(store, "run-1")
    r = keel("--store", store, "escalations", "resolve", e, "--answer",
             "We refunded 40 EUR today.", "--by", "ana")
    assert r.exit_code == 0, r
    assert f"answered {e} by ana" in r.stdout and "run run-1 is completed" in r.stdout
    _, run, journal = state(store, e)
    assert (run.status, run.output) == ("completed", "We refunded 40 EUR today.")
    assert journal[-1].data["action"] == "answer" and journal[-1].kind == "escalation"
    assert journal[-1].input_hash == "esc-hash"


def test_resolve_with_an_answer_from_stdin(keel: Keel, store: str) -> None:
    e = seed_escalation(store, "run-1")
    r = keel("--store", store, "escalations", "resolve", e, "--answer", "-",
             input="line one\nline two\n")
    assert r.exit_code == 0, r
    assert state(store, e)[1].output == "line one\nline two\n"


def test_resolve_resume_and_dismiss(keel: Keel, store: str) -> None:
    e1 = seed_escalation(store, "run-1")
    r = keel("--store", store, "escalations", "resolve", e1, "--resume", "--note",
             "Offer a voucher instead.")
    assert r.exit_code == 0, r
    assert "run run-1 is runnable: `keel resume run-1`" in r.stdout
    _, run, journal = state(store, e1)
    assert run.status == "running" and journal[-1].data["note"] == "Offer a voucher instead."
    e2 = seed_escalation(store, "run-2")
    before = state(store, e2)
    assert_refused(keel("--store", store, "escalations", "resolve", e2, "--dismiss"),
                   "needs a comment")
    assert state(store, e2) == before
    r = keel("--store", store, "escalations", "resolve", e2, "--dismiss", "--comment",
             "spam")
    assert r.exit_code == 0 and "run run-2 is cancelled" in r.stdout, r
    _, run, _ = state(store, e2)
    assert run.status == "cancelled" and run.error is not None
    assert run.error["message"] == "spam"


@pytest.mark.parametrize(("args", "fragment"), [
    ((), "choose one"),
    (("--answer", "x", "--resume"), "choose one"),
    (("--resume", "--dismiss", "--comment", "c"), "choose one"),
    (("--answer", "x", "--note", "n"), "does not go with answer"),
    (("--answer", ""), "an answer is needed"),
    (("--answer", "x" * 70_000), "--answer is 70,000 characters"),
    (("--resume", "--note", "n" * 70_000), "--note is 70,000 characters"),
])
def test_bad_resolutions_change_nothing(keel: Keel, store: str, args: tuple[str, ...],
                                        fragment: str) -> None:
    e = seed_escalation(store, "run-1")
    before = state(store, e)
    assert_refused(keel("--store", store, "escalations", "resolve", e, *args), fragment)
    assert state(store, e) == before


def test_resume_after_an_exhausted_budget_is_refused(keel: Keel, store: str) -> None:
    e = seed_escalation(store, "run-1", trigger="budget_exhausted",
                        reason="the run's tokens budget ran out (12,000 of 10,000 used)")
    before = state(store, e)
    assert_refused(keel("--store", store, "escalations", "resolve", e, "--resume"),
                   "budget ran out", "--answer", "--dismiss")
    assert state(store, e) == before


def test_resolving_twice_a_finished_run_and_wrong_ids_are_refused(keel: Keel,
                                                                  store: str) -> None:
    e = seed_escalation(store, "run-1")
    assert keel("--store", store, "escalations", "resolve", e, "--resume",
                "--by", "ana").exit_code == 0
    after = state(store, e)
    assert_refused(keel("--store", store, "escalations", "resolve", e, "--answer", "x"),
                   "already resolved by ana")
    assert state(store, e) == after
    e2 = seed_escalation(store, "run-2")
    finish(store, "run-2")
    assert_refused(keel("--store", store, "escalations", "resolve", e2, "--answer", "x"),
                   "run-2 is failed", "nothing waits")
    assert_refused(keel("--store", store, "escalations", "resolve", "es-nope", "--resume"),
                   "no approval or escalation")
    a = seed_approval(store, "run-a")
    assert_refused(keel("--store", store, "escalations", "resolve", a, "--resume"),
                   "is an approval", "keel approvals approve")


def test_hostile_packets_are_printed_literally(keel: Keel, store: str) -> None:
    e = seed_escalation(store, "run-1", reason=HOSTILE, text=HOSTILE, proposal=HOSTILE)
    for args in (("escalations", "list"), ("escalations", "show", e)):
        r = keel("--store", store, *args)
        assert r.exit_code == 0, r
        assert "\x1b" not in r.output and "\u202e" not in r.output
        assert "[bold red]x[/]" in r.stdout and "\\x1b[31mRED" in r.stdout
    r = keel("--store", store, "escalations", "resolve", e, "--answer", HOSTILE)
    assert r.exit_code == 0 and "\x1b" not in r.output, r
    assert state(store, e)[1].output == HOSTILE


def test_decisions_made_in_the_cli_land_in_the_servers_audit_log(keel: Keel,
                                                                   store: str) -> None:
    import asyncio

    from keel.server import KeyStore

    a = seed_approval(store, "run-a")
    e = seed_escalation(store, "run-1")
    assert keel("--store", store, "approvals", "approve", a, "--by", "ana").exit_code == 0
    assert keel("--store", store, "escalations", "claim", e, "--by", "bo").exit_code == 0
    assert keel("--store", store, "escalations", "resolve", e, "--answer", "done",
                "--by", "bo").exit_code == 0

    async def log() -> list[tuple[str, str, str, str]]:
        async with KeyStore(store) as keys:
            return [(x.action, x.who, x.target, x.details["via"])
                    for x in await keys.read_audit()]

    assert asyncio.run(log()) == [("escalation.answer", "bo", e, "cli"),
                                  ("escalation.claim", "bo", e, "cli"),
                                  ("approval.approve", "ana", a, "cli")]


def test_approvals_list_keeps_to_one_tenant(keel: Keel, store: str) -> None:
    a = seed_approval(store, "run-a", tenant="acme")
    g = seed_approval(store, "run-g", tenant="globex")
    listed = json.loads(keel("--store", store, "approvals", "list", "--tenant", "acme",
                             "--json").stdout)
    assert [x["approval_id"] for x in listed] == [a]
    every = json.loads(keel("--store", store, "approvals", "list", "--json").stdout)
    assert {x["approval_id"] for x in every} == {a, g}
    none = keel("--store", store, "escalations", "list", "--tenant", "globex")
    assert none.exit_code == 0 and "No escalations" in none.stdout
    assert_refused(keel("--store", store, "approvals", "list", "--tenant", ""), "tenant")
