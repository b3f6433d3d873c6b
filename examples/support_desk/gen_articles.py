"""Writes the help centre (``help_centre/*.md``) from the shop's facts.

Run once after changing ``policies.py`` or ``catalog.py``, and commit the output::

    python -m examples.support_desk.gen_articles

Each article states facts of this shop (a carrier's services and prices in a country, a
product's return window, what an error code means), taken from ``policies.py`` and
``catalog.py``, so the articles and the tools cannot disagree; a test checks that the
committed files are what this script writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from . import policies as P
from .catalog import APP_ERRORS, PRODUCTS, Product

HERE = Path(__file__).with_name("help_centre")
SYMBOL = {"EUR": "€", "GBP": "£", "USD": "$"}
Article = tuple[str, str, str, tuple[str, ...], str]  # id, title, section, tags, body
#: payment method -> (its name, where its refunds go)
PAYMENT_NAMES = {"card": ("card", "the same card"), "paypal": ("PayPal", "the PayPal account"),
                 "bank_transfer": ("bank transfer", "the bank account it came from"),
                 "gift_card": ("gift card", "the same Northwind gift card")}


def fmt(amount_eur: float, currency: str = "EUR") -> str:
    """A list price (EUR) shown in ``currency``, as the shop rounds it."""
    value = round(amount_eur * P.LIST_RATES[currency], 2)
    return f"{SYMBOL[currency]}{value:,.2f}"


def slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def place(country: P.Country) -> str:
    """The country's name as it reads in a sentence ("the Netherlands")."""
    return f"the {country.name}" if country.code in ("NL", "GB", "US") else country.name


def days(low: int, high: int) -> str:
    if low == high:
        return f"{low} working day" + ("s" if low != 1 else "")
    return f"{low}-{high} working days"


def window_of(product: Product) -> int:
    return P.CATEGORIES[product.category].return_days


def approval_words(amount: float) -> str:
    n = P.reviewers_for_refund(amount)
    return ("is issued at once, without an approval step" if n == 0 else
            "is approved by a support lead before it is paid" if n == 1 else
            "needs the approval of two different reviewers before it is paid")


# ------------------------------------------------------------------------------ shipping


def shipping() -> Iterator[Article]:
    for country in P.COUNTRIES.values():
        cur = country.currency
        for code in country.carriers:
            carrier = P.CARRIERS[code]
            lines = "\n".join(f"- **{s.name}**: {fmt(s.price_eur, cur)}, "
                              f"{days(s.days_min, s.days_max)}" for s in carrier.services)
            yield (f"shipping-{code}-{country.code.lower()}",
                   f"Delivery to {place(country)} with {carrier.name}", "shipping",
                   (code, country.name.lower(), "delivery", "prices"),
                   f"Orders to {place(country)} can travel with {carrier.name}. Prices are in "
                   f"{cur} and include VAT.\n\n{lines}\n\n{carrier.services[0].name} is free "
                   f"for orders worth at least {fmt(P.FREE_SHIPPING_FROM_EUR, cur)}. Delivery "
                   "times count from the day the parcel leaves our warehouse in Tilburg.\n\n"
                   f"{carrier.name} tracking numbers start with "
                   f"`{carrier.tracking_prefix}`; you find yours in the dispatch e-mail and "
                   "on the order page of your account.")
    for carrier in P.CARRIERS.values():
        yield (f"shipping-tracking-{carrier.code}", f"Tracking a {carrier.name} parcel",
               "shipping", (carrier.code, "tracking"),
               f"A {carrier.name} tracking number starts with `{carrier.tracking_prefix}` "
               "followed by ten digits. Open the order in your account, or enter the number "
               f"at {carrier.tracking_url.format(tracking='<number>')}.\n\n"
               "Scans appear as the parcel is picked up, leaves our sorting centre, reaches "
               "the destination hub, goes out for delivery and is delivered. If a parcel has "
               f"no new scan for {carrier.lost_after_days} days, {carrier.name} opens an "
               "investigation; a parcel it cannot find is declared lost and you get a "
               "replacement or a full refund.")
        for svc in carrier.services:
            served = [c for c in P.COUNTRIES.values() if carrier.code in c.carriers]
            prices = "; ".join(f"{fmt(svc.price_eur, c.currency)} to {place(c)}"
                               for c in served)
            yield (f"shipping-service-{svc.code}", f"{svc.name}: what to expect", "shipping",
                   (carrier.code, "service", "delivery time"),
                   f"{svc.name} is a {carrier.name} service. It delivers in "
                   f"{days(svc.days_min, svc.days_max)} from dispatch. Price: {prices}."
                   "\n\nOrders placed before 15:00 CET on a working day usually leave the "
                   "warehouse the same day.")
        yield (f"shipping-redirect-{carrier.code}", f"Redirecting a {carrier.name} parcel",
               "shipping", (carrier.code, "redirect", "address"),
               "Once a parcel is dispatched we can no longer change its address. "
               f"{carrier.name} can redirect it: use the tracking number (it starts with "
               f"`{carrier.tracking_prefix}`) on {carrier.tracking_url.split('/{')[0]}.")
    for country in P.COUNTRIES.values():
        fast = [s for c in country.carriers for s in P.CARRIERS[c].services[1:]]
        options = "; ".join(f"{s.name} ({fmt(s.price_eur, country.currency)}, "
                            f"{days(s.days_min, s.days_max)})" for s in fast)
        yield (f"shipping-express-{country.code.lower()}",
               f"Express delivery to {place(country)}", "shipping",
               ("express", country.name.lower()),
               (f"Express options to {place(country)}: {options}. " if fast else
                f"There is no express service to {place(country)} yet. ")
               + "Express shipping is free for Summit and Expedition Club members.")
    yield from shipping_general()


