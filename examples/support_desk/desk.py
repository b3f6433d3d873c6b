"""The support desk: one keel flow, ``desk``, from a customer's message to an answer.

::

    message (+ optional uploaded note)
      -> intake guards: empty, size, injection (message and note)   step desk/intake
      -> memory: what the desk remembers about this customer        step desk/memory
      -> Router "router": code rules -> embedding kNN (threshold)    step desk/router/route
           |  below the threshold: a clarifying question back
           v
         shipping | returns | billing | technical | account   (specialists)
         policy (help centre, cited)  | other (catch-all: a person)
           each specialist: ReAct agent (model configured)
                            -> standard workflow + template (processes.py)
                            -> a person with a context packet (keel escalation)
      -> the reply; what happened is journaled as step desk/outcome

Build it with :func:`build_desk`; run a turn with :meth:`Desk.handle` or serve
``desk.flows`` with ``keel.server.App``. The run's ``user`` is the customer id
(``C-00042``); ``conversation=`` threads the turns of one chat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Unpack

from keel import Agent, Flow, FlowContext, Model, RunError, RunResult, RunStore, UserError
from keel.context import InMemoryMemory, MemoryBackend
from keel.guard import screen_text
from keel.observe import SpendCap, SpendCaps
from keel.patterns import (
    RAG,
    EmbeddingRouter,
    GateFailed,
    HandoffTeam,
    HistoryFilter,
    HybridRouter,
    Route,
    Router,
    Rule,
    RuleRouter,
    Workflow,
    conversation_input,
)
from keel.rollout import Rollout, Versions
from keel.runtime import Agent as RuntimeAgent
from keel.runtime import FlowGraph, GraphBuilder, GraphNode, Journal, RunOptions, StepMatch
from keel.store import RunFilter, RunRecord, open_store

from . import intents, processes, templates
from .db import Database
from .processes import HelpCentre, Reply
from .specialists import make_agents, make_policy_rag

AnyAgent = RuntimeAgent[Any]

#: The environment variable naming the specialists' model (e.g. ``openai:MODEL@URL``).
MODEL_ENV: Final = "KEEL_DESK_MODEL"
#: The model name that selects the scripted specialist (``scripted.specialist_model``),
#: for demos and tests without an LLM: ``KEEL_DESK_MODEL=scripted``.
SCRIPTED: Final = "scripted"
#: The longest message the desk reads (characters); longer ones get a polite refusal.
MAX_MESSAGE_CHARS: Final = 4000
#: The longest uploaded note (characters).
MAX_NOTE_CHARS: Final = 10_000
#: The embedding router's confidence threshold (vote share of the 7 nearest examples).
ROUTE_THRESHOLD: Final = 0.5
#: How many earlier turns of a conversation the router reads as context.
HISTORY_TURNS: Final = 3
#: The human queue escalations go to.
QUEUE: Final = "desk"
#: The standard workflows each route may run (drawn in the desk's graph).
WORKFLOWS_OF: Final = {
    "shipping": ("order_status", "address_change", "help_answer"),
    "returns": ("return_authorisation", "help_answer"),
    "billing": ("invoice_copy", "help_answer"), "technical": ("help_answer",),
    "account": ("help_answer",), "policy": ("help_answer",)}
#: The candidate prompt version's share of customers, step by step (percent).
ROLLOUT_STEPS: Final = (10, 50, 100)
#: Default per-tenant spend cap (dollars a day) when a model is configured.
DAILY_CAP_USD: Final = 25.0

#: The help-centre sections a route's questions are answered from (None: all of them).
HELP_SECTIONS: Final[dict[str, str | None]] = {
    "shipping": "shipping,policies", "returns": "returns,policies",
    "billing": "billing,policies", "technical": "troubleshooting",
    "account": "accounts,policies", "policy": None, "other": None}
_TEAMS: Final = {"shipping": "deliveries", "returns": "returns", "billing": "billing",
                 "technical": "product support", "account": "accounts",
                 "policy": "customer care", "other": "customer care"}


def parse_message(text: str) -> tuple[str, Any]:
    """The customer's message and the uploaded note (or None) of a desk run's input.

    The input is the message itself, or JSON ``{"message": ..., "note": ...}`` when a note
    is attached; the note is returned as found (the intake checks it)."""
    stripped = text.lstrip()
    if stripped.startswith("{") and '"message"' in stripped[:200]:
        try:
            data = json.loads(stripped)
        except ValueError:
            return text, None
        if isinstance(data, dict) and isinstance(data.get("message"), str) \
                and set(data) <= {"message", "note"}:
            return data["message"], data.get("note")
    return text, None


def with_note(message: str, note: object) -> str:
    """A desk run's input for ``message`` with an uploaded ``note`` (text) attached."""
    return json.dumps({"message": message, "note": note})


