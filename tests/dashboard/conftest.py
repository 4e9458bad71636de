"""A small shop app with real jobs in every state, and the dashboard over it."""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's note on the HTTP library its test client uses
    from starlette.testclient import TestClient

from jobstead import App, JobStatus
from jobstead.dashboard import create_dashboard
from tests.conftest import Target, worker_thread

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Shop:
    """The app plus the ids of jobs it left in known states."""

    app: App
    failing: threading.Event = field(default_factory=threading.Event)
    ids: dict[str, int] = field(default_factory=dict)


def build_shop(target: Target) -> Shop:
    app = App(target.url, schema=target.schema)
    shop = Shop(app)
    shop.failing.set()

    @app.handler(queue="mail")
    def send_email(to: str, subject: str = "hello") -> str:
        return f"sent to {to}"

    @app.handler(max_attempts=1, retry=0)
    def charge_card(order: int) -> str:
        if shop.failing.is_set():
            raise ValueError(f"card declined for order {order}")
        return f"charged {order}"

    @app.cron("0 3 * * *", name="nightly")
    @app.handler(queue="reports")
    def rebuild_report(full: bool = False) -> str:
        return "rebuilt"

    return shop


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def seed(shop: Shop) -> Shop:
    """One dead job (with a traceback), one succeeded, one waiting, one scheduled."""
    app = shop.app
    handlers = app.handlers
    dead = handlers["charge_card"].defer(order=7)
    done = handlers["send_email"].defer(to="ada@example.com")
    with worker_thread(app):
        wait_for(lambda: dead.refresh().status is JobStatus.DEAD and done.refresh().status is JobStatus.SUCCEEDED)
    waiting = handlers["send_email"].configure(key="welcome-42", tenant="acme").defer(to="bob@example.com")
    later = handlers["rebuild_report"].configure(delay=3600).defer(full=True)
    app.publish_crons()
    shop.ids.update(dead=dead.id, succeeded=done.id, queued=waiting.id, scheduled=later.id)
    return shop


@pytest.fixture
def shop(target: Target) -> Iterator[Shop]:
    s = seed(build_shop(target))
    yield s
    s.app.close()


@pytest.fixture
def sqlite_shop(sqlite_target: Target) -> Iterator[Shop]:
    s = seed(build_shop(sqlite_target))
    yield s
    s.app.close()


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(app: App, **options: Any) -> TestClient:
        client = TestClient(create_dashboard(app, **{"auth": None, **options}), follow_redirects=False)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
