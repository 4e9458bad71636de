"""Each limit and its use, scraped from the real exporter after real claims: what ``jobstead stats`` shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobstead import App
from tests.conftest import Target
from tests.multiprocess.test_metrics import _up, scrape, value, wait_for
from tests.support.postgres_server import free_port
from tests.support.processes import run_cli, spawn_cli, stop

pytestmark = pytest.mark.slow


def capped(customer_id: str | None = None) -> None: ...


def charge(n: int) -> None: ...


def sync(customer_id: str | None = None) -> None: ...


def test_the_exporter_shows_each_limit_and_how_much_of_it_is_in_use(target: Target, tmp_path: Path) -> None:
    app = App(target.url, schema=target.schema)
    app.rate_limit("stripe", "100/min")
    app.handler(concurrency=4, concurrency_by="customer_id", concurrency_per_key=2, rate_limit="10/min")(capped)
    app.handler(rate_limits=["stripe"])(charge)
    app.handler(rate_limit="2/min", rate_limit_by="customer_id")(sync)
    app.get_handler("capped").defer_many([{"customer_id": c} for c in ("a", "a", "a", "b")])
    app.get_handler("charge").defer_many([{"n": n} for n in range(2)])
    app.get_handler("sync").defer_many([{"customer_id": c} for c in ("x", "x", "x", "y")])
    store = app.store
    taken = store.claims.claim(
        worker_id="w1", handlers=["capped", "charge", "sync"], queues=None, limit=50, lease_seconds=300
    )
    assert len(taken) == 3 + 2 + 3, "a: 2 of 3 (per key), b, both charges, x: 2 of 3 (its rate), y"

    port = free_port()
    exporter = spawn_cli(["metrics", "--port", str(port), "--host", "127.0.0.1"], target.env(), tmp_path / "m.log")
    try:
        wait_for(lambda: _up(port), timeout=30)
        samples = scrape(port)
    finally:
        stop(exporter)

    def concurrency(name: str, handler: str, scope: str) -> float:
        return value(samples, name, handler=handler, scope=scope)

    assert concurrency("jobstead_concurrency_limit", "capped", "global") == 4
    assert concurrency("jobstead_concurrency_in_use", "capped", "global") == 3
    assert concurrency("jobstead_concurrency_limit", "capped", "per_key") == 2
    assert concurrency("jobstead_concurrency_in_use", "capped", "per_key") == 2, "the busiest key: a"
    assert value(samples, "jobstead_concurrency_keys_at_limit", handler="capped") == 1

    def rate(name: str, handler: str = "", shared: str = "", scope: str = "global") -> float:
        return samples[(name, tuple(sorted({"handler": handler, "name": shared, "scope": scope}.items())))]

    assert rate("jobstead_rate_limit", "capped") == 10
    assert rate("jobstead_rate_limit_period_seconds", "capped") == 60
    assert rate("jobstead_rate_limit_used", "capped") == 3
    assert rate("jobstead_rate_limit", shared="stripe", scope="shared") == 100
    assert rate("jobstead_rate_limit_used", shared="stripe", scope="shared") == 2
    assert rate("jobstead_rate_limit", "sync", scope="per_key") == 2
    assert rate("jobstead_rate_limit_used", "sync", scope="per_key") == 2, "the busiest key: x"
    assert value(samples, "jobstead_rate_limit_keys_at_limit", handler="sync") == 1
    assert not any(dict(labels).get("customer_id") or "x" in dict(labels).values() for _, labels in samples), (
        "no series per key"
    )

    shown_by_cli = run_cli(["stats"], target.env()).stdout
    assert "concurrency_per_key by customer_id: busiest key shown, 1 at the limit" in shown_by_cli
    assert "rate_limit_per_key (per 60 s) by customer_id: busiest key shown, 1 at the limit" in shown_by_cli

    # the same figures as ``jobstead stats``: one read behind both
    shown = {(u.handler, u.limit): (u.in_use, u.of) for u in store.registry.limit_use()}
    assert shown == {
        ("capped", "concurrency"): (3, 4),
        ("capped", "concurrency_per_key"): (2, 2),
        ("capped", "rate_limit"): (3, 10),
        ("sync", "rate_limit_per_key"): (2, 2),
        (None, "rate_limits:stripe"): (2, 100),
    }
    app.close()
