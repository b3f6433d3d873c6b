"""Read-only questions about one customer's records: what the desk's ``read`` tools answer.

Every function takes the :class:`~.db.Database`, the customer the conversation is for and
its arguments, and only ever sees that customer's rows: an order, invoice or ticket of
someone else gets exactly the answer a number that does not exist gets (:class:`NotFound`),
so the desk never reveals that it exists. The workflows of the desk call these directly;
``tools.py`` wraps them as keel tools.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

from keel import ToolError

from . import policies as P
from .catalog import BY_SKU
from .db import Database


class NotFound(ToolError):
    """No such record on this customer's account (the same whether it exists elsewhere)."""

    def __init__(self, what: str, ident: str, hint: str) -> None:
        super().__init__(f"There is no {what} {ident} on this customer's account.",
                         retryable=False, hint=hint)


ORDER_HINT = ("Ask the customer to check the order number (it looks like NW-100042 and is in "
              "the order confirmation e-mail), or call list_orders to see their orders.")
INVOICE_HINT = "Call list_invoices to see this customer's invoices."
TICKET_HINT = "Call search_tickets to see this customer's tickets."


def money(amount_cents: int | None) -> float | None:
    return None if amount_cents is None else round(amount_cents / 100, 2)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def customer_row(conn: sqlite3.Connection, customer_id: str | None) -> sqlite3.Row:
    """The active customer the run acts for, or a ToolError saying how to set one."""
    if not customer_id:
        raise ToolError("This tool acts for a signed-in customer, and this conversation has "
                        "none.", retryable=False,
                        hint="Start the run with user=<customer id> (e.g. user='C-00001').")
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM customers WHERE id = ? AND status = 'active'", (customer_id,)).fetchone()
    if row is None:
        raise ToolError("This conversation's customer has no active account.",
                        retryable=False, hint="Hand the conversation to a person.")
    return row


def order_row(conn: sqlite3.Connection, customer_id: str, order_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM orders WHERE id = ? AND customer_id = ?", (order_id, customer_id)
    ).fetchone()
    if row is None:
        raise NotFound("order", order_id, ORDER_HINT)
    return row


def _items(conn: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT sku, quantity, unit_price_cents, line_total_cents FROM "
                        "order_items WHERE order_id = ? ORDER BY id", (order_id,)).fetchall()
    return [{"sku": r["sku"], "name": BY_SKU[r["sku"]].name,
             "category": BY_SKU[r["sku"]].category, "quantity": r["quantity"],
             "unit_price": money(r["unit_price_cents"]),
             "line_total": money(r["line_total_cents"])} for r in rows]


def _shipment(conn: sqlite3.Connection, order_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM shipments WHERE order_id = ?",
                                           (order_id,)).fetchone()
    return row


def order_status(db: Database, customer_id: str | None, order_id: str) -> dict[str, Any]:
    """An order as the customer would see it: status, items, totals, payment, delivery."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        assert customer_id is not None
        order = order_row(conn, customer_id, order_id)
        pay = conn.execute("SELECT method, status, refunded_cents FROM payments WHERE "
                           "order_id = ?", (order_id,)).fetchone()
        address = conn.execute("SELECT line1, line2, city, postcode, country FROM addresses "
                               "WHERE id = ?", (order["address_id"],)).fetchone()
        ship = _shipment(conn, order_id)
        return {
            "order_id": order_id, "status": order["status"], "placed_at": order["placed_at"],
            "currency": order["currency"], "items": _items(conn, order_id),
            "subtotal": money(order["subtotal_cents"]),
            "shipping": money(order["shipping_cents"]), "total": money(order["total_cents"]),
            "refunded": money(pay["refunded_cents"]),
            "payment": {"method": pay["method"], "status": pay["status"]},
            "shipping_address": dict(address),
            "shipment": None if ship is None else {
                "carrier": P.CARRIERS[ship["carrier"]].name, "status": ship["status"],
                "tracking_number": ship["tracking_number"],
                "estimated_delivery": ship["estimated_delivery"],
                "delivered_at": ship["delivered_at"]},
            "can_change_address": order["status"] in P.ADDRESS_CHANGE_STATUSES,
            "can_cancel": order["status"] in P.CANCELLABLE_STATUSES,
        }


def list_orders(db: Database, customer_id: str | None, limit: int) -> dict[str, Any]:
    """The customer's most recent orders, newest first."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        rows = conn.execute("SELECT id, placed_at, status, total_cents, currency FROM orders "
                            "WHERE customer_id = ? ORDER BY placed_at DESC LIMIT ?",
                            (customer_id, limit)).fetchall()
        total = conn.execute("SELECT count(*) FROM orders WHERE customer_id = ?",
                             (customer_id,)).fetchone()[0]
    return {"orders": [{"order_id": r["id"], "placed_at": r["placed_at"],
                        "status": r["status"], "total": money(r["total_cents"]),
                        "currency": r["currency"]} for r in rows],
            "shown": len(rows), "total_orders": total}