def intake(message: str, note: Any) -> dict[str, Any]:
    """The intake guards' verdict on a message and its note (plain data, journaled)."""
    if len(message) > MAX_MESSAGE_CHARS:
        return {"verdict": "too_long", "chars": len(message),
                "text": templates.TOO_LONG.format(chars=len(message),
                                                  limit=MAX_MESSAGE_CHARS)}
    if not message.strip() and note is None:
        return {"verdict": "empty", "text": templates.EMPTY}
    if note is not None:
        problem = _note_problem(note)
        if problem:
            return {"verdict": "bad_note", "problem": problem,
                    "text": templates.BAD_NOTE.format(problem=problem, limit=MAX_NOTE_CHARS)}
    flagged = screen_text(message, source="user") if message.strip() else None
    if flagged is not None:
        return {"verdict": "hostile", "where": "message", "score": round(flagged.score, 3),
                "families": sorted(flagged.families), "text": templates.HOSTILE}
    if isinstance(note, str):
        noted = screen_text(note, source="tool")
        if noted is not None:
            return {"verdict": "hostile_note", "where": "note",
                    "score": round(noted.score, 3), "families": sorted(noted.families),
                    "text": templates.HOSTILE_NOTE}
    return {"verdict": "ok"}


def _note_problem(note: Any) -> str | None:
    if not isinstance(note, str):
        return f"a note is text, not {type(note).__name__}"
    if len(note) > MAX_NOTE_CHARS:
        return f"it has {len(note):,} characters"
    if "\x00" in note or any(0xD800 <= ord(c) <= 0xDFFF for c in note):
        return "it is not readable text"
    if not note.strip():
        return "it is empty"
    return None


def carry_reference(message: str, earlier: list[dict[str, str]]) -> str:
    """A follow-up without an order or invoice number ("when will it get here then?")
    about the latest one the customer named earlier in the conversation."""
    if intents.ORDER_ID.search(message) or intents.INVOICE_ID.search(message):
        return message
    for turn in reversed(earlier):
        if turn["role"] != "user":
            continue
        found = intents.ORDER_ID.search(turn["content"]) \
            or intents.INVOICE_ID.search(turn["content"])
        if found:
            return f"{message} (about {found.group(0).upper()})"
    return message


def _upper(match: Any) -> str | None:
    return None if match is None else str(match.group(0)).upper()


def plan_for(route: str, message: str) -> tuple[str, dict[str, Any]] | None:
    """The standard process (workflow name and its request fields) for a routed message,
    or None when no workflow fits (a person takes it, or the agent when a model is set)."""
    text = message.lower()
    order = _upper(intents.ORDER_ID.search(message))
    invoice = _upper(intents.INVOICE_ID.search(message))
    money = any(w in text for w in ("refund", "money back", "cancel", "charged twice",
                                    "compensation", "delete"))
    if route == "shipping" and order:
        if "address" in text:
            return "address_change", {"order_id": order}
        if "cancel" in text:
            return None
        return "order_status", {"order_id": order}
    if route == "returns" and order and not money:
        return "return_authorisation", {"order_id": order}
    if route == "billing" and ("invoice" in text or invoice) and not money:
        return "invoice_copy", {"invoice_id": invoice}
    if not order and not invoice and (route == "policy" or not money):
        return "help_answer", {"section": HELP_SECTIONS[route]}
    return None


