"""The desk's standard processes as keel Workflows with gates, run without a model.

Each workflow takes a request (JSON text: the customer, the message, the order or invoice
number, the run id) and ends in a :data:`Reply` dict: the templated ``text``, the
``outcome`` (``answered``, ``refused`` or ``person``: a colleague must act), the
``workflow`` and, for help-centre answers, ``citations``.

=====================  ===========================================================
workflow               steps (gates in capitals)
=====================  ===========================================================
order_status           find order (+ tracking) -> ORDER_ON_ACCOUNT -> lost? -> answer
return_authorisation   check eligibility -> ORDER_ON_ACCOUNT -> eligible? -> open the
                       return case (a ticket: one ``ticket_created`` effect) -> answer
address_change         find order -> ORDER_ON_ACCOUNT -> before dispatch? -> person /
                       refusal with the carrier's redirect advice
invoice_copy           find invoice (or list them) -> INVOICE_ON_ACCOUNT -> answer
help_answer            search the help centre -> confident? -> quoted answer with its
                       article / person
=====================  ===========================================================

A gate that fails (``keel.patterns.GateFailed``) stops the workflow before any later step:
the desk answers with the refusal of :data:`GATE_REPLIES`, the same words a number that does
not exist gets, so another customer's order is never revealed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Final

from keel.patterns import Branch, Corpus, Gate, Workflow

from . import actions, templates
from . import lookups as L
from .db import Database

Reply = dict[str, Any]

#: The gates whose failure the desk answers with a refusal template (by gate name).
GATE_REPLIES: Final = {"order_on_account": templates.NO_ORDER,
                       "invoice_on_account": templates.NO_INVOICE}
#: A help-centre hit must score at least this to be quoted without a person.
HELP_MIN_SCORE: Final = 0.55


def request(customer: str, message: str, *, run_id: str, order_id: str | None = None,
            invoice_id: str | None = None, section: str | None = None) -> str:
    """A workflow's input: the request as JSON text."""
    return json.dumps({"customer": customer, "message": message, "run": run_id,
                       "order_id": order_id, "invoice_id": invoice_id, "section": section})


def _parse(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("customer"), str):
        raise ValueError("a desk workflow takes processes.request(...) JSON")
    return data


def _reply(text: str, outcome: str, workflow: str, **extra: Any) -> Reply:
    return {"text": text, "outcome": outcome, "workflow": workflow, **extra}


class HelpCentre:
    """The help centre's search index, built on first use (2-3 s, WordLlama offline) and
    shared by every workflow and specialist of a desk."""

    def __init__(self, corpus: Corpus | None = None) -> None:
        self._corpus = corpus
        self._lock = threading.Lock()

    @property
    def corpus(self) -> Corpus:
        with self._lock:
            if self._corpus is None:
                from .help_centre import build_corpus

                self._corpus = build_corpus(None)
            return self._corpus

    def search(self, query: str, *, k: int = 3, sections: tuple[str, ...] = ()
               ) -> list[dict[str, Any]]:
        """The best passages for ``query`` (in ``sections`` when given), as plain data."""
        hits = self.corpus.search(query[:1000], k=max(k, 8))
        out = []
        for hit in hits:
            section = hit.chunk.metadata.get("help_section", "")
            if sections and section not in sections:
                continue
            out.append({"article": hit.chunk.doc_id, "title": hit.chunk.title,
                        "text": hit.chunk.text, "score": round(hit.score, 4),
                        "section": section})
        return out[:k]


def order_status(db: Database) -> Workflow:
    """Order status and tracking: the order, its parcel's last scans, a lost parcel to a
    person."""
    def find(text: str) -> dict[str, Any]:
        req = _parse(text)
        try:
            order = L.order_status(db, req["customer"], req["order_id"])
        except L.NotFound:
            return {"found": False}
        track = None
        if order.get("shipment"):
            track = L.track_shipment(db, req["customer"], req["order_id"])
        return {"found": True, "order": order, "track": track}

    def lost(found: dict[str, Any]) -> Reply:
        return _reply(templates.tracking(found["track"]), "person", "order_status",
                      reason="parcel lost: replacement or refund")

    def answer(found: dict[str, Any]) -> Reply:
        if found["track"] is not None and found["order"]["status"] == "dispatched":
            text = templates.tracking(found["track"])
        else:
            text = templates.order_status(found["order"])
        return _reply(text, "answered", "order_status")

    return Workflow("order_status", [
        find,
        Gate("order_on_account", lambda f: f["found"], "no such order on this account"),
        Branch(lambda f: (f["track"] or {}).get("status") == "lost", name="lost_parcel",
               then=lost, otherwise=answer),
    ])


