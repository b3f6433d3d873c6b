"""What the desk's router knows: the routes, the code rules for the obvious cases and the
labelled examples the embedding router votes with.

Routes: ``shipping``, ``returns``, ``billing``, ``technical``, ``account`` (the five
specialists), ``policy`` (questions answered from the help centre) and ``other`` (the
catch-all: a person). Rules fire on unambiguous wording (an order number with "where", an
invoice number, "password"); everything else is decided by the k nearest examples below,
with a confidence threshold under which the desk asks the customer to say more.
"""

from __future__ import annotations

import re
from typing import Final

ROUTES: Final = ("shipping", "returns", "billing", "technical", "account", "policy", "other")
SPECIALISTS: Final = ("shipping", "returns", "billing", "technical", "account")

ORDER_ID: Final = re.compile(r"\bNW-\d{6}\b", re.IGNORECASE)
INVOICE_ID: Final = re.compile(r"\bINV-\d{6}\b", re.IGNORECASE)
TICKET_ID: Final = re.compile(r"\bT-\d{5}\b", re.IGNORECASE)
_WORD: Final = re.compile(r"[^\W\d_]{3,}")


def too_vague(message: str) -> bool:
    """Whether a message says too little to route ("hello?", "help", "hi, I have a
    question"): no order, invoice or ticket number and fewer than three words."""
    if ORDER_ID.search(message) or INVOICE_ID.search(message) or TICKET_ID.search(message):
        return False
    return len(_WORD.findall(message)) < 3

#: (route, regex) in order; the first match wins with confidence 1.0.
RULES: Final = (
    ("policy", r"^(?!.*\b(NW|INV)-\d{6}).*\b(policy|policies|terms|warranty|rules|which "
               r"countries|payment methods)\b"),
    ("account", r"\b(password|log ?in|sign ?in|two-factor|delete my account|close my account"
                r"|my e-?mail address)\b"),
    ("billing", r"\bINV-\d{6}\b|\b(invoice|charged twice|double charged|club membership"
                r"|subscription)\b"),
    ("returns", r"\bNW-\d{6}\b.*\b(return|send (it|them) back|refund)|\b(return|send (it|them)"
                r" back|refund)\b.*\bNW-\d{6}\b"),
    ("shipping", r"\bNW-\d{6}\b.*\b(where|track|arriv|deliver|shipped|dispatch|address|"
                 r"cancel|status)|\b(where|track|arriv|deliver|shipped|dispatch|address|"
                 r"cancel|status)\w*\b.*\bNW-\d{6}\b"),
    ("technical", r"\berror\s+E\d{2}\b|\b(firmware|won't charge|does not charge|won't turn on"
                  r"|app crash\w*|bluetooth|pairing)\b"),
)

EXAMPLES: Final[dict[str, tuple[str, ...]]] = {
    "shipping": (
        "where is my parcel", "my package has not arrived yet", "when will my order arrive",
        "can you track my delivery", "the courier says delivered but nothing came",
        "my parcel seems to be lost", "has my order been shipped yet",
        "I need to change the delivery address", "the tracking has not updated for days",
        "which carrier delivers my order", "my delivery is late",
        "is my order on its way", "how long does delivery take to Germany",
        "can I have it sent to another address", "I want to cancel my order before it ships",
        "the driver could not deliver it", "the parcel is stuck at the hub",
        "what is the status of my order", "it says out for delivery since yesterday",
        "my shipment was returned to sender",
    ),
    "returns": (
        "I want to return my jacket", "how do I send something back",
        "the boots are too small, can I return them", "I need a return label",
        "I would like a refund for my order", "the item arrived damaged",
        "can I still return the watch", "I received the wrong size",
        "where do I send the return", "my refund has not come through",
        "I changed my mind about the tent", "the product is not what I expected",
        "I want my money back for the broken stove", "exchange for a bigger size",
        "the zip broke after a week, I want to return it", "how long is the return window",
        "return the parka please", "the colour is different from the photo",
        "I'd like to return part of my order", "is the return free",
    ),
    "billing": (
        "I was charged twice", "can I get a copy of my invoice",
        "why is there an extra charge on my card", "my payment failed",
        "I need an invoice for my company", "how do I pay my unpaid invoice",
        "what payment methods do you accept", "cancel my club membership",
        "my subscription renewal failed", "the price I paid is wrong",
        "I want a VAT receipt", "when will I be charged",
        "you took money from my account without an order", "update my card details",
        "can I pay with PayPal", "upgrade my plan to Summit",
        "my invoice shows the wrong address", "I have a question about a charge",
        "the membership fee is too high", "was my payment received",
    ),
    "technical": (
        "my watch shows error E12", "the GPS watch won't charge", "the app keeps crashing",
        "the bike lights do not turn on", "how do I update the firmware",
        "the headlamp flickers", "bluetooth pairing fails", "the display is blank",
        "the battery drains very fast", "my tracker does not sync with the app",
        "the stove won't ignite", "the e-bike motor makes a noise",
        "the device resets itself", "the water filter is slow",
        "the compass is not accurate", "how do I reset the device to factory settings",
        "the screen freezes", "the charger gets hot", "the sensor gives wrong readings",
        "the power bank does not charge my phone",
    ),
    "account": (
        "I forgot my password", "I can't log in", "delete my account",
        "change my e-mail address", "my account is locked", "update my phone number",
        "how do I change my name on the account", "turn on two-factor authentication",
        "I want all my data removed", "unsubscribe me from the newsletter",
        "what loyalty tier am I", "add a new address to my account",
        "my account was hacked", "I did not get the sign-in code",
        "close my account please", "change my marketing preferences",
        "how do I see my order history", "the verification e-mail never arrived",
        "I want to download my personal data", "merge my two accounts",
    ),
    "policy": (
        "what is your return policy", "do you ship to the United States",
        "how long is the warranty", "is shipping free", "what are the shipping costs to France",
        "which countries do you deliver to", "what does the Summit Club include",
        "how long do refunds take to arrive", "what is the return window for electronics",
        "do you offer price matching", "what are your terms for damaged items",
        "how does the club membership work", "do club members get longer returns",
        "what happens to my invoices if I delete my account", "what are the delivery times",
        "how do I report a damaged delivery", "can I return sale items",
        "what is the password policy", "how much does express shipping cost",
        "who approves large refunds",
    ),
    "other": (
        "I want to speak to a manager", "can I talk to a human", "I have a complaint",
        "do you have a physical store", "are you hiring", "I want to give feedback",
        "can I become a reseller", "this is urgent please call me",
        "I want to make a partnership proposal", "do you sponsor events",
        "what are your opening hours", "I need to speak to someone now",
        "I want to file a formal complaint", "can I get a discount code",
        "the service was terrible", "do you sell gift cards in store",
        "press enquiry", "I have a legal question", "connect me to an agent",
    ),
}
