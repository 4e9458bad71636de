"""The redesigned pages in real headless Chromium: axe-core on every page (light and dark), the
keyboard, a 375 px wide screen, the Running page's cancel button, and the README's screenshots."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from jobstead import App, JobStatus
from jobstead.clock import utcnow
from jobstead.dashboard import Credentials, create_dashboard
from tests.conftest import Target, worker_thread
from tests.dashboard.browser import LiveServer, axe_source, axe_violations, chromium, phone_screen, prefer_dark
from tests.dashboard.conftest import Shop, wait_for
from tests.dashboard.test_browser import click, save_screenshot, text, until
from tests.dashboard.test_pages import flaky_success

pytestmark = pytest.mark.slow


class Busy:
    """A shop with one job held running (until ``release``), a batch, and a job that failed once then succeeded."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.release = threading.Event()
        app = shop.app
        release = self.release

        @app.handler(queue="exports", concurrency=5, rate_limit="100/h")  # the overview shows its limits
        def export_report(report: str, month: str) -> str:
            release.wait(60)
            return "exported"

        self.flaky = flaky_success(shop)
        self.batch = app.defer_batch([app.handlers["send_email"].job(to=f"b{i}@example.com") for i in range(3)])
        self.running = export_report.defer(report="revenue", month="2026-11").id
        self.others = [export_report.defer(report=r, month="2026-11").id for r in ("churn", "refunds")]


@pytest.fixture
def busy(sqlite_shop: Shop) -> Iterator[Busy]:
    state = Busy(sqlite_shop)
    with worker_thread(sqlite_shop.app):
        wait_for(
            lambda: all(
                sqlite_shop.app.store.queries.get_job(i).status is JobStatus.RUNNING  # type: ignore[union-attr]
                for i in (state.running, *state.others)
            ),
            what="the exports to run",
        )
        try:
            yield state
        finally:
            state.release.set()


def pages(busy: Busy) -> list[str]:
    ids = busy.shop.ids
    return [
        "/",
        "/jobs",
        "/jobs?status=dead",
        f"/jobs/{ids['dead']}",
        f"/jobs/{busy.flaky}",
        f"/jobs/{busy.running}",
        "/running",
        "/failures",
        "/crons",
        "/workers",
        "/batches",
        f"/batches/{busy.batch.id}",
        "/activity",
        "/operator",
        "/nope",
    ]


def test_axe_finds_no_serious_violation_on_any_page_light_or_dark(busy: Busy) -> None:
    source = axe_source()
    found: list[str] = []
    with LiveServer(create_dashboard(busy.shop.app, auth=None)) as server, chromium() as browser:
        for dark in (False, True):
            prefer_dark(browser, dark)
            for path in pages(busy):
                browser.get(server.url + path)
                found += [f"{'dark' if dark else 'light'} {path}: {v}" for v in axe_violations(browser, source)]
            # the confirmation pages the destructive buttons lead to
            browser.get(server.url + f"/jobs/{busy.shop.ids['dead']}")
            click(browser, '[data-action="delete"]')
            until(browser, lambda d: text(d, "h1") == "Confirm")
            found += [f"confirm delete: {v}" for v in axe_violations(browser, source)]
    with LiveServer(create_dashboard(busy.shop.app, auth=Credentials(token="t0ken"))) as server, chromium() as browser:
        browser.get(server.url + "/login")
        found += [f"login: {v}" for v in axe_violations(browser, source)]
    assert not found, "\n".join(found)


def test_the_dark_scheme_follows_the_system_preference(busy: Busy) -> None:
    background = "return getComputedStyle(document.body).backgroundColor;"
    with LiveServer(create_dashboard(busy.shop.app, auth=None)) as server, chromium() as browser:
        browser.get(server.url + "/")
        light = browser.execute_script(background)
        prefer_dark(browser)
        browser.get(server.url + "/")
        dark = browser.execute_script(background)
    assert light == "rgb(247, 248, 250)" and dark == "rgb(18, 22, 29)", (light, dark)


def test_the_keyboard_reaches_the_content_the_pages_and_the_buttons(busy: Busy) -> None:
    with LiveServer(create_dashboard(busy.shop.app, auth=None)) as server, chromium() as browser:
        browser.get(server.url + "/jobs")
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        assert active.text == "Skip to the content" and active.is_displayed()
        active.send_keys(Keys.ENTER)
        assert browser.switch_to.active_element.get_attribute("id") == "content"
        # from the top: the brand, then the pages in order; Enter follows a link
        browser.get(server.url + "/jobs")
        labels = []
        for _ in range(5):
            browser.switch_to.active_element.send_keys(Keys.TAB)
            labels.append(browser.switch_to.active_element.text)
        assert labels == ["Skip to the content", "Jobstead", "Overview", "Jobs", "Running"], labels
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        until(browser, lambda d: text(d, "h1") == "Running")
        # a focused button acts on Enter: Cancel on the Running page asks the worker to stop
        button = browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{busy.running}"] [data-action="cancel"]')
        browser.execute_script("arguments[0].focus();", button)
        outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle;")
        assert outline != "none", "the focused button shows no focus ring"
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        until(browser, lambda d: f"job {busy.running} is running: asked to stop" in text(d, ".notice"))


