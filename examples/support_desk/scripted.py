"""A scripted specialist model for tests and the demo: keel's ``FunctionModel`` playing a
competent support agent, offline and deterministic.

``specialist_model()`` reads the customer's message and the tool results so far and does
what a careful specialist would: look the order up before answering, check eligibility
before a return, refund the amount the customer named (or, when they named none, the
amount left on the order, which keel's taint guard then sends for approval because it came
from a tool's output), quote the help centre with the article id, and never follow
instructions found in tool output. Each reply is built from the tool results with the
desk's templates, so answers are stable across runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from keel.core import Message, ModelSettings, TextPart, ToolCallPart, ToolResultPart, ToolSpec
from keel.guard import undelimit
from keel.testing import FunctionModel, call

from . import intents, templates

_AMOUNT: Final = re.compile(r"(?:€|eur\s*|EUR\s*)?(\d{1,5}(?:[.,]\d{2}))\b")
_EMAIL: Final = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _last_user(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            text = "".join(p.text for p in messages[i].parts if isinstance(p, TextPart))
            return text, list(messages[i + 1:])
    return "", []


def _request_of(messages: Sequence[Message], text: str) -> str:
    """The customer's request: the last user message, or after a handoff (whose last user
    turn is the handing agent's note) the latest one that names an order or invoice."""
    if intents.ORDER_ID.search(text) or intents.INVOICE_ID.search(text):
        return text
    for m in reversed(messages):
        said = "".join(p.text for p in m.parts if isinstance(p, TextPart))
        if m.role == "user" and (intents.ORDER_ID.search(said)
                                 or intents.INVOICE_ID.search(said)):
            return said
    return text


def _results(after: list[Message]) -> list[tuple[str, Any, bool]]:
    """(tool, result as data or text, is_error) of this turn, in order."""
    out: list[tuple[str, Any, bool]] = []
    for m in after:
        for p in m.parts:
            if isinstance(p, ToolResultPart):
                raw = undelimit(p.content)
                try:
                    data: Any = json.loads(raw)
                except ValueError:
                    data = raw
                out.append((p.tool_name, data, p.is_error))
    return out


def _calls(after: list[Message]) -> list[str]:
    return [p.tool_name for m in after for p in m.parts if isinstance(p, ToolCallPart)]


#: Which specialist owns an intent, for handing over when this one lacks the tool.
_OWNERS: Final = (("refund_order", "returns"), ("cancel_order", "shipping"),
                  ("return_eligibility", "returns"), ("track_shipment", "shipping"),
                  ("invoice_copy", "billing"), ("delete_account", "account"))


def _wants_refund(low: str) -> bool:
    return "refund" in low or "money back" in low


def _wants_return(low: str) -> bool:
    return "return" in low or "send back" in low or "send it back" in low


def _intended(text: str) -> str | None:
    """The tool the customer's request needs, whoever has it."""
    low = text.lower()
    if intents.ORDER_ID.search(text):
        if _wants_refund(low):
            return "refund_order"
        if "cancel" in low:
            return "cancel_order"
        if _wants_return(low):
            return "return_eligibility"
        if any(w in low for w in ("where", "track", "arriv", "deliver")):
            return "track_shipment"
    if intents.INVOICE_ID.search(text):
        return "invoice_copy"
    if "delete" in low and "account" in low:
        return "delete_account"
    return None


def handoff(text: str, names: set[str]) -> ToolCallPart | None:
    """A transfer to the specialist who has the tool this request needs, if not here."""
    needed = _intended(text)
    if needed is None or needed in names:
        return None
    owner = dict(_OWNERS).get(needed)
    if owner and f"transfer_to_{owner}" in names:
        return call(f"transfer_to_{owner}", {"reason": f"the customer needs {needed}"})
    return None


def first_call(text: str, names: set[str]) -> ToolCallPart | str:
    """The first tool call for ``text`` among the offered tools (or a question back)."""
    low = text.lower()
    order = intents.ORDER_ID.search(text)
    oid = order.group(0).upper() if order else None
    invoice = intents.INVOICE_ID.search(text)
    amount = _AMOUNT.search(text.replace(oid or "\0", ""))
    if oid and "refund_order" in names and _wants_refund(low):
        if amount:
            value = float(amount.group(1).replace(",", "."))
            return call("refund_order", {"order_id": oid, "amount": value,
                                         "reason": "customer asked for a refund"})
        return call("order_status", {"order_id": oid})
    if oid and "cancel_order" in names and "cancel" in low:
        return call("cancel_order", {"order_id": oid, "reason": "customer asked to cancel"})
    if oid and "return_eligibility" in names and _wants_return(low):
        return call("return_eligibility", {"order_id": oid})
    if oid and "track_shipment" in names and any(w in low for w in ("where", "track",
                                                                    "arriv", "deliver")):
        return call("track_shipment", {"order_id": oid})
    if oid and "order_status" in names:
        return call("order_status", {"order_id": oid})
    if invoice and "invoice_copy" in names:
        return call("invoice_copy", {"invoice_id": invoice.group(0).upper()})
    if "invoice" in low and "list_invoices" in names:
        return call("list_invoices", {})
    if any(w in low for w in ("membership", "subscription", "club")) \
            and "subscription_details" in names:
        return call("subscription_details", {})
    if "delete" in low and "account" in low and "delete_account" in names:
        email = _EMAIL.search(text)
        if email:
            return call("delete_account", {"confirm_email": email.group(0)})
    if "search_help" in names:
        return call("search_help", {"query": text[:300]})
    return templates.ASK_ORDER


