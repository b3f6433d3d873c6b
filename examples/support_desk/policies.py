"""Northwind Outfitters' business rules, in one place.

The generator (``db.py``), the tools (``tools.py``), the help centre's articles and the desk
all read these facts from here, so an article can never promise a return window the tools do
not honour. Northwind Outfitters is fictional: an online outdoor-gear shop selling to a few
European countries and the United States.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final


@dataclass(frozen=True, kw_only=True)
class Shop:
    """Who the shop is and how customers reach it."""

    name: str
    legal_name: str
    support_email: str
    website: str
    phone_hours: str
    app_name: str


SHOP: Final = Shop(
    name="Northwind Outfitters",
    legal_name="Northwind Outfitters B.V. (fictional)",
    support_email="help@northwind-outfitters.example",
    website="https://northwind-outfitters.example",
    phone_hours="Monday to Friday, 08:00-18:00 CET",
    app_name="Northwind app",
)

#: "Today" in the seeded data: every date the generator writes is relative to it, and the
#: tools judge return windows and due dates against it (``Database(today=...)`` overrides).
REFERENCE_TIME: Final = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


# ----------------------------------------------------------------------- money and countries


@dataclass(frozen=True, kw_only=True)
class Country:
    """A country the shop delivers to: its currency, VAT rate and the carriers serving it."""

    code: str
    name: str
    currency: str
    vat_percent: int
    carriers: tuple[str, ...]


CURRENCIES: Final = ("EUR", "GBP", "USD")
#: Prices are set in EUR; other currencies use these fixed list-price rates (1 EUR = x).
LIST_RATES: Final = {"EUR": 1.0, "GBP": 0.86, "USD": 1.08}

COUNTRIES: Final = {
    c.code: c for c in (
        Country(code="NL", name="Netherlands", currency="EUR", vat_percent=21,
                carriers=("postnord", "dhl", "ups")),
        Country(code="DE", name="Germany", currency="EUR", vat_percent=19,
                carriers=("dhl", "ups")),
        Country(code="FR", name="France", currency="EUR", vat_percent=20,
                carriers=("dhl", "ups")),
        Country(code="BE", name="Belgium", currency="EUR", vat_percent=21,
                carriers=("postnord", "dhl")),
        Country(code="IE", name="Ireland", currency="EUR", vat_percent=23,
                carriers=("dhl", "ups")),
        Country(code="GB", name="United Kingdom", currency="GBP", vat_percent=20,
                carriers=("royalmail", "ups")),
        Country(code="US", name="United States", currency="USD", vat_percent=0,
                carriers=("ups",)),
    )
}


# ------------------------------------------------------------------------------- shipping


@dataclass(frozen=True, kw_only=True)
class Service:
    """A carrier's delivery service: its price (EUR) and delivery time in working days."""

    code: str
    name: str
    price_eur: float
    days_min: int
    days_max: int


@dataclass(frozen=True, kw_only=True)
class Carrier:
    """A carrier the shop ships with: tracking-number shape and when a parcel counts as lost."""

    code: str
    name: str
    tracking_prefix: str
    tracking_url: str
    services: tuple[Service, ...]
    #: A parcel with no scan for this many days is investigated and, if not found, declared lost.
    lost_after_days: int


CARRIERS: Final = {
    c.code: c for c in (
        Carrier(code="dhl", name="DHL Parcel", tracking_prefix="JD", lost_after_days=10,
                tracking_url="https://track.dhl.example/{tracking}",
                services=(Service(code="dhl-standard", name="DHL Standard", price_eur=4.95,
                                  days_min=2, days_max=4),
                          Service(code="dhl-express", name="DHL Express", price_eur=12.95,
                                  days_min=1, days_max=1))),
        Carrier(code="ups", name="UPS", tracking_prefix="1Z", lost_after_days=12,
                tracking_url="https://track.ups.example/{tracking}",
                services=(Service(code="ups-standard", name="UPS Standard", price_eur=6.95,
                                  days_min=3, days_max=6),
                          Service(code="ups-express", name="UPS Express Saver",
                                  price_eur=18.5, days_min=1, days_max=2))),
        Carrier(code="postnord", name="PostNord", tracking_prefix="PN", lost_after_days=14,
                tracking_url="https://track.postnord.example/{tracking}",
                services=(Service(code="postnord-parcel", name="PostNord Parcel",
                                  price_eur=3.95, days_min=2, days_max=5),)),
        Carrier(code="royalmail", name="Royal Mail", tracking_prefix="RM", lost_after_days=15,
                tracking_url="https://track.royalmail.example/{tracking}",
                services=(Service(code="royalmail-tracked48", name="Royal Mail Tracked 48",
                                  price_eur=4.5, days_min=2, days_max=3),
                          Service(code="royalmail-special", name="Royal Mail Special Delivery",
                                  price_eur=11.0, days_min=1, days_max=1))),
    )
}

