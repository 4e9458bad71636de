"""The MariaDB column: Jobstead on MariaDB, measured the way every PostgreSQL figure is.

The same harness and the same five measurements as the main table (drain with
1 and with N processes, single defer, bulk defer, defer-to-start delays), on a
MariaDB server of its own (Debian's ``mariadbd``, as the tests start it) set up
as durable as the PostgreSQL one (``innodb_flush_log_at_trx_commit=1``: every
commit waits for its log flush, as ``synchronous_commit=on`` does), the
workers being ``bench.worker jobstead`` with a ``mariadb://`` URL: nothing in
Jobstead is set differently.

The MySQL-backed peer is Celery on kombu's SQLAlchemy transport
(``systems/celery_sqla.py``), measured when Celery is installed (``make
bench``'s venv has it); ``PEER_NOTE`` says what it is and is not.

``python -m bench.mariadb`` runs the column alone (``BENCH_QUICK=1`` and the
other ``BENCH_*`` sizes apply) and writes ``bench/results/mariadb.md``;
``make bench`` runs it after the PostgreSQL table (``BENCH_MARIADB=0`` leaves
it out).
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import make_url

from tests.support.mariadb_server import MariaDBServer

from .config import Settings
from .harness import BenchError, DrainResult, Harness, percentile
from .systems import System
from .systems.jobstead import Jobstead

#: The system name in the figures (a column beside PostgreSQL's ``jobstead``).
NAME = "jobstead-mariadb"
#: The peer's name in the figures: Celery on kombu's SQLAlchemy transport (``systems/celery_sqla.py``).
PEER = "celery-mariadb"
#: Jobs per drain and bulk defer for the peer: it publishes one message per transaction (about
#: 130/s here), and a drain is measured on its first ``drain_cap`` seconds anyway.
PEER_JOBS = 2_000
#: The short poll interval of the second latency figure (seconds; the worker's default is 1 s).
FAST_POLL = 0.05
#: Durable commits, as the PostgreSQL server of the bench (fsync, synchronous_commit on).
SERVER_OPTIONS = ["--innodb-flush-log-at-trx-commit=1"]
PEER_NOTE = (
    "The MySQL-backed peer is Celery with kombu's SQLAlchemy transport as its broker and the database "
    "result backend (`systems/celery_sqla.py`): the Python job queues beside Jobstead in the main table "
    "keep their jobs in PostgreSQL only. It is not a job store of the same kind: each fetch takes one "
    "message with `SELECT ... FOR UPDATE` (no `SKIP LOCKED`, so concurrent fetches queue on the oldest "
    "row) and hides it at once, so a worker killed mid-task loses it (no lease, no rescue)."
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

    async def drain_preloaded(
        self, system: System, *, processes: int, jobs: int, cap: float, label: str
    ) -> DrainResult:
        """``drain`` for a system whose bulk defer publishes its jobs one transaction at a time, each
        visible as it goes (Celery): the queue is filled before the workers start, so the figure is
        the consumers' and not the publisher's. The clock runs from the first job's start, as always."""
        await self.reset(system)
        await system.defer_bulk(jobs)
        self.collector.reset()
        workers = self.spawn(system, processes, label)
        try:
            if not await self.collector.wait_for(lambda: bool(self.collector.first), 120):
                workers.check_alive()
                raise BenchError(f"{system.name}: no job started within 120 s of starting the workers")
            t_first = min(self.collector.first.values())
            remaining, t_end = await self._wait_drained(system, jobs, t_first, cap, workers)
            firsts = sorted(self.collector.first.values())
        finally:
            await workers.stop()
        return DrainResult(
            jobs=jobs,
            done=jobs - remaining,
            seconds=t_end - t_first,
            capped=remaining > 0,
            start_spread=firsts[-1] - firsts[0],
        )


