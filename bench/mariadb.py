"""The MariaDB column: Jobstead on MariaDB, measured the way every PostgreSQL figure is.

The same harness and the same five measurements as the main table (drain with
1 and with N processes, single defer, bulk defer, defer-to-start delays), on a
MariaDB server of its own (Debian's ``mariadbd``, as the tests start it) set up
as durable as the PostgreSQL one (``innodb_flush_log_at_trx_commit=1``: every
commit waits for its log flush, as ``synchronous_commit=on`` does), the
workers being ``bench.worker jobstead`` with a ``mariadb://`` URL: nothing in
Jobstead is set differently.

Peers: none here; ``PEER_NOTE`` says why (the report prints it).

``python -m bench.mariadb`` runs the column alone (``BENCH_QUICK=1`` and the
other ``BENCH_*`` sizes apply) and writes ``bench/results/mariadb.md``;
``make bench`` runs it after the PostgreSQL table (``BENCH_MARIADB=0`` leaves
it out).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import make_url

from tests.support.mariadb_server import MariaDBServer

from .config import Settings
from .harness import Harness, percentile
from .systems.jobstead import Jobstead

#: The system name in the figures (a column beside PostgreSQL's ``jobstead``).
NAME = "jobstead-mariadb"
#: The short poll interval of the second latency figure (seconds; the worker's default is 1 s).
FAST_POLL = 0.05
#: Durable commits, as the PostgreSQL server of the bench (fsync, synchronous_commit on).
SERVER_OPTIONS = ["--innodb-flush-log-at-trx-commit=1"]
PEER_NOTE = (
    "No MySQL-backed Python peer in this column. The peers beside Jobstead above (pgqueuer, "
    "procrastinate, oban, chancy) keep their jobs in PostgreSQL only. Celery can use a MySQL table "
    "as its broker through kombu's SQLAlchemy transport (`sqla+mysql://`), which is not a job store "
    "of the same kind: each fetch takes one message with `SELECT ... FOR UPDATE` (no `SKIP LOCKED`, so "
    "concurrent fetches queue on the oldest row) and hides it at once, so a worker killed mid-task "
    "loses it (no lease, no rescue); its figures would not answer the same question."
)

Record = Callable[[str, str, float], None]
Say = Callable[[str], None]


class JobsteadMariaDB(Jobstead):
    """Jobstead's bench system on MariaDB: the same app and worker (``bench.worker jobstead``), counted
    with MariaDB's SQL; its figures are recorded as ``NAME``."""

    remaining_sql = (
        "SELECT (SELECT count(*) FROM jobstead_jobs WHERE status IN ('scheduled', 'queued', 'retrying'))"
        " + (SELECT count(*) FROM jobstead_jobs WHERE status = 'running')"
    )
    unfinished_sql = (
        "SELECT EXISTS (SELECT 1 FROM jobstead_jobs WHERE status IN ('scheduled', 'queued', 'retrying'))"
        " OR EXISTS (SELECT 1 FROM jobstead_jobs WHERE status = 'running')"
    )
    succeeded_sql = "SELECT count(*) FROM jobstead_jobs WHERE status = 'succeeded'"
    #: TRUNCATE of a table another one references is refused while foreign keys are checked.
    reset_sql = (
        "SET FOREIGN_KEY_CHECKS = 0; TRUNCATE jobstead_attempts; TRUNCATE jobstead_jobs; SET FOREIGN_KEY_CHECKS = 1"
    )

    def __init__(self, url: str, *, poll_interval: float | None = None) -> None:
        super().__init__(url)
        self.poll_interval = poll_interval

    def worker_options(self) -> list[str]:
        options = super().worker_options()
        if self.poll_interval is not None:
            options += ["--poll-interval", str(self.poll_interval)]
        return options

    @property
    def configuration(self) -> str:
        return "as `jobstead` above, with a `mariadb://` URL (mysqlclient)"