#: Orders of at least this much (EUR list value) ship free with the carrier's standard service.
FREE_SHIPPING_FROM_EUR: Final = 75.0
#: The shipping address of an order can change while its status is one of these (before
#: dispatch); once a carrier has the parcel it cannot.
ADDRESS_CHANGE_STATUSES: Final = ("placed", "processing")
#: An order can be cancelled (and its payment refunded in full) only before dispatch.
CANCELLABLE_STATUSES: Final = ("placed", "processing")


# -------------------------------------------------------------------------------- returns


@dataclass(frozen=True, kw_only=True)
class Category:
    """A product category and its return window (days after delivery)."""

    code: str
    name: str
    return_days: int


RETURN_WINDOW_DAYS: Final = 30
ELECTRONICS_RETURN_WINDOW_DAYS: Final = 14
CATEGORIES: Final = {
    c.code: c for c in (
        Category(code="apparel", name="Clothing", return_days=RETURN_WINDOW_DAYS),
        Category(code="footwear", name="Footwear", return_days=RETURN_WINDOW_DAYS),
        Category(code="camping", name="Camping", return_days=RETURN_WINDOW_DAYS),
        Category(code="climbing", name="Climbing", return_days=RETURN_WINDOW_DAYS),
        Category(code="bikes", name="Bikes", return_days=RETURN_WINDOW_DAYS),
        Category(code="electronics", name="Electronics",
                 return_days=ELECTRONICS_RETURN_WINDOW_DAYS),
    )
}
#: Return shipping is free with a prepaid label; the label is valid this many days.
RETURN_LABEL_VALID_DAYS: Final = 10
#: Refunds reach the original payment method within this many working days of approval.
REFUND_DAYS: Final = {"card": 5, "paypal": 2, "bank_transfer": 7, "gift_card": 1}
PAYMENT_METHODS: Final = tuple(REFUND_DAYS)
#: Faulty products are repaired, replaced or refunded within this many years of delivery.
WARRANTY_YEARS: Final = 2
#: Damage in transit must be reported within this many days of delivery, with photos.
DAMAGE_REPORT_DAYS: Final = 7


# --------------------------------------------------------------------------------- refunds

#: Refunds above this amount (in the order's currency) need one reviewer's approval.
REFUND_APPROVAL_LIMIT: Final = 100.0
#: Refunds above this amount need two different reviewers.
REFUND_TWO_REVIEWER_LIMIT: Final = 1000.0
#: A single order cannot be refunded more than it was paid; this many refunds per order at most.
MAX_REFUNDS_PER_ORDER: Final = 5


def reviewers_for_refund(amount: float) -> int:
    """How many different people must approve a refund of ``amount`` (0: none)."""
    if amount > REFUND_TWO_REVIEWER_LIMIT:
        return 2
    if amount > REFUND_APPROVAL_LIMIT:
        return 1
    return 0


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A Northwind Club membership plan (billed monthly, in EUR list price)."""

    code: str
    name: str
    monthly_eur: float
    perks: tuple[str, ...]


PLANS: Final = {
    p.code: p for p in (
        Plan(code="trail", name="Trail Club", monthly_eur=4.99,
             perks=("free standard shipping on every order",
                    "early access to seasonal sales")),
        Plan(code="summit", name="Summit Club", monthly_eur=9.99,
             perks=("free express shipping on every order", "60-day returns on all products",
                    "one free gear repair per year")),
        Plan(code="expedition", name="Expedition Club", monthly_eur=19.99,
             perks=("free express shipping on every order", "60-day returns on all products",
                    "unlimited gear repairs", "a personal gear adviser")),
    )
}
#: Club members on these plans get this return window instead of the standard one.
CLUB_RETURN_WINDOW_DAYS: Final = 60
CLUB_LONG_RETURNS: Final = ("summit", "expedition")
#: A subscription invoice unpaid this many days after its due date suspends the membership.
SUBSCRIPTION_GRACE_DAYS: Final = 14


# ---------------------------------------------------------------------------------- accounts

#: A deleted account is anonymised at once; its invoices are kept this many years (tax law).
INVOICE_RETENTION_YEARS: Final = 7
#: Accounts cannot be deleted while an order is on its way or an invoice is unpaid.
PASSWORD_MIN_LENGTH: Final = 12
MAX_ADDRESSES: Final = 10
#: Failed sign-ins before the account is locked for ``LOCKOUT_MINUTES``.
MAX_FAILED_SIGNINS: Final = 5
LOCKOUT_MINUTES: Final = 30
LOYALTY_TIERS: Final = ("bronze", "silver", "gold")


def refund_rule_text() -> str:
    """The refund approval rule in words, as the articles and the desk state it."""
    return (f"Refunds up to {REFUND_APPROVAL_LIMIT:.0f} are issued at once; above "
            f"{REFUND_APPROVAL_LIMIT:.0f} a support lead approves them, and above "
            f"{REFUND_TWO_REVIEWER_LIMIT:,.0f} two different reviewers must approve.")
