"""Each pattern describes its structure as data (``graph()``): nodes and edges with the
journal keys that show a run went through them, counted here from real runs' journals."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, MemoryStore, UserError, tool
from keel.patterns import (
    Branch,
    Gate,
    HandoffTeam,
    Parallel,
    Route,
    Router,
    Rule,
    RuleRouter,
    Supervisor,
    Workflow,
)
from keel.runtime import (
    Flow,
    FlowContext,
    FlowGraph,
    GraphBuilder,
    GraphNode,
    StepMatch,
    count_runs,
    flow_graph,
    key_matches,
    nodes_hit,
)
from keel.testing import ScriptedModel, call


@tool(risk="read")
def track(order: str) -> str:
    """Where an order is."""
    return f"{order} is on its way"


@tool(risk="irreversible")
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


async def counts(flow: Any, store: MemoryStore) -> tuple[FlowGraph, dict[str, int],
                                                         dict[str, int]]:
    graph = flow_graph(flow)
    runs = await store.list_runs()
    hits = [nodes_hit(graph, await store.read_journal(r.run_id)) for r in runs]
    c = count_runs(graph, hits)
    assert c.runs == len(runs)
    return graph, c.nodes, c.edges


def test_key_patterns() -> None:
    assert key_matches("desk/returns", "desk/returns/turn:0/model")
    assert key_matches("desk/returns", "desk/returns")
    assert not key_matches("desk/returns", "desk/returns2/turn:0/model")
    assert key_matches("desk/*/tool:refund#*", "desk/turn:3/tool:refund#0")
    assert not key_matches("desk/*/tool:refund#*", "desk/turn:3/tool:refund_all#0/x")
    assert key_matches("desk/**/billing", "desk/hop:1/x/billing/turn:0/model")
    assert key_matches("desk/**/billing", "desk/billing")
    assert not key_matches("desk/**/billing", "desk/hop:1/billingx")
    assert key_matches("a.b/(x)", "a.b/(x)/y")  # regex characters are literal


async def test_an_agent_is_drawn_with_its_tools_and_their_risk() -> None:
    agent = Agent("desk", model=ScriptedModel([call("track", {"order": "A1"}), "ok"]),
                  tools=[track, refund])
    store = MemoryStore()
    await agent.run("where is A1?", store=store)
    await Agent("desk", model=ScriptedModel(["hello"]), tools=[track, refund]).run(
        "hi", store=store)
    graph, nodes, edges = await counts(agent, store)
    assert [(n.id, n.kind, n.risk) for n in graph.nodes] == [
        ("desk", "agent", None), ("desk/tool:track", "tool", "read"),
        ("desk/tool:refund", "tool", "irreversible")]
    assert graph.node("desk/tool:refund").detail == "risk irreversible · approval"
    assert nodes == {"desk": 2, "desk/tool:track": 1, "desk/tool:refund": 0}
    assert edges == {"desk>desk/tool:track": 1, "desk>desk/tool:refund": 0}
    with pytest.raises(UserError, match="no node"):
        graph.node("ghost")


async def test_a_router_shows_its_routes_catch_all_and_clarify() -> None:
    shipping = Agent("shipping", model=ScriptedModel(["it ships today"]), tools=[track])
    router = Router("desk", RuleRouter([Rule("shipping", keywords=("parcel",)),
                                        Rule("billing", keywords=("invoice",))]),
                    routes=[Route("shipping", target=shipping),
                            Route("billing", target=lambda text: "an invoice copy"),
                            Route("other")])
    store = MemoryStore()
    await router.run("where is my parcel?", store=store)
    await router.run("my invoice please", store=store)
    await router.run("something else", store=store)  # no rule: clarify
    graph, nodes, edges = await counts(router, store)
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds["desk"] == "router" and kinds["desk#clarify"] == "clarify"
    # a route that runs an agent is one node: the route, with the agent's tools under it
    assert kinds["desk/shipping"] == "route" and kinds["desk/shipping/tool:track"] == "tool"
    assert graph.node("desk/shipping").detail == "agent shipping"
    assert kinds["desk/billing/call"] == "function"
    assert graph.node("desk/other#route").detail == "catch-all"
    assert nodes["desk"] == 3 and nodes["desk/shipping"] == 1
    assert nodes["desk/billing#route"] == 1 and nodes["desk/billing/call"] == 1
    assert nodes["desk#clarify"] == 1 and nodes["desk/other#route"] == 0
    assert edges["desk>desk/shipping"] == 1 and edges["desk>desk#clarify"] == 1
    assert edges["desk/shipping>desk/shipping/tool:track"] == 0  # it answered without it


def _positive(value: int) -> bool:
    return value > 0


async def test_a_workflow_shows_its_steps_gates_and_branches() -> None:
    def parse(text: str) -> int:
        return int(text)

    def double(value: int) -> int:
        return value * 2

    def square(value: int) -> int:
        return value * value

    def add(parts: dict[str, int]) -> int:
        return sum(parts.values())

    flow = Workflow("calc", [
        parse, Gate("positive", _positive, "must be positive"),
        Parallel({"double": double, "square": square}, name="both", join=add),
        Branch(lambda v: v > 10, then=double, name="big"),
    ])
    store = MemoryStore()
    assert (await flow.run("3", store=store)).output == 15 * 2
    assert (await flow.run("1", store=store)).output == 3
    with pytest.raises(Exception, match="positive"):
        await flow.run("-1", store=store)
    graph, nodes, edges = await counts(flow, store)
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds == {"calc": "workflow", "calc/parse": "step", "calc/positive": "gate",
                     "calc/positive#stopped": "end", "calc/both": "parallel",
                     "calc/both/double": "step", "calc/both/square": "step",
                     "calc/both/join": "step", "calc/big": "branch",
                     "calc/big/then": "step", "calc/big/otherwise": "step"}
    assert nodes["calc"] == 3 and nodes["calc/positive"] == 3
    assert nodes["calc/positive#stopped"] == 1 and nodes["calc/both/join"] == 2
    assert nodes["calc/big/then"] == 1 and nodes["calc/big/otherwise"] == 1
    assert edges["calc/positive>calc/both"] == 2
    assert edges["calc/positive>calc/positive#stopped"] == 1


async def test_a_handoff_team_shows_who_may_hand_to_whom() -> None:
    triage = Agent("triage", model=ScriptedModel([
        call("transfer_to_billing", {"reason": "money"})]), tools=[track])
    billing = Agent("billing", model=ScriptedModel(["refund sent"]), tools=[refund])
    team = HandoffTeam("desk", agents=[triage, billing], routes={"triage": ["billing"]})
    store = MemoryStore()
    await team.run("charged twice", store=store)
    graph, nodes, edges = await counts(team, store)
    ids = {n.id for n in graph.nodes}
    assert ids == {"desk", "desk/*/triage", "desk/*/triage/tool:track", "desk/*/billing",
                   "desk/*/billing/tool:refund", "desk#human"}  # no transfer tools
    handoffs = [(e.source, e.target) for e in graph.edges if e.kind == "handoff"]
    assert handoffs == [("desk/*/triage", "desk/*/billing")]
    assert nodes["desk/*/billing"] == 1 and nodes["desk#human"] == 0
    assert edges["desk/*/triage>desk/*/billing"] == 1


async def test_a_supervisor_shows_its_lead_and_workers() -> None:
    researcher = Agent("researcher", model=ScriptedModel([call("track", {"order": "A1"}),
                                                          "A1 moves"]), tools=[track])
    lead = Agent("lead", model=ScriptedModel([call("ask_researcher", {"task": "A1?"}),
                                              "A1 is moving"]))
    team = Supervisor("team", lead=lead, workers=[researcher])
    store = MemoryStore()
    await team.run("where is A1?", store=store)
    graph, nodes, _ = await counts(team, store)
    worker = "team/lead/*/tool:ask_researcher#*/researcher"
    assert {n.id for n in graph.nodes} == {"team", "team/lead", worker,
                                          f"{worker}/tool:track"}
    assert nodes[worker] == 1 and nodes[f"{worker}/tool:track"] == 1
    assert graph.to_dict()["root"] == "team"


def test_what_cannot_be_drawn_is_refused() -> None:
    with pytest.raises(UserError, match="has no name"):
        flow_graph(object())

    class Liar:
        name = "liar"

        def graph(self, prefix: str | None = None) -> str:
            return "<svg/>"

    with pytest.raises(UserError, match="must return a FlowGraph"):
        flow_graph(Liar())


class Desk(Flow[Any]):
    """A flow of one's own that draws itself: a router, then a follow-up workflow."""

    def __init__(self, router: Router, after: Workflow) -> None:
        super().__init__("desk")
        self.router, self.after = router, after

    async def body(self, ctx: FlowContext, input: str) -> Any:
        routed = (await ctx.run_flow(self.router, input, name="route")).output
        await ctx.run_flow(self.after, str(routed.text), name="follow-up")
        return routed.text

    def graph(self, prefix: str | None = None) -> FlowGraph:
        where = prefix or self.name
        b = GraphBuilder()
        root = b.add(GraphNode(id=where, label=self.name, kind="flow",
                               matches=(StepMatch(key=where),)))
        routes = b.nest(self.router, f"{where}/route")
        b.link(root, routes)
        b.link(routes, b.nest(self.after, f"{where}/follow-up"))
        return b.build(self.name, "flow", root)


async def test_a_flow_of_ones_own_draws_itself_from_the_patterns_it_runs() -> None:
    def note(text: str) -> str:
        return f"noted: {text}"

    router = Router("triage", RuleRouter([Rule("faq", keywords=("hours",))]),
                    routes=[Route("faq", target=lambda text: "9 to 5"), Route("other")])
    desk = Desk(router, Workflow("wrap", [note]))
    store = MemoryStore()
    await desk.run("opening hours?", store=store)
    graph, nodes, edges = await counts(desk, store)
    assert graph.root == "desk" and graph.node("desk/route").kind == "router"
    assert nodes["desk/route"] == 1 and nodes["desk/route/faq#route"] == 1
    assert nodes["desk/route/faq/call"] == 1 and nodes["desk/route/other#route"] == 0
    assert nodes["desk/follow-up/note"] == 1
    assert edges["desk>desk/route"] == 1 and edges["desk/route>desk/follow-up"] == 1