def shipping_general() -> Iterator[Article]:
    statuses = ", ".join(f"`{s}`" for s in P.ADDRESS_CHANGE_STATUSES)
    yield ("shipping-change-address", "Changing the delivery address of an order",
           "shipping", ("address", "order", "dispatch"),
           f"You can change the delivery address while the order's status is {statuses}, "
           "that is before it is dispatched. The new address must be in the same country as "
           "the old one; for another country, cancel the order and order again.\n\nOnce the "
           "carrier has the parcel the address cannot change with us; use the carrier's "
           "redirect service with your tracking number.")
    yield ("shipping-lost-parcel", "My parcel is lost", "shipping", ("lost", "tracking"),
           "Each carrier investigates a parcel with no scan for a while: "
           + ", ".join(f"{c.name} after {c.lost_after_days} days" for c in P.CARRIERS.values())
           + ". When the carrier declares the parcel lost we send a replacement or refund the "
           f"order in full. {P.refund_rule_text()}")
    yield ("shipping-delayed", "My parcel is delayed", "shipping", ("delay", "tracking"),
           "A `DELAYED` scan means the carrier holds the parcel at a hub, usually for "
           "capacity or weather. The new estimate is within 2 working days. Nothing needs to "
           "be done; if the parcel then has no scan for the carrier's investigation period, "
           "contact us and we open a claim.")
    yield ("shipping-returned-to-sender", "My parcel was returned to sender", "shipping",
           ("returned", "failed delivery"),
           "After two failed delivery attempts the carrier returns the parcel to our "
           "warehouse in Tilburg. When it arrives we refund the order in full to the original "
           "payment method; order again if you still want the items.")
    yield ("shipping-free", "Free shipping", "shipping", ("free shipping", "prices"),
           f"Orders worth at least {fmt(P.FREE_SHIPPING_FROM_EUR)} "
           f"({fmt(P.FREE_SHIPPING_FROM_EUR, 'GBP')} in the United Kingdom, "
           f"{fmt(P.FREE_SHIPPING_FROM_EUR, 'USD')} in the United States) ship free with the "
           "standard service of the carrier. Express services are always charged, except for "
           "Summit and Expedition Club members.")
    yield ("shipping-delivered-not-received", "Tracking says delivered, but I have nothing",
           "shipping", ("delivered", "missing"),
           "Check with neighbours and your building's parcel room, and look at the delivery "
           "scan's location. If the parcel is still missing after one working day, contact us "
           "within 7 days: we open an investigation with the carrier.")
    yield ("shipping-countries", "Where we deliver", "shipping", ("countries",),
           "We deliver to " + ", ".join(f"{place(c)} ({c.currency})" for c in
                                        P.COUNTRIES.values())
           + ". Orders ship from our warehouse in Tilburg, the Netherlands.")


# ------------------------------------------------------------------------------- returns


