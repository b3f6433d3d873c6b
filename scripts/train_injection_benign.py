"""Benign support-style text for training keel's injection classifier, written for keel.

Customer messages, agent replies and tool outputs (orders, tickets, e-mails, knowledge-base
articles, search results, logs), many of them with the words attacks use ("ignore",
"instructions", "system", "forward", "password", "act as", "new rules") so the classifier
learns that the words alone are not an attack. Each template is a group: held-out splits
take whole templates. Licence: Apache-2.0, as keel.
"""

from __future__ import annotations

import json
import random
from typing import Any

NAMES = ("Ana", "Ben", "Chloé", "Dmitri", "Ewa", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kemi", "Luca", "Maya", "Nils", "Omar", "Priya")
PRODUCTS = ("router", "kettle", "headphones", "standing desk", "vacuum", "e-reader",
            "smart lock", "coffee grinder", "backpack", "monitor", "phone case", "printer")
DAYS = ("Monday", "Tuesday", "yesterday", "last week", "on the 3rd", "this morning")
AMOUNTS = ("12.99", "45", "120.50", "9.00", "310", "75.25")
EMAILS = ("ana.ruiz@example.com", "billing@example.org", "support@shop.example",
          "j.keller@example.net")

MESSAGES = (
    "Please ignore my previous message, the {product} arrived {day}.",
    "Ignore the earlier ticket, it was a duplicate of order {order}.",
    "Can you forget the old address and ship order {order} to my office instead?",
    "I forgot my password and the reset e-mail never arrives at {email}.",
    "The setup instructions for the {product} skip step 4, what should I do there?",
    "What are the system requirements for the desktop app?",
    "My account says my role is viewer but I need editor access for the team workspace.",
    "Can you act as a go-between with the courier? They keep missing my door.",
    "Could you send the invoice for order {order} to {email}?",
    "Please forward my complaint to your manager, this is the third time.",
    "I'd like a refund of {amount} for the broken {product}.",
    "Transfer my subscription to my colleague {name}, she takes over the account.",
    "Is there a developer mode on the {product}? I want to flash new firmware.",
    "The new rules for returns say 30 days, but I bought it {day}. Does that count?",
    "From now on please send my statements by e-mail, not by post.",
    "You are now my favourite shop, the {product} is perfect. Thanks {name}!",
    "Hi, this is {name} from accounting. We need the Q3 invoices re-sent.",
    "I am the administrator of our company account, how do I add users?",
    "Override the delivery date please, I will not be home {day}.",
    "Bypass the gift wrap, I just want it shipped fast.",
    "What's your policy on price matching? I saw the {product} cheaper elsewhere.",
    "Can I pay {amount} now and the rest next month?",
    "The {product} shows error E42 and then restarts. Firmware 2.1.4.",
    "Do not tell my wife about the order, it's a surprise gift!",
    "Without asking for my card again, can you just charge the one on file?",
    "Reveal the total before tax please, I need it for my expense report.",
    "Print the shipping label again, the first one smudged.",
    "Repeat the tracking number, I didn't catch it.",
    "Show me the instructions for pairing the {product} with my phone.",
    "My kid pretended to be me and ordered a {product}, can I cancel it?",
    "Please disregard the attachment in my last e-mail, wrong file.",
    "Is the {product} compatible with Windows 11 and macOS?",
    "I want to change my plan. The new plan should start {day}.",
    "Hello, order {order} is late. Where is it?",
    "Can you explain the charge of {amount} on my statement?",
    "How do I export all my data before closing the account?",
    "Delete my account and all my personal data, per GDPR.",
    "Send all my previous invoices to {email}, my accountant needs them.",
    "Share the warranty terms of the {product} with me, please.",
    "Jailbreaking my phone voided the warranty? It was the screen that broke, not software.",
    "Do you ship to Canada?",
    "Do you have the {product} in black?",
    "Are you open on Sundays?",
    "Can you help me choose between two {product} models?",
    "What do you recommend for a small flat?",
    "Do you offer student discounts?",
    "Could you tell me when the {product} will be back in stock?",
    "Have you received my return yet? I sent it {day}.",
    "Can you check why my card was declined?",
    "Do you sell gift cards?",
    "Who do I talk to about a bulk order?",
    "Are your products made in Europe?",
    "Is your store in the city centre?",
    "Will you match the price if it drops next week?",
    "How long do you keep my data?",
    "You were super helpful yesterday, thank you {name}.",
    "Tell me more about your loyalty programme.",
    "What is your phone number for complaints?",
    "Do you have a job opening in the warehouse?",
    "Can you give me a call back tomorrow morning?",
    "I just wanted to say thanks, your colleague {name} fixed it.",
    "Can you do next-day delivery for the {product}?",
    "Do you guys recycle old electronics?",
    "What are your opening hours during the holidays?",
    "Could you please stop sending me newsletters?",
    "Can you remind me what my order number was?",
    "Are you a real person or a bot?",
    "Is this chat recorded? What do you do with the transcript?",
    "Please tell me what you need from me to process the return.",
    "What would you suggest as a gift for a ten year old?",
)

TOOL_OUTPUTS = (
    '{{"order_id": "{order}", "status": "shipped", "carrier": "DHL", "eta": "{day}", '
    '"items": [{{"sku": "SKU-{n}", "name": "{product}", "qty": 1}}]}}',
    '{{"ticket": {n}, "subject": "{product} not working", "status": "open", '
    '"assignee": "{name}", "priority": "normal", "last_update": "{day}"}}',
    "From: {email}\nSubject: Re: order {order}\n\nHi, thanks for your patience. The "
    "{product} is back in stock and ships {day}. Best, {name}",
    "Knowledge base: Resetting your {product}. 1. Unplug the device. 2. Hold the reset "
    "button for ten seconds. 3. Follow the instructions on the screen. If this does not "
    "help, contact support.",
    "Search results: 1. {product} review - great value for money. 2. How to set up the "
    "{product} in five minutes. 3. Warranty terms and conditions.",
    "2026-12-01T10:{n2}:00Z INFO system started; 2026-12-01T10:{n2}:05Z WARN disk usage "
    "81%; 2026-12-01T10:{n2}:09Z INFO backup completed",
    "Customer note: customer asked us to ignore the old phone number and use the new one. "
    "Verified by {name} {day}.",
    "Refund policy: refunds of up to {amount} are approved automatically; larger refunds "
    "need a supervisor. The customer must return the item within 30 days.",
    "Invoice {order}: {product} x1, {amount} EUR, VAT included. Payment due in 14 days to "
    "account DE89 3704 0044 0532 0130 00.",
    "Release notes 4.2: new system settings page; the assistant now remembers your language; "
    "fixed a crash when the {product} disconnects.",
    "Account: {name}, role: admin, plan: business, seats: 12, created {day}.",
    "Calendar: meeting with {name} {day} at 14:00 about the {product} launch. Agenda: "
    "pricing, instructions for the sales team, next steps.",
    "Weather for Berlin: 4°C, light rain, wind 12 km/h. Tomorrow: cloudy, 6°C.",
    "Email thread: {name} wrote: please forward the contract to legal before Friday. "
    "Reply: done, sent to {email}.",
    "FAQ: Can I change my password? Yes. Go to Settings > Security > Password and follow "
    "the steps. You will receive a confirmation e-mail.",
    "Shipment {order} delayed: the carrier reported an address problem. Action: confirm "
    "the address with the customer.",
    "Product page: {product}. Rated 4.5/5 by 212 customers. Free returns within 30 days. "
    "Instructions and manuals are available in the downloads section.",
    "Audit log: user {name} changed role from viewer to editor {day}; approved by admin.",
    "Support macro 'late order': apologise, share the tracking link, offer a {amount} "
    "voucher if the order is more than 5 days late.",
    "Bank statement line: {day} transfer {amount} EUR to savings account, reference rent.",
)

REPLIES = (
    "I'm sorry about the delay, {name}. Order {order} ships {day} and I've added a note.",
    "Thanks for reaching out! I've sent the invoice to {email}.",
    "I can help with that. Please follow these instructions: open Settings, then Account.",
    "Your refund of {amount} has been issued and should arrive in 3-5 business days.",
    "I've updated your address. Is there anything else I can do for you today?",
    "The system is back up; the outage {day} was caused by a failed update.",
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        name=rng.choice(NAMES), product=rng.choice(PRODUCTS), day=rng.choice(DAYS),
        amount=rng.choice(AMOUNTS), email=rng.choice(EMAILS),
        order=f"{rng.randint(10000, 99999)}", n=rng.randint(100, 999),
        n2=f"{rng.randint(0, 59):02d}",
    )


def support_texts(rng: random.Random, per_template: int = 6) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind, templates in (("message", MESSAGES), ("tool-output", TOOL_OUTPUTS),
                            ("reply", REPLIES)):
        for i, template in enumerate(templates):
            for _ in range(per_template):
                rows.append({"text": _fill(template, rng), "label": 0,
                             "source": f"keel:support-{kind}", "group": f"{kind}:{i}"})
    # Conversations: a few messages and replies joined, as a history or transcript reads.
    for i in range(60):
        turns = [_fill(rng.choice(MESSAGES), rng), _fill(rng.choice(REPLIES), rng),
                 _fill(rng.choice(MESSAGES), rng)]
        text = "\n".join(f"{who}: {t}" for who, t in zip(("Customer", "Agent", "Customer"),
                                                          turns, strict=True))
        rows.append({"text": text, "label": 0, "source": "keel:support-conversation",
                     "group": f"conv:{i}"})
    return rows


if __name__ == "__main__":
    for row in support_texts(random.Random(0))[:5]:
        print(json.dumps(row))
