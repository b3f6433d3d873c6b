"""The desk's templated answers: what a customer reads when no model writes the reply.

Each function turns the result of a look-up (``lookups.py``) or a workflow into a short,
polite answer. They are used by the no-model path (routine requests) and as the "template"
link of the fallback chain when a specialist agent fails. Every template states facts from
the database or the help centre only; none of them invents a promise.
"""

from __future__ import annotations

from typing import Any

EMPTY = ("Hello! Your message was empty. Tell us what you need help with, for example "
         "\"Where is my order NW-100042?\", and we will take it from there.")
TOO_LONG = ("Your message is longer than we can read in one go ({chars:,} characters; the "
            "limit is {limit:,}). Please send the key details in a shorter message, such as "
            "your order number and what went wrong.")
HOSTILE = ("Sorry, we cannot act on instructions like the ones in your message. If you need "
           "help with an order, a return, an invoice or your account, tell us in your own "
           "words and we will help.")
HOSTILE_NOTE = ("Thanks, we received your note, but we cannot act on instructions found in "
                "it. A colleague will look at your request.")
BAD_NOTE = ("We could not read the note attached to your message ({problem}). Please paste "
            "the text into your message instead (at most {limit:,} characters).")
NO_ORDER = ("There is no order {order_id} on this customer's account. Please check the "
            "order number: it looks like NW-100042 and is in your order confirmation e-mail.")
NO_INVOICE = ("There is no invoice {invoice_id} on this customer's account. Please check the "
              "number: it looks like INV-200042 and is on the invoice e-mail.")
ASK_ORDER = ("Happy to help with that. Which order is it about? The order number looks like "
             "NW-100042 and is in your confirmation e-mail.")
TO_PERSON = ("Thanks for your message. This needs a colleague from our {team} team: we have "
             "passed it on with everything you told us, and they will reply here. "
             "Reference: {reference}.")
CLARIFY = ("Sorry, I'm not sure I understood. Is it about an order, a delivery, a return or "
           "refund, an invoice or payment, your account, or a product that does not work? "
           "An order number (NW-100042) helps too.")

_STATUS = {
    "placed": "has been placed and is waiting to be packed",
    "processing": "is being packed in our Tilburg warehouse",
    "dispatched": "is on its way",
    "delivered": "was delivered",
    "cancelled": "was cancelled",
    "returned_to_sender": "was returned to us by the carrier",
}


def _money(amount: float | None, currency: str) -> str:
    return f"{currency} {amount:,.2f}" if amount is not None else "-"


def order_status(order: dict[str, Any]) -> str:
    """An order's status, items and delivery, from ``lookups.order_status``."""
    state = _STATUS.get(order["status"], f"is {order['status']}")
    items = ", ".join(f"{i['quantity']} x {i['name']}" for i in order["items"])
    lines = [f"Your order {order['order_id']} ({items}; total "
             f"{_money(order['total'], order['currency'])}) {state}."]
    ship = order.get("shipment")
    if ship:
        if ship.get("delivered_at"):
            lines.append(f"{ship['carrier']} delivered it on {ship['delivered_at'][:10]}.")
        elif ship.get("status") in ("in_transit", "delayed"):
            lines.append(f"It is with {ship['carrier']} (tracking number "
                         f"{ship['tracking_number']}); expected on "
                         f"{ship.get('estimated_delivery') or 'a date to follow'}.")
        elif ship.get("status") == "lost":
            lines.append(f"{ship['carrier']} has reported the parcel lost.")
    if order.get("can_change_address"):
        lines.append("It has not been dispatched yet, so the delivery address can still "
                     "change.")
    return " ".join(lines)


def tracking(track: dict[str, Any]) -> str:
    """Where a parcel is, from ``lookups.track_shipment``."""
    if "carrier" not in track:  # not handed to a carrier yet
        advice = track.get("advice")
        return (f"Order {track['order_id']} has not been handed to a carrier yet."
                + (f" {advice}" if isinstance(advice, str) else ""))
    events = track.get("events") or []
    last = events[-1] if events else None
    head = (f"Your parcel for order {track['order_id']} is with {track['carrier']} "
            f"(tracking number {track['tracking_number']}).")
    status = track.get("status")
    if status == "delivered":
        body = f"It was delivered on {(track.get('delivered_at') or '')[:10]}."
    elif status == "lost":
        body = ("The carrier has declared the parcel lost. We are sorry: a colleague will "
                "arrange a replacement or a full refund with you.")
    elif last is not None:
        body = (f"Latest scan: {last['description']} ({last['location']}, "
                f"{last['at'][:10]}). Expected delivery: "
                f"{track.get('estimated_delivery') or 'to follow'}.")
    else:
        body = "There is no scan yet."
    advice = track.get("advice")
    tail = f" {advice}" if isinstance(advice, str) and status != "lost" else ""
    url = track.get("tracking_url")
    link = f" Track it at {url}." if url and status != "lost" else ""
    return f"{head} {body}{tail}{link}"


