"""The chart's Grafana dashboard and example alerts ask only for metrics that exist, and show every one of them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import jobstead.metrics.worker  # noqa: F401 - registers the worker's and the deferred metrics
from jobstead.metrics.database import DatabaseGauges
from jobstead_operator.databases import Databases
from jobstead_operator.metrics import ManagedDatabasesCollector

CHART = Path(__file__).resolve().parents[2] / "charts" / "jobstead"
METRIC = re.compile(r"\b(jobstead_[a-z_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",), "gauge": ("",)}


def exposed() -> set[str]:
    """Every sample name Jobstead's processes can expose: workers, deferring processes, exporter, operator."""
    families = [
        *REGISTRY.collect(),
        *DatabaseGauges().families(),
        *ManagedDatabasesCollector(Databases()).collect(),
    ]
    names = {f.name + suffix for f in families if f.name.startswith("jobstead_") for suffix in SUFFIXES[f.type]}
    assert "jobstead_operator_reconcile_total" in names and "jobstead_queue_jobs" in names
    return names


def dashboard() -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / "jobstead.json").read_text())  # type: ignore[no-any-return]


def exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def rule_exprs() -> list[str]:
    text = (CHART / "templates" / "prometheusrule.yaml").read_text()
    return re.findall(r"^\s*expr: (.+)$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_expression_asks_for_a_metric_that_exists(source: str) -> None:
    found = list(exprs(dashboard())) if source == "dashboard" else rule_exprs()
    assert found, f"no expressions found in the {source}"
    names = exposed()
    for expr in found:
        used = METRIC.findall(expr)
        assert used, f"{expr!r} names no Jobstead metric"
        unknown = set(used) - names
        assert not unknown, f"{expr!r} asks for {sorted(unknown)}, which nothing exposes"


def test_the_dashboard_shows_every_metric_and_its_panels_are_well_formed() -> None:
    board = dashboard()
    used = {name for expr in exprs(board) for name in METRIC.findall(expr)}
    for name in exposed():
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert any(u == name or re.sub(r"_(bucket|count|sum)$", "", u) == base for u in used), f"{name} not shown"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "handler"}


def test_the_alerts_cover_dead_jobs_waiting_jobs_and_missed_crons() -> None:
    text = " ".join(rule_exprs())
    assert 'outcome="dead"' in text
    assert "jobstead_queue_oldest_job_age_seconds" in text
    assert "jobstead_cron_next_fire_timestamp_seconds" in text


def test_the_readme_lists_every_metric() -> None:
    """The README's "Metrics and logs" section names every metric a Jobstead process can expose."""
    readme = (CHART.parents[1] / "README.md").read_text()
    section = readme[readme.index("## Metrics and logs") :]
    section = section[: section.index("\n## ", 1)]
    listed = set(METRIC.findall(section))
    for name in exposed():
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in listed or base in listed, f"{name} is not in the README's Metrics and logs section"