class Specialist(Flow[Reply]):
    """One specialist: its ReAct agent when a model is configured, else (or when the agent
    fails) its standard workflows with templated answers, else a person."""

    kind = "specialist"

    def __init__(self, name: str, *, workflows: dict[str, Workflow],
                 team: HandoffTeam | None, rag: RAG | None = None) -> None:
        super().__init__(name)
        self.team = team
        self.rag = rag
        self.workflows = workflows

    def agents(self) -> Sequence[AnyAgent]:
        return list(self.team.agents()) if self.team is not None else []

    async def body(self, ctx: FlowContext, input: str) -> Reply:
        if self.rag is not None:
            cited = await self._grounded(ctx, input)
            if cited is not None:
                return cited
        if self.team is not None:
            try:
                result = await ctx.run_flow(self.team, input, name="team")
            except RunError as exc:  # the fallback chain: agent -> workflow/template -> person
                failure = f"{type(exc).__name__}: {exc}"[:300]
            else:
                return {"text": str(result.output), "outcome": "answered",
                        "agent": self.name}
            reply = await run_process(ctx, self.workflows, self.name, input)
            reply.setdefault("fallback", failure)
            return reply
        return await run_process(ctx, self.workflows, self.name, input)

    def graph(self, prefix: str | None = None) -> FlowGraph:
        """This specialist as a graph: its handoff team or RAG (with a model), then its
        standard workflows with their gates, then a person (see ``keel.runtime``)."""
        where = prefix or self.name
        b = GraphBuilder()
        root = b.add(GraphNode(id=where, label=self.name, kind="flow", detail="specialist",
                               matches=(StepMatch(key=where),)))
        if self.team is not None:
            team = b.add(GraphNode(id=f"{where}/team", label="handoff team", kind="agent",
                                   detail=f"ReAct agents, start: {self.name}",
                                   matches=(StepMatch(key=f"{where}/team"),)))
            b.link(root, team, "call", "model")
        if self.rag is not None:
            b.link(root, b.nest(self.rag, f"{where}/rag"), "call", "model")
        for name in WORKFLOWS_OF.get(self.name, ()):
            b.link(root, b.nest(self.workflows[name], f"{where}/{name}"), "next", "workflow")
        return b.build(self.name, self.kind, root)

    async def _grounded(self, ctx: FlowContext, input: str) -> Reply | None:
        """The RAG answer with verified citations, or None (refused or failed: the
        workflow and template come next)."""
        assert self.rag is not None
        try:
            answer = (await ctx.run_flow(self.rag, input, name="rag")).output
        except RunError:
            return None
        if answer.refused or not answer.citations:
            return None
        articles = sorted({cid.split("#")[0] for c in answer.citations for cid in c.chunk_ids})
        return {"text": answer.text, "outcome": "answered", "agent": "policy",
                "citations": articles}


async def run_process(ctx: FlowContext, workflows: dict[str, Workflow], route: str,
                      message: str) -> Reply:
    """Run the standard process for ``message`` on ``route``; a person when none fits."""
    plan = plan_for(route, message)
    if plan is None:
        return {"text": "", "outcome": "person", "reason": f"no standard process for this "
                f"{route} request"}
    name, fields = plan
    customer = ctx.user or ""
    text = processes.request(customer, message, run_id=ctx.run_id, **fields)
    try:
        result = await ctx.run_flow(workflows[name], text, name=name)
    except GateFailed as exc:
        template = processes.GATE_REPLIES.get(exc.step or "", templates.NO_ORDER)
        return {"text": template.format(order_id=fields.get("order_id") or "",
                                        invoice_id=fields.get("invoice_id") or ""),
                "outcome": "refused", "workflow": name, "gate": exc.step}
    except RunError as exc:  # a failed step, or no active account: a person takes it
        return {"text": "", "outcome": "person", "workflow": name,
                "reason": f"the {name} workflow failed: {exc}"[:300]}
    return dict(result.output)


