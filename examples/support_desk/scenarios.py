"""Customers planted for scripted conversations: fixed ids and facts, for any seed.

``SCENARIOS[name]`` says which customer (and order, ticket, invoice, subscription, amount) a
scripted conversation uses, e.g. ``SCENARIOS["lost_parcel"].order_id``. The generator plants
them first (customers ``C-00001``..``C-00012``, orders ``NW-100001``..``NW-100011``), all in
the Netherlands (EUR), dated relative to :data:`policies.REFERENCE_TIME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from .generate import Generator, OrderPlan


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One planted situation: whose it is and the records a conversation about it uses."""

    name: str
    description: str
    customer_id: str
    order_id: str | None = None
    ticket_id: str | None = None
    invoice_id: str | None = None
    subscription_id: str | None = None
    #: The amount in question (EUR), e.g. what a refund scenario refunds.
    amount: float | None = None


def _s(name: str, description: str, customer: int, order: int | None = None,
       ticket: int | None = None, *, invoice_id: str | None = None,
       subscription_id: str | None = None, amount: float | None = None) -> Scenario:
    return Scenario(name=name, description=description, customer_id=f"C-{customer:05d}",
                    order_id=None if order is None else f"NW-{100000 + order}",
                    ticket_id=None if ticket is None else f"T-{50000 + ticket}",
                    invoice_id=invoice_id, subscription_id=subscription_id, amount=amount)


SCENARIOS: Final = {s.name: s for s in (
    _s("in_transit", "a jacket dispatched two days ago, on its way with DHL", 1, 1),
    _s("lost_parcel", "a backpack PostNord declared lost (no scan for 14 days, then 3 "
       "days of investigation)", 2, 2,
       ticket=1),
    _s("return_eligible", "a parka delivered 10 days ago (30-day window)", 3, 3),
    _s("return_expired", "hiking boots delivered 45 days ago (30-day window passed)", 4, 4),
    _s("electronics_return_expired", "a GPS watch delivered 20 days ago (14-day window "
       "for electronics passed)", 5, 5),
    _s("just_placed", "an order placed two hours ago: not dispatched, address can change", 6,
       6),
    _s("refund_small", "a 59.90 base layer: a refund without approval", 7, 7, ticket=2,
       amount=59.90),
    _s("refund_one_approval", "a 399.00 tent: a refund one reviewer approves", 8, 8,
       ticket=3, amount=399.00),
    _s("refund_two_approvals", "a 2,490.00 e-bike: a refund two reviewers approve", 9, 9,
       ticket=4, amount=2490.00),
    _s("subscription", "an active Summit Club member; a jacket delivered 40 days ago is "
       "still returnable (60-day club window)", 10, 10, subscription_id="SUB-1001"),
    _s("unpaid_invoice", "a Trail Club membership past due with an unpaid invoice", 11,
       subscription_id="SUB-1002", invoice_id="INV-200019"),
    _s("cancellable", "a 69.45 stove order being packed: can still be cancelled", 12, 11,
       amount=69.45),
)}


def plant(gen: Generator) -> None:
    """Write the scenario customers and their records (before anything random)."""
    now = gen.now
    for n in range(1, 13):
        gen.customer(n, country="NL")

    def order(cid: int, items: list[tuple[str, int]], *, age: float, status: str,
              shipment: str | None = None, delivered_days: float | None = None,
              carrier: str = "dhl") -> None:
        gen.write_order(OrderPlan(order_id=f"NW-{gen.take('order')}", customer_id=f"C-{cid:05d}",
                                  placed=now - timedelta(days=age), status=status, items=items,
                                  shipment=shipment, age_delivered_days=delivered_days,
                                  carrier=carrier, service=f"{carrier}-standard"
                                  if carrier != "postnord" else "postnord-parcel"))

    order(1, [("AP-1001", 1)], age=2, status="dispatched", shipment="in_transit")
    order(2, [("CP-3007", 1)], age=20, status="dispatched", shipment="lost",
          carrier="postnord")
    order(3, [("AP-1002", 1)], age=13, status="delivered", shipment="delivered",
          delivered_days=10)
    order(4, [("FW-2001", 1)], age=48, status="delivered", shipment="delivered",
          delivered_days=45)
    order(5, [("EL-6001", 1)], age=23, status="delivered", shipment="delivered",
          delivered_days=20)
    order(6, [("CP-3005", 1), ("CP-3009", 1)], age=2 / 24, status="placed")
    order(7, [("AP-1003", 1)], age=11, status="delivered", shipment="delivered",
          delivered_days=8)
    order(8, [("CP-3001", 1)], age=12, status="delivered", shipment="delivered",
          delivered_days=9)
    order(9, [("BK-5001", 1)], age=15, status="delivered", shipment="delivered",
          delivered_days=12)
    order(10, [("AP-1001", 1)], age=43, status="delivered", shipment="delivered",
          delivered_days=40)
    order(12, [("CP-3006", 1)], age=0.3, status="processing")
    gen.subscription("C-00010", "summit", "active")
    gen.subscription("C-00011", "trail", "past_due")
    opened = now - timedelta(days=1)
    gen.ticket("C-00002", "shipping", order_id="NW-100002", status="open", created=opened,
               topic=1)
    for cid, oid in (("C-00007", "NW-100007"), ("C-00008", "NW-100008"),
                     ("C-00009", "NW-100009")):
        gen.ticket(cid, "returns", order_id=oid, status="open", created=opened, topic=0)
