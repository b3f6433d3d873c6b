"""A flow graph laid out for an inline SVG (``templates/flow.html``): geometry computed here,
text escaped by the template, colours from the stylesheet (classes ``k-<kind>``, ``r-<risk>``).

The layout is layered, top to bottom: a node's layer is its distance from the root (the
shortest, so handoffs back and forth do not stretch it), nodes keep their order of
description within a layer, and each row is centred. Edges to a lower layer are straight;
edges to the same or an upper layer (a handoff back) curve round the side.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from keel.runtime import FlowGraph

W, H = 176, 58
GAP_X, GAP_Y = 26, 64
PAD = 20
_LABEL = 24
_DETAIL = 28


@dataclass(frozen=True, slots=True)
class Box:
    id: str
    index: int
    x: float
    y: float
    label: str
    full_label: str
    detail: str
    kind: str
    risk: str
    counted: bool


@dataclass(frozen=True, slots=True)
class Arrow:
    key: str
    path: str
    x: float
    y: float
    kind: str
    label: str
    title: str


@dataclass(frozen=True, slots=True)
class Drawing:
    width: float
    height: float
    boxes: list[Box]
    arrows: list[Arrow]


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _layers(graph: FlowGraph) -> dict[str, int]:
    out = {graph.root: 0}
    after: dict[str, list[str]] = {}
    for e in graph.edges:
        after.setdefault(e.source, []).append(e.target)
    todo = deque([graph.root])
    while todo:
        node = todo.popleft()
        for nxt in after.get(node, ()):
            if nxt not in out:
                out[nxt] = out[node] + 1
                todo.append(nxt)
    deepest = max(out.values())
    for n in graph.nodes:  # not reachable from the root: a row of their own at the end
        out.setdefault(n.id, deepest + 1)
    return out


def _place(graph: FlowGraph, layer: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Each node's top-left corner: a row per layer, each node as near as it fits to the
    middle of the nodes above that point to it (so a step sits under its step, a tool under
    its agent), in order, never overlapping."""
    rows: dict[int, list[str]] = {}
    for n in graph.nodes:
        rows.setdefault(layer[n.id], []).append(n.id)
    parents: dict[str, list[str]] = {}
    for e in graph.edges:
        if layer[e.source] < layer[e.target]:
            parents.setdefault(e.target, []).append(e.source)
    x: dict[str, float] = {}
    for depth in sorted(rows):
        ids = rows[depth]
        wanted = {}
        for i, node_id in enumerate(ids):
            above = [x[p] for p in parents.get(node_id, ()) if p in x]
            wanted[node_id] = sum(above) / len(above) if above else i * (W + GAP_X)
        ids.sort(key=lambda n: wanted[n])  # stable: ties keep their order of description
        placed: list[float] = []
        for node_id in ids:
            floor = placed[-1] + W + GAP_X if placed else -1e9
            placed.append(max(wanted[node_id], floor))
        shift = sum(wanted[n] for n in ids) / len(ids) - sum(placed) / len(placed)
        for node_id, at in zip(ids, placed, strict=True):
            x[node_id] = at + shift
    left = min(x.values())
    return {n: (x[n] - left + PAD, PAD + layer[n] * (H + GAP_Y)) for n in x}


def layout(graph: FlowGraph) -> Drawing:
    layer = _layers(graph)
    where = _place(graph, layer)
    width = max(x for x, _ in where.values()) + W + PAD
    height = max(y for _, y in where.values()) + H + PAD + 20
    boxes = [Box(id=n.id, index=i, x=where[n.id][0], y=where[n.id][1],
                 label=_clip(n.label, _LABEL), full_label=n.label,
                 detail=_clip(n.detail, _DETAIL), kind=n.kind, risk=n.risk or "",
                 counted=bool(n.matches))
             for i, n in enumerate(graph.nodes)]
    labels = {n.id: n.label for n in graph.nodes}
    arrows = []
    for e in graph.edges:
        (sx, sy), (tx, ty) = where[e.source], where[e.target]
        if layer[e.target] > layer[e.source]:
            x1, y1, x2, y2 = sx + W / 2, sy + H, tx + W / 2, ty
            path = f"M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}"
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        else:  # the same or an upper layer: round the right-hand side
            x1, y1, x2, y2 = sx + W, sy + H * 0.65, tx + W, ty + H * 0.35
            bulge = max(x1, x2) + GAP_X * 0.9
            path = (f"M{x1:.1f},{y1:.1f} C{bulge:.1f},{y1:.1f} {bulge:.1f},{y2:.1f} "
                    f"{x2:.1f},{y2:.1f}")
            mx, my = bulge - 4, (y1 + y2) / 2
        title = f"{labels[e.source]} → {labels[e.target]}" + (f" ({e.label})" if e.label
                                                               else "")
        arrows.append(Arrow(key=f"{e.source}>{e.target}", path=path, x=mx, y=my,
                            kind=e.kind, label=e.label, title=title))
    return Drawing(width=width, height=height, boxes=boxes, arrows=arrows)