def returns() -> Iterator[Article]:
    for cat in P.CATEGORIES.values():
        yield (f"returns-{cat.code}", f"Returning {cat.name.lower()}", "returns",
               (cat.code, "return window"),
               f"{cat.name} can be returned within {cat.return_days} days of delivery, "
               f"unused and with its tags or packaging. Summit and Expedition Club members "
               f"have {P.CLUB_RETURN_WINDOW_DAYS} days.\n\nStart the return from the order "
               f"page; you get a free prepaid label valid for {P.RETURN_LABEL_VALID_DAYS} days.")
    for p in PRODUCTS:
        days = window_of(p)
        yield (f"returns-{p.sku.lower()}", f"Returning the {p.name}", "returns",
               (p.sku, p.category, "return window"),
               f"The {p.name} ({p.sku}, {fmt(p.price_eur)}) can be returned within {days} days "
               f"of delivery ({P.CLUB_RETURN_WINDOW_DAYS} days for Summit and Expedition Club "
               f"members).\n\nA full refund of {fmt(p.price_eur)} {approval_words(p.price_eur)}"
               f". The refund goes to the original payment method: "
               f"{P.REFUND_DAYS['card']} working days for cards, "
               f"{P.REFUND_DAYS['paypal']} for PayPal.")
    yield ("returns-how-to", "How to return an item", "returns", ("return", "label"),
           "1. Open the order in your account and choose Return.\n2. Pick the items and a "
           f"reason.\n3. Print the free prepaid label (valid {P.RETURN_LABEL_VALID_DAYS} days) "
           "and drop the parcel at any point of the carrier.\n\nWe refund once the parcel "
           "reaches our warehouse.")
    yield ("returns-electronics-window", "Why electronics have a shorter return window",
           "returns", ("electronics", "return window"),
           f"Electronics can be returned within {P.ELECTRONICS_RETURN_WINDOW_DAYS} days of "
           f"delivery instead of {P.RETURN_WINDOW_DAYS}, because devices are paired to "
           "accounts and batteries age. Reset the device and unpair it from the Northwind app "
           "before you send it back.")
    yield ("returns-damaged", "An item arrived damaged", "returns", ("damaged", "transit"),
           f"Report damage within {P.DAMAGE_REPORT_DAYS} days of delivery with photos of the "
           "item and the box. We send a replacement or refund it; you do not have to wait for "
           "the return to arrive.")
    yield ("returns-wrong-item", "I received the wrong item", "returns", ("wrong item",),
           "Tell us the order number and what arrived. We send the right item at once and a "
           "prepaid label for the wrong one; you pay nothing.")
    yield ("returns-refund-timing", "When will my return be refunded?", "returns",
           ("refund", "timing"),
           "We refund within 2 working days of the parcel reaching our warehouse. The money "
           "then takes " + ", ".join(f"{d} working days ({m.replace('_', ' ')})"
                                     for m, d in P.REFUND_DAYS.items())
           + " to reach the original payment method.")
    yield ("returns-club", "Longer returns for club members", "returns", ("club", "60 days"),
           f"Summit Club and Expedition Club members can return any product within "
           f"{P.CLUB_RETURN_WINDOW_DAYS} days of delivery, electronics included. Trail Club "
           f"members have the standard windows ({P.RETURN_WINDOW_DAYS} days, "
           f"{P.ELECTRONICS_RETURN_WINDOW_DAYS} for electronics).")
    yield ("returns-window-passed", "My return window has passed", "returns",
           ("return window", "warranty"),
           "After the return window an item cannot be returned for a refund, but a faulty "
           f"product is still covered by the {P.WARRANTY_YEARS}-year warranty: we repair, "
           "replace or refund it.")


# ------------------------------------------------------------------------------- billing


