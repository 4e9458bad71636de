"""The dashboard in real headless Chromium: pages, filters, tracebacks, bulk retry, pause, live updates."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from jobstead import JobStatus
from jobstead.dashboard import create_dashboard
from tests.conftest import Target, worker_thread
from tests.dashboard.browser import LiveServer, chromium
from tests.dashboard.conftest import Shop, build_shop, seed, wait_for
from tests.support.processes import REPO, run_cli

pytestmark = pytest.mark.slow

DOCS = REPO / "docs"
#: Set to 1 to write the README's screenshots into docs/ (they always go to the test's tmp dir).
SCREENSHOTS_ENV = "JOBSTEAD_UPDATE_SCREENSHOTS"


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def serve(shop: Shop) -> LiveServer:
    return LiveServer(create_dashboard(shop.app, auth=None))


# Live pages swap their sections in place, so the helpers read and click in one
# step (or retry), never holding an element across a refresh.


def text(driver: Any, css: str) -> str:
    found = driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.innerText;", css)
    if found is None:
        raise AssertionError(f"nothing matches {css}")
    return str(found).strip()


def shown_ids(driver: Any) -> set[int]:
    ids = driver.execute_script(
        "return Array.from(document.querySelectorAll('tr[data-job-id]'), r => Number(r.dataset.jobId));"
    )
    return set(ids)


def click(driver: Any, css: str) -> None:
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css} kept being replaced")


def until(driver: Any, check: Any, timeout: float = 15) -> Any:
    """Wait for ``check``; a page mid-navigation (nothing to read yet) counts as not yet."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(AssertionError, StaleElementReferenceException)
    ).until(lambda d: check(d))


def press(driver: Any, url: str, button: str, notice: str, state_cell: str, took: Callable[[str], bool]) -> None:
    """Click a form button and wait for its notice, clicking again if a live refresh swallowed the click.

    A live refresh can replace the row between finding the button and the click
    landing, so the click goes nowhere; the state cell says whether it took.
    """
    for attempt in range(3):
        driver.get(url)
        if attempt and took(text(driver, state_cell)):
            return
        click(driver, button)
        try:
            until(driver, lambda d: notice in text(d, ".notice"))
            return
        except Exception:
            if attempt == 2:
                raise


def save_screenshot(driver: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / name)


def test_every_page_loads_and_the_jobs_list_filters(sqlite_shop: Shop, browser: Any) -> None:
    handlers = sqlite_shop.app.handlers
    handlers["send_email"].defer_many([{"to": f"user{i}@example.com"} for i in range(12)])
    with worker_thread(sqlite_shop.app):
        wait_for(lambda: not sqlite_shop.app.store.queries.stats().by_status["queued"], what="the queue to drain")
    handlers["charge_card"].defer_many([{"order": 100 + i} for i in range(3)])
    with serve(sqlite_shop) as server:
        browser.get(server.url + "/")
        assert text(browser, "h1") == "Overview"
        assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-handler="charge_card"]')
        for label, title in [
            ("Jobs", "Jobs"),
            ("Failures", "Failures"),
            ("Crons", "Crons"),
            ("Workers", "Workers"),
            ("Batches", "Batches"),
            ("Activity", "Activity"),
            ("Running", "Running"),
            ("Overview", "Overview"),
        ]:
            browser.find_element(By.LINK_TEXT, label).click()
            until(browser, lambda d, title=title: text(d, "h1") == title)
            assert "Traceback" not in browser.page_source
        browser.find_element(By.LINK_TEXT, "Batches").click()
        assert "No batches" in text(browser, "#batches")

        browser.find_element(By.LINK_TEXT, "Jobs").click()
        Select(browser.find_element(By.NAME, "status")).select_by_value("dead")
        Select(browser.find_element(By.NAME, "handler")).select_by_value("charge_card")
        click(browser, "#filters button")
        until(browser, lambda d: "status=dead" in d.current_url)
        assert shown_ids(browser) == {sqlite_shop.ids["dead"]}
        search = browser.find_element(By.NAME, "q")
        search.clear()
        Select(browser.find_element(By.NAME, "status")).select_by_value("")
        Select(browser.find_element(By.NAME, "handler")).select_by_value("")
        search.send_keys("user7@")
        click(browser, "#filters button")
        until(browser, lambda d: "q=user7" in d.current_url)
        assert len(shown_ids(browser)) == 1


def test_a_dead_job_shows_its_traceback(sqlite_shop: Shop, browser: Any) -> None:
    with serve(sqlite_shop) as server:
        browser.get(server.url + "/failures")
        browser.find_element(By.PARTIAL_LINK_TEXT, "card declined for order 7").click()
        until(browser, lambda d: text(d, "h1") == f"Job {sqlite_shop.ids['dead']}")
        assert text(browser, ".status") == "dead"
        traceback = text(browser, "#traceback")
        assert traceback.startswith("Traceback (most recent call last)")
        assert "ValueError: card declined for order 7" in traceback
        assert '"order": 7' in text(browser, "#job-args")
        assert "failed" in text(browser, "ol.timeline")


