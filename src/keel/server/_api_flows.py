"""``/v1/flows``: the structure of each agent and flow the server runs (nodes and edges, see
:func:`keel.runtime.flow_graph`) and how many of the tenant's runs went through each node and
edge over a window (the console's flow graphs read it).

Counts come from the journals of the agent's latest :data:`MAX_RUNS` runs started within the
window. A stopped or suspended run's journal is read once and what it went through
remembered (until the run changes); a running run's is read each time. So a page that asks
every few seconds reads only the runs that moved since.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from keel.core import KeelError, RunNotFound
from keel.runtime import FlowGraph, count_runs, flow_graph, nodes_hit
from keel.server._auth import Principal
from keel.server._errors import ApiError
from keel.server._models import ERRORS
from keel.server._state import allowed, state
from keel.store import RunFilter, RunStore

#: the most runs one count reads (the newest of the window)
MAX_RUNS = 500
#: the longest window (hours)
MAX_HOURS = 24 * 31
#: what runs went through, remembered for this many runs per process
_KEPT = 20_000
Name = Annotated[str, Path(min_length=1, max_length=200, description="an agent or flow")]

router = APIRouter(prefix="/v1", tags=["flows"], responses=ERRORS)


class FlowCounter:
    """The graphs of the app's agents (built once) and the nodes each run went through."""

    def __init__(self, store: RunStore, agents: dict[str, Any]) -> None:
        self.store = store
        self.agents = agents
        self._graphs: dict[str, FlowGraph] = {}
        self._hits: OrderedDict[tuple[str, str], tuple[float, frozenset[str]]] = OrderedDict()

    def graph(self, name: str) -> FlowGraph:
        graph = self._graphs.get(name)
        if graph is None:
            target = self.agents.get(name)
            if target is None:
                raise ApiError(404, "not_found", f"no agent or flow named {name[:80]!r} here")
            try:
                graph = flow_graph(target)
            except KeelError as exc:
                raise ApiError(500, "graph", f"{name!r} cannot be drawn: {exc}") from None
            self._graphs[name] = graph
        return graph

    async def counts(self, name: str, tenant: str, hours: float) -> dict[str, Any]:
        graph = self.graph(name)
        since = time.time() - hours * 3600
        runs = [r for r in await self.store.list_runs(RunFilter(agent=name, tenant=tenant,
                                                                limit=MAX_RUNS))
                if r.created_at >= since]
        hits: list[frozenset[str]] = []
        for record in runs:
            key = (name, record.run_id)
            known = self._hits.get(key)
            # a running run's journal grows without its record changing: read it each time
            if known is None or known[0] != record.updated_at or record.status == "running":
                try:
                    journal = await self.store.read_journal(record.run_id, tenant=tenant)
                except RunNotFound:  # deleted since it was listed
                    continue
                known = (record.updated_at, nodes_hit(graph, journal))
                self._hits[key] = known
                if len(self._hits) > _KEPT:
                    self._hits.popitem(last=False)
            else:
                self._hits.move_to_end(key)
            hits.append(known[1])
        counts = count_runs(graph, hits)
        return {"name": name, "hours": hours, "since": since, "limited": len(runs) >= MAX_RUNS,
                **counts.to_dict()}


def counter(request: Request) -> FlowCounter:
    s = state(request)
    found: FlowCounter | None = getattr(request.app.state, "flows", None)
    if found is None:
        found = request.app.state.flows = FlowCounter(s.store, s.executor.agents)
    return found


@router.get("/flows", summary="The agents and flows, with the size of their graphs")
async def flows(request: Request,
                who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    c = counter(request)
    out = []
    for name in sorted(c.agents):
        graph = c.graph(name)
        out.append({"name": name, "kind": graph.kind, "nodes": len(graph.nodes),
                    "edges": len(graph.edges)})
    return {"flows": out}


@router.get("/flows/{name}", summary="A flow's graph and its runs per node and edge")
async def flow(name: Name, request: Request,
               who: Annotated[Principal, Depends(allowed("read"))],
               hours: Annotated[float, Query(gt=0, le=MAX_HOURS)] = 24.0,
               counts_only: Annotated[bool, Query()] = False) -> dict[str, Any]:
    """``hours``: the window (default the last 24 hours). ``counts_only``: leave the graph
    out (what a page that already drew it asks for)."""
    c = counter(request)
    counts = await c.counts(name, who.tenant, hours)
    if counts_only:
        return {"counts": counts}
    return {"graph": c.graph(name).to_dict(), "counts": counts}
