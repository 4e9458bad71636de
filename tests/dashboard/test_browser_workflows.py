"""The workflow pages in headless Chromium: axe, a phone's width, a step's box opens its job, live colours,
cancel from the browser, and the README's screenshot of a diamond workflow half-way through."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from jobstead import JobStatus
from jobstead.dashboard import create_dashboard
from tests.conftest import worker_thread
from tests.dashboard.browser import LiveServer, axe_source, axe_violations, chromium, phone_screen, prefer_dark
from tests.dashboard.conftest import Shop, wait_for
from tests.dashboard.test_browser import click, save_screenshot, text, until

pytestmark = pytest.mark.slow


@dataclass
class Diamond:
    """fetch -> charge, reserve -> ship: fetch done, charge held running, reserve done, ship blocked;
    plus a finished workflow with a failed step, and an album with a wide layer."""

    shop: Shop
    release: threading.Event
    running: int
    failed: int
    album: int


@pytest.fixture
def diamond(sqlite_shop: Shop) -> Iterator[Diamond]:
    app = sqlite_shop.app
    release = threading.Event()

    @app.handler(queue="payments")
    def authorise(amount: int) -> str:
        release.wait(60)
        return "authorised"

    @app.handler(queue="images")
    def thumbnail(n: int) -> str:
        return f"thumb {n}"

    app.pause(handler="thumbnail")  # the album's thumbs wait, so it stays active
    email = app.handlers["send_email"]
    wf = app.workflow("onboard", tenant="acme", metadata={"order": 42})
    wf.add("fetch", email.job(to="fetch@example.com"))
    wf.add("charge", authorise.job(amount=10), after=["fetch"])
    wf.add("reserve", email.job(to="stock@example.com"), after=["fetch"])
    wf.add("ship", email.job(to="ship@example.com"), after=["charge", "reserve"])
    failing = app.workflow("onboard", tenant="acme", metadata={"order": 43})
    failing.add("fetch", email.job(to="fetch2@example.com"))
    failing.add("charge", app.handlers["charge_card"].job(order=43), after=["fetch"])
    failing.add("ship", email.job(to="ship2@example.com"), after=["charge"])
    album = app.workflow("album", tenant="globex")
    album.add("fetch", email.job(to="album@example.com"))
    for i in range(30):
        album.add(f"thumb-{i}", thumbnail.job(n=i), after=["fetch"])
    album.add("build", email.job(to="build@example.com"), after=[f"thumb-{i}" for i in range(30)])
    running, failed = wf.defer(), failing.defer()
    with worker_thread(app):
        wait_for(
            lambda: (
                running.refresh().steps["charge"].status is JobStatus.RUNNING
                and running.steps["reserve"].status is JobStatus.SUCCEEDED
                and failed.refresh().status == "failed"
            ),
            what="the diamond half-way and the other workflow failed",
        )
        album_run = album.defer()
        try:
            yield Diamond(sqlite_shop, release, running.id, failed.id, album_run.id)
        finally:
            release.set()


def test_the_workflow_pages_pass_axe_light_and_dark_and_fit_a_phone(diamond: Diamond) -> None:
    source = axe_source()
    paths = ["/workflows", f"/workflows/{diamond.running}", f"/workflows/{diamond.failed}", "/jobs?status=blocked"]
    found: list[str] = []
    too_wide: list[str] = []
    with LiveServer(create_dashboard(diamond.shop.app, auth=None)) as server, chromium() as browser:
        for dark in (False, True):
            prefer_dark(browser, dark)
            for path in paths:
                browser.get(server.url + path)
                found += [f"{'dark' if dark else 'light'} {path}: {v}" for v in axe_violations(browser, source)]
        browser.get(server.url + f"/workflows/{diamond.running}")
        click(browser, '[data-action="cancel"]')
        until(browser, lambda d: text(d, "h1") == "Confirm")
        found += [f"confirm cancel: {v}" for v in axe_violations(browser, source)]
        prefer_dark(browser, False)
        phone_screen(browser)
        for path in paths:
            browser.get(server.url + path)
            scroll_width, width = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth];")
            if scroll_width > width:
                too_wide.append(f"{path}: {scroll_width} px in a {width} px window")
    assert not found, "\n".join(found)
    assert not too_wide, "\n".join(too_wide)


def test_a_box_opens_its_job_and_the_colours_follow_the_steps_live(diamond: Diamond, tmp_path: Path) -> None:
    app = diamond.shop.app
    record = app.get_workflow(diamond.running)
    with LiveServer(create_dashboard(app, auth=None)) as server, chromium(width=1280, height=820) as browser:
        browser.get(server.url + f"/workflows/{diamond.running}")
        box = '[data-step="{}"]'

        def status(d: Any, step: str) -> str:
            return str(d.find_element(By.CSS_SELECTOR, box.format(step)).get_attribute("class"))

        assert status(browser, "fetch") == "step st-succeeded"
        assert status(browser, "charge") == "step st-running"
        assert status(browser, "ship") == "step st-blocked"
        browser.execute_script("document.querySelector('footer').remove();")
        save_screenshot(browser, tmp_path, "dashboard-workflow.png")
        # live: the held step ends, the page recolours itself without a reload
        marker = browser.execute_script("window.notReloaded = true; return window.notReloaded;")
        diamond.release.set()
        until(browser, lambda d: status(d, "ship") == "step st-succeeded", timeout=30)
        assert browser.execute_script("return window.notReloaded;") == marker
        until(browser, lambda d: text(d, "#workflow-status") == "succeeded")
        # a box is a link to its step's job
        browser.find_element(By.CSS_SELECTOR, box.format("charge")).click()
        until(browser, lambda d: text(d, "h1") == f"Job {record.steps['charge'].job_id}")


def test_cancel_and_retry_from_the_browser(diamond: Diamond) -> None:
    app = diamond.shop.app
    with LiveServer(create_dashboard(app, auth=None)) as server, chromium() as browser:
        browser.get(server.url + f"/workflows/{diamond.album}")
        click(browser, '[data-action="cancel"]')
        until(browser, lambda d: text(d, "h1") == "Confirm")
        click(browser, "main form button")
        until(browser, lambda d: f"workflow {diamond.album} cancelled" in text(d, ".notice"))
        assert app.get_workflow(diamond.album).status == "cancelled"
        diamond.shop.failing.clear()  # the card is accepted now
        browser.get(server.url + f"/workflows/{diamond.failed}")
        click(browser, '[data-action="retry"]')
        until(browser, lambda d: "run again" in text(d, ".notice"))
        wait_for(lambda: app.get_workflow(diamond.failed).status == "succeeded", what="the retried workflow")
        browser.get(server.url + "/activity")
        assert "workflow-cancel" in text(browser, "main") and "workflow-retry" in text(browser, "main")
