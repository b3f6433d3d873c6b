"""The desk's writes: each one a single transaction that also appends to ``effects``.

Every action takes an idempotency key (keel's ``ToolContext.idempotency_key``: run id plus
step key, the same on a retry or a resume). The effect row is written in the same transaction
as the change and is unique by key, so a repeated call returns the first call's answer and
changes nothing: a retried refund never pays twice. ``effects`` is the audit trail the tests
and the operations report count.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel import ToolError

from . import policies as P
from .db import Database
from .lookups import (
    ORDER_HINT,
    NotFound,
    customer_row,
    money,
    order_row,
    ticket_row,
)


@dataclass(frozen=True, kw_only=True)
class Call:
    """Who acts, under which key: the customer of the run and the call's idempotency key."""

    customer_id: str | None
    idempotency_key: str
    run_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Effect:
    """What an action changed, as its ``effects`` row records it."""

    result: dict[str, Any]
    order_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")[:19] + "Z"


def once(db: Database, call: Call, kind: str,
         apply: Callable[[sqlite3.Connection, str], Effect]) -> dict[str, Any]:
    """Run ``apply`` (with the connection and the customer id) and record its effect, in one
    transaction; or return the recorded answer if this idempotency key was used already."""
    if not call.idempotency_key:
        raise ToolError("this action needs an idempotency key", retryable=False,
                        hint="Call it through keel (the ToolContext carries the key).")
    with db.write() as conn:
        done = conn.execute("SELECT kind, customer_id, result FROM effects WHERE "
                            "idempotency_key = ?", (call.idempotency_key,)).fetchone()
        if done is not None:
            if done["kind"] != kind or done["customer_id"] != call.customer_id:
                raise ToolError(f"idempotency key {call.idempotency_key!r} was used for "
                                "another action; nothing was changed", retryable=False)
            recorded: dict[str, Any] = json.loads(done["result"])
            return recorded
        customer = customer_row(conn, call.customer_id)["id"]
        effect = apply(conn, customer)
        conn.execute("INSERT INTO effects (at, kind, customer_id, order_id, amount_cents, "
                     "currency, run_id, idempotency_key, result) VALUES (?, ?, ?, ?, ?, ?, ?, "
                     "?, ?)", (_now(), kind, customer, effect.order_id, effect.amount_cents,
                               effect.currency, call.run_id, call.idempotency_key,
                               json.dumps(effect.result, sort_keys=True)))
        return effect.result


def recorded(db: Database, idempotency_key: str) -> dict[str, Any] | None:
    """The answer recorded for ``idempotency_key``, or None if no effect was made (the
    tools' ``reconcile`` hook: decides a call whose outcome keel does not know)."""
    with db.read() as conn:
        row = conn.execute("SELECT result FROM effects WHERE idempotency_key = ?",
                           (idempotency_key,)).fetchone()
    return None if row is None else dict(json.loads(row["result"]))


def _next_id(conn: sqlite3.Connection, table: str, prefix: str, first: int) -> str:
    n = conn.execute(f"SELECT max(CAST(substr(id, {len(prefix) + 1}) AS INTEGER)) FROM "
                     f"{table}").fetchone()[0]
    return f"{prefix}{max(int(n or 0), first - 1) + 1}"


# ---------------------------------------------------------------------- address, tickets


def change_address(db: Database, call: Call, order_id: str, address: dict[str, str]
                   ) -> dict[str, Any]:
    """Send an order that has not been dispatched to another address in the same country."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        order = order_row(conn, customer, order_id)
        if order["status"] not in P.ADDRESS_CHANGE_STATUSES:
            raise ToolError(f"Order {order_id} is {order['status']}: the address can only "
                            "change before dispatch.", retryable=False,
                            hint="Once the carrier has the parcel, the customer can ask the "
                                 "carrier to redirect it with the tracking number.")
        current = conn.execute("SELECT country FROM addresses WHERE id = ?",
                               (order["address_id"],)).fetchone()["country"]
        if address["country"] != current:
            raise ToolError(f"Order {order_id} ships to {P.COUNTRIES[current].name}; the new "
                            "address must be in the same country.", retryable=False,
                            hint="For another country, cancel the order and order again.")
        cur = conn.execute("INSERT INTO addresses (customer_id, label, line1, line2, city, "
                           "postcode, country, is_default) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                           (customer, f"for {order_id}", address["line1"], address["line2"],
                            address["city"], address["postcode"], address["country"]))
        conn.execute("UPDATE orders SET address_id = ? WHERE id = ?", (cur.lastrowid, order_id))
        return Effect(order_id=order_id, result={"order_id": order_id, "ships_to": address,
                                                 "status": order["status"]})
    return once(db, call, "address_changed", apply)


def create_ticket(db: Database, call: Call, *, subject: str, message: str, category: str,
                  order_id: str | None) -> dict[str, Any]:
    """Open a ticket for the customer with their message."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        if order_id is not None:
            order_row(conn, customer, order_id)
        tid = _next_id(conn, "tickets", "T-", 50001)
        now = _now()
        conn.execute("INSERT INTO tickets VALUES (?, ?, ?, ?, ?, 'open', 'normal', 'chat', ?, "
                     "?)", (tid, customer, order_id, subject, category, now, now))
        conn.execute("INSERT INTO ticket_messages (ticket_id, at, author, body) VALUES (?, ?, "
                     "'customer', ?)", (tid, now, message))
        return Effect(order_id=order_id, result={"ticket_id": tid, "status": "open"})
    return once(db, call, "ticket_created", apply)


