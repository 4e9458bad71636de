"""The workflow graph's layout and drawing, as pure functions of the steps (no database)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from jobstead.dashboard import graph
from jobstead.dashboard.graph import Node

SVG = "{http://www.w3.org/2000/svg}"


def diamond() -> list[Node]:
    return [
        Node("fetch", 1, "succeeded"),
        Node("charge", 2, "running", ("fetch",)),
        Node("reserve", 3, "succeeded", ("fetch",)),
        Node("ship", 4, "blocked", ("charge", "reserve")),
    ]


def test_a_step_is_one_layer_right_of_its_deepest_parent() -> None:
    nodes = [*diamond(), Node("audit", 5, "blocked", ("fetch", "ship"))]
    assert graph.depths(nodes) == {"fetch": 0, "charge": 1, "reserve": 1, "ship": 2, "audit": 3}
    placed = graph.layout(nodes).boxes
    assert placed["fetch"].x < placed["charge"].x == placed["reserve"].x < placed["ship"].x < placed["audit"].x
    assert placed["charge"].y != placed["reserve"].y


def test_edges_go_from_each_parent_to_its_child_once_and_unknown_names_are_left_out() -> None:
    nodes = [Node("a", 1, "succeeded"), Node("b", 2, "queued", ("a", "a", "ghost", "b"))]
    assert graph.layout(nodes).edges == [("a", "b")]
    assert graph.depths(nodes) == {"a": 0, "b": 1}


def test_a_chain_of_thousands_needs_no_recursion() -> None:
    chain = [Node("s0", 1, "succeeded")] + [Node(f"s{i}", i + 1, "blocked", (f"s{i - 1}",)) for i in range(1, 3000)]
    depth = graph.depths(chain)
    assert depth["s2999"] == 2999
    assert graph.layout(chain).layers == 3000


def test_a_cycle_from_a_damaged_row_is_drawn_after_the_rest_instead_of_hanging() -> None:
    nodes = [Node("root", 1, "succeeded"), Node("x", 2, "blocked", ("y",)), Node("y", 3, "blocked", ("x",))]
    assert graph.depths(nodes) == {"root": 0, "x": 1, "y": 1}


def test_children_are_ordered_by_where_their_parents_are() -> None:
    # Two parallel chains whose second steps were added in the opposite order.
    nodes = [
        Node("a1", 1, "succeeded"),
        Node("b1", 2, "succeeded"),
        Node("b2", 3, "queued", ("b1",)),
        Node("a2", 4, "queued", ("a1",)),
    ]
    boxes = graph.layout(nodes).boxes
    assert boxes["a1"].y == boxes["a2"].y
    assert boxes["b1"].y == boxes["b2"].y


def test_a_wide_layer_wraps_into_sub_columns_inside_a_frame_that_its_edges_meet() -> None:
    nodes = [Node("fetch", 1, "succeeded")]
    nodes += [Node(f"thumb-{i}", i + 2, "queued", ("fetch",)) for i in range(100)]
    nodes.append(Node("album", 200, "blocked", tuple(f"thumb-{i}" for i in range(100))))
    placed = graph.layout(nodes)
    thumbs = [placed.boxes[f"thumb-{i}"] for i in range(100)]
    assert len({b.y for b in thumbs}) == graph.ROWS
    assert len({b.x for b in thumbs}) == math.ceil(100 / graph.ROWS)  # sub-columns of ROWS steps
    assert placed.boxes["album"].x > max(b.x for b in thumbs)
    assert placed.height < (graph.ROWS + 1) * (graph.BOX_H + graph.ROW_GAP) + 2 * graph.MARGIN
    assert len(placed.edges) == 200  # every dependency is known...
    band = placed.bands[1]
    assert band.steps == 100 and all(band.x < b.x and b.x + graph.BOX_W < band.x + band.width for b in thumbs)
    fetch, album = placed.boxes["fetch"], placed.boxes["album"]
    middle = band.y + band.height // 2
    assert placed.lines() == [  # ...and drawn as two arrows, to the frame and from it
        (fetch.x + graph.BOX_W, fetch.y + graph.BOX_H // 2, band.x, middle),
        (band.x + band.width, middle, album.x, album.y + graph.BOX_H // 2),
    ]
    drawing = ET.fromstring(str(graph.svg(nodes)))
    assert len(list(drawing.iter(f"{SVG}path"))) == 2
    tip = next(a for a in drawing.iter(f"{SVG}a") if a.get("data-step") == "thumb-7").find(f"{SVG}title")
    assert tip is not None and tip.text == "thumb-7: queued (job 9); after fetch"


def test_a_small_layer_is_not_framed_and_each_edge_is_drawn() -> None:
    placed = graph.layout(diamond())
    assert placed.bands == {}
    assert len(placed.lines()) == 4


def test_the_svg_links_each_box_to_its_job_and_colours_it_by_status() -> None:
    drawing = str(graph.svg(diamond(), base="/admin"))
    root = ET.fromstring(drawing)  # well-formed XML, so the browser draws what we wrote
    links = {a.get("data-step"): a for a in root.iter(f"{SVG}a")}
    assert set(links) == {"fetch", "charge", "reserve", "ship"}
    assert links["ship"].get("href") == "/admin/jobs/4"
    assert links["ship"].get("class") == "step st-blocked"
    assert links["charge"].get("class") == "step st-running"
    assert len(list(root.iter(f"{SVG}path"))) == 4
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "ship" in texts and "blocked" in texts  # the status is written, not only coloured


def test_names_are_escaped_and_long_ones_shortened_with_the_whole_name_in_the_tooltip() -> None:
    name = "<script>alert(1)</script>-and-a-very-long-tail"
    drawing = str(graph.svg([Node(name, 9, "cancelled", (), reason='upstream step "x" failed')]))
    assert "<script>" not in drawing
    root = ET.fromstring(drawing)
    box = next(root.iter(f"{SVG}a"))
    assert box.get("data-step") == name
    tooltip = box.find(f"{SVG}title")
    assert tooltip is not None and tooltip.text == f'{name}: cancelled (job 9), upstream step "x" failed'
    shown = box.find(f"{SVG}text")
    assert shown is not None and shown.text is not None
    assert len(shown.text) == graph.LABEL and shown.text.endswith("…")


def test_an_empty_workflow_draws_an_empty_picture() -> None:
    drawing = str(graph.svg([]))
    assert re.search(r'viewBox="0 0 \d+ \d+"', drawing)
    ET.fromstring(drawing)