def _person(message: str) -> Reply:
    return {"text": "", "outcome": "person", "reason": "the catch-all route: a person"}


class DeskFlow(Flow[str]):
    """The desk's one entry point (see the module): a message in, the reply out."""

    kind = "desk"

    def __init__(self, desk: Desk) -> None:
        super().__init__("desk")
        self.desk = desk

    def agents(self) -> Sequence[AnyAgent]:
        return list(self.desk.agents)

    def prepare(self) -> None:
        super().prepare()
        self.desk.router.prepare()

    def driver(self, journal: Journal, *, deps: Any, emit: Any, streaming: bool,
               record: RunRecord, prefix: str | None = None) -> Any:
        # Served runs carry no deps: the desk's own database is their default.
        return super().driver(journal, deps=self.desk.database if deps is None else deps,
                              emit=emit, streaming=streaming, record=record, prefix=prefix)

    def graph(self, prefix: str | None = None) -> FlowGraph:
        """The desk as a graph for the console: intake guards, routing and its specialists,
        the human queue, with the journal keys that count each node's runs."""
        where = prefix or self.name
        b = GraphBuilder()
        root = b.add(GraphNode(id=where, label=self.name, kind="flow", detail="support desk",
                               matches=(StepMatch(key=where),)))
        intake_node = b.add(GraphNode(id=f"{where}/intake", label="intake guards",
                                      kind="gate", detail="empty, size, injection",
                                      matches=(StepMatch(key=f"{where}/intake"),)))
        refused = b.add(GraphNode(id=f"{where}#refused", label="refused", kind="end",
                                  matches=(StepMatch(key=f"{where}/outcome", field="outcome",
                                                     value="refused"),)))
        router = b.nest(self.desk.router, f"{where}/router")
        person = b.add(GraphNode(id=f"{where}/to_person", label="a person", kind="human",
                                 detail=f"queue {QUEUE}, with a context packet",
                                 matches=(StepMatch(key=f"{where}/to_person"),)))
        b.link(root, intake_node)
        b.link(intake_node, refused, "next", "blocked")
        b.link(intake_node, router)
        b.link(router, person, "human", "needs a person")
        return b.build(self.name, self.kind, root)

    async def body(self, ctx: FlowContext, input: str) -> str:
        message, note = parse_message(input)
        verdict = await ctx.step("intake", lambda: intake(message, note), kind="guard",
                                 input={"chars": len(input)})
        if verdict["verdict"] not in ("ok", "hostile_note"):
            return await self._finish(ctx, verdict["text"], route=None, outcome="refused",
                                      guard=verdict)
        if ctx.user is None:
            return await self._finish(ctx, "Please sign in so that we can see your orders.",
                                      route=None, outcome="refused")
        known = await ctx.step("memory", lambda: self.desk.recall(ctx.user, ctx.tenant),
                               kind="memory")
        if verdict["verdict"] == "hostile_note":
            reply: Reply = {"text": verdict["text"], "outcome": "person",
                            "reason": "instructions found in the uploaded note"}
            route: str | None = None
        elif intents.too_vague(message):
            return await self._finish(ctx, templates.CLARIFY, route=None, outcome="clarify")
        else:
            earlier = await ctx.step("history", lambda: self._earlier(ctx), kind="history")
            message = carry_reference(message, earlier)
            asked = conversation_input([*earlier, {"role": "user", "content": message}]) \
                if earlier else message
            routed = (await ctx.run_flow(self.desk.router, asked, name="router")).output
            route = routed.decision.route
            if routed.decision.action == "clarify":
                return await self._finish(ctx, templates.CLARIFY, route=None,
                                          outcome="clarify")
            reply = dict(routed.output)
        if reply.get("outcome") == "person":
            note_text = await ctx.escalate(
                _packet(message, route, reply, known, verdict), name="to_person",
                trigger="needs_person", queue=QUEUE, proposal=reply.get("reason"))
            text = (note_text or "").strip() or (reply.get("text") or "")
            reply = {**reply, "text": text or templates.TO_PERSON.format(
                team=_TEAMS.get(route or "other", "customer care"), reference=ctx.run_id),
                "outcome": "person"}
        await ctx.step("remember", lambda: self.desk.remember(
            ctx.user, ctx.tenant, route, reply, ctx.run_id), kind="memory")
        return await self._finish(ctx, reply.get("text") or "", route=route,
                                  outcome=reply.get("outcome", "answered"), reply=reply,
                                  guard=verdict if verdict["verdict"] != "ok" else None)

    async def _earlier(self, ctx: FlowContext) -> list[dict[str, str]]:
        """The conversation's last turns before this run (the router reads them as context
        for a short follow-up such as "and the other order?")."""
        if ctx.conversation is None:
            return []
        page = await ctx.journal.store.list_runs(RunFilter(
            conversation=ctx.conversation, tenant=ctx.tenant, limit=50))
        runs = sorted((r for r in page if r.run_id != ctx.run_id and r.user == ctx.user),
                      key=lambda r: (r.created_at, r.run_id))[-HISTORY_TURNS:]
        turns: list[dict[str, str]] = []
        for r in runs:
            said, _ = parse_message(str(r.input or ""))
            turns.append({"role": "user", "content": said[:MAX_MESSAGE_CHARS]})
            if isinstance(r.output, str) and r.output:
                turns.append({"role": "assistant", "content": r.output[:1000]})
        return turns

    async def _finish(self, ctx: FlowContext, text: str, *, route: str | None,
                      outcome: str, reply: Reply | None = None,
                      guard: dict[str, Any] | None = None) -> str:
        summary = {"route": route, "outcome": outcome,
                   "workflow": (reply or {}).get("workflow"),
                   "agent": (reply or {}).get("agent"),
                   "citations": (reply or {}).get("citations", []),
                   "guard": None if guard is None else guard["verdict"]}
        await ctx.step("outcome", lambda: summary, kind="outcome", blocking=False)
        return text


