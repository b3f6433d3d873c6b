"""The deterministic generator behind :func:`~examples.support_desk.db.create_database`.

Everything comes from one ``random.Random(seed)`` and :data:`policies.REFERENCE_TIME`: the
same seed gives the same rows in the same order, so the same bytes. The scenario customers
(``db.SCENARIOS``) are planted first, at fixed ids, with hand-set facts, so they hold for any
seed; the rest of the shop is random around them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import policies as P
from .catalog import BY_SKU, PRODUCTS

FIRST = ("Ada", "Bram", "Chloé", "Daan", "Elif", "Finn", "Greta", "Hugo", "Ines", "Jonas",
         "Katja", "Lars", "Mila", "Noah", "Olga", "Pieter", "Quinn", "Rosa", "Sven", "Tess",
         "Umar", "Vera", "Wout", "Xenia", "Yara", "Zeno", "Amira", "Bas", "Carmen", "Dirk",
         "Eva", "Femke", "Gijs", "Hanna", "Isak", "Julia", "Kees", "Lotte", "Mats", "Nora",
         "Oscar", "Pia", "Ruben", "Saar", "Thijs", "Ulla", "Victor", "Wies", "Aoife", "Callum",
         "Siobhan", "Harriet", "Owen", "Maeve", "Léa", "Mathis", "Chantal", "Marcus",
         "Jordan", "Riley")
LAST = ("Jansen", "de Vries", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos", "Vos",
        "Peters", "Hendriks", "Dekker", "Brouwer", "Schmidt", "Fischer", "Weber", "Wagner",
        "Becker", "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Dubois", "Lefèvre",
        "Moreau", "Laurent", "Girard", "Fontaine", "Peeters", "Maes", "Claes", "Wouters",
        "Murphy", "Kelly", "Byrne", "Walsh", "Ryan", "Thompson", "Hughes", "Clarke",
        "Holloway", "Pemberton", "Ashdown", "Whitfield", "Carver", "Lindqvist", "Halvorsen",
        "Okafor", "Novak", "Kowalczyk", "Rossi", "Marino", "Quintero", "Alvarez", "Tanaka",
        "Nakamura", "Osei", "Haddad", "Varga")
DOMAINS = ("example.com", "example.net", "example.org", "mail.test", "inbox.test")
CITIES = {
    "NL": (("Amsterdam", "1012 {n:02d}"), ("Utrecht", "3511 {n:02d}"),
           ("Rotterdam", "3011 {n:02d}"), ("Groningen", "9711 {n:02d}")),
    "DE": (("Berlin", "101{n:02d}"), ("Hamburg", "203{n:02d}"), ("München", "803{n:02d}")),
    "FR": (("Lyon", "690{n:02d}"), ("Grenoble", "380{n:02d}"), ("Annecy", "740{n:02d}")),
    "BE": (("Gent", "90{n:02d}"), ("Antwerpen", "20{n:02d}"), ("Namur", "50{n:02d}")),
    "IE": (("Dublin", "D0{n:01d} X{n:02d}1"), ("Galway", "H91 F{n:02d}2")),
    "GB": (("Bristol", "BS{n:01d} 4AB"), ("Leeds", "LS{n:01d} 1UR"),
           ("Keswick", "CA12 {n:01d}DQ")),
    "US": (("Boulder", "803{n:02d}"), ("Portland", "972{n:02d}"), ("Bend", "977{n:02d}")),
}
STREETS = ("Birch Lane", "Harbour Street", "Mill Road", "Station Square", "Canal Walk",
           "Orchard Way", "Lindenweg", "Rue des Alpes", "Kerkstraat", "High Street")
LANGUAGE = {"NL": "nl", "DE": "de", "FR": "fr", "BE": "nl", "IE": "en", "GB": "en", "US": "en"}
COUNTRY_WEIGHTS = (("NL", 30), ("DE", 22), ("FR", 12), ("BE", 8), ("IE", 6), ("GB", 12),
                   ("US", 10))
RETURN_REASONS = ("too small", "too large", "not as described", "changed my mind",
                  "arrived damaged", "wrong item sent", "better price elsewhere")
TICKET_TOPICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # category -> (subject, customer message, agent answer)
    "shipping": (
        ("Where is my order {order}?", "My order {order} has not arrived yet. Can you check?",
         "Your parcel is with {carrier}; the tracking shows it moving. It should arrive "
         "within {days} working days."),
        ("Parcel marked delivered but not here", "Tracking for {order} says delivered but "
         "there is nothing at my door.", "We opened an investigation with {carrier}. If "
         "the parcel is not found within {lost} days we replace or refund it."),
        ("Change delivery address", "I moved. Can {order} go to my new address?",
         "The address can change only before dispatch; I updated it for you."),
    ),
    "returns": (
        ("Return for {order}", "I want to return an item from {order}: {reason}.",
         "Your prepaid return label is attached; it is valid for {label} days."),
        ("Return window question", "How long do I have to return {order}?",
         "Standard items can be returned within {window} days of delivery, electronics "
         "within {ewindow} days."),
    ),
    "billing": (
        ("Charged twice?", "I see two charges for {order}.", "One was an authorisation "
         "hold that your bank releases within a few days; you were charged once."),
        ("Invoice copy", "Please send me the invoice for {order}.",
         "A copy of the invoice is attached and always available in your account."),
        ("Refund not received", "I returned {order} two weeks ago, where is my refund?",
         "The refund was issued; card refunds take up to {card} working days to appear."),
    ),
    "account": (
        ("Cannot sign in", "I get error APP-101 when I open the app.",
         "Your session expired; signing in again fixes it. Sessions last 30 days."),
        ("Update my e-mail address", "Please change my e-mail address.",
         "For security we sent a confirmation link to both addresses."),
        ("Delete my account", "Please delete my account.", "We anonymise the account "
         "at once; invoices are kept {years} years as the law requires."),
    ),
    "technical": (
        ("Watch shows E12", "My TrailSync GPS Watch shows E12 on every run.",
         "E12 means the satellite fix timed out: start outdoors with a clear view of the "
         "sky and hold the watch still for two minutes."),
        ("Headlamp dims", "The Beacon 800 Headlamp dims after a few minutes (E07).",
         "E07 is overheat protection; use the 300-lumen mode and let it cool."),
        ("Camera says E50", "The Ridgecam shows E50 and will not record.",
         "E50 means the card is full or not formatted; format it in Settings > Storage."),
    ),
}


def iso(t: datetime) -> str:
    """``2026-11-30T12:00:00Z`` (UTC, whole seconds)."""
    return t.isoformat(timespec="seconds")[:19] + "Z"


def cents(amount: float) -> int:
    return round(amount * 100)


def price_cents(sku: str, currency: str) -> int:
    """A product's list price in ``currency``, rounded to .90 for EUR-like tidiness."""
    eur = BY_SKU[sku].price_eur
    if currency == "EUR":
        return cents(eur)
    return cents(round(eur * P.LIST_RATES[currency], 1))


