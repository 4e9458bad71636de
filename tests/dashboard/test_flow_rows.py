"""The overview's handler rows show each flow control and how much of it is in use (HTTP on every driver,
and in real Chromium: axe-clean in the light and the dark scheme)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from jobstead import App
from jobstead.dashboard import create_dashboard
from tests.conftest import Target
from tests.dashboard.browser import LiveServer, axe_source, axe_violations, chromium, prefer_dark


def limited_app(target: Target) -> App:
    """Handlers with every control, jobs held running by a real claim: known figures to show."""
    app = App(target.url, schema=target.schema)
    app.rate_limit("stripe", "100/min")

    @app.handler(concurrency=4, concurrency_by="customer_id", concurrency_per_key=2, rate_limit="10/min")
    def sync_customer(customer_id: str) -> None: ...

    @app.handler(rate_limits=["stripe"], sequence_by="account_id")
    def charge(account_id: str, cents: int) -> None: ...

    @app.handler(rate_limit="2/min", rate_limit_by="customer_id", fair_by="tenant")
    def export(customer_id: str) -> None: ...

    sync_customer.defer_many([{"customer_id": c} for c in ("a", "a", "a", "b")])
    charge.defer_many([{"account_id": "acct-1", "cents": n} for n in (100, 200)])
    export.defer_many([{"customer_id": "x"}] * 3)
    app.store.claims.claim(
        worker_id="w1", handlers=["sync_customer", "charge", "export"], queues=None, limit=50, lease_seconds=300
    )
    return app


@pytest.fixture
def limited(target: Target) -> Iterator[App]:
    app = limited_app(target)
    yield app
    app.close()


def test_each_handler_row_says_its_limits_and_their_use(limited: App, make_client: Callable[..., Any]) -> None:
    html = make_client(limited).get("/").text
    for line in (
        "running 3 of 4",
        "per customer_id: 2 at once, busiest 2, 1 key at the limit",
        "rate: 3 of 10/min started",
        "rate stripe (shared): 1 of 100/min started",
        "in sequence by account_id",
        "rate per customer_id: 2/min, busiest 2, 1 key at the limit",
        "shared fairly by tenant",
    ):
        assert line in html, line
    assert html.count('aria-label="Flow control of ') == 3


@pytest.mark.slow
def test_the_rows_with_limits_are_axe_clean_light_and_dark(sqlite_target: Target) -> None:
    app = limited_app(sqlite_target)
    source = axe_source()
    found: list[str] = []
    try:
        with LiveServer(create_dashboard(app, auth=None)) as server, chromium() as browser:
            for dark in (False, True):
                prefer_dark(browser, dark)
                browser.get(server.url + "/")
                lines = browser.find_elements(By.CSS_SELECTOR, 'tr[data-handler="sync_customer"] ul.limits li')
                assert lines[0].text == "running 3 of 4"
                assert browser.find_elements(By.CSS_SELECTOR, "ul.limits li.full .badge")
                found += [f"{'dark' if dark else 'light'}: {v}" for v in axe_violations(browser, source)]
    finally:
        app.close()
    assert not found, "\n".join(found)