def test_bulk_retry_of_everything_matching_a_filter_runs_the_jobs(sqlite_shop: Shop, browser: Any) -> None:
    app = sqlite_shop.app
    extra = app.handlers["charge_card"].defer_many([{"order": 200 + i} for i in range(5)])
    ids = {job.id for job in extra} | {sqlite_shop.ids["dead"]}
    with worker_thread(app):
        wait_for(lambda: all(j.refresh().status is JobStatus.DEAD for j in extra), what="six dead jobs")
    sqlite_shop.failing.clear()  # the card processor is back
    with serve(sqlite_shop) as server, worker_thread(app):
        browser.get(server.url + "/jobs?status=dead&handler=charge_card")
        assert shown_ids(browser) == ids
        click(browser, '[data-action="retry-matching"]')
        until(browser, lambda d: text(d, "h1") == "Confirm")
        assert browser.find_element(By.CSS_SELECTOR, "[data-count]").get_attribute("data-count") == "6"
        click(browser, '[data-action="confirm"]')
        until(browser, lambda d: "6 jobs queued again" in text(d, ".notice"))
        wait_for(
            lambda: all(app.store.queries.get_job(i).status is JobStatus.SUCCEEDED for i in ids),  # type: ignore[union-attr]
            what="the retried jobs to run",
        )
        browser.get(server.url + "/jobs?status=succeeded&handler=charge_card")
        assert shown_ids(browser) == ids
        browser.get(server.url + "/activity")
        assert "6 jobs queued again" in text(browser, "#activity")


def test_pausing_a_handler_stops_workers_claiming_it(sqlite_shop: Shop, browser: Any) -> None:
    app = sqlite_shop.app
    sqlite_shop.failing.clear()
    with serve(sqlite_shop) as server, worker_thread(app):
        row = 'tr[data-handler="charge_card"]'
        press(
            browser,
            server.url + "/",
            f'{row} [data-action="pause"]',
            "handler charge_card paused",
            f"{row} td.state",
            lambda state: "paused" in state,
        )
        assert "paused" in text(browser, 'tr[data-handler="charge_card"] td.state')
        held = app.handlers["charge_card"].defer(order=300)
        other = app.handlers["send_email"].defer(to="carol@example.com")
        wait_for(lambda: other.refresh().status is JobStatus.SUCCEEDED, what="the other handler's job")
        time.sleep(1.0)  # ten of the worker's polls
        assert held.refresh().status is JobStatus.QUEUED
        press(
            browser,
            server.url + "/",
            f'{row} [data-action="resume"]',
            "handler charge_card resumed",
            f"{row} td.state",
            lambda state: "paused" not in state,
        )
        wait_for(lambda: held.refresh().status is JobStatus.SUCCEEDED, what="the paused job after resume")


@pytest.mark.postgres
def test_a_job_deferred_in_another_process_shows_on_the_open_overview_within_a_second(
    postgres_target: Target, browser: Any
) -> None:
    shop = seed(build_shop(postgres_target))
    cell = 'tr[data-handler="send_email"][data-queue="mail"] td[data-status="queued"]'
    try:
        with serve(shop) as server:
            browser.get(server.url + "/")
            until(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live-ready") == "1")
            time.sleep(1.5)  # the stream is open and past its first refresh window
            before = text(browser, cell)
            browser.execute_script("window.notReloaded = true;")
            result = run_cli(["defer", "send_email", "--args", '{"to": "dan@example.com"}'], postgres_target.env())
            committed = time.monotonic()
            assert result.returncode == 0, result.stderr
            until(browser, lambda d: text(d, cell) != before, timeout=5)
            seen_after = time.monotonic() - committed
            assert browser.execute_script("return window.notReloaded === true;"), "the page was reloaded"
            assert int(text(browser, cell)) == int(before) + 1
            print(f"deferred in another process, shown after {seen_after * 1000:.0f} ms")
            assert seen_after < 1.0, f"took {seen_after:.2f} s"

            # hidden tab: the stream is closed and the page stops refreshing
            browser.execute_script(
                "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
                "document.dispatchEvent(new Event('visibilitychange'));"
            )
            assert text(browser, "#live-state") == "paused while hidden"
            hidden_count = text(browser, cell)
            run_cli(["defer", "send_email", "--args", '{"to": "eve@example.com"}'], postgres_target.env())
            time.sleep(2.0)
            assert text(browser, cell) == hidden_count
            browser.execute_script(
                "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
                "document.dispatchEvent(new Event('visibilitychange'));"
            )
            until(browser, lambda d: text(d, cell) == str(int(hidden_count) + 1), timeout=5)
    finally:
        shop.app.close()