def billing() -> Iterator[Article]:
    for method, days in P.REFUND_DAYS.items():
        name, back = PAYMENT_NAMES[method]
        yield (f"billing-refund-{method.replace('_', '-')}", f"Refunds of {name} payments",
               "billing", (method, "refund"),
               f"A refund of a {name} payment goes back to {back} and reaches you within "
               f"{days} working day{'s' if days != 1 else ''} after we issue it. "
               f"{P.refund_rule_text()}")
    for plan in P.PLANS.values():
        perks = "\n".join(f"- {x}" for x in plan.perks)
        yield (f"billing-plan-{plan.code}", f"{plan.name}: price and perks", "billing",
               (plan.code, "subscription", "club"),
               f"{plan.name} costs {fmt(plan.monthly_eur)} a month "
               f"({fmt(plan.monthly_eur, 'GBP')} in the United Kingdom, "
               f"{fmt(plan.monthly_eur, 'USD')} in the United States), billed monthly with an "
               f"invoice due 14 days after it is issued.\n\n{perks}")
    for country in P.COUNTRIES.values():
        vat = (f"Prices include {country.vat_percent}% VAT" if country.vat_percent else
               "Prices do not include sales tax, which your state may charge")
        yield (f"billing-vat-{country.code.lower()}", f"Prices and VAT in {place(country)}",
               "billing", ("vat", country.name.lower(), country.currency),
               f"Orders to {place(country)} are charged in {country.currency}. {vat}. The VAT "
               "amount is shown on every invoice.")
    for method, days_ in P.REFUND_DAYS.items():
        name, back = PAYMENT_NAMES[method]
        yield (f"billing-pay-{method.replace('_', '-')}", f"Paying by {name}", "billing",
               (method, "payment"),
               f"You can pay by {name} in every country we deliver to. If the order is "
               f"refunded, the money goes back to {back} within {days_} working "
               f"day{'s' if days_ != 1 else ''}.")
    for plan in P.PLANS.values():
        yield (f"billing-cancel-{plan.code}", f"Cancelling the {plan.name}", "billing",
               (plan.code, "cancel", "subscription"),
               f"Cancel the {plan.name} any time under Account > Club. It stays active until "
               "the end of the month you paid for, and no further invoices are issued.")
    yield ("billing-refund-approval", "Why some refunds take longer to approve", "billing",
           ("refund", "approval"),
           f"{P.refund_rule_text()} The two approvals must come from two different people; "
           f"nobody approves their own request. One order can have at most "
           f"{P.MAX_REFUNDS_PER_ORDER} refunds and never more than was paid.")
    yield ("billing-invoice-copy", "Getting a copy of an invoice", "billing", ("invoice",),
           "Every order and every club month has an invoice (numbers start with `INV-`). "
           "Download it from your account, or ask us for a copy quoting the invoice or order "
           f"number. We keep invoices for {P.INVOICE_RETENTION_YEARS} years.")
    yield ("billing-unpaid-invoice", "I have an unpaid invoice", "billing",
           ("invoice", "unpaid", "subscription"),
           "Club invoices are due 14 days after they are issued. A membership whose invoice "
           f"is unpaid {P.SUBSCRIPTION_GRACE_DAYS} days after the due date is marked past due "
           "and its perks pause until it is paid.")
    yield ("billing-charged-twice", "I was charged twice", "billing", ("charge", "card"),
           "The second amount is usually an authorisation hold from a declined or repeated "
           "attempt. Your bank releases it within a few days; you are charged once per order.")
    yield ("billing-payment-methods", "Payment methods", "billing", ("payment",),
           "We accept cards, PayPal, bank transfer and Northwind gift cards. Refunds always go "
           "back to the method you paid with.")
    yield ("billing-currencies", "Currencies", "billing", ("currency",),
           "We charge in " + ", ".join(P.CURRENCIES) + " depending on the delivery country. "
           "List prices are set in EUR and converted at fixed rates: "
           + ", ".join(f"1 EUR = {r} {c}" for c, r in P.LIST_RATES.items() if c != "EUR")
           + ".")


# ------------------------------------------------------------------------------ accounts


