"""A real server on 127.0.0.1 and Debian's headless Chromium, driven through its own chromedriver.

Nothing is downloaded: the browser and the driver come from Debian's packages
(``make browser-deps``), and Selenium is pointed at both, so Selenium Manager
never runs.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from jobstead.dashboard.serving import StreamClosingServer


class LiveServer:
    """uvicorn serving an ASGI app on a free loopback port, on a thread of this process."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5)
        self._server = StreamClosingServer(config, app)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()


def browser_binaries() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Chromium and chromedriver are missing: run `make browser-deps` (Debian packages)")
    return chromium, driver


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace to sandbox with
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def axe_source() -> str:
    """axe-core's script, as ``make axe-deps`` installed it (pinned in tests/dashboard/package-lock.json)."""
    from tests.support.controlplane import cache_dir
    from tests.support.processes import REPO

    # `make axe-deps` installs into the Makefile's CACHE_DIR (the repository's .cache by default),
    # which $JOBSTEAD_CACHE_DIR may point away from when tools are borrowed from another checkout.
    candidates = [
        root / "dashboard-npm" / "node_modules" / "axe-core" / "axe.min.js" for root in (cache_dir(), REPO / ".cache")
    ]
    for path in candidates:
        if path.exists():
            return path.read_text()
    pytest.fail(f"axe-core is missing at {candidates[0]}: run `make axe-deps` (npm ci of tests/dashboard/package.json)")


#: What fails a page: axe's two worst impact levels.
BLOCKING = ("serious", "critical")


def axe_violations(driver: Any, source: str) -> list[str]:
    """Run axe-core on the page loaded in ``driver``; one line per serious or critical violation.

    The script is evaluated through WebDriver (the DevTools protocol), which
    the page's Content-Security-Policy does not govern: the page itself
    still loads nothing but its own files.
    """
    driver.execute_script(source)
    driver.set_script_timeout(30)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done(String(e)));"
    )
    if isinstance(result, str):
        raise AssertionError(f"axe-core failed: {result}")
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at {', '.join(str(n['target']) for n in v['nodes'][:3])}"
        for v in result
        if v.get("impact") in BLOCKING
    ]


def prefer_dark(driver: Any, dark: bool = True) -> None:
    """Emulate the operating system's dark (or light) preference, as ``prefers-color-scheme`` sees it."""
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
    )


def phone_screen(driver: Any, width: int = 375, height: int = 800) -> None:
    """A phone's viewport (Chromium's windows are never narrower than 500 px, so emulate one)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