def _packet(message: str, route: str | None, reply: Reply, known: list[str],
            verdict: dict[str, Any]) -> str:
    """What a person reads in the queue: the request, what the desk found and tried."""
    lines = [f"Customer message: {message[:1500]}",
             f"Route: {route or 'none'}; reason: {reply.get('reason') or 'needs a person'}"]
    if reply.get("workflow"):
        lines.append(f"Workflow: {reply['workflow']}")
    if reply.get("text"):
        lines.append(f"Desk's draft answer: {reply['text'][:800]}")
    if reply.get("fallback"):
        lines.append(f"The specialist agent failed: {reply['fallback']}")
    if known:
        lines.append("Remembered: " + "; ".join(known[:3]))
    if verdict["verdict"] == "hostile_note":
        lines.append(f"Guard: the uploaded note holds instructions ({verdict['families']}); "
                     "it was not acted on.")
    return "\n".join(lines)


@dataclass(eq=False)
class Desk:
    """A built desk (see :func:`build_desk`): ``flow`` is the entry point, ``flows`` what to
    serve, ``agents`` the specialist agents (empty without a model)."""

    database: Database
    tenant: str
    model: str | Model | None
    store: RunStore | str | None
    memory: MemoryBackend
    help_centre: HelpCentre
    workflows: dict[str, Workflow]
    specialists: dict[str, Specialist] = field(default_factory=dict)
    agents: list[AnyAgent] = field(default_factory=list)
    prompt_version: str = "v1"
    router: Router = field(init=False)
    flow: DeskFlow = field(init=False)

    @property
    def flows(self) -> list[Flow[Any]]:
        """Everything to serve (``keel.server.App(desk.flows)``): the desk flow."""
        return [self.flow]

    async def handle(self, message: str, *, customer: str, conversation: str | None = None,
                     store: RunStore | str | None = None, note: str | None = None,
                     run_id: str | None = None) -> RunResult[str]:
        """One customer turn through the desk; ``note``: text uploaded with the message."""
        text = message if note is None else with_note(message, note)
        options: dict[str, Any] = {"user": customer, "tenant": self.tenant,
                                   "deps": self.database}
        chosen = store if store is not None else self.store
        if chosen is not None:
            options["store"] = chosen
        if conversation is not None:
            options["conversation"] = conversation
        if run_id is not None:
            options["run_id"] = run_id
        return await self.flow.run(text, **options)

    async def recall(self, customer: str | None, tenant: str | None) -> list[str]:
        """What the desk remembers about ``customer`` (their last issues), newest first."""
        if not customer:
            return []
        hits = await self.memory.search("last issue with the desk", user=customer,
                                        tenant=tenant, k=3)
        return [h.item.text for h in hits]

    async def remember(self, customer: str | None, tenant: str | None, route: str | None,
                       reply: Reply, run_id: str) -> bool:
        """Keep the customer's last issue for their next conversation."""
        if not customer:
            return False
        what = reply.get("workflow") or route or "a question"
        await self.memory.remember(f"last issue with the desk: {what} ({reply.get('outcome')})",
                                   user=customer, tenant=tenant, kind="fact",
                                   item_id=f"desk-{run_id}"[:120], source_run=run_id)
        return True