@dataclass
class OrderPlan:
    """What one order is to look like; the generator writes its rows."""

    order_id: str
    customer_id: str
    placed: datetime
    status: str
    items: list[tuple[str, int]]
    shipment: str | None = None            # shipment status, None when not dispatched
    age_delivered_days: float | None = None
    method: str = "card"
    carrier: str | None = None
    service: str | None = None


@dataclass
class Rows:
    """The rows of every table, in insertion order."""

    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.tables.setdefault(table, []).append(row)

    def count(self, table: str) -> int:
        return len(self.tables.get(table, ()))


class Generator:
    """Builds every row of the shop from one seeded random source."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = P.REFERENCE_TIME
        self.rows = Rows()
        self.country: dict[str, str] = {}
        self.address: dict[str, int] = {}
        self.customer_orders: dict[str, list[str]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.next = {"order": 100001, "event": 1, "item": 1, "address": 1, "ret": 10001,
                     "inv": 200001, "sub": 1001, "ticket": 50001, "message": 1, "refund": 10001}

    def take(self, counter: str) -> int:
        value = self.next[counter]
        self.next[counter] += 1
        return value

    # ----------------------------------------------------------------------- customers

    def customer(self, number: int, country: str | None = None) -> str:
        rng = self.rng
        cid = f"C-{number:05d}"
        country = country or rng.choices([c for c, _ in COUNTRY_WEIGHTS],
                                          [w for _, w in COUNTRY_WEIGHTS])[0]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first}.{last}".lower().replace(" ", "").replace("é", "e").replace("è", "e")
        email = f"{local}.{number}@{rng.choice(DOMAINS)}"
        phone = f"+00 {rng.randint(100, 999)} {rng.randint(100000, 999999)}"  # fictional
        created = self.now - timedelta(days=rng.randint(400, 2200), minutes=rng.randint(0, 1439))
        tier = rng.choices(P.LOYALTY_TIERS, (60, 30, 10))[0]
        self.rows.add("customers", (cid, f"{first} {last}", email, phone, country,
                                    LANGUAGE[country], tier, rng.randint(0, 1), "active",
                                    iso(created)))
        self.country[cid] = country
        self.customer_orders[cid] = []
        for label in ("Home", "Work")[: rng.choice((1, 1, 2))]:
            self.add_address(cid, label, is_default=label == "Home")
        return cid

    def add_address(self, cid: str, label: str, *, is_default: bool) -> int:
        rng = self.rng
        country = self.country[cid]
        city, postcode = rng.choice(CITIES[country])
        aid = self.take("address")
        self.rows.add("addresses", (aid, cid, label,
                                    f"{rng.randint(1, 240)} {rng.choice(STREETS)}", "",
                                    city, postcode.format(n=rng.randint(1, 99)), country,
                                    int(is_default)))
        if is_default:
            self.address[cid] = aid
        return aid

    # -------------------------------------------------------------------------- orders

    def random_plan(self, cid: str) -> OrderPlan:
        rng = self.rng
        age = rng.uniform(0.05, 365.0)
        placed = self.now - timedelta(days=age)
        items = [(p.sku, rng.choice((1, 1, 1, 2)))
                 for p in rng.sample(PRODUCTS[:27] + PRODUCTS[29:], rng.choice((1, 1, 2, 2, 3)))]
        roll = rng.random()
        plan = OrderPlan(order_id=f"NW-{self.take('order')}", customer_id=cid, placed=placed,
                         status="delivered", items=items,
                         method=rng.choices(P.PAYMENT_METHODS, (60, 25, 10, 5))[0])
        if age < 0.5:
            plan.status = "placed" if age < 0.2 else "processing"
        elif roll < 0.03:
            plan.status = "cancelled"
        elif age < 6:
            plan.status, plan.shipment = "dispatched", rng.choice(
                ("in_transit", "in_transit", "in_transit", "delayed"))
        elif roll < 0.045 and age < 90:
            plan.status, plan.shipment = "dispatched", "lost"
        elif roll < 0.055:
            plan.status, plan.shipment = "returned", "returned_to_sender"
        else:
            plan.shipment, plan.age_delivered_days = "delivered", max(age - 3, 0.5)
        return plan

    def write_order(self, plan: OrderPlan) -> dict[str, Any]:
        cid = plan.customer_id
        country = P.COUNTRIES[self.country[cid]]
        currency = country.currency
        carrier = plan.carrier or self.rng.choice(country.carriers)
        service = plan.service or P.CARRIERS[carrier].services[0].code
        subtotal = 0
        for sku, qty in plan.items:
            unit = price_cents(sku, currency)
            subtotal += unit * qty
            self.rows.add("order_items", (self.take("item"), plan.order_id, sku, qty, unit,
                                          unit * qty))
        svc = next(s for s in P.CARRIERS[carrier].services if s.code == service)
        list_eur = sum(BY_SKU[s].price_eur * q for s, q in plan.items)
        free = list_eur >= P.FREE_SHIPPING_FROM_EUR and svc is P.CARRIERS[carrier].services[0]
        shipping = 0 if free else cents(round(svc.price_eur * P.LIST_RATES[currency], 2))
        total = subtotal + shipping
        vat = round(total * country.vat_percent / (100 + country.vat_percent))
        self.rows.add("orders", (plan.order_id, cid, iso(plan.placed), plan.status, currency,
                                 subtotal, shipping, vat, total, self.address[cid], carrier,
                                 service))
        order = {"id": plan.order_id, "customer": cid, "total": total, "currency": currency,
                 "placed": plan.placed, "carrier": carrier, "service": svc,
                 "items": plan.items, "payment": f"PA-{plan.order_id[3:]}"}
        self.orders[plan.order_id] = order
        self.customer_orders[cid].append(plan.order_id)
        self.payment(plan, order)
        self.invoice_for(plan, order)
        if plan.shipment is not None:
            self.shipment(plan, order)
        return order

    def payment(self, plan: OrderPlan, order: dict[str, Any]) -> None:
        """The captured payment (``settle_payments`` later applies the refunds to it)."""
        last4 = f"{self.rng.randint(0, 9999):04d}" if plan.method == "card" else None
        self.rows.add("payments", (order["payment"], plan.order_id, plan.method,
                                   order["total"], 0, order["currency"], "captured",
                                   iso(plan.placed + timedelta(minutes=2)), last4))
        if plan.status == "cancelled":
            self.refund(order, order["total"], "order cancelled before dispatch",
                        plan.placed + timedelta(hours=1))

    def invoice_for(self, plan: OrderPlan, order: dict[str, Any]) -> None:
        status = "void" if plan.status == "cancelled" else "paid"
        self.rows.add("invoices", (f"INV-{self.take('inv')}", plan.customer_id,
                                   plan.order_id, None, iso(plan.placed),
                                   iso(plan.placed + timedelta(days=14)), order["total"],
                                   order["currency"], status))

    # ----------------------------------------------------------------------- shipments

    def shipment(self, plan: OrderPlan, order: dict[str, Any]) -> None:
        carrier = P.CARRIERS[order["carrier"]]
        svc: P.Service = order["service"]
        sid = f"SH-{plan.order_id[3:]}"
        tracking = f"{carrier.tracking_prefix}{self.rng.randint(10**9, 10**10 - 1)}"
        status = plan.shipment
        assert status is not None
        delivered_at: datetime | None = None
        if status == "delivered":
            delivered_at = self.now - timedelta(days=plan.age_delivered_days or 1.0)
            shipped = delivered_at - timedelta(days=svc.days_min, hours=3)
        else:
            shipped = plan.placed + timedelta(hours=10)
        eta = shipped + timedelta(days=svc.days_max)
        self.rows.add("shipments", (sid, plan.order_id, carrier.code, svc.code, tracking,
                                    status, iso(shipped), eta.strftime("%Y-%m-%d"),
                                    None if delivered_at is None else iso(delivered_at)))
        for at, code, text, where in self.events(status, shipped, delivered_at, carrier):
            if at <= self.now:
                self.rows.add("carrier_events", (self.take("event"), sid, iso(at), code, text,
                                                 where))

    def events(self, status: str, shipped: datetime, delivered: datetime | None,
               carrier: P.Carrier) -> list[tuple[datetime, str, str, str]]:
        hub = self.rng.choice(("Utrecht hub", "Köln hub", "Liège hub", "Leipzig hub",
                               "Birmingham hub", "Louisville hub"))
        h = timedelta(hours=1)
        out = [(shipped, "PICKED_UP", f"Parcel picked up by {carrier.name}", "Tilburg warehouse"),
               (shipped + 6 * h, "DEPARTED", "Departed sorting centre", "Tilburg warehouse"),
               (shipped + 20 * h, "ARRIVED_HUB", "Arrived at the destination hub", hub)]
        if status == "delivered" and delivered is not None:
            out += [(delivered - 4 * h, "OUT_FOR_DELIVERY", "Out for delivery", "local depot"),
                    (delivered, "DELIVERED", "Delivered", "recipient's address")]
        elif status == "delayed":
            out.append((shipped + 30 * h, "DELAYED", "Delayed at hub: capacity shortage; "
                        "new delivery estimate within 2 working days", hub))
        elif status == "lost":
            opened = shipped + timedelta(days=carrier.lost_after_days)
            out += [(opened, "INVESTIGATION", "No scan since arrival at hub: carrier "
                     "investigation opened", hub),
                    (opened + timedelta(days=3), "LOST", "Parcel declared lost by the carrier",
                     hub)]
        elif status == "returned_to_sender":
            out += [(shipped + 30 * h, "DELIVERY_FAILED", "Delivery attempt failed: "
                     "recipient not at home", "local depot"),
                    (shipped + 54 * h, "DELIVERY_FAILED", "Second delivery attempt failed",
                     "local depot"),
                    (shipped + 120 * h, "RETURNED", "Returned to sender", "Tilburg warehouse")]
        return out

    # ------------------------------------------------------------------ returns, refunds

    def refund(self, order: dict[str, Any], amount: int, reason: str, at: datetime) -> None:
        self.rows.add("refunds", (f"RF-{self.take('refund')}", order["id"], order["payment"],
                                  order["customer"], amount, order["currency"], reason,
                                  "issued", iso(at), None))
        order["refunded"] = order.get("refunded", 0) + amount

    def maybe_return(self, plan: OrderPlan, order: dict[str, Any]) -> None:
        rng = self.rng
        if plan.status == "returned":  # returned to sender: refunded in full
            self.refund(order, order["total"], "parcel returned to sender",
                        plan.placed + timedelta(days=7))
            return
        if plan.shipment != "delivered" or rng.random() > 0.08:
            return
        delivered = self.now - timedelta(days=plan.age_delivered_days or 1.0)
        created = delivered + timedelta(days=rng.uniform(1, 12))
        if created > self.now:
            return
        sku, qty = rng.choice(plan.items)
        status = rng.choices(("refunded", "received", "label_sent", "requested", "rejected"),
                             (60, 10, 12, 10, 8))[0]
        self.rows.add("returns", (f"RT-{self.take('ret')}", plan.order_id, plan.customer_id,
                                  sku, qty, rng.choice(RETURN_REASONS), status, iso(created)))
        if status == "refunded":
            self.refund(order, price_cents(sku, order["currency"]) * qty,
                        "return received", created + timedelta(days=6))

    def settle_payments(self) -> None:
        """Payments reflect their refunds (rewritten in place; same order of rows)."""
        payments = self.rows.tables.get("payments", [])
        by_order = {o["payment"]: o for o in self.orders.values()}
        for i, row in enumerate(payments):
            order = by_order[row[0]]
            refunded = order.get("refunded", 0)
            if refunded:
                status = "refunded" if refunded >= row[3] else "partially_refunded"
                payments[i] = (*row[:4], refunded, row[5], status, *row[7:])

    # -------------------------------------------------------------------- subscriptions

    def subscription(self, cid: str, plan_code: str, status: str, *,
                     months: int = 4) -> tuple[str, list[str]]:
        plan = P.PLANS[plan_code]
        currency = P.COUNTRIES[self.country[cid]].currency
        price = cents(round(plan.monthly_eur * P.LIST_RATES[currency], 2))
        sid = f"SUB-{self.take('sub')}"
        started = self.now - timedelta(days=30 * months + 3)
        renews = None if status == "cancelled" else iso(self.now + timedelta(days=27))
        self.rows.add("subscriptions", (sid, cid, plan_code, status, currency, price,
                                        iso(started), renews))
        invoices = []
        for m in range(months):
            issued = started + timedelta(days=30 * m)
            unpaid = status == "past_due" and m == months - 1
            iid = f"INV-{self.take('inv')}"
            invoices.append(iid)
            self.rows.add("invoices", (iid, cid, None, sid, iso(issued),
                                       iso(issued + timedelta(days=14)), price, currency,
                                       "unpaid" if unpaid else "paid"))
        return sid, invoices

    # --------------------------------------------------------------------------- tickets

    def ticket(self, cid: str, category: str, *, order_id: str | None, status: str,
               created: datetime, topic: int | None = None) -> str:
        rng = self.rng
        options = TICKET_TOPICS[category]
        subject, ask, answer = options[rng.randrange(len(options)) if topic is None else topic]
        order = self.orders.get(order_id or "")
        facts = {"order": order_id or "my order",
                 "carrier": P.CARRIERS[order["carrier"]].name if order else "the carrier",
                 "days": rng.randint(1, 4), "lost": 10, "reason": rng.choice(RETURN_REASONS),
                 "label": P.RETURN_LABEL_VALID_DAYS, "window": P.RETURN_WINDOW_DAYS,
                 "ewindow": P.ELECTRONICS_RETURN_WINDOW_DAYS, "card": P.REFUND_DAYS["card"],
                 "years": P.INVOICE_RETENTION_YEARS}
        tid = f"T-{self.take('ticket')}"
        messages = [(created, "customer", ask.format(**facts))]
        if status != "open":
            messages.append((created + timedelta(hours=rng.randint(1, 20)), "agent",
                             answer.format(**facts)))
        if status in ("solved", "closed") and rng.random() < 0.4:
            messages.append((messages[-1][0] + timedelta(hours=3), "customer",
                             "Thanks, that solved it."))
        priority = rng.choices(("low", "normal", "high"), (20, 65, 15))[0]
        self.rows.add("tickets", (tid, cid, order_id, subject.format(**facts), category, status,
                                  priority, rng.choice(("email", "chat", "phone", "app")),
                                  iso(created), iso(messages[-1][0])))
        for at, author, body in messages:
            self.rows.add("ticket_messages", (self.take("message"), tid, iso(at), author, body))
        return tid

    def random_tickets(self, count: int, customers: list[str]) -> None:
        rng = self.rng
        for _ in range(count):
            cid = rng.choice(customers)
            orders = self.customer_orders[cid]
            category = rng.choice(tuple(TICKET_TOPICS))
            order_id = rng.choice(orders) if orders and category != "account" else None
            status = rng.choices(("closed", "solved", "pending", "open"), (55, 30, 8, 7))[0]
            created = self.now - timedelta(days=rng.uniform(0.2, 300))
            self.ticket(cid, category, order_id=order_id, status=status, created=created)