async def measure(
    harness: Harness, settings: Settings, say: Say, record: Record, runs: dict[str, Any]
) -> dict[str, str]:
    """The measurements on a MariaDB server of their own: Jobstead, then Celery when it is installed
    (``make bench``'s venv has it), one after the other in each repetition; their versions."""
    server = MariaDBServer(options=list(SERVER_OPTIONS)).start()
    say(f"MariaDB on 127.0.0.1:{server.port} (durable commits), data in {server.root}")
    mariadb = MariaDBHarness(harness)
    systems: list[tuple[str, System, int, int]] = [
        (NAME, JobsteadMariaDB(server.create_database("jobstead")), settings.jobs, settings.single)
    ]
    if importlib.util.find_spec("celery") is not None:
        from .systems.celery_sqla import CelerySqla

        peer = CelerySqla(server.create_database("celery"))
        systems.append((PEER, peer, min(settings.jobs, PEER_JOBS), min(settings.single, PEER_JOBS // 10)))
    else:
        say("MariaDB: Celery is not installed here (make bench's venv has it): Jobstead alone")
    try:
        versions: dict[str, str] = {}
        for name, system, _, _ in systems:
            await system.open()
            versions[name] = system.version
        versions[NAME] = "MariaDB " + await asyncio.to_thread(_server_version, mariadb, systems[0][1])
        for rep in range(settings.reps):
            for name, system, jobs, single in systems:
                await _measure_one(mariadb, name, system, jobs, single, settings, rep, say, record, runs)
        return versions
    finally:
        for _, system, _, _ in systems:
            await system.close()
        await mariadb.close()
        server.cleanup()


async def _measure_one(
    mariadb: MariaDBHarness,
    name: str,
    system: System,
    jobs: int,
    single: int,
    settings: Settings,
    rep: int,
    say: Say,
    record: Record,
    runs: dict[str, Any],
) -> None:
    run = f"run {rep + 1}/{settings.reps}"
    say(f"MariaDB, {name}: defer, one job per transaction, {run}")
    record("enqueue_single", name, await mariadb.enqueue_single(system, single))
    say(f"MariaDB, {name}: bulk defer of {jobs:,}, {run}")
    record("enqueue_bulk", name, await mariadb.enqueue_bulk(system, jobs))
    for processes in (1, settings.processes):
        say(f"MariaDB, {name}: drain {jobs:,}, {processes} process(es), {run}")
        drain = mariadb.drain if isinstance(system, JobsteadMariaDB) else mariadb.drain_preloaded
        r = await drain(system, processes=processes, jobs=jobs, cap=settings.drain_cap, label=f"{name}-{processes}p")
        record(f"drain_{processes}", name, r.rate)
        runs.setdefault(f"drain_{processes}", {}).setdefault(name, []).append(asdict(r))
        say(f"  {r.rate:,.0f} jobs/s ({r.done} jobs in {r.seconds:.2f} s{', capped' if r.capped else ''})")
    # No LISTEN/NOTIFY: an idle worker finds a new job at its next poll. With the default
    # interval (what a user gets), and, for Jobstead, with a short one (what a user who needs it sets).
    polls: list[tuple[str, float | None]] = [("latency", None)]
    if isinstance(system, JobsteadMariaDB):
        polls.append(("latency_polled", FAST_POLL))
    for metric, poll in polls:
        if isinstance(system, JobsteadMariaDB):
            system.poll_interval = poll
        every = "default" if poll is None else f"{poll:g} s"
        say(f"MariaDB, {name}: latency at {settings.latency_rate:.0f}/s, poll {every}, {run}")
        delays = await mariadb.latency(
            system,
            rate=settings.latency_rate,
            seconds=settings.latency_seconds,
            warmup=settings.latency_warmup,
            label=f"{name}-{metric}",
        )
        for q in (50, 95, 99):
            record(f"{metric}_p{q}", name, percentile(delays, q) * 1000)
        say(f"  p50 {percentile(delays, 50) * 1000:.1f} ms, p99 {percentile(delays, 99) * 1000:.1f} ms")
    if isinstance(system, JobsteadMariaDB):
        system.poll_interval = None


def _server_version(harness: MariaDBHarness, system: System) -> str:
    row = harness._run(system, "SELECT VERSION()")
    return str(row[0]).split("-")[0]


def lines(results: dict[str, Any]) -> list[str]:
    """The MariaDB table of the report: Jobstead on MariaDB, Jobstead on PostgreSQL, the MySQL-backed
    peer when it ran; none if MariaDB was not measured."""
    figures = results["figures"]
    if not any(NAME in by_system for by_system in figures.values()):
        return []
    s = results["settings"]
    n, procs = s["jobs"], s["processes"]
    versions = results.get("versions", {})
    peer = PEER in versions

    def med(metric: str, system: str) -> float | None:
        values = figures.get(metric, {}).get(system)
        return statistics.median(values) if values else None

    def cell(value: float | None, unit: str, metric: str, system: str) -> str:
        if value is None:
            return "n/a"
        text = f"{value:.1f}" if unit == "ms" else f"{value:,.0f}"
        if metric.startswith("drain") and any(r["capped"] for r in results["runs"].get(metric, {}).get(system, [])):
            text += " †"
        return text

    def share(a: float | None, b: float | None, unit: str) -> str:
        if a is None or not b:
            return "n/a"
        return f"{b / a:.2f}x" if unit == "ms" else f"{a / b:.2f}x"

    peer_n = min(n, PEER_JOBS)
    rows = [
        ("drain_1", "Drain no-op jobs, 1 process (jobs/s)", ""),
        (f"drain_{procs}", f"Drain no-op jobs, {procs} processes (jobs/s)", ""),
        ("enqueue_single", "Defer, one job per transaction (jobs/s)", ""),
        ("enqueue_bulk", "Bulk defer (jobs/s)", ""),
        ("latency_p50", f"Defer-to-start p50 at {s['latency_rate']:.0f} jobs/s, default poll (ms)", "ms"),
        ("latency_p99", "Defer-to-start p99, default poll (ms)", "ms"),
        ("latency_polled_p50", f"Defer-to-start p50, Jobstead `poll_interval={FAST_POLL:g}` (ms)", "ms"),
        ("latency_polled_p99", f"Defer-to-start p99, Jobstead `poll_interval={FAST_POLL:g}` (ms)", "ms"),
    ]
    head = f"| {versions.get(NAME, 'MariaDB')}, durable commits | Jobstead on MariaDB | Jobstead on PostgreSQL |"
    rule = "|---|--:|--:|"
    if peer:
        head += f" Celery {versions[PEER]} on MariaDB | Jobstead/Celery |"
        rule += "--:|--:|"
    out = ["", head + " MariaDB/PostgreSQL |", rule + "--:|"]
    for metric, label, unit in rows:
        # PostgreSQL's workers are woken by NOTIFY: its one delay figure stands beside both
        m, p = med(metric, NAME), med(metric.replace("_polled", ""), "jobstead")
        line = f"| {label} | {cell(m, unit, metric, NAME)} | {cell(p, unit, metric, 'jobstead')} |"
        if peer:
            c = None if "polled" in metric else med(metric, PEER)
            line += f" {cell(c, unit, metric, PEER)} | {share(m, c, unit)} |"
        out.append(line + f" {share(m, p, unit)} |")
    out += [
        "",
        f"Jobs per drain and bulk defer: {n:,} for Jobstead"
        + (
            f", {peer_n:,} for Celery (it publishes one message per transaction, so its queue is filled "
            "before its workers start)"
            if peer
            else ""
        )
        + f"; each drain measured on its first {s['drain_cap']:g} s at most (†: capped). Ratios read "
        "higher-is-better on every row (for delays: the other's delay over Jobstead-on-MariaDB's). MariaDB "
        "has no LISTEN/NOTIFY: an idle worker finds a new job at its next poll, so the delays are the poll "
        "interval's (Jobstead's default 1 s; kombu's fixed 1 s); PostgreSQL's workers are woken at the "
        "defer's commit, so its one delay figure stands beside both.",
        "",
        PEER_NOTE,
    ]
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
        versions = await measure(harness, settings, say, record, runs)
    finally:
        await harness.close()
        transport.close()
    results = {
        "settings": asdict(settings),
        "versions": versions,
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