def accounts() -> Iterator[Article]:
    yield ("accounts-delete", "Deleting your account", "accounts", ("delete", "privacy"),
           "We delete an account on request, after a person on our team approves it. The "
           "account is anonymised at once; invoices are kept for "
           f"{P.INVOICE_RETENTION_YEARS} years as tax law requires. An account cannot be "
           "deleted while an order is on its way or an invoice is unpaid. To confirm, you "
           "type the account's e-mail address.")
    yield ("accounts-password", "Password rules", "accounts", ("password", "security"),
           f"Passwords have at least {P.PASSWORD_MIN_LENGTH} characters. After "
           f"{P.MAX_FAILED_SIGNINS} failed sign-ins the account locks for "
           f"{P.LOCKOUT_MINUTES} minutes; reset your password to unlock it sooner.")
    yield ("accounts-locked", "My account is locked", "accounts", ("locked", "sign-in"),
           f"An account locks for {P.LOCKOUT_MINUTES} minutes after {P.MAX_FAILED_SIGNINS} "
           "failed sign-ins. Wait, or use 'Forgot password' to set a new password at once.")
    yield ("accounts-addresses", "Saving addresses", "accounts", ("address",),
           f"You can save up to {P.MAX_ADDRESSES} addresses and mark one as default. An "
           "order keeps the address it was placed with; change it before dispatch if needed.")
    yield ("accounts-email", "Changing your e-mail address", "accounts", ("email",),
           "Change it under Account > Profile. We send a confirmation link to both the old "
           "and the new address; the change applies once you click it.")
    yield ("accounts-marketing", "Newsletter and marketing e-mails", "accounts",
           ("marketing", "newsletter"),
           "Marketing e-mails are opt-in. Switch them on or off under Account > Preferences; "
           "order and delivery e-mails are always sent.")
    for tier in P.LOYALTY_TIERS:
        yield (f"accounts-tier-{tier}", f"The {tier} loyalty tier", "accounts",
               (tier, "loyalty"),
               f"{tier.capitalize()} is one of our loyalty tiers ({', '.join(P.LOYALTY_TIERS)})"
               ". Your tier shows on your profile and depends on what you ordered over the "
               "last two years; it does not change return windows or refund rules.")
    for country in P.COUNTRIES.values():
        yield (f"accounts-country-{country.code.lower()}",
               f"Accounts in {place(country)}", "accounts", (country.name.lower(), "currency"),
               f"An account with an address in {place(country)} is billed in {country.currency}. "
               "To move to another country, add the new address; orders to it are charged in "
               "that country's currency.")
    yield ("accounts-two-step", "Two-step sign-in", "accounts", ("security", "APP-615"),
           "With two-step sign-in on, we send a code when you sign in on a new device. Codes "
           "are valid for 10 minutes; the app shows error APP-615 for a wrong or expired one.")
    yield ("accounts-sessions", "Why the app signs me out", "accounts", ("APP-101", "session"),
           "App sessions last 30 days. After that the app shows APP-101 and asks you to sign "
           "in again; your basket is kept.")


# ------------------------------------------------------------------------ troubleshooting


def troubleshooting() -> Iterator[Article]:
    for p in PRODUCTS:
        for code, (meaning, action) in p.errors.items():
            yield (f"troubleshooting-{p.sku.lower()}-{code.lower()}",
                   f"{p.name}: error {code}", "troubleshooting", (p.sku, code, "error"),
                   f"Error {code} on the {p.name} means {meaning}. To fix it, {action}.\n\n"
                   f"If it keeps coming back, contact us: the {p.name} has a "
                   f"{P.WARRANTY_YEARS}-year warranty.")
    for code, (meaning, action) in APP_ERRORS.items():
        yield (f"troubleshooting-app-{code.lower()}", f"{P.SHOP.app_name}: error {code}",
               "troubleshooting", (code, "app", "error"),
               f"{code} in the {P.SHOP.app_name} means {meaning}. What to do: {action}.")
    for p in PRODUCTS:
        window = window_of(p)
        yield (f"troubleshooting-faulty-{p.sku.lower()}", f"The {p.name} is faulty",
               "troubleshooting", (p.sku, p.category, "warranty", "faulty"),
               f"Within {window} days of delivery you can simply return the {p.name}. After "
               f"that it is covered by our {P.WARRANTY_YEARS}-year warranty: describe the "
               "fault, add a photo, and we repair, replace or refund it. Damage in transit "
               f"must be reported within {P.DAMAGE_REPORT_DAYS} days of delivery.")


# ------------------------------------------------------------------------------ policies


