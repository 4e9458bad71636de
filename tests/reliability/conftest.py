"""Fixtures of the fault tests: PgBouncer in front of the test server, and helpers to wait and look."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Target
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PostgresServer, pg_url: str) -> Iterator[PgBouncer]:
    """One PgBouncer (transaction pooling, Debian defaults) for the session, before ``jobstead_tests``."""
    bouncer = PgBouncer(pg_server).start()
    try:
        yield bouncer
    finally:
        bouncer.cleanup()


@pytest.fixture
def bouncer_target(pgbouncer: PgBouncer) -> Target:
    """A fresh schema, reached only through PgBouncer: a plain URL, no pooler-specific option."""
    return Target("postgres", pgbouncer.url("jobstead_tests"), f"b_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def spans_file(tmp_path: Path) -> Path:
    return tmp_path / "spans.log"


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