class MariaDBHarness(Harness):
    """The harness with its counting and resetting done over a MariaDB connection (mysqlclient)."""

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness.collector, harness.probe)
        self._connections: dict[str, Any] = {}

    def _connection(self, system: Any) -> Any:
        conn = self._connections.get(system.url)
        if conn is None:
            import MySQLdb
            from MySQLdb.constants import CLIENT

            url = make_url(system.url)
            conn = MySQLdb.connect(
                host=url.host or "127.0.0.1",
                port=url.port or 3306,
                user=url.username or "",
                password=url.password or "",
                database=url.database or "",
                autocommit=True,
                client_flag=CLIENT.MULTI_STATEMENTS,  # the reset is several statements
            )
            self._connections[system.url] = conn
        return conn

    def _run(self, system: Any, sql: str) -> Any:
        cursor = self._connection(system).cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone() if cursor.description else None
            while cursor.nextset():
                pass
            return row
        finally:
            cursor.close()

    async def scalar(self, system: Any, sql: str) -> int:
        row = await asyncio.to_thread(self._run, system, sql)
        assert row is not None
        return int(row[0])

    async def reset(self, system: Any) -> None:
        await asyncio.to_thread(self._run, system, system.reset_sql)

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.close()


async def measure(harness: Harness, settings: Settings, say: Say, record: Record, runs: dict[str, Any]) -> str:
    """The five measurements on a MariaDB server of their own; the server's version."""
    server = MariaDBServer(options=list(SERVER_OPTIONS)).start()
    say(f"MariaDB on 127.0.0.1:{server.port} (durable commits), data in {server.root}")
    mariadb = MariaDBHarness(harness)
    system = JobsteadMariaDB(server.create_database("jobstead"))
    try:
        await system.open()
        version = await asyncio.to_thread(_server_version, mariadb, system)
        for rep in range(settings.reps):
            say(f"MariaDB: defer, one job per transaction, run {rep + 1}/{settings.reps}")
            record("enqueue_single", NAME, await mariadb.enqueue_single(system, settings.single))
            say(f"MariaDB: bulk defer of {settings.jobs:,}, run {rep + 1}/{settings.reps}")
            record("enqueue_bulk", NAME, await mariadb.enqueue_bulk(system, settings.jobs))
            for processes in (1, settings.processes):
                say(f"MariaDB: drain {settings.jobs:,}, {processes} process(es), run {rep + 1}/{settings.reps}")
                r = await mariadb.drain(
                    system,
                    processes=processes,
                    jobs=settings.jobs,
                    cap=settings.drain_cap,
                    label=f"{NAME}-{processes}p",
                )
                record(f"drain_{processes}", NAME, r.rate)
                runs.setdefault(f"drain_{processes}", {}).setdefault(NAME, []).append(asdict(r))
                say(f"  {r.rate:,.0f} jobs/s ({r.done} jobs in {r.seconds:.2f} s{', capped' if r.capped else ''})")
            # No LISTEN/NOTIFY: an idle worker finds a new job at its next poll. With the default
            # interval (what a user gets), and with a short one (what a user who needs it sets).
            for metric, poll in (("latency", None), ("latency_polled", FAST_POLL)):
                system.poll_interval = poll
                every = "default" if poll is None else f"{poll:g} s"
                say(f"MariaDB: latency at {settings.latency_rate:.0f}/s, poll {every}, run {rep + 1}/{settings.reps}")
                delays = await mariadb.latency(
                    system,
                    rate=settings.latency_rate,
                    seconds=settings.latency_seconds,
                    warmup=settings.latency_warmup,
                    label=f"{NAME}-{metric}",
                )
                for q in (50, 95, 99):
                    record(f"{metric}_p{q}", NAME, percentile(delays, q) * 1000)
                say(f"  p50 {percentile(delays, 50) * 1000:.1f} ms, p99 {percentile(delays, 99) * 1000:.1f} ms")
            system.poll_interval = None
        return version
    finally:
        await system.close()
        await mariadb.close()
        server.cleanup()


def _server_version(harness: MariaDBHarness, system: JobsteadMariaDB) -> str:
    row = harness._run(system, "SELECT VERSION()")
    return str(row[0]).split("-")[0]


