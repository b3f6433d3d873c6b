"""The support desk's keel tools over the database, with honest risks, scopes and approvals.

Every tool acts for the customer of the run: ``agent.run(text, user="C-00042",
deps=Database(path))``. It reads the customer from ``ToolContext.user`` and the database from
``ToolContext.deps`` (a :class:`~.db.Database`, or any object with a ``database`` attribute
holding one). Another customer's order, invoice or ticket is refused with the very message a
number that does not exist gets.

=======================  ==============  =================  ===========================
tool                     risk            scopes             approval (``approval_policy``)
=======================  ==============  =================  ===========================
order_status             read            orders:read        -
list_orders              read            orders:read        -
track_shipment           read            orders:read        -
return_eligibility       read            orders:read        -
invoice_copy             read            billing:read       -
list_invoices            read            billing:read       -
subscription_details     read            billing:read       -
account_profile          read            account:read       -
search_tickets           read            tickets:read       -
change_shipping_address  write           orders:write       -
create_ticket            write           tickets:write      -
update_ticket            write           tickets:write      -
add_note                 write           tickets:write      -
refund_order             irreversible    refunds:issue      > 100: 1, > 1,000: 2 people
cancel_order             irreversible    orders:cancel      same limits on the order total
delete_account           irreversible    account:delete     always
=======================  ==============  =================  ===========================

``refund_order`` and ``cancel_order`` are saga steps: if the run fails after them (the
ticket update that follows fails, the model errors, the run is cancelled), keel calls their
compensations (``reverse_refund``, ``reinstate_order``) and the money goes back.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from keel import ApprovalPolicy, ApprovalRule, ToolContext, ToolError, tool
from keel.runtime import ApprovalContext
from keel.tools import FunctionTool

from . import actions
from . import lookups as L
from . import policies as P
from .db import Database


def database_of(deps: Any) -> Database:
    """The desk database in a run's ``deps`` (itself, or its ``database`` attribute)."""
    found = deps if isinstance(deps, Database) else getattr(deps, "database", None)
    if not isinstance(found, Database):
        raise ToolError("The support desk's database is not configured for this run.",
                        retryable=False, hint="Run the agent with deps=Database(path) (see "
                        "examples/support_desk/README.md).")
    return found


def _call(ctx: ToolContext) -> actions.Call:
    return actions.Call(customer_id=ctx.user, idempotency_key=ctx.idempotency_key,
                        run_id=ctx.run_id)


async def _reconcile(_args: dict[str, Any], ctx: ToolContext) -> Any | None:
    """A write whose outcome keel does not know: its effect row says whether it happened."""
    return actions.recorded(database_of(ctx.deps), ctx.idempotency_key)


# ------------------------------------------------------------------------ argument types


def _normalised(pattern: str, example: str, what: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if not isinstance(value, str):
            return value  # the str type reports it
        text = value.strip().upper()
        if len(text) > 40 or not compiled.fullmatch(text):
            raise ValueError(f"{what} look like {example}; got {value[:40]!r}")
        return text
    return BeforeValidator(check)


OrderId = Annotated[str, _normalised(r"NW-\d{6}", "NW-100042", "order numbers"),
                    Field(description="The order number, e.g. NW-100042.")]
InvoiceId = Annotated[str, _normalised(r"INV-\d{6}", "INV-200042", "invoice numbers"),
                      Field(description="The invoice number, e.g. INV-200042.")]
TicketId = Annotated[str, _normalised(r"T-\d{5,6}", "T-50042", "ticket numbers"),
                     Field(description="The ticket number, e.g. T-50042.")]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _printable(value: str) -> str:
    """Refuse control characters (NUL, terminal escapes ...): they would reach the
    database, the console and the reviewers' terminals."""
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"contains the control character {found.group()!r}; send plain text")
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000),
                 AfterValidator(_printable)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                  AfterValidator(_printable)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100),
                 AfterValidator(_printable)]