TRACKING_ADVICE = {
    "in_transit": "The parcel is on its way; it should arrive by the estimated date.",
    "delayed": "The carrier reported a delay; the new estimate is within 2 working days.",
    "delivered": "The carrier recorded the delivery.",
    "lost": "The carrier declared the parcel lost: the customer is due a replacement or a "
            "full refund.",
    "returned_to_sender": "Delivery failed and the parcel came back to our warehouse; the "
                          "order was refunded.",
}


def track_shipment(db: Database, customer_id: str | None, order_id: str) -> dict[str, Any]:
    """The order's parcel: carrier, tracking number and every carrier scan, oldest first."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        assert customer_id is not None
        order = order_row(conn, customer_id, order_id)
        ship = _shipment(conn, order_id)
        if ship is None:
            return {"order_id": order_id, "status": "not_dispatched",
                    "order_status": order["status"],
                    "advice": "The order has not been handed to a carrier yet, so there is "
                              "no tracking yet." if order["status"] != "cancelled" else
                              "The order was cancelled before dispatch."}
        events = conn.execute("SELECT at, code, description, location FROM carrier_events "
                              "WHERE shipment_id = ? ORDER BY at, id", (ship["id"],)).fetchall()
    carrier = P.CARRIERS[ship["carrier"]]
    return {"order_id": order_id, "carrier": carrier.name, "service": ship["service"],
            "tracking_number": ship["tracking_number"],
            "tracking_url": carrier.tracking_url.format(tracking=ship["tracking_number"]),
            "status": ship["status"], "shipped_at": ship["shipped_at"],
            "estimated_delivery": ship["estimated_delivery"],
            "delivered_at": ship["delivered_at"], "events": [dict(e) for e in events],
            "advice": TRACKING_ADVICE[ship["status"]]}


def _club_plan(conn: sqlite3.Connection, customer_id: str) -> str | None:
    row = conn.execute("SELECT plan FROM subscriptions WHERE customer_id = ? AND status = "
                       "'active' ORDER BY started_at LIMIT 1", (customer_id,)).fetchone()
    return None if row is None else str(row["plan"])


def window_days(category: str, club_plan: str | None) -> int:
    """The return window of a product category for a customer (club members get longer)."""
    if club_plan in P.CLUB_LONG_RETURNS:
        return P.CLUB_RETURN_WINDOW_DAYS
    return P.CATEGORIES[category].return_days


def return_eligibility(db: Database, customer_id: str | None,
                       order_id: str) -> dict[str, Any]:
    """Whether each item of the order can still be returned, and until when."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        assert customer_id is not None
        order = order_row(conn, customer_id, order_id)
        ship = _shipment(conn, order_id)
        returned = {r["sku"] for r in conn.execute(
            "SELECT sku FROM returns WHERE order_id = ? AND status != 'rejected'",
            (order_id,))}
        plan = _club_plan(conn, customer_id)
        items = _items(conn, order_id)
    if order["status"] != "delivered" or ship is None or ship["delivered_at"] is None:
        reason = {"placed": "the order has not been dispatched yet: cancel it instead",
                  "processing": "the order has not been dispatched yet: cancel it instead",
                  "cancelled": "the order was cancelled", "returned": "the parcel came back "
                  "to us and the order was refunded"}.get(
                      order["status"], "the order has not been delivered yet")
        return {"order_id": order_id, "eligible": False, "reason": reason, "items": []}
    delivered = parse_time(ship["delivered_at"])
    out = []
    for item in items:
        days = window_days(item["category"], plan)
        deadline = delivered + timedelta(days=days)
        ok = db.today <= deadline and item["sku"] not in returned
        why = ("already returned" if item["sku"] in returned else
               f"within the {days}-day window" if ok else f"the {days}-day window ended")
        out.append({"sku": item["sku"], "name": item["name"], "window_days": days,
                    "deadline": deadline.date().isoformat(), "eligible": ok, "reason": why})
    eligible = any(i["eligible"] for i in out)
    return {"order_id": order_id, "eligible": eligible, "delivered_at": ship["delivered_at"],
            "club_plan": plan, "items": out,
            "reason": "at least one item can be returned" if eligible else
                      "no item of this order can be returned any more",
            "label": f"free prepaid label, valid {P.RETURN_LABEL_VALID_DAYS} days"}