def return_eligibility(check: dict[str, Any]) -> str:
    """Whether an order can be returned, from ``lookups.return_eligibility``."""
    lines = []
    for item in check.get("items", []):
        if item["eligible"]:
            lines.append(f"{item['name']} can be returned until {item['deadline']} "
                         f"({item['window_days']}-day window).")
        else:
            lines.append(f"{item['name']} can no longer be returned: {item['reason']} "
                         f"(it ended on {item['deadline']}).")
    return " ".join(lines) or f"Order {check['order_id']} has nothing that can be returned."


def return_authorised(check: dict[str, Any], ticket_id: str) -> str:
    """A return authorised: what to send back and the label, after the workflow's gate."""
    names = ", ".join(i["name"] for i in check["items"] if i["eligible"])
    return (f"Your return for order {check['order_id']} is authorised ({names}). We opened "
            f"return case {ticket_id}; your {check.get('label') or 'prepaid label'} is in "
            "your e-mail. Pack the items with their tags and drop the parcel at any carrier "
            "point. Your refund follows once the items reach our warehouse.")


def return_refused(check: dict[str, Any]) -> str:
    """A return the policy does not allow, and what the customer can still do."""
    return (return_eligibility(check) + " If the item is faulty, our 2-year warranty still "
            "applies: tell us what is wrong with it and we will help.")


def invoice_copy(invoice: dict[str, Any]) -> str:
    """An invoice's copy, from ``lookups.invoice_copy``."""
    lines = "; ".join(f"{ln['description']}: {_money(ln['amount'], invoice['currency'])}"
                      for ln in invoice.get("lines", []))
    state = "paid" if invoice["status"] == "paid" else (
        "unpaid and overdue" if invoice.get("overdue") else invoice["status"])
    return (f"Here is a copy of invoice {invoice['invoice_id']} issued "
            f"{invoice['issued_at']} to {invoice['billed_to']}: {lines}. Total "
            f"{_money(invoice['amount'], invoice['currency'])}, {state}. The PDF is on its "
            "way to your e-mail address.")


def invoice_list(listed: dict[str, Any]) -> str:
    """The customer's recent invoices, from ``lookups.list_invoices``."""
    rows = listed.get("invoices", [])
    if not rows:
        return "There are no invoices on your account yet."
    shown = "; ".join(f"{r['invoice_id']} ({r['issued_at']}, "
                      f"{_money(r['amount'], r['currency'])}, {r['status']})" for r in rows)
    return (f"Your latest invoices: {shown}. Tell us the number of the one you need and we "
            "will send a copy.")


def address_change_allowed(order: dict[str, Any], reference: str) -> str:
    """An address change the gate allowed; a colleague applies the new address."""
    return (f"Order {order['order_id']} has not been dispatched yet, so its address can "
            f"still change (within the same country). A colleague is updating it now and "
            f"will confirm here. Reference: {reference}.")


def address_change_refused(order: dict[str, Any]) -> str:
    """An address change after dispatch: what to do instead."""
    ship = order.get("shipment") or {}
    number = ship.get("tracking_number")
    how = (f" with tracking number {number}" if number else "")
    carrier = ship.get("carrier") or "the carrier"
    return (f"Order {order['order_id']} {_STATUS.get(order['status'], order['status'])}, so "
            f"we can no longer change its address. You can ask {carrier} to redirect the "
            f"parcel{how}.")


def faq(title: str, passage: str, article_id: str) -> str:
    """A help-centre answer: the passage, quoted, and the article it comes from."""
    text = " ".join(passage.split())
    if len(text) > 700:
        text = text[:700].rsplit(" ", 1)[0] + " ..."
    return f"From our help centre, \"{title}\": {text} [source: {article_id}]"