def lines(results: dict[str, Any]) -> list[str]:
    """The MariaDB table of the report, beside PostgreSQL's Jobstead figures; none if not measured."""
    figures = results["figures"]
    if not any(NAME in by_system for by_system in figures.values()):
        return []
    s = results["settings"]
    n, procs = s["jobs"], s["processes"]

    def med(metric: str, system: str) -> float | None:
        values = figures.get(metric, {}).get(system)
        return statistics.median(values) if values else None

    def cell(value: float | None, unit: str) -> str:
        if value is None:
            return "n/a"
        return f"{value:.1f}" if unit == "ms" else f"{value:,.0f}"

    def capped(metric: str) -> bool:
        return any(r["capped"] for r in results["runs"].get(metric, {}).get(NAME, []))

    rows = [
        ("drain_1", f"Drain {n:,} no-op jobs, 1 process (jobs/s)", ""),
        ("drain_4" if procs == 4 else f"drain_{procs}", f"Drain {n:,} no-op jobs, {procs} processes (jobs/s)", ""),
        ("enqueue_single", "Defer, one job per transaction (jobs/s)", ""),
        ("enqueue_bulk", f"Bulk defer of {n:,} (jobs/s)", ""),
        ("latency_p50", f"Defer-to-start p50 at {s['latency_rate']:.0f} jobs/s, default 1 s poll (ms)", "ms"),
        ("latency_p99", "Defer-to-start p99, default 1 s poll (ms)", "ms"),
        ("latency_polled_p50", f"Defer-to-start p50, `poll_interval={FAST_POLL:g}` (ms)", "ms"),
        ("latency_polled_p99", f"Defer-to-start p99, `poll_interval={FAST_POLL:g}` (ms)", "ms"),
    ]
    version = results.get("versions", {}).get(NAME, "MariaDB")
    out = [
        "",
        f"| Jobstead on {version} (durable commits) beside Jobstead on PostgreSQL | MariaDB | PostgreSQL | "
        "MariaDB/PostgreSQL |",
        "|---|--:|--:|--:|",
    ]
    for metric, label, unit in rows:
        # PostgreSQL's workers are woken by NOTIFY: its one delay figure stands beside both
        m, p = med(metric, NAME), med(metric.replace("_polled", ""), "jobstead")
        share = "n/a" if m is None or not p else (f"{p / m:.2f}x" if unit == "ms" else f"{m / p:.2f}x")
        mark = " †" if metric.startswith("drain") and capped(metric) else ""
        out.append(f"| {label} | {cell(m, unit)}{mark} | {cell(p, unit)} | {share} |")
    out += [
        "",
        "MariaDB/PostgreSQL reads higher-is-better on every row (for delays: PostgreSQL's over MariaDB's). "
        "MariaDB has no LISTEN/NOTIFY: an idle worker finds a new job at its next poll, so its delays are "
        "the poll interval's (PostgreSQL's workers are woken at the defer's commit; its one figure stands "
        "beside both).",
        "",
    ]
    out.append(PEER_NOTE)
    return out


async def main() -> int:
    """``python -m bench.mariadb``: the MariaDB column alone, written to ``results/mariadb.md``."""
    from . import machine, report
    from .probe import open_collector
    from .run import Progress

    settings = Settings.from_env()
    say = Progress()
    say(f"settings: {settings}")
    collector, probe, transport = await open_collector()
    harness = Harness(collector, probe)
    figures: dict[str, dict[str, list[float]]] = {}
    runs: dict[str, Any] = {}

    def record(metric: str, system: str, value: float) -> None:
        figures.setdefault(metric, {}).setdefault(system, []).append(value)

    try:
        version = await measure(harness, settings, say, record, runs)
    finally:
        await harness.close()
        transport.close()
    results = {
        "settings": asdict(settings),
        "versions": {NAME: f"MariaDB {version}"},
        "figures": figures,
        "runs": runs,
        "load": machine.load(),
    }
    text = "\n".join(lines(results)).strip()
    report.RESULTS.mkdir(exist_ok=True)
    quick = " (BENCH_QUICK: not comparable figures)" if settings.quick else ""
    (report.RESULTS / "mariadb.md").write_text(f"# Jobstead on MariaDB (`python -m bench.mariadb`){quick}\n\n{text}\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