def test_every_page_fits_a_375_px_wide_screen(busy: Busy) -> None:
    fits = "return [document.documentElement.scrollWidth, window.innerWidth];"
    too_wide = []
    with LiveServer(create_dashboard(busy.shop.app, auth=None)) as server, chromium() as browser:
        phone_screen(browser)
        for path in pages(busy):
            browser.get(server.url + path)
            scroll_width, width = browser.execute_script(fits)
            assert width == 375, f"the window is {width} px wide, not a phone's"
            if scroll_width > width:
                too_wide.append(f"{path}: {scroll_width} px in a {width} px window")
            assert browser.find_element(By.CSS_SELECTOR, "h1").is_displayed()
            if path != "/nope":  # the 404 page has no navigation
                assert browser.find_element(By.LINK_TEXT, "Running").is_displayed()
    assert not too_wide, "\n".join(too_wide)


def an_hour_of_work(target: Target) -> None:
    """Jobs run by an app whose clock steps through the last hour, so the screenshots' charts have a history.

    Each step defers a batch, lets it wait a few minutes (of that clock), then
    runs it with a real worker: the rows get the times a real hour would have
    given them. One job in eleven fails for good.
    """
    offset = [timedelta(minutes=-57)]
    past = App(target.url, schema=target.schema, clock=lambda: utcnow() + offset[0])
    ran: list[int] = []

    @past.handler(queue="imports", max_attempts=1, retry=0)
    def import_orders(n: int) -> None:
        ran.append(n)
        if n % 11 == 0:
            raise ValueError(f"order file {n} is malformed")

    try:
        total = 0
        for step in range(11):
            count = 12 + (step * 17) % 40
            import_orders.defer_many([{"n": step * 100 + i} for i in range(count)])
            total += count
            offset[0] += timedelta(minutes=2 + step % 3)
            with worker_thread(past):
                wait_for(lambda total=total: len(ran) == total, what="a step of the hour's work")
            offset[0] += timedelta(minutes=2)
    finally:
        past.close()


def test_the_running_page_cancels_a_job_and_the_readme_screenshots(
    busy: Busy, sqlite_target: Target, tmp_path: Path
) -> None:
    app = busy.shop.app
    an_hour_of_work(sqlite_target)
    with LiveServer(create_dashboard(app, auth=None)) as server, chromium(width=1280, height=1250) as browser:
        browser.get(server.url + "/")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-depth svg"))
        readme_screenshot(browser, tmp_path, "dashboard-overview.png")
        browser.set_window_size(1280, 900)
        browser.get(server.url + f"/jobs/{busy.flaky}")
        readme_screenshot(browser, tmp_path, "dashboard-job.png")
        browser.set_window_size(1280, 500)
        browser.get(server.url + "/running")
        row = f'tr[data-job-id="{busy.running}"]'
        assert "export_report" in text(browser, row) and 'month="2026-11"' in text(browser, row)
        elapsed = text(browser, f"{row} [data-elapsed]")
        assert elapsed.endswith(" s")
        until(browser, lambda d: text(d, f"{row} [data-elapsed]") != elapsed, timeout=3)  # it counts on
        readme_screenshot(browser, tmp_path, "dashboard-running.png")
        click(browser, f'{row} [data-action="cancel"]')
        until(browser, lambda d: "asked to stop" in text(d, ".notice"))
        until(browser, lambda d: "stop requested" in text(d, row))
        busy.release.set()
        wait_for(lambda: app.store.queries.get_job(busy.running).status.is_final, what="the export to end")  # type: ignore[union-attr]


def readme_screenshot(browser: Any, tmp_path: Path, name: str) -> None:
    """The page without its footer, which names the test's temporary database file."""
    browser.execute_script("document.querySelector('footer').remove();")
    save_screenshot(browser, tmp_path, name)


def test_run_now_delete_and_pause_everything_from_the_browser(busy: Busy) -> None:
    app = busy.shop.app
    with LiveServer(create_dashboard(app, auth=None)) as server, chromium() as browser:
        # a cron's Run now defers one job at once, said on the page and in the activity log
        browser.get(server.url + "/crons")
        assert "every day at 03:00" in text(browser, 'tr[data-cron="nightly"]')
        click(browser, 'tr[data-cron="nightly"] [data-action="run now"]')
        until(browser, lambda d: "cron nightly run now as job" in text(d, ".notice"))
        job_id = int(text(browser, ".notice").rsplit(" ", 1)[1])
        wait_for(lambda: app.store.queries.get_job(job_id).status is JobStatus.SUCCEEDED, what="the cron's job")  # type: ignore[union-attr]
        # Delete asks first; going back deletes nothing, confirming does
        dead = busy.shop.ids["dead"]
        browser.get(server.url + f"/jobs/{dead}")
        click(browser, '[data-action="delete"]')
        until(browser, lambda d: text(d, "h1") == "Confirm")
        assert "cannot be undone" in text(browser, "#confirm")
        browser.find_element(By.LINK_TEXT, "No, go back").click()
        until(browser, lambda d: text(d, "h1") == f"Job {dead}")
        click(browser, '[data-action="delete"]')
        until(browser, lambda d: text(d, "h1") == "Confirm")
        click(browser, '[data-action="confirm"]')
        until(browser, lambda d: f"job {dead} deleted" in text(d, ".notice"))
        assert text(browser, "h1") == "Jobs" and app.store.queries.get_job(dead) is None
        # Pause everything asks first too
        browser.get(server.url + "/")
        click(browser, '[data-action="pause everything"]')
        until(browser, lambda d: text(d, "h1") == "Confirm")
        assert app.store.control.paused() == []
        click(browser, '[data-action="confirm"]')
        until(browser, lambda d: "everything paused" in text(d, ".notice"))
        assert app.store.control.paused() == [("all", "")]
        assert "Everything is paused" in text(browser, "#overview-totals")