def _model_from(model: str | Model | None) -> str | Model | None:
    chosen = model if model is not None else (os.environ.get(MODEL_ENV) or None)
    if chosen == SCRIPTED:
        from .scripted import specialist_model

        return specialist_model()
    return chosen


def _team(agents: dict[str, Agent[Any]], start: str) -> HandoffTeam | None:
    """The specialists as a handoff team starting at ``start``: any of them may hand the
    conversation (filtered to what the customer and the agents said) to another, or to a
    person (``transfer_to_human``: an escalation with the conversation as its packet)."""
    if not agents:
        return None
    return HandoffTeam("team", agents=list(agents.values()), start=start,
                       history=HistoryFilter.conversation(), human_queue=QUEUE)


def _router(specialists: dict[str, Specialist]) -> Router:
    targets: dict[str, Any] = dict(specialists)
    targets["other"] = _person
    routes = [Route(name, target=targets[name], examples=intents.EXAMPLES[name])
              for name in intents.ROUTES]
    rules = RuleRouter([Rule(route, regex=pattern, name=f"{route}-{i}")
                        for i, (route, pattern) in enumerate(intents.RULES)], routes=routes)
    return Router("router", HybridRouter([rules, EmbeddingRouter(
        routes, k=7, threshold=ROUTE_THRESHOLD)]), routes=routes, catch_all="other",
        on_low_confidence="clarify", question=templates.CLARIFY, queue=QUEUE)