def update_ticket(db: Database, call: Call, *, ticket_id: str, message: str,
                  status: str | None, note: bool = False) -> dict[str, Any]:
    """Reply on a ticket (or add an internal note) and optionally set its status."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        ticket = ticket_row(conn, customer, ticket_id)
        if ticket["status"] == "closed":
            raise ToolError(f"Ticket {ticket_id} is closed and cannot change.",
                            retryable=False, hint="Create a new ticket that refers to it.")
        now = _now()
        conn.execute("INSERT INTO ticket_messages (ticket_id, at, author, body) VALUES (?, ?, "
                     "?, ?)", (ticket_id, now, "note" if note else "agent", message))
        new = status or ticket["status"]
        conn.execute("UPDATE tickets SET status = ?, updated_at = ? WHERE id = ?",
                     (new, now, ticket_id))
        return Effect(order_id=ticket["order_id"], result={"ticket_id": ticket_id,
                                                           "status": new})
    return once(db, call, "note_added" if note else "ticket_updated", apply)


# ------------------------------------------------------------------------------- refunds


def _payment(conn: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    row: sqlite3.Row = conn.execute("SELECT * FROM payments WHERE order_id = ?",
                                    (order_id,)).fetchone()
    return row


def _set_refunded(conn: sqlite3.Connection, payment: sqlite3.Row, refunded: int) -> None:
    status = ("captured" if refunded == 0 else
              "refunded" if refunded >= payment["amount_cents"] else "partially_refunded")
    conn.execute("UPDATE payments SET refunded_cents = ?, status = ? WHERE id = ?",
                 (refunded, status, payment["id"]))


def _check_refundable(conn: sqlite3.Connection, order: sqlite3.Row) -> None:
    status = order["status"]
    if status in P.CANCELLABLE_STATUSES:
        raise ToolError(f"Order {order['id']} has not been dispatched yet; cancel it instead "
                        "of refunding it.", retryable=False, hint="Use cancel_order.")
    if status == "dispatched":
        ship = conn.execute("SELECT status FROM shipments WHERE order_id = ?",
                            (order["id"],)).fetchone()
        if ship is None or ship["status"] not in ("lost", "returned_to_sender"):
            raise ToolError(f"Order {order['id']} is on its way; it can be refunded after "
                            "delivery, or once the carrier declares the parcel lost.",
                            retryable=False, hint="Call track_shipment to see where it is.")


def _issue(conn: sqlite3.Connection, order: sqlite3.Row, amount_cents: int, reason: str,
           run_id: str | None) -> tuple[str, sqlite3.Row]:
    payment = _payment(conn, order["id"])
    left = payment["amount_cents"] - payment["refunded_cents"]
    if amount_cents > left:
        raise ToolError(f"At most {money(left):.2f} {order['currency']} of order {order['id']} "
                        f"can still be refunded (paid {money(payment['amount_cents']):.2f}, "
                        f"refunded {money(payment['refunded_cents']):.2f}).", retryable=False,
                        hint="Refund at most the amount left, or nothing if it is 0.")
    issued = conn.execute("SELECT count(*) FROM refunds WHERE order_id = ? AND status = "
                          "'issued'", (order["id"],)).fetchone()[0]
    if issued >= P.MAX_REFUNDS_PER_ORDER:
        raise ToolError(f"Order {order['id']} already has {issued} refunds, the most one order "
                        "may have.", retryable=False, hint="Hand this to a person.")
    rid = _next_id(conn, "refunds", "RF-", 10001)
    conn.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?, 'issued', ?, ?)",
                 (rid, order["id"], payment["id"], order["customer_id"], amount_cents,
                  order["currency"], reason, _now(), run_id))
    _set_refunded(conn, payment, payment["refunded_cents"] + amount_cents)
    return rid, payment


def refund(db: Database, call: Call, *, order_id: str, amount_cents: int,
           reason: str) -> dict[str, Any]:
    """Refund part or all of a delivered (or lost, or returned) order to its payment method."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        order = order_row(conn, customer, order_id)
        _check_refundable(conn, order)
        rid, payment = _issue(conn, order, amount_cents, reason, call.run_id)
        return Effect(order_id=order_id, amount_cents=amount_cents, currency=order["currency"],
                      result={"refund_id": rid, "order_id": order_id,
                              "amount": money(amount_cents), "currency": order["currency"],
                              "payment_method": payment["method"],
                              "arrives_within_working_days": P.REFUND_DAYS[payment["method"]]})
    return once(db, call, "refund", apply)


