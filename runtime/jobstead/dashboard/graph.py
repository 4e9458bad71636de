"""A workflow's steps drawn as a graph: server-side SVG, laid out in layers, one box per step.

The layout is a pure function of the steps and their ``after`` names, so the
picture of a workflow is the same on every reload and every live refresh
(only the colours change as steps move on). A step's layer is its depth: the
longest chain of dependencies above it, so every edge points rightwards.
Within a layer, steps are ordered by where their parents are (the mean of
the parents' rows, one sweep left to right), which untangles the common
shapes (diamonds, fan-out then fan-in, parallel chains) without a crossing
minimiser's cost.

A layer taller than ``ROWS`` steps wraps into sub-columns inside a framed
band, so a fan-out of thousands is a block of boxes, not a column tens of
thousands of pixels high. Edges meet such a band at its frame, not at each
box: a line into the second sub-column would cross the first and read as an
edge from the box it passes behind. So a fan-out of 10,000 then a fan-in is
three shapes and two arrows (each step's own dependencies stay in its
tooltip and the step table). Everything is computed in one pass over the
steps and edges (no per-step query, no quadratic step): a workflow of
10,000 steps draws in tens of milliseconds.
"""

from __future__ import annotations

import html
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from markupsafe import Markup

#: A box's size and the gaps around it, in the drawing's own units (pixels at 100%).
BOX_W = 156
BOX_H = 30
ROW_GAP = 10
#: Between a layer and the next: room for the edges to bend.
LAYER_GAP = 56
#: Between the sub-columns of one wrapped layer, and between its boxes and its frame.
WRAP_GAP = 14
PAD = 8
MARGIN = 12
#: A layer of more steps than this wraps into sub-columns (at least; more for huge layers).
ROWS = 12
#: Characters of a step's name shown in its box; the full name is in the box's tooltip.
LABEL = 20


@dataclass(frozen=True)
class Node:
    """What the drawing needs of a step."""

    name: str
    job_id: int | None
    status: str
    after: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class Placed:
    node: Node
    layer: int
    x: int
    y: int


@dataclass(frozen=True)
class Band:
    """The frame around a wrapped layer: where edges into and out of that layer meet it."""

    x: int
    y: int
    width: int
    height: int
    steps: int