def _postcode(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 -]{1,10}", value):
        raise ValueError("a postcode is 2-11 letters, digits, spaces or dashes")
    return value.upper()


def _country(value: str) -> str:
    code = value.strip().upper()
    if code not in P.COUNTRIES:
        raise ValueError(f"we deliver to {', '.join(P.COUNTRIES)} (ISO codes); got {value!r}")
    return code


Postcode = Annotated[str, StringConstraints(strip_whitespace=True, max_length=12),
                     AfterValidator(_postcode)]
CountryCode = Annotated[str, StringConstraints(max_length=40), AfterValidator(_country)]
Amount = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False,
                                description="The amount in the order's currency, e.g. 59.90.")]


def _cents(amount: float) -> int:
    cents = round(amount * 100)
    if abs(cents - amount * 100) > 1e-6:
        raise ToolError(f"{amount} has more than two decimals", retryable=True,
                        hint="Give the amount in whole cents, e.g. 59.90.")
    return cents


# ------------------------------------------------------------------------------- look-ups


@tool(risk="read", scopes=["orders:read"], group="orders")
def order_status(order_id: OrderId, ctx: ToolContext) -> dict[str, Any]:
    """Look up one of the customer's orders: status, items, totals, payment and delivery."""
    return L.order_status(database_of(ctx.deps), ctx.user, order_id)


@tool(risk="read", scopes=["orders:read"], group="orders")
def list_orders(ctx: ToolContext,
                limit: Annotated[int, Field(ge=1, le=50)] = 10) -> dict[str, Any]:
    """List the customer's most recent orders, newest first.

    Args:
        limit: How many orders to show (1-50).
    """
    return L.list_orders(database_of(ctx.deps), ctx.user, limit)


@tool(risk="read", scopes=["orders:read"], group="shipping")
def track_shipment(order_id: OrderId, ctx: ToolContext) -> dict[str, Any]:
    """Track an order's parcel: carrier, tracking number and every carrier scan."""
    return L.track_shipment(database_of(ctx.deps), ctx.user, order_id)


@tool(risk="read", scopes=["orders:read"], group="returns")
def return_eligibility(order_id: OrderId, ctx: ToolContext) -> dict[str, Any]:
    """Check whether the items of a delivered order can still be returned, and until when."""
    return L.return_eligibility(database_of(ctx.deps), ctx.user, order_id)


@tool(risk="read", scopes=["billing:read"], group="billing")
def invoice_copy(invoice_id: InvoiceId, ctx: ToolContext) -> dict[str, Any]:
    """Get a copy of one of the customer's invoices, with its lines."""
    return L.invoice_copy(database_of(ctx.deps), ctx.user, invoice_id)


@tool(risk="read", scopes=["billing:read"], group="billing")
def list_invoices(ctx: ToolContext,
                  status: Literal["all", "paid", "unpaid", "void"] = "all",
                  limit: Annotated[int, Field(ge=1, le=50)] = 10) -> dict[str, Any]:
    """List the customer's invoices, newest first.

    Args:
        status: Only invoices with this status ("all" for every one).
        limit: How many to show (1-50).
    """
    return L.list_invoices(database_of(ctx.deps), ctx.user, status, limit)


@tool(risk="read", scopes=["billing:read"], group="billing")
def subscription_details(ctx: ToolContext) -> dict[str, Any]:
    """Show the customer's Northwind Club memberships, perks and unpaid invoices."""
    return L.subscription_details(database_of(ctx.deps), ctx.user)


@tool(risk="read", scopes=["account:read"], group="account")
def account_profile(ctx: ToolContext) -> dict[str, Any]:
    """Show the customer's profile and addresses, with counts of orders and open tickets."""
    return L.account_profile(database_of(ctx.deps), ctx.user)