def _reverse(conn: sqlite3.Connection, customer: str, refund_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM refunds WHERE id = ? AND customer_id = ?", (refund_id, customer)
    ).fetchone()
    if row is None:
        raise NotFound("refund", refund_id, "Only this customer's refunds can be reversed.")
    if row["status"] == "issued":
        conn.execute("UPDATE refunds SET status = 'reversed' WHERE id = ?", (refund_id,))
        payment = _payment(conn, row["order_id"])
        _set_refunded(conn, payment, max(payment["refunded_cents"] - row["amount_cents"], 0))
    return row


def reverse_refund(db: Database, call: Call, *, refund_id: str) -> dict[str, Any]:
    """Undo a refund (the saga's compensation when what followed it failed)."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        row = _reverse(conn, customer, refund_id)
        return Effect(order_id=row["order_id"], amount_cents=row["amount_cents"],
                      currency=row["currency"],
                      result={"refund_id": refund_id, "status": "reversed"})
    return once(db, call, "refund_reversed", apply)


# -------------------------------------------------------------------------- cancellations


def cancel(db: Database, call: Call, *, order_id: str, reason: str) -> dict[str, Any]:
    """Cancel an order that has not been dispatched and refund its payment in full."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        order = order_row(conn, customer, order_id)
        if order["status"] not in P.CANCELLABLE_STATUSES:
            raise ToolError(f"Order {order_id} is {order['status']} and can no longer be "
                            "cancelled.", retryable=False,
                            hint="A delivered order can be returned (return_eligibility).")
        payment = _payment(conn, order_id)
        left = payment["amount_cents"] - payment["refunded_cents"]
        rid, _ = _issue(conn, order, left, f"order cancelled: {reason}", call.run_id)
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
        conn.execute("UPDATE invoices SET status = 'void' WHERE order_id = ?", (order_id,))
        return Effect(order_id=order_id, amount_cents=left, currency=order["currency"],
                      result={"order_id": order_id, "status": "cancelled",
                              "previous_status": order["status"], "refund_id": rid,
                              "refunded": money(left), "currency": order["currency"]})
    return once(db, call, "order_cancelled", apply)


def reinstate(db: Database, call: Call, *, order_id: str, previous_status: str,
              refund_id: str) -> dict[str, Any]:
    """Undo a cancellation (the saga's compensation): the order, payment and invoice as
    they were before it."""
    if previous_status not in P.CANCELLABLE_STATUSES:
        raise ToolError(f"cannot reinstate {order_id} to {previous_status!r}", retryable=False)

    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        order = order_row(conn, customer, order_id)
        _reverse(conn, customer, refund_id)
        if order["status"] == "cancelled":
            conn.execute("UPDATE orders SET status = ? WHERE id = ?", (previous_status, order_id))
            conn.execute("UPDATE invoices SET status = 'paid' WHERE order_id = ?", (order_id,))
        return Effect(order_id=order_id, result={"order_id": order_id,
                                                 "status": previous_status})
    return once(db, call, "order_reinstated", apply)


# ------------------------------------------------------------------------------- accounts


def delete_account(db: Database, call: Call, *, confirm_email: str,
                   reason: str) -> dict[str, Any]:
    """Anonymise the customer's account (invoices are kept, as the law requires)."""
    def apply(conn: sqlite3.Connection, customer: str) -> Effect:
        row = customer_row(conn, customer)
        if confirm_email.strip().lower() != str(row["email"]).lower():
            raise ToolError("The e-mail address given does not match this account's; nothing "
                            "was deleted.", retryable=False,
                            hint="Ask the customer to type the e-mail address of the account.")
        busy = conn.execute("SELECT count(*) FROM orders WHERE customer_id = ? AND status IN "
                            "('placed', 'processing', 'dispatched')", (customer,)).fetchone()[0]
        unpaid = conn.execute("SELECT count(*) FROM invoices WHERE customer_id = ? AND status "
                              "= 'unpaid'", (customer,)).fetchone()[0]
        if busy or unpaid:
            raise ToolError(f"The account cannot be deleted while {busy} order(s) are open and "
                            f"{unpaid} invoice(s) are unpaid.", retryable=False,
                            hint="Wait for the orders to arrive and the invoices to be paid.")
        conn.execute("UPDATE customers SET name = 'Deleted customer', email = ?, phone = NULL, "
                     "marketing_opt_in = 0, status = 'deleted' WHERE id = ?",
                     (f"deleted-{customer.lower()}@deleted.invalid", customer))
        conn.execute("UPDATE addresses SET line1 = 'deleted', line2 = '', postcode = '' "
                     "WHERE customer_id = ?", (customer,))
        conn.execute("UPDATE subscriptions SET status = 'cancelled', renews_at = NULL WHERE "
                     "customer_id = ?", (customer,))
        return Effect(result={"customer_id": customer, "status": "deleted",
                              "reason": reason, "invoices_kept_years":
                              P.INVOICE_RETENTION_YEARS})
    return once(db, call, "account_deleted", apply)


__all__ = ["ORDER_HINT", "Call", "Effect", "cancel", "change_address", "create_ticket",
           "delete_account", "once", "recorded", "refund", "reinstate", "reverse_refund",
           "update_ticket"]
