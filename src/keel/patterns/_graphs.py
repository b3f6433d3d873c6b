"""What each pattern's ``graph()`` draws (see :mod:`keel.runtime._graph`): its structure as
nodes and edges, each node with the journal keys that show a run went through it.

* a :class:`Router`: its decision, one node per route (the catch-all marked), the
  clarifying question or the person a low-confidence request goes to, and what each route
  runs;
* a :class:`Workflow`: its steps in order, gates (with where a run stops when one fails),
  parallel branches and their join, branches and their routes;
* a :class:`HandoffTeam`: its agents, who may hand to whom, and the person;
* a :class:`Supervisor`: the lead, its workers and what they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from keel.runtime import (
    Agent,
    Flow,
    FlowGraph,
    GraphBuilder,
    GraphNode,
    StepMatch,
    agent_graph,
)

# The patterns call these functions from their ``graph()`` methods and hand in what they need
# (their node classes, their key prefixes): this module imports none of them, so the package
# keeps no import cycle. The pattern objects are typed ``Any`` here for the same reason.
Router: TypeAlias = Any
HandoffTeam: TypeAlias = Any
Supervisor: TypeAlias = Any
Workflow: TypeAlias = Any
Node: TypeAlias = Any


@dataclass(frozen=True, slots=True)
class WorkflowKinds:
    """The workflow node classes, handed in by ``Workflow.graph``."""

    step: Any
    gate: Any
    sequential: Any
    parallel: Any
    branch: Any


def router_graph(router: Router, prefix: str) -> FlowGraph:
    b = GraphBuilder()
    root = b.add(GraphNode(id=prefix, label=router.name, kind="router",
                           detail=f"{router.router.kind} router",
                           matches=(StepMatch(key=prefix),)))
    decide = f"{prefix}/route"
    for route in router.routes:
        here = f"{prefix}/{route.name}"
        tags = [t for t, on in (("catch-all", route.name == router.catch_all),
                                ("fallback", route.name == router.fallback
                                 and router.on_low_confidence == "fallback")) if on]
        target = route.target
        runs = ""
        if isinstance(target, Agent | Flow):  # one node: the route and what it runs
            runs = f"{'agent' if isinstance(target, Agent) else target.kind} {target.name}"
        node = b.add(GraphNode(
            id=here if runs else f"{here}#route", label=route.name, kind="route",
            detail=", ".join([runs, *tags] if runs else tags),
            matches=(StepMatch(key=decide, field="route", value=route.name),
                     StepMatch(key=here))))
        b.link(root, node, "route")
        if isinstance(target, Agent | Flow):
            b.nest(target, here)  # its root is the route's node (the first of that id)
        elif target is not None:
            fn = b.add(GraphNode(id=f"{here}/call", label=getattr(target, "__name__", "call"),
                                 kind="function", matches=(StepMatch(key=f"{here}/call"),)))
            b.link(node, fn, "next")
    if router.on_low_confidence == "clarify":
        ask = b.add(GraphNode(id=f"{prefix}#clarify", label="clarify", kind="clarify",
                              detail="below the threshold: ask",
                              matches=(StepMatch(key=decide, field="action", value="clarify"),)))
        b.link(root, ask, "route", "low confidence")
    elif router.on_low_confidence == "escalate":
        person = b.add(GraphNode(id=f"{prefix}/route-escalation", label="a person chooses",
                                 kind="human", detail="below the threshold",
                                 matches=(StepMatch(key=f"{prefix}/route-escalation"),)))
        b.link(root, person, "human", "low confidence")
    return b.build(router.name, "router", root)


def workflow_graph(workflow: Workflow, prefix: str, kinds: WorkflowKinds) -> FlowGraph:
    b = GraphBuilder()
    root = b.add(GraphNode(id=prefix, label=workflow.name, kind="workflow",
                           matches=(StepMatch(key=prefix),)))
    _sequence(b, workflow.steps, prefix, [root], kinds)
    return b.build(workflow.name, "workflow", root)


def _sequence(b: GraphBuilder, nodes: Any, prefix: str, before: list[str],
              k: WorkflowKinds) -> list[str]:
    for node in nodes:
        before = _node(b, node, f"{prefix}/{node.name}", before, k)
    return before


def _node(b: GraphBuilder, node: Node, here: str, before: list[str],
          k: WorkflowKinds) -> list[str]:
    """Add one workflow node (run under ``here``) after ``before``; the ids it ends at."""
    if isinstance(node, k.step):
        target = node.target
        if isinstance(target, Agent):
            first = agent_graph(target, here, into=b)
        else:
            first = b.add(GraphNode(id=here, label=node.name, kind="step", detail=node.kind,
                                    risk=str(getattr(getattr(target, "meta", None), "risk",
                                                     "")) or None,
                                    matches=(StepMatch(key=here),)))
        _after(b, before, first)
        return [first]
    if isinstance(node, k.gate):
        gate = b.add(GraphNode(id=here, label=node.name, kind="gate", detail="must pass",
                               matches=(StepMatch(key=here),)))
        _after(b, before, gate)
        stop = b.add(GraphNode(id=f"{here}#stopped", label="stopped", kind="end",
                               detail=node.message[:80],
                               matches=(StepMatch(key=here, field="passed", value=False),)))
        b.link(gate, stop, "next", "fails")
        return [gate]
    if isinstance(node, k.sequential):
        return _sequence(b, node.steps, here, before, k)
    if isinstance(node, k.parallel):
        fan = b.add(GraphNode(id=here, label=node.name, kind="parallel",
                              detail="branches run at once", matches=(StepMatch(key=here),)))
        _after(b, before, fan)
        fanned = [e for label, child in node.branches.items()
                  for e in _node(b, child, f"{here}/{label}", [fan], k)]
        if node.join is None:
            return fanned
        return _node(b, node.join, f"{here}/join", fanned, k)
    if isinstance(node, k.branch):
        choose = b.add(GraphNode(id=here, label=node.name, kind="branch", detail="chooses one",
                                 matches=(StepMatch(key=f"{here}/route"),)))
        _after(b, before, choose)
        ends: list[str] = []
        for label, child in node.routes.items():
            if child.__class__.__name__ == "_PassThrough":
                skip = b.add(GraphNode(id=f"{here}/{label}", label=label, kind="step",
                                       detail="passes the value on",
                                       matches=(StepMatch(key=f"{here}/route", value=label),)))
                b.link(choose, skip, "route", label)
                ends.append(skip)
                continue
            ends += _node(b, child, f"{here}/{label}", [choose], k)
        return ends
    other = b.add(GraphNode(id=here, label=node.name, kind="step",
                            matches=(StepMatch(key=here),)))
    _after(b, before, other)
    return [other]


def _after(b: GraphBuilder, before: list[str], node: str) -> None:
    for source in before:
        b.link(source, node, "next")


def handoff_graph(team: HandoffTeam, prefix: str, transfer: str, human: str) -> FlowGraph:
    _PREFIX, HUMAN = transfer, human

    b = GraphBuilder()
    root = b.add(GraphNode(id=prefix, label=team.name, kind="handoff",
                           detail=f"starts with {team.start}", matches=(StepMatch(key=prefix),)))
    transfers = [f"{_PREFIX}{n}" for n in (*team.members, HUMAN)]
    ids = {name: agent_graph(agent, f"{prefix}/*/{name}", into=b, skip=transfers)
           for name, agent in team.members.items()}
    b.link(root, ids[team.start], "next")
    for source, targets in team.routes.items():
        for target in targets:
            b.link(ids[source], ids[target], "handoff", "hands to")
    if team.human:
        person = b.add(GraphNode(id=f"{prefix}#human", label="a person", kind="human",
                                 detail=f"queue {team.human_queue}" if team.human_queue else "",
                                 matches=(StepMatch(key=f"{prefix}/*/human"),
                                          StepMatch(key=f"{prefix}/*/loop"))))
        for name in team.members:
            b.link(ids[name], person, "human", "hands to")
    return b.build(team.name, "handoff", root)


def supervisor_graph(supervisor: Supervisor, prefix: str, call: str) -> FlowGraph:
    _PREFIX = call

    b = GraphBuilder()
    root = b.add(GraphNode(id=prefix, label=supervisor.name, kind="supervisor",
                           matches=(StepMatch(key=prefix),)))
    lead_key = f"{prefix}/{supervisor.lead.name}"
    lead = agent_graph(supervisor.lead, lead_key, into=b,
                       skip=[f"{_PREFIX}{n}" for n in supervisor.workers])
    b.link(root, lead, "next")
    for name, worker in supervisor.workers.items():
        at = f"{lead_key}/*/tool:{_PREFIX}{name}#*/{name}"
        b.link(lead, b.nest(worker, at), "call", f"{_PREFIX}{name}")
    return b.build(supervisor.name, "supervisor", root)