def policies() -> Iterator[Article]:
    yield ("policies-returns", "Return policy", "policies", ("returns", "policy"),
           f"Standard return window: {P.RETURN_WINDOW_DAYS} days from delivery. Electronics: "
           f"{P.ELECTRONICS_RETURN_WINDOW_DAYS} days. Summit and Expedition Club members: "
           f"{P.CLUB_RETURN_WINDOW_DAYS} days for everything. Return labels are free and "
           f"valid for {P.RETURN_LABEL_VALID_DAYS} days.")
    yield ("policies-refunds", "Refund policy", "policies", ("refund", "approval", "policy"),
           f"{P.refund_rule_text()} Refunds go to the original payment method; at most "
           f"{P.MAX_REFUNDS_PER_ORDER} per order and never more than was paid.")
    yield ("policies-cancellation", "Cancellation policy", "policies", ("cancel", "policy"),
           "An order can be cancelled while it is " + " or ".join(P.CANCELLABLE_STATUSES)
           + ", before dispatch; the payment is refunded in full. Cancelling an order over "
           f"{P.REFUND_APPROVAL_LIMIT:.0f} is approved by a support lead first, over "
           f"{P.REFUND_TWO_REVIEWER_LIMIT:,.0f} by two reviewers.")
    yield ("policies-shipping", "Shipping policy", "policies", ("shipping", "policy"),
           "We ship with " + ", ".join(c.name for c in P.CARRIERS.values()) + " from Tilburg. "
           f"Standard shipping is free from {fmt(P.FREE_SHIPPING_FROM_EUR)}. A parcel the "
           "carrier declares lost is replaced or refunded in full.")
    yield ("policies-warranty", "Warranty", "policies", ("warranty", "policy"),
           f"Every product has a {P.WARRANTY_YEARS}-year warranty from delivery against "
           "manufacturing faults. Wear and tear and accidental damage are not covered.")
    yield ("policies-privacy", "Privacy and your data", "policies", ("privacy", "policy"),
           "We keep your profile while your account exists. Deleting the account anonymises "
           f"it; invoices stay {P.INVOICE_RETENTION_YEARS} years as tax law requires. "
           "Support agents never ask for your password or full card number.")
    yield ("policies-contact", "Contacting support", "policies", ("contact",),
           f"Write to {P.SHOP.support_email} or use the chat in the {P.SHOP.app_name}. Phone "
           f"support is open {P.SHOP.phone_hours}.")
    yield ("policies-club-terms", "Northwind Club terms", "policies", ("club", "policy"),
           "Memberships are billed monthly and can be cancelled any time, effective at the "
           f"end of the paid month. An invoice unpaid {P.SUBSCRIPTION_GRACE_DAYS} days after "
           "its due date pauses the perks until it is paid.")
    for country in P.COUNTRIES.values():
        carriers = ", ".join(P.CARRIERS[c].name for c in country.carriers)
        yield (f"policies-country-{country.code.lower()}", f"Shopping from {place(country)}",
               "policies", (country.name.lower(), "policy"),
               f"Orders to {place(country)} are charged in {country.currency} and shipped with "
               f"{carriers}. The return windows and refund rules are the same in every "
               "country.")
    for plan in P.PLANS.values():
        longer = plan.code in P.CLUB_LONG_RETURNS
        yield (f"policies-plan-{plan.code}", f"{plan.name} membership rules", "policies",
               (plan.code, "club", "policy"),
               f"{plan.name} ({fmt(plan.monthly_eur)} a month) "
               + (f"extends every return window to {P.CLUB_RETURN_WINDOW_DAYS} days."
                  if longer else "keeps the standard return windows.")
               + " Refund approvals follow the same limits as for everyone.")


# -------------------------------------------------------------------------------- output


def articles() -> list[Article]:
    """Every article, in a fixed order."""
    out: list[Article] = []
    for part in (shipping, returns, billing, accounts, troubleshooting, policies):
        out.extend(part())
    return out


def render(article: Article) -> str:
    ident, title, section, tags, body = article
    return (f"---\nid: {ident}\ntitle: {title}\nsection: {section}\ntags: {', '.join(tags)}\n"
            f"---\n# {title}\n\n{body}\n")


def write(folder: Path = HERE) -> int:
    """Write every article to ``folder`` (removing stale ones); returns how many."""
    folder.mkdir(exist_ok=True)
    made = articles()
    names = {f"{a[0]}.md" for a in made}
    if len(names) != len(made):
        raise SystemExit("two articles share an id")
    for old in folder.glob("*.md"):
        if old.name not in names:
            old.unlink()
    for article in made:
        (folder / f"{article[0]}.md").write_text(render(article), encoding="utf-8")
    return len(made)


if __name__ == "__main__":
    print(f"wrote {write()} articles to {HERE}")