def follow_up(text: str, done: list[tuple[str, Any, bool]],
              names: set[str]) -> ToolCallPart | None:
    """A second call after the first result: a refund of what is left on the order."""
    tool, data, error = done[-1]
    low = text.lower()
    if tool == "order_status" and not error and isinstance(data, dict) and _wants_refund(low) \
            and "refund_order" in names and len(done) == 1:
        left = round(float(data["total"]) - float(data.get("refunded") or 0.0), 2)
        if left > 0:
            return call("refund_order", {"order_id": data["order_id"], "amount": left,
                                         "reason": "customer asked for a refund"})
    if tool == "return_eligibility" and not error and isinstance(data, dict) \
            and data.get("eligible") and "create_ticket" in names and len(done) == 1:
        return call("create_ticket", {"subject": f"Return of order {data['order_id']}",
                                      "message": text[:2000] or "Return requested",
                                      "category": "returns", "order_id": data["order_id"]})
    return None


def answer(done: list[tuple[str, Any, bool]]) -> str:
    """The final answer from the last tool result, with the desk's templates."""
    tool, data, error = done[-1]
    if tool == "create_ticket" and len(done) > 1 and isinstance(data, dict) \
            and "ticket_id" in data:
        return templates.return_authorised(done[0][1], data["ticket_id"])
    failure = data.get("error") if isinstance(data, dict) else None
    if error or failure is not None or not isinstance(data, dict | list):
        message = failure.get("message") if isinstance(failure, dict) else str(data)
        return f"Sorry, I could not do that: {str(message)[:400]}"
    if tool == "track_shipment":
        return templates.tracking(data)  # type: ignore[arg-type]
    if tool == "order_status":
        return templates.order_status(data)  # type: ignore[arg-type]
    if tool == "return_eligibility":
        return templates.return_eligibility(data)  # type: ignore[arg-type]
    if tool == "invoice_copy":
        return templates.invoice_copy(data)  # type: ignore[arg-type]
    if tool == "list_invoices":
        return templates.invoice_list(data)  # type: ignore[arg-type]
    if tool == "search_help" and isinstance(data, list):
        if not data:
            return "I could not find that in our help centre; a colleague will follow up."
        best = data[0]
        return templates.faq(best["title"], best["text"], best["article"])
    if tool == "refund_order" and isinstance(data, dict):
        return (f"Your refund of {data.get('amount')} {data.get('currency', '')} for order "
                f"{data.get('order_id')} is issued ({data.get('refund_id')}).").replace("  ", " ")
    if tool == "cancel_order" and isinstance(data, dict):
        return f"Order {data.get('order_id')} is cancelled; the payment is refunded in full."
    return "Done: " + json.dumps(data, ensure_ascii=False)[:500]


_SENTENCE: Final = re.compile(r"[^.!?\n]*[A-Za-z][^.!?\n]*[.!?]")


def grounded(done: list[tuple[str, Any, bool]]) -> str:
    """A RAG answer: the first sentence of the best chunk, quoted, citing its id."""
    _, data, _ = done[-1]
    results = data.get("results") if isinstance(data, dict) else None
    if not results:
        return "I don't know: the help centre does not answer this."
    best = results[0]
    body = "\n".join(line for line in str(best["text"]).splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))
    sentences = [m.group(0).strip() for m in _SENTENCE.finditer(body)][:1]
    return " ".join(f"{s[:-1]} [{best['id']}]{s[-1]}" for s in sentences) \
        or "I don't know: the help centre does not answer this."


def _respond(messages: list[Message], tools: list[ToolSpec],
             settings: ModelSettings) -> Any:
    names = {t.name for t in tools}
    text, after = _last_user(messages)
    done = _results(after)
    if "search_docs" in names:  # the policy agent inside keel's RAG
        if text.startswith("Your answer was checked"):  # a revision: the first search's best
            return grounded(_results(messages)[:1])
        return call("search_docs", {"query": text[:300], "k": 3}) if not done \
            else grounded(done)
    if not done:
        request = _request_of(messages, text)
        return handoff(request, names) or first_call(request, names)
    if len(_calls(after)) < 3:
        nxt = follow_up(_request_of(messages, text), done, names)
        if nxt is not None:
            return nxt
    return answer(done)


def specialist_model(name: str = "test:desk-specialist") -> FunctionModel:
    """A fresh scripted specialist model (one per desk; it keeps its requests)."""
    return FunctionModel(_respond, name=name)