def _invoice(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    lines: list[dict[str, Any]]
    if row["order_id"] is not None:
        lines = [{"description": f"{i['quantity']} x {i['name']}",
                  "amount": i["line_total"]} for i in _items(conn, row["order_id"])]
        shipping = conn.execute("SELECT shipping_cents FROM orders WHERE id = ?",
                                (row["order_id"],)).fetchone()[0]
        if shipping:
            lines.append({"description": "Shipping", "amount": money(shipping)})
    else:
        sub = conn.execute("SELECT plan FROM subscriptions WHERE id = ?",
                           (row["subscription_id"],)).fetchone()
        lines = [{"description": f"{P.PLANS[sub['plan']].name}, one month",
                  "amount": money(row["amount_cents"])}]
    return {"invoice_id": row["id"], "issued_at": row["issued_at"][:10],
            "due_at": row["due_at"][:10], "status": row["status"],
            "amount": money(row["amount_cents"]), "currency": row["currency"],
            "order_id": row["order_id"], "subscription_id": row["subscription_id"],
            "lines": lines, "seller": P.SHOP.legal_name}


def invoice_copy(db: Database, customer_id: str | None, invoice_id: str) -> dict[str, Any]:
    """A copy of one invoice with its lines."""
    with db.read() as conn:
        customer = customer_row(conn, customer_id)
        row = conn.execute("SELECT * FROM invoices WHERE id = ? AND customer_id = ?",
                           (invoice_id, customer_id)).fetchone()
        if row is None:
            raise NotFound("invoice", invoice_id, INVOICE_HINT)
        out = _invoice(conn, row)
    out["billed_to"] = customer["name"]
    overdue = row["status"] == "unpaid" and parse_time(row["due_at"]) < db.today
    out["overdue"] = overdue
    return out


def list_invoices(db: Database, customer_id: str | None, status: str,
                  limit: int) -> dict[str, Any]:
    """The customer's invoices, newest first (``status``: all, paid, unpaid or void)."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        where, args = "customer_id = ?", [customer_id]
        if status != "all":
            where += " AND status = ?"
            args.append(status)
        rows = conn.execute(f"SELECT id, issued_at, due_at, amount_cents, currency, status, "
                            f"order_id, subscription_id FROM invoices WHERE {where} ORDER BY "
                            f"issued_at DESC, id DESC LIMIT ?", (*args, limit)).fetchall()
    return {"invoices": [{"invoice_id": r["id"], "issued_at": r["issued_at"][:10],
                          "due_at": r["due_at"][:10], "amount": money(r["amount_cents"]),
                          "currency": r["currency"], "status": r["status"],
                          "for": r["order_id"] or r["subscription_id"]} for r in rows]}


def subscription_details(db: Database, customer_id: str | None) -> dict[str, Any]:
    """The customer's Northwind Club memberships, their perks and unpaid invoices."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        subs = conn.execute("SELECT * FROM subscriptions WHERE customer_id = ? ORDER BY "
                            "started_at", (customer_id,)).fetchall()
        out = []
        for s in subs:
            unpaid = conn.execute("SELECT id, amount_cents, due_at FROM invoices WHERE "
                                  "subscription_id = ? AND status = 'unpaid'",
                                  (s["id"],)).fetchall()
            plan = P.PLANS[s["plan"]]
            out.append({"subscription_id": s["id"], "plan": plan.name, "status": s["status"],
                        "price_per_month": money(s["price_cents"]), "currency": s["currency"],
                        "started_at": s["started_at"][:10],
                        "renews_at": s["renews_at"][:10] if s["renews_at"] else None,
                        "perks": list(plan.perks),
                        "unpaid_invoices": [{"invoice_id": u["id"],
                                             "amount": money(u["amount_cents"]),
                                             "due_at": u["due_at"][:10]} for u in unpaid]})
    return {"subscriptions": out,
            "note": None if out else "This customer has no Northwind Club membership."}


