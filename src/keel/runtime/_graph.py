"""The structure of an agent or flow as data: nodes and edges a console can draw and count.

``target.graph()`` (an :class:`Agent`, a :class:`Flow` or a pattern) returns a
:class:`FlowGraph`: the agent with its tools and their risk, a router's routes with its
catch-all and clarifying question, a workflow's steps and gates, a handoff team's agents and
who may hand to whom, a supervisor's workers. Each node says which journal entries show that
a run went through it (:class:`StepMatch`: a key pattern, relative to nothing: keys are whole
step keys such as ``desk/returns/turn:0/model``), so :func:`count_runs` can count, from
journals alone, how many runs went through each node and each edge.

Key patterns are step keys where ``*`` stands for any characters but ``/`` and ``**`` for
any number of whole segments; a pattern matches a key equal to it or any key below it
(``desk/returns`` matches ``desk/returns/turn:0/model``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core import UserError
from keel.store import JournalEntry

#: the most nodes one graph may have (a graph is drawn on one page)
MAX_NODES = 400


@dataclass(frozen=True, slots=True, kw_only=True)
class StepMatch:
    """Journal entries that show a run went through a node: keys matching ``key`` (see the
    module) and, when ``field`` is given, whose result data has ``field`` equal to
    ``value``; with ``value`` alone, whose result data equals it."""

    key: str
    field: str | None = None
    value: Any = None

    def hit(self, entry: JournalEntry) -> bool:
        if not _pattern(self.key).fullmatch(entry.key):
            return False
        if self.field is None and self.value is None:
            return True
        if entry.phase != "result":
            return False
        data = entry.data
        if self.field is None:
            return bool(data == self.value)
        return isinstance(data, Mapping) and data.get(self.field) == self.value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.field is not None:
            out["field"] = self.field
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphNode:
    """One box of a graph. ``kind``: what it is (``agent``, ``flow``, ``router``, ``route``,
    ``clarify``, ``step``, ``gate``, ``parallel``, ``branch``, ``tool``, ``function``,
    ``human``, ``end``); ``detail``: a short note (a tool's risk, a step's kind);
    ``matches``: how its runs are found (none: not counted)."""

    id: str
    label: str
    kind: str
    detail: str = ""
    risk: str | None = None
    matches: tuple[StepMatch, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "kind": self.kind, "detail": self.detail,
                "risk": self.risk, "matches": [m.to_dict() for m in self.matches]}


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphEdge:
    """An arrow from ``source`` to ``target`` (node ids). ``kind``: ``next`` (the order of
    steps), ``route``, ``call`` (a tool or worker), ``handoff`` or ``human``."""

    source: str
    target: str
    kind: str = "next"
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "kind": self.kind,
                "label": self.label}


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowGraph:
    """An agent's or flow's structure: ``root`` is the id of the node every run starts at."""

    name: str
    kind: str
    root: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def node(self, node_id: str) -> GraphNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise UserError(f"graph {self.name!r} has no node {node_id!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "root": self.root,
                "nodes": [n.to_dict() for n in self.nodes],
                "edges": [e.to_dict() for e in self.edges]}


@dataclass(slots=True)
class GraphBuilder:
    """Collects nodes and edges (ids kept unique, edges deduplicated) into a :class:`FlowGraph`;
    what patterns use to describe themselves and to nest what they run."""

    nodes: dict[str, GraphNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], GraphEdge] = field(default_factory=dict)

    def add(self, node: GraphNode) -> str:
        if node.id not in self.nodes:
            if len(self.nodes) >= MAX_NODES:
                raise UserError(f"a flow graph is limited to {MAX_NODES} nodes; describe "
                                "large flows in parts.")
            self.nodes[node.id] = node
        return node.id

    def link(self, source: str, target: str, kind: str = "next", label: str = "") -> None:
        self.edges.setdefault((source, target, kind), GraphEdge(source=source, target=target,
                                                                kind=kind, label=label))

    def nest(self, target: Any, prefix: str) -> str:
        """Add ``target``'s graph (run under the step key ``prefix``); its root's id. A node
        whose id is already here is kept as it is (a pattern may draw the root its own way)."""
        sub = flow_graph(target, prefix=prefix)
        for n in sub.nodes:
            self.add(n)
        for e in sub.edges:
            self.link(e.source, e.target, e.kind, e.label)
        return sub.root

    def build(self, name: str, kind: str, root: str) -> FlowGraph:
        return FlowGraph(name=name, kind=kind, root=root, nodes=tuple(self.nodes.values()),
                         edges=tuple(self.edges.values()))


def agent_graph(agent: Any, prefix: str, *, into: GraphBuilder | None = None,
                skip: Iterable[str] = ()) -> str:
    """Add ``agent`` (run under ``prefix``) and its tools to ``into``; the agent's node id.
    Tools named in ``skip`` (a pattern's own, such as handoff transfers) are left out."""
    b = into if into is not None else GraphBuilder()
    root = b.add(GraphNode(id=prefix, label=agent.name, kind="agent",
                           detail=_model_name(agent), matches=(StepMatch(key=prefix),)))
    skipped = set(skip)
    for t in getattr(agent, "toolset", ()):
        name = getattr(t, "name", None)
        if not isinstance(name, str) or name in skipped or name == "final_result":
            continue
        meta = getattr(t, "meta", None)
        risk = str(getattr(meta, "risk", "read"))
        node = b.add(GraphNode(id=f"{prefix}/tool:{name}", label=name, kind="tool",
                               detail=_tool_detail(risk, getattr(meta, "approval", None)),
                               risk=risk,
                               matches=(StepMatch(key=f"{prefix}/*/tool:{name}#*"),)))
        b.link(root, node, "call")
    return root


def _tool_detail(risk: str, approval: Any) -> str:
    """``risk irreversible · approval`` (or ``approval if ...`` for a rule on arguments)."""
    if approval is True or (approval is None and risk == "irreversible"):
        return f"risk {risk} · approval"
    if callable(approval):
        return f"risk {risk} · approval if"
    return f"risk {risk}"


def _model_name(agent: Any) -> str:
    model = getattr(getattr(agent, "config", None), "model", None)
    if isinstance(model, str):
        return model
    return str(getattr(model, "model_id", "") or getattr(model, "name", "") or "")


def flow_graph(target: Any, *, prefix: str | None = None) -> FlowGraph:
    """The graph of an agent or flow run under the step key ``prefix`` (default: its name,
    as for a run of its own). Anything with a ``graph(prefix=...)`` method describes
    itself; a plain flow is drawn with the agents it declares."""
    name = getattr(target, "name", None)
    if not isinstance(name, str) or not name:
        raise UserError(f"{target!r:.80} has no name: pass an Agent or a Flow.")
    where = prefix or name
    own = getattr(target, "graph", None)
    if callable(own):
        graph = own(prefix=where)
        if not isinstance(graph, FlowGraph):
            raise UserError(f"{type(target).__name__}.graph() must return a FlowGraph, not "
                            f"{type(graph).__name__}.")
        return graph
    b = GraphBuilder()
    if hasattr(target, "toolset"):
        return b.build(name, "agent", agent_graph(target, where, into=b))
    root = b.add(GraphNode(id=where, label=name, kind=str(getattr(target, "kind", "flow")),
                           matches=(StepMatch(key=where),)))
    agents = getattr(target, "agents", None)
    for agent in (agents() if callable(agents) else ()):
        b.link(root, agent_graph(agent, f"{where}/**/{agent.name}", into=b), "call")
    return b.build(name, str(getattr(target, "kind", "flow")), root)


@functools.lru_cache(maxsize=2048)
def _pattern(key: str) -> re.Pattern[str]:
    parts: list[str | None] = []
    for segment in key.split("/"):
        if segment == "**":
            parts.append(None)
        else:
            parts.append("[^/]*".join(re.escape(p) for p in segment.split("*")))
    out = ""
    for i, part in enumerate(parts):
        if part is None:
            out += "(?:[^/]+/)*" if i < len(parts) - 1 else "(?:[^/]+(?:/[^/]+)*)?"
            continue
        out += part + ("/" if i < len(parts) - 1 else "")
    return re.compile(f"{out}(?:/.*)?", re.DOTALL)


def key_matches(pattern: str, key: str) -> bool:
    """Whether the step key ``key`` is at or below ``pattern`` (see the module)."""
    return bool(_pattern(pattern).fullmatch(key))


@dataclass(frozen=True, slots=True)
class GraphCounts:
    """How many runs went through each node and each edge (``"source>target"``)."""

    runs: int
    nodes: dict[str, int]
    edges: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "nodes": self.nodes, "edges": self.edges}


