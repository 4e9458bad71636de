"""Multi-host database URLs (libpq's, for a primary and its standbys), for every kind of Jobstead process.

Both forms libpq takes, ``...@pg-a:5432,pg-b:5432/db`` and
``...@/db?host=pg-a,pg-b&port=5432,5432``, with
``target_session_attrs=read-write``: the process must land on the primary
whichever host is listed first. The plain form used to make ``jobstead
stats`` fail with ``invalid literal for int(`` and a worker exit with code 2,
and a worker's claim connection logged ``localhost:5432`` and fell back to
the pool.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jobstead.config import resolve_database_url
from jobstead.store import Store
from jobstead.store.drivers import driver_for
from jobstead.store.drivers.postgresql import hosts, libpq_conninfo
from tests.reliability.conftest import wait_for
from tests.support.postgres_server import free_port
from tests.support.processes import run_cli, spawn_cli, stop
from tests.support.standby import ReplicatedPair, replicated_pair

PASSWORD = "Pw-multihost-5e1d"

PLAIN = f"postgresql+psycopg://app:{PASSWORD}@pg-a:5432,pg-b:5433/db?target_session_attrs=read-write"
QUERY = f"postgresql+psycopg://app:{PASSWORD}@/db?host=pg-a,pg-b&port=5432,5433&target_session_attrs=read-write"


@pytest.mark.parametrize("raw", [PLAIN, QUERY], ids=["plain", "query"])
def test_both_forms_name_every_host_in_order(raw: str) -> None:
    # jobstead.config is what the CLI, the processes and the operator (a Secret's URL) all read.
    url = resolve_database_url(raw)
    assert hosts(url) == ["pg-a:5432", "pg-b:5433"]
    conninfo = psycopg.conninfo.conninfo_to_dict(libpq_conninfo(url))
    assert conninfo["host"] == "pg-a,pg-b"
    assert conninfo["port"] == "5432,5433"
    assert conninfo["target_session_attrs"] == "read-write"
    assert conninfo["password"] == PASSWORD
    described = driver_for(url).describe(url)
    assert described == "PostgreSQL database 'db' on pg-a:5432,pg-b:5433 as app"


@pytest.mark.parametrize(
    ("raw", "listed"),
    [
        ("postgresql://app@pg-a,pg-b:6000/db", ["pg-a:5432", "pg-b:6000"]),
        ("postgresql://app@[::1]:5433,pg-b/db", ["::1:5433", "pg-b:5432"]),
        ("postgresql://app@/db?host=pg-a,pg-b&port=5433", ["pg-a:5433", "pg-b:5433"]),  # one port for all
        ("postgresql+psycopg://app@/db?host=pg-a:1&host=pg-b:2", ["pg-a:1", "pg-b:2"]),  # SQLAlchemy's form
        ("postgresql://app@pg-a:5432/db", ["pg-a:5432"]),
    ],
)
def test_host_lists_as_libpq_reads_them(raw: str, listed: list[str]) -> None:
    assert hosts(resolve_database_url(raw)) == listed


@pytest.mark.parametrize(
    "raw",
    [
        f"postgresql://app:{PASSWORD}@pg-a:5432,:5433/db",
        f"postgresql://app:{PASSWORD}@pg-a:5432,pg-b:x5433/db",
    ],
)
def test_a_bad_host_list_is_one_line_without_the_password(raw: str) -> None:
    with pytest.raises(Exception) as failed:
        resolve_database_url(raw)
    assert PASSWORD not in str(failed.value)
    assert "\n" not in str(failed.value)
    done = run_cli(["stats"], {"JOBSTEAD_DATABASE_URL": raw})
    assert done.returncode == 2
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# -- against a real primary and standby ------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    with replicated_pair(synchronous=False) as started:
        yield started


def _standby_first(pair: ReplicatedPair, database: str, *, plain: bool) -> str:
    """A URL that lists the standby before the primary: only target_session_attrs finds the primary."""
    order = [pair.standby.port, pair.primary.port]
    if plain:
        listed = ",".join(f"127.0.0.1:{p}" for p in order)
        return f"postgresql+psycopg://postgres:{PASSWORD}@{listed}/{database}?target_session_attrs=read-write"
    ports = ",".join(str(p) for p in order)
    return (
        f"postgresql+psycopg://postgres:{PASSWORD}@/{database}?host=127.0.0.1,127.0.0.1&port={ports}"
        "&target_session_attrs=read-write"
    )


def _database(pair: ReplicatedPair) -> str:
    name = f"d_{uuid.uuid4().hex[:10]}"
    pair.primary.create_database(name)
    return name


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("plain", [True, False], ids=["plain", "query"])
def test_every_process_kind_reaches_the_primary_through_a_multi_host_url(
    pair: ReplicatedPair, tmp_path: Path, plain: bool
) -> None:
    url = _standby_first(pair, _database(pair), plain=plain)
    env = {"JOBSTEAD_DATABASE_URL": url, "JOBSTEAD_SCHEMA": "multihost"}
    printed: list[str] = []

    migrated = run_cli(["migrate", "--app", "tests.apps.faults:app"], env, timeout=120)
    stats = run_cli(["stats"], env)
    printed += [migrated.stdout + migrated.stderr, stats.stdout + stats.stderr]
    assert migrated.returncode == 0, migrated.stderr
    assert stats.returncode == 0, stats.stderr

    # The worker: a long poll interval, so a job done within seconds was woken by LISTEN;
    # its claim connection must be its own (no fall-back to the pool) and name both hosts.
    spans = tmp_path / "spans.log"
    worker_log = tmp_path / "worker.log"
    metrics_port = free_port()
    metrics_log = tmp_path / "metrics.log"
    worker = spawn_cli(
        ["worker", "--app", "tests.apps.faults:app", "--poll-interval", "30"],
        {**env, "JOBSTEAD_TEST_SPANS": str(spans)},
        worker_log,
    )
    metrics = spawn_cli(["metrics", "--port", str(metrics_port)], env, metrics_log)
    store = Store.connect(url, schema="multihost")
    try:
        assert store.describe().endswith(f"on 127.0.0.1:{pair.standby.port},127.0.0.1:{pair.primary.port} as postgres")
        time.sleep(3)  # the worker listening
        began = time.monotonic()
        done = run_cli(["defer", "work", "--app", "tests.apps.faults:app", "--args", '{"ms": 1}'], env)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: spans.exists() and "end" in spans.read_text(), 20, "the job (woken by LISTEN)")
        assert time.monotonic() - began < 15
        wait_for(lambda: "jobstead_database_up 1.0" in _scrape(metrics_port), 30, "the metrics endpoint")
        assert worker.poll() is None
    finally:
        store.close()
        stop(worker)
        stop(metrics)
    printed += [worker_log.read_text(), metrics_log.read_text()]
    log = worker_log.read_text()
    assert "claims go through the connection pool" not in log, log
    assert "localhost" not in log, log
    assert not [text for text in printed if PASSWORD in text]


@pytest.mark.postgres
@pytest.mark.slow
def test_the_async_claim_and_listen_connections_land_on_the_primary(pair: ReplicatedPair) -> None:
    url = resolve_database_url(_standby_first(pair, _database(pair), plain=True))
    store = Store.connect(url, schema="conns")
    store.migrate()

    async def check() -> tuple[int, int]:
        alone = store.async_alone()
        assert alone is not None
        try:
            assert await alone.usable()
            claim_port = alone._conn.info.port  # type: ignore[union-attr]
        finally:
            await alone.close()
        async with await psycopg.AsyncConnection.connect(libpq_conninfo(url)) as conn:
            listen_port = conn.info.port
        return claim_port, listen_port

    try:
        assert asyncio.run(check()) == (pair.primary.port, pair.primary.port)
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("where", ["no-server", "missing-database"])
def test_no_message_about_the_hosts_shows_the_password(pair: ReplicatedPair, where: str) -> None:
    if where == "no-server":
        url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/x"
    else:
        url = _standby_first(pair, "no_such_db", plain=True)
    done = run_cli(["stats"], {"JOBSTEAD_DATABASE_URL": url}, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "127.0.0.1:" in done.stderr  # it names the hosts, as configured


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""