def account_profile(db: Database, customer_id: str | None) -> dict[str, Any]:
    """The customer's profile, addresses and a summary of their account."""
    with db.read() as conn:
        c = customer_row(conn, customer_id)
        addresses = conn.execute("SELECT label, line1, line2, city, postcode, country, "
                                 "is_default FROM addresses WHERE customer_id = ? ORDER BY id",
                                 (customer_id,)).fetchall()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM orders WHERE customer_id = :c), "
            "(SELECT count(*) FROM tickets WHERE customer_id = :c AND status IN "
            "('open', 'pending')), (SELECT count(*) FROM invoices WHERE customer_id = :c AND "
            "status = 'unpaid')", {"c": customer_id}).fetchone()
    return {"customer_id": c["id"], "name": c["name"], "email": c["email"],
            "phone": c["phone"], "country": P.COUNTRIES[c["country"]].name,
            "language": c["language"], "loyalty_tier": c["loyalty_tier"],
            "marketing_opt_in": bool(c["marketing_opt_in"]),
            "customer_since": c["created_at"][:10],
            "addresses": [{**dict(a), "is_default": bool(a["is_default"])} for a in addresses],
            "orders": counts[0], "open_tickets": counts[1], "unpaid_invoices": counts[2]}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_tickets(db: Database, customer_id: str | None, query: str, status: str,
                   limit: int) -> dict[str, Any]:
    """The customer's tickets whose subject or messages contain every word of ``query``."""
    with db.read() as conn:
        customer_row(conn, customer_id)
        where, args = ["t.customer_id = ?"], [customer_id]
        if status != "any":
            where.append("t.status = ?")
            args.append(status)
        for word in query.split()[:8]:
            where.append("(t.subject LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM "
                         "ticket_messages m WHERE m.ticket_id = t.id AND m.body LIKE ? "
                         "ESCAPE '\\'))")
            args += [_like(word), _like(word)]
        rows = conn.execute(f"SELECT t.* FROM tickets t WHERE {' AND '.join(where)} ORDER BY "
                            f"t.created_at DESC LIMIT ?", (*args, limit)).fetchall()
        found = []
        for t in rows:
            last = conn.execute("SELECT author, body FROM ticket_messages WHERE ticket_id = ? "
                                "AND author != 'note' ORDER BY id DESC LIMIT 1",
                                (t["id"],)).fetchone()
            found.append({"ticket_id": t["id"], "subject": t["subject"],
                          "category": t["category"], "status": t["status"],
                          "order_id": t["order_id"], "created_at": t["created_at"][:10],
                          "last_message": None if last is None else
                          {"from": last["author"], "text": last["body"][:500]}})
    return {"tickets": found}


def ticket_row(conn: sqlite3.Connection, customer_id: str, ticket_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM tickets WHERE id = ? AND customer_id = ?", (ticket_id, customer_id)
    ).fetchone()
    if row is None:
        raise NotFound("ticket", ticket_id, TICKET_HINT)
    return row