def return_authorisation(db: Database) -> Workflow:
    """Return authorisation and label: eligibility, then a return case (ticket) is opened."""
    def check(text: str) -> dict[str, Any]:
        req = _parse(text)
        try:
            result = L.return_eligibility(db, req["customer"], req["order_id"])
        except L.NotFound:
            return {"found": False}
        return {"found": True, "check": result, "req": req}

    def authorise(found: dict[str, Any]) -> Reply:
        req = found["req"]
        call = actions.Call(customer_id=req["customer"], run_id=req["run"],
                            idempotency_key=f"{req['run']}/return_authorisation/open_case")
        ticket = actions.create_ticket(
            db, call, subject=f"Return of order {req['order_id']}",
            message=req["message"][:4000] or "Return requested", category="returns",
            order_id=req["order_id"])
        return _reply(templates.return_authorised(found["check"], ticket["ticket_id"]),
                      "answered", "return_authorisation", ticket=ticket["ticket_id"])

    def refuse(found: dict[str, Any]) -> Reply:
        return _reply(templates.return_refused(found["check"]), "refused",
                      "return_authorisation")

    return Workflow("return_authorisation", [
        check,
        Gate("order_on_account", lambda f: f["found"], "no such order on this account"),
        Branch(lambda f: bool(f["check"]["eligible"]), name="eligible", then=authorise,
               otherwise=refuse),
    ])


def address_change(db: Database) -> Workflow:
    """Address change before dispatch: allowed orders go to a colleague, others get the
    carrier's redirect advice."""
    def find(text: str) -> dict[str, Any]:
        req = _parse(text)
        try:
            return {"found": True, "order": L.order_status(db, req["customer"],
                                                           req["order_id"]), "req": req}
        except L.NotFound:
            return {"found": False}

    def allowed(found: dict[str, Any]) -> Reply:
        return _reply(templates.address_change_allowed(found["order"], found["req"]["run"]),
                      "person", "address_change", reason="address change before dispatch")

    def refused(found: dict[str, Any]) -> Reply:
        return _reply(templates.address_change_refused(found["order"]), "refused",
                      "address_change")

    return Workflow("address_change", [
        find,
        Gate("order_on_account", lambda f: f["found"], "no such order on this account"),
        Branch(lambda f: bool(f["order"]["can_change_address"]), name="before_dispatch",
               then=allowed, otherwise=refused),
    ])


def invoice_copy(db: Database) -> Workflow:
    """An invoice's copy (or the list of invoices when no number was given)."""
    def find(text: str) -> dict[str, Any]:
        req = _parse(text)
        if not req.get("invoice_id"):
            return {"found": True, "list": L.list_invoices(db, req["customer"], "any", 5)}
        try:
            return {"found": True, "invoice": L.invoice_copy(db, req["customer"],
                                                             req["invoice_id"])}
        except L.NotFound:
            return {"found": False}

    def answer(found: dict[str, Any]) -> Reply:
        if "list" in found:
            return _reply(templates.invoice_list(found["list"]), "answered", "invoice_copy")
        return _reply(templates.invoice_copy(found["invoice"]), "answered", "invoice_copy")

    return Workflow("invoice_copy", [
        find,
        Gate("invoice_on_account", lambda f: f["found"], "no such invoice on this account"),
        answer,
    ])


def help_answer(help_centre: HelpCentre) -> Workflow:
    """A question answered from the help centre by retrieval and a template, quoting the
    passage and naming its article; a weak match goes to a person."""
    def search(text: str) -> dict[str, Any]:
        req = _parse(text)
        sections = tuple(req["section"].split(",")) if req.get("section") else ()
        return {"hits": help_centre.search(req["message"], k=3, sections=sections)}

    def answer(found: dict[str, Any]) -> Reply:
        best = found["hits"][0]
        return _reply(templates.faq(best["title"], best["text"], best["article"]),
                      "answered", "help_answer", citations=[best["article"]])

    def person(found: dict[str, Any]) -> Reply:
        return _reply("", "person", "help_answer", reason="no confident help-centre answer",
                      candidates=[h["article"] for h in found["hits"]])

    return Workflow("help_answer", [
        search,
        Branch(lambda f: bool(f["hits"]) and f["hits"][0]["score"] >= HELP_MIN_SCORE,
               name="confident", then=answer, otherwise=person),
    ])


def build(db: Database, help_centre: HelpCentre) -> dict[str, Workflow]:
    """Every standard process of the desk, by name."""
    makers: dict[str, Callable[[], Workflow]] = {
        "order_status": lambda: order_status(db),
        "return_authorisation": lambda: return_authorisation(db),
        "address_change": lambda: address_change(db),
        "invoice_copy": lambda: invoice_copy(db),
        "help_answer": lambda: help_answer(help_centre),
    }
    return {name: make() for name, make in makers.items()}
