"""The failover scenario: producers and workers running, the primary killed, the standby promoted.

Shared by ``tests/reliability/test_failover.py`` (a short run) and ``make
chaos CHAOS_FAILOVER=1`` (a long one). The workers are real ``jobstead
worker`` processes of ``tests.apps.faults`` given a multi-host URL (the
primary first); a producer thread in this process defers jobs one at a time
through the same URL and keeps the id of every defer that returned. The
verdict comes from the handlers' own start/end records and from the new
primary's jobs table:

- ``lost_defers``: acknowledged defers missing on the new primary;
- ``overlaps``: two runs of one job at the same time;
- ``ran_again``: jobs that ran more than once (at-least-once: allowed, printed);
- ``first_completion_after``: seconds from the promotion to the first job
  completed on the new primary;
- ``unfinished``: jobs that did not succeed by the end;
- ``died``: worker processes that exited by themselves;
- ``resumed_after``: per worker, seconds from the promotion to the first job
  it started afterwards (a claim on the new primary; None: it never did).

The clients' address is the pair's multi-host URL unless ``front`` gives
another (a PgBouncer in front, ``tests/support/pgbouncer.py``), which
``on_promoted`` then points at the new primary, as a ``-rw`` Service would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from jobstead import App
from tests.apps.faults import SPANS_ENV, overlapping, read_spans
from tests.support.processes import run_cli, spawn_cli, stop
from tests.support.standby import ReplicatedPair

SCHEMA = "failover"


@dataclass
class FailoverReport:
    acknowledged: int = 0
    lost_defers: list[int] = field(default_factory=list)
    overlaps: int = 0
    overlap_seconds: float = 0.0
    ran_again: int = 0
    first_completion_after: float | None = None
    promote_seconds: float = 0.0
    unfinished: int = 0
    cron_fires: int = 0
    cron_duplicates: int = 0
    switchover_seconds: float | None = None
    died: list[int] = field(default_factory=list)
    resumed_after: list[float | None] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        first = "never" if self.first_completion_after is None else f"{self.first_completion_after:.1f} s"
        return [
            f"acknowledged defers: {self.acknowledged}, lost: {len(self.lost_defers)}",
            f"jobs run twice at once: {self.overlaps} (longest overlap {self.overlap_seconds:.2f} s)",
            f"jobs run again after the failover: {self.ran_again}",
            f"promotion took {self.promote_seconds:.2f} s; first completion on the new primary {first} after it",
            self.resume_line(),
            f"jobs not succeeded at the end: {self.unfinished}; processes that exited: {len(self.died)}",
            f"cron duplicates: {self.cron_duplicates} of {self.cron_fires} fires",
            *(
                []
                if self.switchover_seconds is None
                else [f"planned switchover back: promotion took {self.switchover_seconds:.2f} s"]
            ),
        ]

    def resume_line(self) -> str:
        resumed = [t for t in self.resumed_after if t is not None]
        last = f", the last {max(resumed):.1f} s after the promotion" if resumed else ""
        return f"workers that started a job on the new primary: {len(resumed)} of {len(self.resumed_after)}{last}"


def faults_app(url: str) -> App:
    from tests.apps import faults

    app = App(url, schema=SCHEMA)
    for name, h in faults.app.handlers.items():
        app.handler(name=name, concurrency=h.concurrency, max_attempts=h.max_attempts, retry=h.retry)(h.func)
    return app


class Producer:
    """Defers one job at a time until stopped, keeping the ids of those acknowledged; errors are retried."""

    def __init__(self, app: App, ms: int, every: float) -> None:
        self.app, self.ms, self.every = app, ms, every
        self.acknowledged: list[int] = []
        self.failures = 0
        #: ``(count, ms)`` of a burst to defer at once (``refill``), retried like the single defers.
        self._refill: tuple[int, int] | None = None
        self._stop = threading.Event()
        self.paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def refill(self, count: int, ms: int) -> None:
        """Defer ``count`` jobs of ``ms`` at once, from the producer's thread, as soon as it can."""
        self._refill = (count, ms)

    def _run(self) -> None:
        handler = self.app.get_handler("work")
        while not self._stop.is_set():
            if self._refill is not None:
                count, ms = self._refill
                try:
                    self.acknowledged += [d.id for d in handler.defer_many([{"ms": ms}] * count)]
                    self._refill = None
                except Exception:
                    self.failures += 1
                    self._stop.wait(0.1)
                continue
            if self.paused.is_set():
                self._stop.wait(0.01)
                continue
            try:
                self.acknowledged.append(handler.defer(ms=self.ms).id)
            except Exception:
                self.failures += 1
                self._stop.wait(0.2)
                continue
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def run_failover(
    pair: ReplicatedPair,
    workdir: Path,
    *,
    workers: int = 4,
    concurrency: int = 4,
    jobs: int = 80,
    ms: int = 1500,
    run_before_kill: float = 3.0,
    burst: int = 8,
    burst_ms: int = 6000,
    produce_every: float = 0.5,
    drain_timeout: float = 180.0,
    worker_args: tuple[str, ...] = (),
    schedulers: int = 0,
    switchover_back: bool = False,
    front: Callable[[str], str] | None = None,
    on_promoted: Callable[[], None] | None = None,
) -> FailoverReport:
    """The scenario; with ``switchover_back`` the old primary is then rebuilt as a standby and,
    producers and workers still running, a planned switchover makes it the primary again."""
    report = FailoverReport()
    database = f"f_{uuid.uuid4().hex[:10]}"
    pair.primary.create_database(database)
    url = front(database) if front is not None else pair.url(database)
    spans = workdir / "spans.log"
    env = {"JOBSTEAD_DATABASE_URL": url, "JOBSTEAD_SCHEMA": SCHEMA, SPANS_ENV: str(spans)}
    migrated = run_cli(["migrate", "--app", "tests.apps.faults:app"], env, timeout=120)
    if migrated.returncode != 0:
        raise RuntimeError(migrated.stderr)
    app = faults_app(url)
    queued = [d.id for d in app.get_handler("work").defer_many([{"ms": ms} for _ in range(jobs // 2)])]
    queued += [d.id for d in app.get_handler("work_async").defer_many([{"ms": ms} for _ in range(jobs - jobs // 2)])]
    logs = [workdir / f"worker{n}.log" for n in range(workers)]
    argv = ["worker", "--app", "tests.apps.faults:app", "--concurrency", str(concurrency), *worker_args]
    processes = [spawn_cli(argv, env, log) for log in logs]
    scheduler_argv = ["scheduler", "--app", "tests.apps.faults:app", "--interval", "0.2"]
    for n in range(schedulers):
        logs.append(workdir / f"scheduler{n}.log")
        processes.append(spawn_cli(scheduler_argv, env, logs[-1]))
    producer = Producer(app, ms=200, every=produce_every).start()
    try:
        time.sleep(run_before_kill)
        # Long jobs claimed just before the kill: their claims are the newest writes, the ones
        # a standby may not have when the primary dies. The kill comes once they all started,
        # and no defer in between (its commit would ship them).
        producer.paused.set()
        time.sleep(0.1)
        burst_ids = {d.id for d in app.get_handler("work_async").defer_many([{"ms": burst_ms}] * burst)}
        queued += sorted(burst_ids)
        deadline = time.monotonic() + 30
        while len({s.job_id for s in read_spans(spans)} & burst_ids) < burst and time.monotonic() < deadline:
            time.sleep(0.005)
        pair.crash_primary()
        producer.paused.clear()
        report.promote_seconds = pair.promote()
        promoted_at = time.time()
        if on_promoted is not None:
            on_promoted()
        # Work for every slot twice over: each worker has some to claim as soon as it can
        # write again (``resumed_after``), whichever finds the new primary first.
        producer.refill(workers * concurrency * 2, ms)
        time.sleep(10)
        if switchover_back:
            pair.rebuild_as_standby()
            time.sleep(5)
            report.switchover_seconds = pair.switchover()
            time.sleep(10)
        producer.stop()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and not _all_done(pair.url(database), queued + producer.acknowledged):
            time.sleep(0.5)
        report.died = [n for n, p in enumerate(processes) if p.poll() is not None]
    finally:
        producer.stop()
        for process in reversed(processes):  # schedulers first: no fire is left for stopped workers
            stop(process)
        app.close()
    report.logs = {log.name: log.read_text() for log in logs}
    report.acknowledged = len(producer.acknowledged)
    runs = read_spans(spans)
    pairs = overlapping(runs, until=time.time())
    report.overlaps = len({earlier.job_id for earlier, _ in pairs})
    report.overlap_seconds = max(((earlier.end or time.time()) - later.start for earlier, later in pairs), default=0.0)
    workers_pids = [p.pid for p in processes[:workers]]
    report.resumed_after = [
        min((s.start - promoted_at for s in runs if s.pid == pid and s.start > promoted_at), default=None)
        for pid in workers_pids
    ]
    report.ran_again = sum(1 for count in Counter(s.job_id for s in runs).values() if count > 1)
    with psycopg.connect(pair.url(database).replace("+psycopg", ""), autocommit=True) as conn:
        present = {
            row[0]
            for row in conn.execute(
                f"SELECT id FROM {SCHEMA}.jobstead_jobs WHERE id = ANY(%s)", (producer.acknowledged,)
            )
        }
        report.lost_defers = sorted(set(producer.acknowledged) - present)
        report.unfinished = conn.execute(
            f"SELECT count(*) FROM {SCHEMA}.jobstead_jobs WHERE status <> 'succeeded' "
            "AND NOT COALESCE(metadata ? 'cron_fire_at', false)"  # fires deferred as the workers stopped
        ).fetchone()[0]  # type: ignore[index]
        first = conn.execute(
            f"SELECT min(extract(epoch FROM finished_at)) FROM {SCHEMA}.jobstead_jobs "
            "WHERE finished_at > to_timestamp(%s)",
            (promoted_at,),
        ).fetchone()[0]  # type: ignore[index]
        report.first_completion_after = None if first is None else float(first) - promoted_at
        duplicates = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {SCHEMA}.jobstead_jobs WHERE metadata ? 'cron_fire_at' "
            "GROUP BY metadata->>'cron_fire_at' HAVING count(*) > 1) AS twice"
        ).fetchone()
        report.cron_duplicates = int(duplicates[0]) if duplicates else 0
        fires = conn.execute(f"SELECT count(*) FROM {SCHEMA}.jobstead_jobs WHERE metadata ? 'cron_fire_at'").fetchone()
        report.cron_fires = int(fires[0]) if fires else 0
    return report


def run_lagging_failover(
    pair: ReplicatedPair,
    workdir: Path,
    *,
    workers: int = 4,
    concurrency: int = 4,
    jobs: int = 12,
    ms: int = 15000,
    drain_timeout: float = 180.0,
) -> FailoverReport:
    """Every claim lost in the failover, every time: the asynchronous case at its worst.

    ``jobs`` long jobs are deferred and replicated, then the standby stops
    receiving WAL, the workers start and claim them all, and the primary is
    killed and the standby promoted: the new primary has every job queued
    while every first run still runs. The workers claim them again there (a
    worker often one it runs itself); each first run must stop as soon as its
    worker reaches the new primary.
    """
    report = FailoverReport()
    database = f"f_{uuid.uuid4().hex[:10]}"
    pair.primary.create_database(database)
    url = pair.url(database)
    spans = workdir / "spans.log"
    env = {"JOBSTEAD_DATABASE_URL": url, "JOBSTEAD_SCHEMA": SCHEMA, SPANS_ENV: str(spans)}
    migrated = run_cli(["migrate", "--app", "tests.apps.faults:app"], env, timeout=120)
    if migrated.returncode != 0:
        raise RuntimeError(migrated.stderr)
    app = faults_app(url)
    try:
        queued = [d.id for d in app.get_handler("work").defer_many([{"ms": ms}] * (jobs // 2))]
        queued += [d.id for d in app.get_handler("work_async").defer_many([{"ms": ms}] * (jobs - jobs // 2))]
    finally:
        app.close()
    report.acknowledged = len(queued)
    pair.wait_replayed()
    pair.cut_replication()
    logs = [workdir / f"worker{n}.log" for n in range(workers)]
    argv = ["worker", "--app", "tests.apps.faults:app", "--concurrency", str(concurrency)]
    processes = [spawn_cli(argv, env, log) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            len({s.job_id for s in read_spans(spans)}) == jobs
            and all(" started: " in log.read_text() for log in logs)  # none is still starting
        ):
            time.sleep(0.05)
        pair.crash_primary()
        report.promote_seconds = pair.promote()
        promoted_at = time.time()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and not _all_done(url, queued):
            time.sleep(0.5)
        report.died = [n for n, p in enumerate(processes) if p.poll() is not None]
    finally:
        for process in processes:
            stop(process)
    report.logs = {log.name: log.read_text() for log in logs}
    runs = read_spans(spans)
    pairs = overlapping(runs, until=time.time())
    report.overlaps = len({earlier.job_id for earlier, _ in pairs})
    report.overlap_seconds = max(((earlier.end or time.time()) - later.start for earlier, later in pairs), default=0.0)
    report.ran_again = sum(1 for count in Counter(s.job_id for s in runs).values() if count > 1)
    report.resumed_after = [
        min((s.start - promoted_at for s in runs if s.pid == p.pid and s.start > promoted_at), default=None)
        for p in processes
    ]
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        present = {r[0] for r in conn.execute(f"SELECT id FROM {SCHEMA}.jobstead_jobs WHERE id = ANY(%s)", (queued,))}
        report.lost_defers = sorted(set(queued) - present)
        left = conn.execute(f"SELECT count(*) FROM {SCHEMA}.jobstead_jobs WHERE status <> 'succeeded'").fetchone()
        report.unfinished = int(left[0]) if left else 0
        first = conn.execute(f"SELECT min(extract(epoch FROM finished_at)) FROM {SCHEMA}.jobstead_jobs", ()).fetchone()
        report.first_completion_after = None if first is None or first[0] is None else float(first[0]) - promoted_at
    return report


def _all_done(url: str, ids: list[int]) -> bool:
    try:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True, connect_timeout=5) as conn:
            left = conn.execute(
                f"SELECT count(*) FROM {SCHEMA}.jobstead_jobs WHERE id = ANY(%s) AND status <> 'succeeded'", (ids,)
            ).fetchone()
            return left is not None and left[0] == 0
    except psycopg.Error:
        return False