def build_desk(database: Database | str | os.PathLike[str], *,
               store: RunStore | str | None = None, model: str | Model | None = None,
               tenant: str = "northwind", memory: MemoryBackend | None = None,
               caps: Sequence[SpendCap] | None = None, prompt_version: str = "v1",
               help_centre: HelpCentre | None = None, candidate: str | None = "v2",
               rollout_steps: Sequence[float] = ROLLOUT_STEPS) -> Desk:
    """Build the desk over ``database`` (a :class:`Database` or the path of one made by
    ``create_database``).

    ``model``: the specialists' model (a keel model id or a Model; ``"scripted"``: the
    offline scripted specialist; default: the ``KEEL_DESK_MODEL`` environment variable;
    none: the no-model desk). ``store``: where
    :meth:`Desk.handle` journals runs (default: keel's default store). ``memory``: the
    per-customer memory (default: in memory). ``caps``: per-tenant spend caps on the
    specialists' model calls (default: ``DAILY_CAP_USD`` a day per tenant).
    ``prompt_version``: the specialists' instructions (``prompts.PROMPTS``).
    ``help_centre``: a shared, already built help-centre index (tests share one).
    ``candidate``: the prompt version being rolled out (``keel.rollout``: a sticky share
    of customers, ``rollout_steps`` percent, starting at 10%) when a model is configured
    and ``store`` is a RunStore or a URL; None serves ``prompt_version`` only."""
    db = database if isinstance(database, Database) else _open(database)
    if not isinstance(tenant, str) or not tenant.strip() or len(tenant) > 64:
        raise UserError(f"tenant must be a name of 1 to 64 characters, not {tenant!r}")
    helper = help_centre or HelpCentre()
    workflows = processes.build(db, helper)
    chosen = _model_from(model)
    limits = list(caps) if caps is not None else [
        SpendCap(scope="tenant", window="daily", max_usd=DAILY_CAP_USD, name="desk-daily")]
    guards = [SpendCaps(limits)] if limits else []
    agents = make_agents(chosen, helper, version=prompt_version, middleware=guards) \
        if chosen is not None else {}
    specialists = {name: Specialist(name, workflows=workflows, team=_team(agents, name))
                   for name in intents.SPECIALISTS}
    rag = make_policy_rag(chosen, helper, version=prompt_version, middleware=guards) \
        if chosen is not None else None
    specialists["policy"] = Specialist("policy", workflows=workflows, team=None, rag=rag)
    desk = Desk(database=db, tenant=tenant, model=chosen, store=store,
                memory=memory if memory is not None else InMemoryMemory(),
                help_centre=helper, workflows=workflows, specialists=specialists,
                agents=[*agents.values(), *([rag.agent] if rag is not None else [])],
                prompt_version=prompt_version)
    desk.router = _router(specialists)
    desk.flow = DeskFlow(desk)
    if candidate is not None and candidate != prompt_version and store is not None \
            and chosen is not None:  # without a model the prompt versions serve alike
        opened = store if isinstance(store, RunStore) else open_store(store)
        desk.store = opened
        other = build_desk(db, store=opened, model=model, tenant=tenant, memory=desk.memory,
                           caps=caps, prompt_version=candidate, help_centre=helper,
                           candidate=None)
        desk.flow = RolloutDesk(desk, Rollout(
            "desk", Versions({prompt_version: desk.flow, candidate: other.flow}),
            store=opened, current=prompt_version, candidate=candidate,
            steps=rollout_steps))
    return desk


class RolloutDesk(DeskFlow):
    """The desk served through a ``keel.rollout.Rollout``: each new conversation runs the
    current or the candidate prompt version (sticky per customer), its run tagged with the
    rollout; a resumed run continues on the version that started it."""

    def __init__(self, desk: Desk, rollout: Rollout) -> None:
        super().__init__(desk)
        self.rollout = rollout
        self._started = False

    async def run(self, input: str, **options: Unpack[RunOptions]) -> RunResult[str]:
        if not self._started:
            await self.rollout.start()  # idempotent: every process may call it
            self._started = True
        opts: dict[str, Any] = dict(options)
        user, tenant = opts.pop("user", None), opts.pop("tenant", None)
        conversation = opts.pop("conversation", None)
        opts.setdefault("deps", self.desk.database)
        result: RunResult[str] = await self.rollout.run(
            input, user=user, tenant=tenant, conversation=conversation, **opts)
        return result

    def for_record(self, record: RunRecord) -> Flow[str]:
        tag = (record.metadata or {}).get("rollout")
        version = tag.get("version") if isinstance(tag, dict) else None
        if isinstance(version, str) and version in self.rollout.versions:
            chosen = self.rollout.versions.get(version)
            if isinstance(chosen, Flow):
                return chosen
        return self


def _open(path: str | os.PathLike[str]) -> Database:
    if not isinstance(path, str | os.PathLike):
        raise UserError(f"build_desk() takes a Database or the path of one, not "
                        f"{type(path).__name__}")
    if not Path(path).is_file():
        raise UserError(f"there is no desk database at {str(path)!r}; create one with "
                        "examples.support_desk.create_database(path)")
    return Database(path)