def nodes_hit(graph: FlowGraph, journal: Sequence[JournalEntry]) -> frozenset[str]:
    """The ids of the nodes one run (its journal) went through."""
    hit = set()
    for node in graph.nodes:
        if any(m.hit(e) for m in node.matches for e in journal):
            hit.add(node.id)
    return frozenset(hit)


def count_runs(graph: FlowGraph, runs: Iterable[frozenset[str]]) -> GraphCounts:
    """Counts from the node sets of many runs (:func:`nodes_hit` of each): a node's count
    is the runs that went through it, an edge's the runs that went through both ends. The
    root counts every run."""
    nodes = {n.id: 0 for n in graph.nodes if n.matches}
    edges = {f"{e.source}>{e.target}": 0 for e in graph.edges}
    total = 0
    for hit in runs:
        total += 1
        hit = hit | {graph.root}
        for node_id in hit:
            if node_id in nodes:
                nodes[node_id] += 1
        for e in graph.edges:
            if e.source in hit and e.target in hit:
                edges[f"{e.source}>{e.target}"] += 1
    return GraphCounts(total, nodes, edges)


__all__ = ["FlowGraph", "GraphBuilder", "GraphCounts", "GraphEdge", "GraphNode", "StepMatch",
           "agent_graph", "count_runs", "flow_graph", "key_matches", "nodes_hit"]