@tool(risk="read", scopes=["tickets:read"], group="tickets")
def search_tickets(ctx: ToolContext,
                   query: Annotated[str, StringConstraints(max_length=200)] = "",
                   status: Literal["any", "open", "pending", "solved", "closed"] = "any",
                   limit: Annotated[int, Field(ge=1, le=50)] = 10) -> dict[str, Any]:
    """Search the customer's past tickets by words in their subject or messages.

    Args:
        query: Words that must all appear (empty: every ticket).
        status: Only tickets with this status ("any" for all).
        limit: How many to show (1-50).
    """
    return L.search_tickets(database_of(ctx.deps), ctx.user, query, status, limit)


# ---------------------------------------------------------------------------------- writes


@tool(risk="write", scopes=["orders:write"], group="shipping", reconcile=_reconcile)
def change_shipping_address(order_id: OrderId, line1: Annotated[Line, Field(min_length=3)],
                            city: Short, postcode: Postcode, country: CountryCode,
                            ctx: ToolContext, line2: Line = "") -> dict[str, Any]:
    """Send an order that has not been dispatched yet to another address (same country).

    Args:
        line1: Street and house number.
        city: City or town.
        postcode: Postcode in the country's format.
        country: ISO country code, e.g. NL.
        line2: Apartment, floor or company (optional).
    """
    address = {"line1": line1, "line2": line2, "city": city, "postcode": postcode,
               "country": country}
    return actions.change_address(database_of(ctx.deps), _call(ctx), order_id, address)


@tool(risk="write", scopes=["tickets:write"], group="tickets", reconcile=_reconcile)
def create_ticket(subject: Short, message: Text,
                  category: Literal["shipping", "returns", "billing", "account", "technical"],
                  ctx: ToolContext, order_id: OrderId | None = None) -> dict[str, Any]:
    """Open a new support ticket for the customer.

    Args:
        subject: A one-line summary.
        message: The customer's request, in their words.
        category: What the ticket is about.
        order_id: The order it concerns, if any.
    """
    return actions.create_ticket(database_of(ctx.deps), _call(ctx), subject=subject,
                                 message=message, category=category, order_id=order_id)


@tool(risk="write", scopes=["tickets:write"], group="tickets", reconcile=_reconcile)
def update_ticket(ticket_id: TicketId, message: Text, ctx: ToolContext,
                  status: Literal["open", "pending", "solved"] | None = None
                  ) -> dict[str, Any]:
    """Reply to the customer on a ticket and optionally change its status.

    Args:
        message: The reply the customer reads.
        status: The ticket's new status (unchanged if omitted).
    """
    return actions.update_ticket(database_of(ctx.deps), _call(ctx), ticket_id=ticket_id,
                                 message=message, status=status)


@tool(risk="write", scopes=["tickets:write"], group="tickets", reconcile=_reconcile)
def add_note(ticket_id: TicketId, note: Text, ctx: ToolContext) -> dict[str, Any]:
    """Add an internal note to a ticket (colleagues see it; the customer does not).

    Args:
        note: The note.
    """
    return actions.update_ticket(database_of(ctx.deps), _call(ctx), ticket_id=ticket_id,
                                 message=note, status=None, note=True)


# ---------------------------------------------------------------- irreversible, with sagas


