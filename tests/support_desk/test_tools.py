"""The support desk's tools against the real seeded database: customer scoping, validation,
writes recorded once in ``effects``, sagas that give the money back, and approvals of one
and two reviewers through a real keel Agent."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from examples.support_desk import tools as T
from examples.support_desk.db import SCENARIOS, Database
from examples.support_desk.policies import REFERENCE_TIME

from keel import (
    Agent,
    ApprovalRequired,
    ConfigError,
    MemoryStore,
    RepeatedFailure,
    TaskConflict,
    ToolContext,
    UserError,
    decide_approval,
    open_store,
)
from keel.core import ToolResultPart
from keel.runtime import ApprovalContext
from keel.testing import ScriptedModel, call
from keel.tools import FunctionTool, ToolResult

S = SCENARIOS


def ctx(db: Database | None, user: str | None, key: str = "k1") -> ToolContext:
    return ToolContext(run_id="run-1", step_key=key, agent="desk", idempotency_key=f"run-1/{key}",
                       deps=db, user=user)


async def use(tool: FunctionTool, args: dict[str, Any], db: Database | None,
              user: str | None, key: str = "k1") -> ToolResult:
    return await tool.call(args, ctx(db, user, key))


def value(result: ToolResult) -> dict[str, Any]:
    assert result.failure is None, result.content
    assert isinstance(result.value, dict)
    return result.value


def q(db: Database, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def effects(db: Database) -> list[tuple[Any, ...]]:
    return q(db, "SELECT kind, customer_id, order_id, amount_cents FROM effects ORDER BY id")


# ------------------------------------------------------------------------------ look-ups


async def test_look_ups_answer_for_the_customer_of_the_run(db: Database) -> None:
    transit = S["in_transit"]
    assert transit.order_id is not None
    order = value(await use(T.order_status, {"order_id": transit.order_id.lower() + " "}, db,
                            transit.customer_id))
    assert (order["order_id"], order["status"], order["total"]) == (transit.order_id,
                                                                    "dispatched", 149.0)
    assert order["items"][0]["name"] == "Fjordline Rain Shell Jacket"
    assert order["can_change_address"] is False
    track = value(await use(T.track_shipment, {"order_id": S["lost_parcel"].order_id}, db,
                            S["lost_parcel"].customer_id))
    assert track["status"] == "lost" and track["carrier"] == "PostNord"
    assert [e["code"] for e in track["events"]][-1] == "LOST"
    assert "refund" in track["advice"]
    listed = value(await use(T.list_orders, {}, db, transit.customer_id))
    assert [o["order_id"] for o in listed["orders"]] == [transit.order_id]
    invoices = value(await use(T.list_invoices, {"status": "unpaid"}, db,
                               S["unpaid_invoice"].customer_id))
    assert [i["invoice_id"] for i in invoices["invoices"]] == [S["unpaid_invoice"].invoice_id]
    copy = value(await use(T.invoice_copy, {"invoice_id": S["unpaid_invoice"].invoice_id}, db,
                           S["unpaid_invoice"].customer_id))
    assert copy["overdue"] is True and copy["lines"][0]["description"].startswith("Trail Club")
    subs = value(await use(T.subscription_details, {}, db, S["subscription"].customer_id))
    assert subs["subscriptions"][0]["plan"] == "Summit Club"
    profile = value(await use(T.account_profile, {}, db, S["unpaid_invoice"].customer_id))
    assert profile["unpaid_invoices"] == 1 and profile["country"] == "Netherlands"
    tickets = value(await use(T.search_tickets, {"query": "NW-100002"}, db,
                              S["lost_parcel"].customer_id))
    assert [t["ticket_id"] for t in tickets["tickets"]] == [S["lost_parcel"].ticket_id]
    assert value(await use(T.search_tickets, {"query": "100%_"}, db,
                           S["lost_parcel"].customer_id))["tickets"] == []


@pytest.mark.parametrize(("name", "eligible", "window"), [
    ("return_eligible", True, 30), ("return_expired", False, 30),
    ("electronics_return_expired", False, 14), ("subscription", True, 60),
    ("in_transit", False, None), ("just_placed", False, None),
])
async def test_return_eligibility_follows_the_policy(db: Database, name: str, eligible: bool,
                                                     window: int | None) -> None:
    s = S[name]
    out = value(await use(T.return_eligibility, {"order_id": s.order_id}, db, s.customer_id))
    assert out["eligible"] is eligible
    assert [i["window_days"] for i in out["items"]] == ([window] if window else [])


# ------------------------------------------------------------------------------ scoping


OTHER = S["in_transit"].customer_id  # a customer asking about someone else's records
CASES = [
    (T.order_status, {"order_id": S["refund_two_approvals"].order_id}, "order_id"),
    (T.track_shipment, {"order_id": S["lost_parcel"].order_id}, "order_id"),
    (T.return_eligibility, {"order_id": S["return_eligible"].order_id}, "order_id"),
    (T.invoice_copy, {"invoice_id": S["unpaid_invoice"].invoice_id}, "invoice_id"),
    (T.update_ticket, {"ticket_id": S["refund_small"].ticket_id, "message": "hi"}, "ticket_id"),
    (T.add_note, {"ticket_id": S["refund_small"].ticket_id, "note": "hi"}, "ticket_id"),
    (T.change_shipping_address, {"order_id": S["just_placed"].order_id, "line1": "1 Elm St",
                                 "city": "Utrecht", "postcode": "3511 AB", "country": "NL"},
     "order_id"),
    (T.refund_order, {"order_id": S["refund_small"].order_id, "amount": 10.0,
                      "reason": "damaged"}, "order_id"),
    (T.cancel_order, {"order_id": S["cancellable"].order_id, "reason": "changed mind"},
     "order_id"),
    (T.create_ticket, {"subject": "x", "message": "y", "category": "shipping",
                       "order_id": S["just_placed"].order_id}, "order_id"),
]
MISSING = {"order_id": "NW-999999", "invoice_id": "INV-999999", "ticket_id": "T-99999"}


@pytest.mark.parametrize(("tool", "args", "field"), CASES, ids=[c[0].name for c in CASES])
async def test_another_customers_record_is_refused_exactly_like_a_missing_one(
        db: Database, tool: FunctionTool, args: dict[str, Any], field: str) -> None:
    before = q(db, "SELECT count(*), total(status = 'open') FROM tickets")
    theirs = await use(tool, args, db, OTHER, key="a")
    missing = await use(tool, {**args, field: MISSING[field]}, db, OTHER, key="b")
    assert theirs.failure is not None and missing.failure is not None
    shown = theirs.content.replace(args[field], "<id>")
    assert shown == missing.content.replace(MISSING[field], "<id>")
    assert "no " in theirs.failure.message and "this customer's account" in shown
    assert effects(db) == [] and q(db, "SELECT count(*), total(status = 'open') FROM "
                                   "tickets") == before


async def test_a_run_without_a_customer_or_a_database_is_told_how_to_fix_it(
        db: Database) -> None:
    args = {"order_id": S["in_transit"].order_id}
    nobody = await use(T.order_status, args, db, None)
    assert nobody.failure is not None and "user=" in (nobody.failure.hint or "")
    stranger = await use(T.order_status, args, db, "C-99999")
    assert stranger.failure is not None and "no active account" in stranger.failure.message
    no_db = await use(T.order_status, args, None, S["in_transit"].customer_id)
    assert no_db.failure is not None and "deps=Database" in (no_db.failure.hint or "")


@pytest.mark.parametrize(("tool", "args", "says"), [
    (T.order_status, {"order_id": "100042"}, "look like NW-100042"),
    (T.order_status, {"order_id": "NW-1' OR 1=1 --"}, "look like NW-100042"),
    (T.order_status, {"order_id": "NW-" + "1" * 50_000}, "look like NW-100042"),
    (T.order_status, {}, "order_id"),
    (T.refund_order, {"order_id": "NW-100007", "amount": -5, "reason": "x"}, "amount"),
    (T.refund_order, {"order_id": "NW-100007", "amount": "lots", "reason": "x"}, "amount"),
    (T.refund_order, {"order_id": "NW-100007", "amount": 5, "reason": "x" * 300}, "reason"),
    (T.update_ticket, {"ticket_id": "T-50002", "message": "x" * 50_000}, "message"),
    (T.update_ticket, {"ticket_id": "T-50002", "message": "   "}, "message"),
    (T.update_ticket, {"ticket_id": "T-50002", "message": "NUL \x00 here"}, "control"),
    (T.add_note, {"ticket_id": "T-50002", "note": "\x1b[2J cleared"}, "control"),
    (T.update_ticket, {"ticket_id": "T-50002", "message": "lone \ud800"}, "message"),
    (T.update_ticket, {"ticket_id": "T-50002", "message": "ok", "status": "closed"}, "status"),
    (T.change_shipping_address, {"order_id": "NW-100006", "line1": "1 Elm St", "city": "X",
                                 "postcode": "<script>", "country": "NL"}, "postcode"),
    (T.change_shipping_address, {"order_id": "NW-100006", "line1": "1 Elm St", "city": "X",
                                 "postcode": "3511 AB", "country": "Mars"}, "we deliver to"),
    (T.search_tickets, {"limit": 10_000}, "limit"),
    (T.list_orders, {"limit": 0, "extra": 1}, "extra"),
])
async def test_bad_arguments_get_an_observation_the_model_can_act_on(
        db: Database, tool: FunctionTool, args: dict[str, Any], says: str) -> None:
    result = await use(tool, args, db, S["refund_small"].customer_id)
    assert result.failure is not None and result.failure.error_type == "invalid_arguments"
    assert says in result.failure.message and result.failure.retryable
    assert len(result.content) < 10_000  # a 50 KB argument is not echoed back whole
    assert effects(db) == []


async def test_malformed_json_arguments_are_refused(db: Database) -> None:
    result = await T.order_status.call('{"order_id": "NW-1', ctx(db, OTHER))
    assert result.failure is not None and result.failure.error_type == "invalid_json"


# --------------------------------------------------------------------------------- writes


async def test_the_address_changes_only_before_dispatch_and_in_the_same_country(
        db: Database) -> None:
    new = {"line1": "12 Canal Walk", "city": "Utrecht", "postcode": "3511 ab", "country": "nl"}
    placed = S["just_placed"]
    done = value(await use(T.change_shipping_address, {"order_id": placed.order_id, **new},
                           db, placed.customer_id))
    assert done["ships_to"]["postcode"] == "3511 AB"
    assert q(db, "SELECT a.line1, a.country FROM orders o JOIN addresses a ON a.id = "
             "o.address_id WHERE o.id = ?", placed.order_id) == [("12 Canal Walk", "NL")]
    moving = S["in_transit"]
    late = await use(T.change_shipping_address, {"order_id": moving.order_id, **new}, db,
                     moving.customer_id, key="k2")
    assert late.failure is not None and "only change before dispatch" in late.failure.message
    abroad = await use(T.change_shipping_address, {"order_id": placed.order_id, **new,
                                                   "country": "DE"}, db, placed.customer_id,
                       key="k3")
    assert abroad.failure is not None and "same country" in abroad.failure.message
    assert effects(db) == [("address_changed", placed.customer_id, placed.order_id, None)]


async def test_tickets_are_created_replied_to_and_noted_and_closed_ones_refused(
        db: Database) -> None:
    me = S["lost_parcel"]
    made = value(await use(T.create_ticket, {"subject": "Lost parcel", "message": "Where is "
                           "it?", "category": "shipping", "order_id": me.order_id}, db,
                           me.customer_id))
    reply = value(await use(T.update_ticket, {"ticket_id": made["ticket_id"], "message":
                            "We refunded you.", "status": "solved"}, db, me.customer_id, "k2"))
    assert reply == {"ticket_id": made["ticket_id"], "status": "solved"}
    value(await use(T.add_note, {"ticket_id": made["ticket_id"], "note": "carrier claim "
                                 "filed"}, db, me.customer_id, "k3"))
    assert q(db, "SELECT author FROM ticket_messages WHERE ticket_id = ? ORDER BY id",
             made["ticket_id"]) == [("customer",), ("agent",), ("note",)]
    closed = q(db, "SELECT id, customer_id FROM tickets WHERE status = 'closed' LIMIT 1")[0]
    refused = await use(T.update_ticket, {"ticket_id": closed[0], "message": "hello"}, db,
                        closed[1], "k4")
    assert refused.failure is not None and "closed" in refused.failure.message
    assert [e[0] for e in effects(db)] == ["ticket_created", "ticket_updated", "note_added"]


async def test_a_refund_is_paid_once_however_often_the_call_is_retried(db: Database) -> None:
    s = S["refund_small"]
    args = {"order_id": s.order_id, "amount": 59.90, "reason": "too small"}
    first = value(await use(T.refund_order, args, db, s.customer_id))
    again = value(await use(T.refund_order, args, db, s.customer_id))  # same key: a retry
    assert first == again and first["amount"] == 59.9 and first["currency"] == "EUR"
    assert q(db, "SELECT amount_cents, status FROM refunds WHERE order_id = ? AND run_id = "
             "'run-1'", s.order_id) == [(5990, "issued")]
    assert effects(db) == [("refund", s.customer_id, s.order_id, 5990)]
    assert q(db, "SELECT refunded_cents, status FROM payments WHERE order_id = ?",
             s.order_id) == [(5990, "partially_refunded")]
    # a new call (another key) may refund only what is left: 64.85 paid, 59.90 refunded
    more = await use(T.refund_order, {**args, "amount": 10.0}, db, s.customer_id, key="k2")
    assert more.failure is not None and "At most 4.95 EUR" in more.failure.message
    cents = await use(T.refund_order, {**args, "amount": 1.005}, db, s.customer_id, key="k3")
    assert cents.failure is not None and "two decimals" in cents.failure.message
    assert len(effects(db)) == 1


@pytest.mark.parametrize(("name", "says"), [
    ("in_transit", "on its way"), ("just_placed", "cancel it instead")])
async def test_orders_not_delivered_are_not_refunded(db: Database, name: str,
                                                     says: str) -> None:
    s = S[name]
    result = await use(T.refund_order, {"order_id": s.order_id, "amount": 10, "reason": "x"},
                       db, s.customer_id)
    assert result.failure is not None and says in result.failure.message
    assert effects(db) == []


async def test_a_lost_parcel_can_be_refunded_in_full(db: Database) -> None:
    s = S["lost_parcel"]
    value(await use(T.refund_order, {"order_id": s.order_id, "amount": 189.0,
                                     "reason": "lost by carrier"}, db, s.customer_id))
    assert q(db, "SELECT status FROM payments WHERE order_id = ?", s.order_id) == [
        ("refunded",)]


async def test_cancelling_refunds_in_full_and_its_compensation_reinstates(
        db: Database) -> None:
    s = S["cancellable"]
    done = value(await use(T.cancel_order, {"order_id": s.order_id, "reason": "duplicate"},
                           db, s.customer_id))
    assert done["refunded"] == 69.45 and done["previous_status"] == "processing"
    assert q(db, "SELECT o.status, p.status, i.status FROM orders o JOIN payments p ON "
             "p.order_id = o.id JOIN invoices i ON i.order_id = o.id WHERE o.id = ?",
             s.order_id) == [("cancelled", "refunded", "void")]
    twice = await use(T.cancel_order, {"order_id": s.order_id, "reason": "again"}, db,
                      s.customer_id, key="k2")
    assert twice.failure is not None and "no longer be cancelled" in twice.failure.message
    undo = T.cancel_order.meta.compensate
    assert undo is T.reinstate_order
    value(await use(undo, {"order_id": s.order_id, "result": done}, db, s.customer_id, "u1"))
    assert q(db, "SELECT o.status, p.status, p.refunded_cents, i.status FROM orders o JOIN "
             "payments p ON p.order_id = o.id JOIN invoices i ON i.order_id = o.id WHERE "
             "o.id = ?", s.order_id) == [("processing", "captured", 0, "paid")]
    assert [e[0] for e in effects(db)] == ["order_cancelled", "order_reinstated"]


async def test_deleting_an_account_needs_its_email_and_no_open_business(db: Database) -> None:
    busy = S["in_transit"]
    email = q(db, "SELECT email FROM customers WHERE id = ?", busy.customer_id)[0][0]
    wrong = await use(T.delete_account, {"confirm_email": "someone@example.com",
                                         "reason": "x"}, db, busy.customer_id)
    assert wrong.failure is not None and "does not match" in wrong.failure.message
    open_order = await use(T.delete_account, {"confirm_email": email.upper(), "reason": "x"},
                           db, busy.customer_id, "k2")
    assert open_order.failure is not None and "1 order(s) are open" in open_order.failure.message
    done = S["return_expired"]
    email = q(db, "SELECT email FROM customers WHERE id = ?", done.customer_id)[0][0]
    value(await use(T.delete_account, {"confirm_email": email, "reason": "moving"}, db,
                    done.customer_id, "k3"))
    assert q(db, "SELECT name, phone, status FROM customers WHERE id = ?", done.customer_id) \
        == [("Deleted customer", None, "deleted")]
    gone = await use(T.order_status, {"order_id": done.order_id}, db, done.customer_id, "k4")
    assert gone.failure is not None and "no active account" in gone.failure.message
    assert [e[0] for e in effects(db)] == ["account_deleted"]
    assert q(db, "SELECT count(*) FROM invoices WHERE customer_id = ?", done.customer_id)[0][0]


async def test_a_write_whose_outcome_is_unknown_is_reconciled_from_effects(
        db: Database) -> None:
    s = S["refund_small"]
    c = ctx(db, s.customer_id)
    assert T.refund_order.reconcile is not None
    assert await T.refund_order.reconcile({}, c) is None  # nothing happened yet
    made = value(await use(T.refund_order, {"order_id": s.order_id, "amount": 5,
                                            "reason": "x"}, db, s.customer_id))
    assert await T.refund_order.reconcile({}, c) == made


# ------------------------------------------------------------------------------ approvals


def approval_ctx(db: Database, user: str) -> ApprovalContext:
    return ApprovalContext(run_id="r", agent="desk", step_key="k", deps=db, history=(),
                           user=user)


@pytest.mark.parametrize(("amount", "needs", "reviewers"), [
    (59.9, False, 1), (100.0, False, 1), (100.01, True, 1), (399.0, True, 1),
    (1000.0, True, 1), (1000.01, True, 2), (2490.0, True, 2)])
def test_the_approval_policy_uses_the_shops_refund_limits(amount: float, needs: bool,
                                                          reviewers: int) -> None:
    policy = T.approval_policy()
    args = {"order_id": "NW-100009", "amount": amount, "reason": "x"}
    assert (policy.reason_for(T.refund_order, args) is not None) is needs
    if needs:
        assert policy.reviewers_for(T.refund_order, args) == reviewers


def test_cancellations_are_judged_by_the_order_total_and_deletion_always_waits(
        db: Database) -> None:
    policy = T.approval_policy()
    small = S["cancellable"]
    assert policy.reason_for(T.cancel_order, {"order_id": small.order_id},
                             approval_ctx(db, small.customer_id)) is None
    # someone else's order (or one that cannot be read) is not waved through
    c = approval_ctx(db, OTHER)
    assert policy.reason_for(T.cancel_order, {"order_id": small.order_id}, c) is not None
    assert policy.reviewers_for(T.cancel_order, {"order_id": small.order_id}, c) == 1
    assert policy.reason_for(T.delete_account, {"confirm_email": "a", "reason": "b"}) \
        == "delete_account always needs approval"
    assert policy.reason_for(T.update_ticket, {"ticket_id": "T-50001", "message": "x"}) is None


def test_every_tool_declares_its_risk_and_scopes() -> None:
    risks = {t.name: (t.meta.risk, tuple(sorted(t.meta.scopes))) for t in T.ALL_TOOLS}
    assert {n for n, (r, _) in risks.items() if r == "irreversible"} == {
        "refund_order", "cancel_order", "delete_account"}
    assert {n for n, (r, _) in risks.items() if r == "write"} == {
        "change_shipping_address", "create_ticket", "update_ticket", "add_note"}
    assert all(scopes for _, scopes in risks.values())
    assert all(t.meta.risk_declared for t in T.ALL_TOOLS)
    assert all(not t.meta.idempotent for t in T.WRITE_TOOLS + T.IRREVERSIBLE_TOOLS)
    for name, tools in T.SPECIALIST_TOOLS.items():
        assert set(tools) <= set(T.ALL_TOOLS), name


# ------------------------------------------------------------------- through a keel Agent


def desk_agent(script: list[Any], **kw: Any) -> Agent[str]:
    return Agent("returns", model=ScriptedModel(script), tools=T.ALL_TOOLS,
                 scopes=T.ALL_SCOPES, approval=T.approval_policy(), **kw)


def refund_script(name: str, *, ticket: str | None = None) -> list[Any]:
    s = S[name]
    return [call("return_eligibility", {"order_id": s.order_id}),
            call("refund_order", {"order_id": s.order_id, "amount": s.amount,
                                  "reason": "customer returned it"}),
            call("update_ticket", {"ticket_id": ticket or s.ticket_id,
                                   "message": "Your refund is on its way.",
                                   "status": "solved"}),
            "Your refund is on its way."]


async def test_a_small_refund_runs_without_approval_then_the_ticket_is_solved(
        db: Database) -> None:
    s = S["refund_small"]
    result = await desk_agent(refund_script("refund_small")).run(
        "Refund my base layer", store=MemoryStore(), user=s.customer_id, deps=db)
    assert result.output == "Your refund is on its way."
    assert effects(db) == [("refund", s.customer_id, s.order_id, 5990),
                           ("ticket_updated", s.customer_id, s.order_id, None)]
    assert q(db, "SELECT status FROM tickets WHERE id = ?", s.ticket_id) == [("solved",)]


async def test_a_refund_over_100_waits_for_one_reviewer(db: Database) -> None:
    s = S["refund_one_approval"]
    store = MemoryStore()
    agent = desk_agent(refund_script("refund_one_approval"))
    with pytest.raises(ApprovalRequired) as waiting:
        await agent.run("Refund my tent", store=store, user=s.customer_id, deps=db,
                        run_id="r1")
    assert effects(db) == []  # nothing is paid while the request waits
    (approval,) = waiting.value.approval_ids
    task = await store.get_task(approval)
    assert task.data["reason"] == "refunds over 100 need a reviewer"
    assert "reviewers" not in task.data and task.data["user"] == s.customer_id
    await decide_approval(approval, store=store, approve=True, by="lead@northwind")
    result = await agent.resume("r1", store=store, deps=db)
    assert result.output == "Your refund is on its way."
    assert effects(db) == [("refund", s.customer_id, s.order_id, 39900),
                           ("ticket_updated", s.customer_id, s.order_id, None)]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_refund_over_1000_needs_two_different_reviewers(
        db: Database, backend: str, tmp_path: Path) -> None:
    s = S["refund_two_approvals"]
    store = MemoryStore() if backend == "memory" else open_store(
        f"sqlite:///{tmp_path / 'runs.db'}")
    agent = desk_agent(refund_script("refund_two_approvals"))
    with pytest.raises(ApprovalRequired) as waiting:
        await agent.run("Refund my e-bike", store=store, user=s.customer_id, deps=db,
                        run_id="r2")
    (approval,) = waiting.value.approval_ids
    assert (await store.get_task(approval)).data["reviewers"] == 2
    await decide_approval(approval, store=store, approve=True, by="ana")
    with pytest.raises(TaskConflict):  # one person counts once
        await decide_approval(approval, store=store, approve=True, by="ana")
    with pytest.raises(UserError, match="own request"):  # the customer cannot approve
        await decide_approval(approval, store=store, approve=True, by=s.customer_id)
    assert (await store.get_task(approval)).status == "open"
    assert effects(db) == []  # one approval of two pays nothing
    await decide_approval(approval, store=store, approve=True, by="ben")
    await agent.resume("r2", store=store, deps=db)
    assert effects(db)[0] == ("refund", s.customer_id, s.order_id, 249000)
    assert len(effects(db)) == 2
    decision = next(e for e in await store.read_journal("r2") if e.kind == "approval"
                and e.phase == "result")
    assert [r["by"] for r in decision.data["reviews"]] == ["ana", "ben"]
    await store.close()


async def test_a_denied_refund_pays_nothing(db: Database) -> None:
    s = S["refund_one_approval"]
    store = MemoryStore()
    script = refund_script("refund_one_approval")
    agent = desk_agent([*script[:2], "I could not refund it; a colleague will be in touch."])
    with pytest.raises(ApprovalRequired) as waiting:
        await agent.run("Refund my tent", store=store, user=s.customer_id, deps=db,
                        run_id="r3")
    await decide_approval(waiting.value.approval_ids[0], store=store, approve=False,
                          by="lead", comment="used for a season; offer a repair")
    result = await agent.resume("r3", store=store, deps=db)
    assert "colleague" in result.output
    assert effects(db) == []
    assert q(db, "SELECT count(*) FROM refunds WHERE order_id = ?", s.order_id) == [(0,)]


@pytest.mark.parametrize("name", ["refund_small", "cancellable"])
async def test_the_saga_gives_the_money_back_when_the_ticket_update_fails(
        db: Database, name: str) -> None:
    """Refund (or cancel), then update a ticket that is not there: the run fails and keel
    compensates, so no refund is left standing."""
    s = S[name]
    first = (call("refund_order", {"order_id": s.order_id, "amount": s.amount,
                                   "reason": "returned"}) if name == "refund_small" else
             call("cancel_order", {"order_id": s.order_id, "reason": "ordered twice"}))
    script = [first, call("update_ticket", {"ticket_id": "T-99999", "message": "Done."}),
              "Done."]
    store = MemoryStore()
    with pytest.raises(RepeatedFailure):
        await desk_agent(script, max_repeated_failures=1).run(
            "Undo my order", store=store, user=s.customer_id, deps=db, run_id="r4")
    assert (await store.get_run("r4")).status == "failed"
    kinds = [e[0] for e in effects(db)]
    assert kinds == (["refund", "refund_reversed"] if name == "refund_small" else
                     ["order_cancelled", "order_reinstated"])
    assert q(db, "SELECT count(*) FROM refunds WHERE order_id = ? AND status = 'issued' AND "
             "run_id = 'r4'", s.order_id) == [(0,)]
    assert q(db, "SELECT refunded_cents, status FROM payments WHERE order_id = ?",
             s.order_id) == [(0, "captured")]
    if name == "cancellable":
        assert q(db, "SELECT status FROM orders WHERE id = ?", s.order_id) == [("processing",)]


async def test_an_agent_asking_for_another_customers_order_learns_nothing(
        db: Database) -> None:
    mine, theirs = S["in_transit"], S["refund_two_approvals"]
    assert theirs.order_id is not None
    script = [call("order_status", {"order_id": theirs.order_id}),
              call("order_status", {"order_id": "NW-999999"}),
              call("refund_order", {"order_id": theirs.order_id, "amount": 50,
                                    "reason": "please"}),
              "I cannot find that order on your account."]
    store = MemoryStore()
    result = await desk_agent(script).run(f"What is the status of {theirs.order_id}?",
                                          store=store, user=mine.customer_id, deps=db)
    seen = [json.loads(p.content) if p.content.startswith("{") else p.content
            for m in result.messages for p in m.parts
            if isinstance(p, ToolResultPart) and p.is_error]
    assert len(seen) == 3
    text = [str(x).replace(theirs.order_id, "<id>").replace("NW-999999", "<id>") for x in seen]
    assert text[0] == text[1]
    assert "2490" not in str(seen) and theirs.customer_id not in str(seen)
    assert effects(db) == []


async def test_concurrent_refunds_and_their_retries_make_each_effect_exactly_once(
        db: Database) -> None:
    orders = q(db, "SELECT o.id, o.customer_id FROM orders o JOIN payments p ON p.order_id = "
               "o.id WHERE o.status = 'delivered' AND p.refunded_cents = 0 ORDER BY o.id "
               "LIMIT 25")
    calls = [use(T.refund_order, {"order_id": oid, "amount": 1.0, "reason": "goodwill"}, db,
                 cid, key=f"refund-{oid}") for oid, cid in orders for _ in range(2)]
    results = await asyncio.gather(*calls)
    assert all(r.failure is None for r in results), [r.content for r in results][:2]
    assert len(effects(db)) == len(orders) == 25
    assert q(db, "SELECT count(*), sum(amount_cents) FROM refunds WHERE run_id = 'run-1'") \
        == [(25, 2500)]
    # the twin calls got the same answer: one refund id per order
    assert len({r.value["refund_id"] for r in results if isinstance(r.value, dict)}) == 25


async def test_an_amount_copied_from_a_tool_output_waits_for_a_person_whatever_its_size(
        db: Database) -> None:
    """keel's taint guard (on by default): the model read 59.9 in order_status's output and
    refunds it. Under the limit, yet it waits, because a value from tool output reached an
    irreversible call (the desk's workflows, which compute amounts in code, are not gated)."""
    s = S["refund_small"]
    script = [call("order_status", {"order_id": s.order_id}),
              call("refund_order", {"order_id": s.order_id, "amount": 59.9, "reason": "small"}),
              "Done."]
    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as waiting:
        await desk_agent(script).run(f"Refund {s.order_id}, it is too small", store=store,
                                     user=s.customer_id, deps=db)
    task = await store.get_task(waiting.value.approval_ids[0])
    assert "taint" in task.data["reason"] and task.data["evidence"]
    assert effects(db) == []


async def test_the_shops_today_decides_return_windows(db: Database) -> None:
    s = S["return_eligible"]  # delivered 10 days before the reference time: 30-day window
    later = Database(db.path, today=REFERENCE_TIME + timedelta(days=21))
    out = value(await use(T.return_eligibility, {"order_id": s.order_id}, later,
                          s.customer_id))
    assert out["eligible"] is False and out["items"][0]["deadline"] == "2026-12-20"
    with pytest.raises(ConfigError, match="timezone-aware"):
        Database(db.path, today=datetime(2026, 1, 1))


async def test_a_ticket_without_an_order_is_opened(db: Database) -> None:
    me = S["unpaid_invoice"]
    made = value(await use(T.create_ticket, {"subject": "Club invoice", "message": "Why "
                           "is my membership paused?", "category": "billing"}, db,
                           me.customer_id))
    assert q(db, "SELECT customer_id, order_id, status FROM tickets WHERE id = ?",
             made["ticket_id"]) == [(me.customer_id, None, "open")]