@dataclass(frozen=True)
class Layout:
    boxes: dict[str, Placed]
    edges: list[tuple[str, str]]
    width: int
    height: int
    layers: int
    #: The wrapped layers' frames, by layer.
    bands: dict[int, Band]

    def lines(self) -> list[tuple[int, int, int, int]]:
        """The arrows to draw, (x1, y1, x2, y2): from the right side of a parent (or of its layer's band)
        to the left side of a child (or of its layer's band), each once."""
        half = BOX_H // 2
        drawn: dict[tuple[int, int, int, int], None] = {}
        for parent, child in self.edges:
            a, b = self.boxes[parent], self.boxes[child]
            band_a, band_b = self.bands.get(a.layer), self.bands.get(b.layer)
            start = (band_a.x + band_a.width, band_a.y + band_a.height // 2) if band_a else (a.x + BOX_W, a.y + half)
            end = (band_b.x, band_b.y + band_b.height // 2) if band_b else (b.x, b.y + half)
            drawn[(*start, *end)] = None
        return list(drawn)


def depths(nodes: Sequence[Node]) -> dict[str, int]:
    """Each step's layer: 0 for a step without dependencies, else one more than its deepest parent.

    Kahn's order over the edges, so a chain of thousands needs no recursion.
    ``after`` names that are not steps are ignored; steps in a cycle (which
    ``defer`` refuses, so only a damaged row could hold one) go after the rest.
    """
    names = {n.name for n in nodes}
    children: dict[str, list[str]] = {n.name: [] for n in nodes}
    waiting: dict[str, int] = {}
    for n in nodes:
        parents = {p for p in n.after if p in names and p != n.name}
        waiting[n.name] = len(parents)
        for p in parents:
            children[p].append(n.name)
    depth = {name: 0 for name, count in waiting.items() if count == 0}
    ready = deque(depth)
    while ready:
        name = ready.popleft()
        for child in children[name]:
            depth[child] = max(depth.get(child, 0), depth[name] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    last = max(depth.values(), default=-1) + 1
    return {n.name: depth.get(n.name, last) for n in nodes}


def layout(nodes: Sequence[Node]) -> Layout:
    """Where each box goes, and the edges (parent, child) to draw between them."""
    depth = depths(nodes)
    by_name = {n.name: n for n in nodes}
    layers: list[list[Node]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in nodes:
        layers[depth[n.name]].append(n)

    rows = max(ROWS, math.ceil(math.sqrt(len(nodes))))
    rank: dict[str, float] = {}
    ordered_layers: list[list[Node]] = []
    for index, layer in enumerate(layers):
        # Order by the parents' mean rank (the layer before is already ranked); ties keep
        # the order the steps were added in, which the sort's stability preserves.
        def key(n: Node) -> float:
            placed = [rank[p] for p in n.after if p in rank]
            return sum(placed) / len(placed) if placed else -1.0

        ordered = sorted(layer, key=key) if index else layer
        rank.update((n.name, position) for position, n in enumerate(ordered))
        ordered_layers.append(ordered)

    def tall(count: int) -> int:
        inset = PAD if count > rows else 0
        return min(count, rows) * (BOX_H + ROW_GAP) - ROW_GAP + 2 * inset

    highest = max((tall(len(layer)) for layer in ordered_layers), default=0)
    boxes: dict[str, Placed] = {}
    bands: dict[int, Band] = {}
    x = MARGIN
    for index, ordered in enumerate(ordered_layers):
        wrapped = len(ordered) > rows
        inset = PAD if wrapped else 0
        columns = math.ceil(len(ordered) / rows)
        top = MARGIN + (highest - tall(len(ordered))) // 2  # each layer centred on the tallest
        for position, n in enumerate(ordered):
            column, row = divmod(position, rows)
            boxes[n.name] = Placed(
                node=n,
                layer=index,
                x=x + inset + column * (BOX_W + WRAP_GAP),
                y=top + inset + row * (BOX_H + ROW_GAP),
            )
        span = columns * BOX_W + (columns - 1) * WRAP_GAP + 2 * inset
        if wrapped:
            bands[index] = Band(x=x, y=top, width=span, height=tall(len(ordered)), steps=len(ordered))
        x += span + LAYER_GAP
    height = MARGIN + highest + MARGIN

    edges = [(p, n.name) for n in nodes for p in dict.fromkeys(n.after) if p in by_name and p != n.name]
    width = x - LAYER_GAP + MARGIN if layers else 2 * MARGIN
    return Layout(
        boxes=boxes, edges=edges, width=width, height=max(height, 2 * MARGIN), layers=len(layers), bands=bands
    )


def svg(nodes: Sequence[Node], *, base: str = "", label: str = "Workflow graph") -> Markup:
    """The graph as an inline ``<svg>``: a box per step coloured by status and linked to its job.

    Each box says its name and status in text and in a ``<title>`` (with the
    reason a step was cancelled), so the picture reads without colour. Built
    as one string with integer coordinates and the standard library's escaping
    (tens of thousands of elements for a wide workflow: markupsafe's per-call
    cost would be a third of the page's time).
    """
    placed = layout(nodes)
    text = html.escape
    width, height = placed.width, placed.height
    parts = [
        f'<svg class="workflow-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="group" aria-label="{text(label)}"><title>{text(label)}</title>'
        '<defs><marker id="workflow-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" '
        'orient="auto"><polygon points="0,0 8,4 0,8"/></marker></defs><g class="edges">'
    ]
    for x1, y1, x2, y2 in placed.lines():
        bend = max(24, (x2 - x1) // 2)
        parts.append(f'<path d="M{x1} {y1}C{x1 + bend} {y1} {x2 - bend} {y2} {x2} {y2}"/>')
    parts.append("</g>")
    for band in placed.bands.values():
        parts.append(
            f'<rect class="band" x="{band.x}" y="{band.y}" width="{band.width}" height="{band.height}" rx="8">'
            f"<title>{band.steps:,} steps at this depth</title></rect>"
        )
    href = text(base) + "/jobs/"
    for box in placed.boxes.values():
        n = box.node
        name, status = text(n.name), text(n.status)
        shown = name if len(n.name) <= LABEL else text(n.name[: LABEL - 1] + "…")
        tip = f"{name}: {status}" + (f" (job {n.job_id})" if n.job_id is not None else "")
        if n.reason:
            tip += ", " + text(n.reason)
        if box.layer in placed.bands and n.after:
            tip += "; after " + text(", ".join(n.after[:10])) + (", …" if len(n.after) > 10 else "")
        x, y = box.x, box.y
        inner = (
            f'<title>{tip}</title><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5"/>'
            f'<text x="{x + 8}" y="{y + 13}" class="name">{shown}</text>'
            f'<text x="{x + 8}" y="{y + 25}" class="state">{status}</text>'
        )
        step = f'class="step st-{status}" data-step="{name}"'
        if n.job_id is not None:
            parts.append(f'<a {step} href="{href}{n.job_id}">{inner}</a>')
        else:
            parts.append(f"<g {step}>{inner}</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


class StepLike(Protocol):
    """What a step record offers the drawing (the store's ``StepRecord`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def job_id(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def after(self) -> Sequence[str]: ...
    @property
    def reason(self) -> str | None: ...


def nodes_of(steps: Iterable[StepLike]) -> list[Node]:
    return [Node(s.name, s.job_id, str(s.status), tuple(s.after), s.reason) for s in steps]