@tool(risk="write", scopes=["refunds:issue"], group="billing", reconcile=_reconcile)
def reverse_refund(result: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Undo a refund this run issued (a compensation: keel calls it, the model never does)."""
    refund_id = result.get("refund_id") if isinstance(result, dict) else None
    if not isinstance(refund_id, str):
        raise ToolError("the refund to reverse has no refund_id", retryable=False)
    return actions.reverse_refund(database_of(ctx.deps), _call(ctx), refund_id=refund_id)


@tool(risk="irreversible", scopes=["refunds:issue"], group="billing", reconcile=_reconcile,
      compensate=reverse_refund,
      description="Refund part or all of an order to its original payment method. Refunds "
                  f"over {P.REFUND_APPROVAL_LIMIT:,.0f} wait for a reviewer's approval, over "
                  f"{P.REFUND_TWO_REVIEWER_LIMIT:,.0f} for two reviewers'.")
def refund_order(order_id: OrderId, amount: Amount, reason: Short,
                 ctx: ToolContext) -> dict[str, Any]:
    """Refund part or all of an order to its original payment method (approval limits in
    policies.py).

    Args:
        amount: How much to refund, in the order's currency (at most what is left to refund).
        reason: Why, in a few words (shown to reviewers and on the refund).
    """
    return actions.refund(database_of(ctx.deps), _call(ctx), order_id=order_id,
                          amount_cents=_cents(amount), reason=reason)


@tool(risk="write", scopes=["orders:cancel"], group="orders", reconcile=_reconcile)
def reinstate_order(order_id: OrderId, result: dict[str, Any],
                    ctx: ToolContext) -> dict[str, Any]:
    """Undo a cancellation this run made (a compensation: keel calls it, never the model)."""
    previous, refund_id = result.get("previous_status"), result.get("refund_id")
    if not isinstance(previous, str) or not isinstance(refund_id, str):
        raise ToolError("the cancellation to undo has no previous_status/refund_id",
                        retryable=False)
    return actions.reinstate(database_of(ctx.deps), _call(ctx), order_id=order_id,
                             previous_status=previous, refund_id=refund_id)


@tool(risk="irreversible", scopes=["orders:cancel"], group="orders", reconcile=_reconcile,
      compensate=reinstate_order)
def cancel_order(order_id: OrderId, reason: Short, ctx: ToolContext) -> dict[str, Any]:
    """Cancel an order that has not been dispatched yet; its payment is refunded in full.

    Args:
        reason: Why the customer cancels, in a few words.
    """
    return actions.cancel(database_of(ctx.deps), _call(ctx), order_id=order_id, reason=reason)


@tool(risk="irreversible", scopes=["account:delete"], group="account", reconcile=_reconcile,
      approval=True)
def delete_account(confirm_email: Annotated[str, StringConstraints(max_length=254)],
                   reason: Short, ctx: ToolContext) -> dict[str, Any]:
    """Delete (anonymise) the customer's account; always waits for a person's approval.

    Args:
        confirm_email: The account's e-mail address, as the customer typed it to confirm.
        reason: Why the customer leaves, in a few words.
    """
    return actions.delete_account(database_of(ctx.deps), _call(ctx),
                                  confirm_email=confirm_email, reason=reason)


# ------------------------------------------------------------------------- sets, approval

READ_TOOLS: tuple[FunctionTool, ...] = (
    order_status, list_orders, track_shipment, return_eligibility, invoice_copy,
    list_invoices, subscription_details, account_profile, search_tickets)
WRITE_TOOLS: tuple[FunctionTool, ...] = (change_shipping_address, create_ticket, update_ticket,
                                         add_note)
IRREVERSIBLE_TOOLS: tuple[FunctionTool, ...] = (refund_order, cancel_order, delete_account)
#: Every tool the model may be given (the compensations are not among them).
ALL_TOOLS: tuple[FunctionTool, ...] = READ_TOOLS + WRITE_TOOLS + IRREVERSIBLE_TOOLS
#: Every scope the tools require: an agent with all of them may call every tool.
ALL_SCOPES: frozenset[str] = frozenset(s for t in ALL_TOOLS for s in t.meta.scopes)
_TICKETS = (search_tickets, create_ticket, update_ticket, add_note)
#: The tools each specialist of the desk sees.
SPECIALIST_TOOLS: dict[str, tuple[FunctionTool, ...]] = {
    "shipping": (order_status, list_orders, track_shipment, change_shipping_address,
                 cancel_order, *_TICKETS),
    "returns": (order_status, list_orders, return_eligibility, track_shipment, refund_order,
                *_TICKETS),
    "billing": (order_status, list_orders, invoice_copy, list_invoices, subscription_details,
                refund_order, *_TICKETS),
    "account": (account_profile, subscription_details, list_invoices, delete_account,
                *_TICKETS),
    "technical": (order_status, list_orders, *_TICKETS),
}


def scopes_for(tools: tuple[FunctionTool, ...]) -> frozenset[str]:
    """The scopes an agent needs to call ``tools``."""
    return frozenset(s for t in tools for s in t.meta.scopes)


def _order_total(arguments: dict[str, Any], context: ApprovalContext | None) -> float | None:
    """The total of the order a cancellation names, for this run's customer (None if it
    cannot be read: then the stricter rule applies)."""
    if context is None:
        return None
    try:
        db = database_of(context.deps)
        with db.read() as conn:
            row = conn.execute("SELECT total_cents FROM orders WHERE id = ? AND customer_id = ?",
                               (str(arguments["order_id"]).strip().upper(),
                                context.user)).fetchone()
    except (ToolError, KeyError, OSError):
        return None
    return None if row is None else row[0] / 100


def _not_theirs(arguments: dict[str, Any], context: ApprovalContext | None) -> bool:
    """Whether the order a refund names is certainly not this run's customer's (then no
    reviewer is asked: the tool refuses it as a number that does not exist)."""
    if context is None:
        return False
    try:
        db = database_of(context.deps)
        with db.read() as conn:
            row = conn.execute("SELECT 1 FROM orders WHERE id = ? AND customer_id = ?",
                               (str(arguments["order_id"]).strip().upper(),
                                context.user)).fetchone()
    except (ToolError, KeyError, OSError):
        return False  # unreadable: fail closed, ask
    return row is None


def approval_policy(*, queue: str = "approvals",
                    sla_seconds: float | None = 4 * 3600.0) -> ApprovalPolicy:
    """keel's :class:`ApprovalPolicy` with the shop's limits (``policies.py``).

    A refund up to 100 runs at once, above 100 waits for one reviewer, above 1,000 for two
    different reviewers; a cancellation likewise by the order's total (one reviewer when the
    order cannot be read); account deletion (and any other irreversible tool) always waits
    for one. An amount that cannot be read fails closed (approval is asked). A refund of an
    order that is not the customer's asks nobody: the tool refuses it, as it refuses a number
    that does not exist, so reviewers are never shown another customer's order.
    """
    low, high = P.REFUND_APPROVAL_LIMIT, P.REFUND_TWO_REVIEWER_LIMIT

    def refund_over(limit: float) -> Any:
        def when(a: dict[str, Any], c: ApprovalContext | None) -> bool:
            return float(a["amount"]) > limit and not _not_theirs(a, c)
        return when

    def cancel_over(limit: float, unknown: bool) -> Any:
        def when(a: dict[str, Any], c: ApprovalContext | None) -> bool:
            total = _order_total(a, c)
            return unknown if total is None else total > limit
        return when

    rules = (
        ApprovalRule("refund_order", refund_over(high),
                     f"refunds over {high:,.0f} need two reviewers", reviewers=2),
        ApprovalRule("refund_order", refund_over(low),
                     f"refunds over {low:,.0f} need a reviewer"),
        ApprovalRule("cancel_order", cancel_over(high, unknown=False),
                     f"cancelling an order over {high:,.0f} needs two reviewers", reviewers=2),
        ApprovalRule("cancel_order", cancel_over(low, unknown=True),
                     f"cancelling an order over {low:,.0f} needs a reviewer"),
    )

    def other_irreversible(t: Any, _arguments: dict[str, Any]) -> str | None:
        if t.meta.risk == "irreversible" and t.name not in ("refund_order", "cancel_order"):
            return f"{t.name} is irreversible"
        return None

    return ApprovalPolicy(risks=frozenset(), rules=rules, callback=other_irreversible,
                          queue=queue, sla_seconds=sla_seconds)
