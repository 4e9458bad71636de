"""Jobs, workers and schedulers through every fault at once, then the guarantees checked from the outside.

One database server of its own (PostgreSQL, or MariaDB with ``--database
mariadb``), toxiproxy between it and every Jobstead process (workers and
schedulers of ``tests.apps.faults``), and a driver that defers the jobs in
batches while it kills processes (kill -9, then starts them again), freezes
workers (SIGSTOP for longer than the lease), restarts the server cleanly and by
crashing it (``pg_ctl restart -m fast`` and ``-m immediate``; on MariaDB a
SIGTERM and a kill -9 of ``mariadbd``: ``databases.py``), cuts every connection
and stalls them. The verdict comes from the handlers' own start/end records and
from the jobs table, read straight from the server:

- ``lost``: jobs that did not succeed (the handlers never fail on purpose);
- ``ran twice at once``: two attempts of one job running at the same time. A
  process killed with -9 stopped running at the kill; a frozen worker was not
  running while frozen, and the moments after it wakes, before it notices its
  lease is gone, are counted apart (``frozen tails``), with the check that
  none of those attempts wrote the job's completion;
- ``limit peak``: most attempts of the handler limited to 3 running at once;
- ``cron duplicates``: fire times of the every-second cron deferred as more than
  one job (a job run again after its worker was killed is counted apart);
- ``died``: Jobstead processes that exited without being killed;
- ``drain after last fault``: seconds from the last fault to the last job done.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from jobstead import App
from jobstead.deferred import Deferred
from jobstead.handler import Handler
from tests.apps.faults import SPANS_ENV, Span, read_cron_fires, read_spans
from tests.chaos import databases
from tests.support.faultproxy import FaultProxy
from tests.support.processes import spawn_cli

HANDLERS = ("work", "work_async", "limited")
LIMIT = 3
SCHEMA = "chaos"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database",
        choices=databases.DATABASES,
        default="postgresql",
        help="the server the run stands on (make chaos CHAOS_DATABASE=mariadb)",
    )
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--schedulers", type=int, default=3)
    p.add_argument("--kills", type=int, default=20, help="random kill -9 of a worker or scheduler")
    p.add_argument("--stops", type=int, default=2, help="SIGSTOPs of a worker, each longer than the lease")
    p.add_argument(
        "--restarts",
        default="fast,immediate",
        help="database restarts: fast (a clean shutdown) and immediate (a crash), comma-separated, or none",
    )
    p.add_argument("--cuts", type=int, default=1, help="every connection cut through the proxy")
    p.add_argument("--stalls", type=int, default=1, help="every connection stalled, longer than the lease")
    p.add_argument("--lease", type=float, default=5.0, help="workers' --lease-seconds")
    p.add_argument("--concurrency", type=int, default=8, help="each worker's --concurrency")
    p.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the last jobs")
    p.add_argument(
        "--outage-at-start",
        type=float,
        default=0.0,
        help="start the processes while the database is down, until each has met the outage, then this many "
        "seconds more (as after a node failure)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the logs and records (printed) after the run")
    return p.parse_args(argv)


@dataclass
class Process:
    """A Jobstead process the run keeps alive: started again after every kill, counted when it dies alone."""

    role: str
    args: list[str]
    env: dict[str, str]
    logdir: Path
    popen: subprocess.Popen[bytes] | None = None
    generation: int = 0

    def start(self) -> None:
        self.generation += 1
        self.popen = spawn_cli(self.args, self.env, self.logdir / f"{self.role}.{self.generation}.log")

    def has_spoken(self) -> bool:
        """It logged a line or exited: it has tried the database at least once."""
        log = self.logdir / f"{self.role}.{self.generation}.log"
        exited = self.popen is not None and self.popen.poll() is not None
        return exited or (log.exists() and log.stat().st_size > 0)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


@dataclass
class Faults:
    """What the driver did, and when, for reading the records afterwards."""

    killed_at: dict[int, float] = field(default_factory=dict)
    frozen: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    done: list[tuple[float, str]] = field(default_factory=list)


def retrying(what: Callable[[], object], seconds: float = 120) -> object:
    """The driver's own database calls wait out the faults it causes."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return what()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    rng = random.Random(options.seed)
    root = Path(tempfile.mkdtemp(prefix="jobstead-chaos-"))
    server = databases.start(options.database, "chaos")
    print(f"chaos on {server.label}", file=sys.stderr)
    proxy: FaultProxy | None = None
    processes: list[Process] = []
    app: App | None = None
    try:
        url = server.url()
        proxy = FaultProxy(server.port, root / "toxiproxy.log").start()
        spans = root / "spans.log"
        env = {
            "JOBSTEAD_DATABASE_URL": databases.through(url, proxy.listen_port),
            "JOBSTEAD_SCHEMA": SCHEMA,
            SPANS_ENV: str(spans),
        }
        app = App(url, schema=SCHEMA)
        from tests.apps import faults as faults_module

        for name in HANDLERS:
            h = faults_module.app.get_handler(name)
            app.handler(name=name, concurrency=h.concurrency, max_attempts=h.max_attempts, retry=h.retry)(h.func)
        app.store  # noqa: B018  # migrate before the processes race to

        lease = str(options.lease)
        worker_args = [
            "worker",
            "--app",
            "tests.apps.faults:app",
            "--lease-seconds",
            lease,
            "--concurrency",
            str(options.concurrency),
            "--poll-interval",
            "0.2",
            "--shutdown-grace",
            "30",
        ]
        scheduler_args = ["scheduler", "--app", "tests.apps.faults:app", "--interval", "0.5"]
        processes = [Process(f"worker{n}", worker_args, env, root) for n in range(options.workers)]
        processes += [Process(f"scheduler{n}", scheduler_args, env, root) for n in range(options.schedulers)]
        if options.outage_at_start:
            server.stop()
        for p in processes:
            p.start()
        if options.outage_at_start:
            # Down until every process has met the outage (said something, or exited):
            # on a loaded machine, starting Python can take longer than the outage.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(p.has_spoken() for p in processes):
                time.sleep(0.1)
            time.sleep(options.outage_at_start)
            server.start_again()

        # About how long the limited third of the jobs takes at 3 at a time (150 ms on average).
        window = max(20.0, options.jobs / 3 * 0.15 / LIMIT)
        record = Faults()
        died: list[str] = []
        intentional: set[int] = set()
        lock = threading.Lock()
        running = threading.Event()
        running.set()
        # Children get PR_SET_PDEATHSIG from spawn_cli, which fires when the *thread*
        # that started them ends: the helper threads live until every process is stopped.
        finished = threading.Event()
        faults_done = threading.Event()

        def watch() -> None:
            while running.is_set():
                with lock:
                    for p in processes:
                        if p.popen is not None and p.popen.poll() is not None and p.pid not in intentional:
                            died.append(f"{p.role} (pid {p.pid}, exit {p.popen.returncode})")
                            intentional.add(p.pid)
                            p.start()
                time.sleep(0.2)
            finished.wait()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        events: list[tuple[float, str]] = []
        events += [(rng.uniform(0.05, 0.9) * window, "kill") for _ in range(options.kills)]
        events += [(rng.uniform(0.1, 0.8) * window, "stop") for _ in range(options.stops)]
        restarts = [m for m in options.restarts.split(",") if m and m != "none"]
        events += [(rng.uniform(0.2, 0.8) * window, f"restart-{m}") for m in restarts]
        events += [(rng.uniform(0.1, 0.9) * window, "cut") for _ in range(options.cuts)]
        events += [(rng.uniform(0.1, 0.9) * window, "stall") for _ in range(options.stalls)]
        events.sort()

        def fault(kind: str) -> None:
            if kind == "kill":
                with lock:
                    p = rng.choice(processes)
                    intentional.add(p.pid)
                    os.kill(p.pid, signal.SIGKILL)
                    record.killed_at[p.pid] = time.time()
                    assert p.popen is not None
                    p.popen.wait()
                time.sleep(0.5)
                with lock:
                    p.start()
            elif kind == "stop":
                with lock:
                    p = rng.choice([p for p in processes if p.role.startswith("worker")])
                    pid = p.pid
                os.kill(pid, signal.SIGSTOP)
                began = time.time()
                time.sleep(options.lease * 2.5)
                os.kill(pid, signal.SIGCONT)
                record.frozen.setdefault(pid, []).append((began, time.time()))
            elif kind.startswith("restart-"):
                server.restart(kind.removeprefix("restart-"))
            elif kind == "cut":
                assert proxy is not None
                proxy.cut(down_for=1.0)
            elif kind == "stall":
                assert proxy is not None
                proxy.stall(options.lease * 2)
            record.done.append((time.time(), kind))

        def drive() -> None:
            started = time.monotonic()
            for at, kind in events:
                time.sleep(max(0.0, at - (time.monotonic() - started)))
                fault(kind)
            faults_done.set()
            finished.wait()

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()

        # The jobs, in batches across the window, so faults land on work in flight.
        batches = 20
        ids: list[int] = []
        began = time.monotonic()
        for b in range(batches):
            calls = range(b * options.jobs // batches, (b + 1) * options.jobs // batches)
            by_handler: dict[str, list[dict[str, int]]] = {name: [] for name in HANDLERS}
            for i in calls:
                by_handler[HANDLERS[i % 3]].append({"ms": rng.randint(50, 250)})
            for name, args in by_handler.items():
                if args:
                    handler = app.get_handler(name)
                    ids += _defer(handler, args)
            time.sleep(max(0.0, (b + 1) * window / batches * 0.8 - (time.monotonic() - began)))
        faults_done.wait()
        last_fault = max((t for t, _ in record.done), default=time.time())

        jobs = app.store.tables.jobs

        def unfinished() -> int:
            assert app is not None
            with app.store.db.engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count())
                        .select_from(jobs)
                        .where(jobs.c.handler.in_(HANDLERS), jobs.c.status != "succeeded")
                    ).scalar_one()
                )

        deadline = time.monotonic() + options.drain_timeout
        left = int(retrying(unfinished))  # type: ignore[call-overload]
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = int(retrying(unfinished))  # type: ignore[call-overload]
        drained = time.time() - last_fault
        running.clear()
        time.sleep(0.5)  # the watcher's last pass
        with lock:
            codes = _stop_all(processes)
        finished.set()
        died += [f"{p.role} (pid {p.pid}, exit {c} on SIGTERM)" for p, c in zip(processes, codes, strict=True) if c]

        results = _results(app)
        runs = read_spans(spans)
        twice, tails, tail_completed = _concurrent(runs, record, results)
        peak, peak_at = _peak([s for s in runs if s.handler == "limited"], record)
        # A fire deferred twice is two jobs for one fire time; one job run again after its
        # worker was killed or frozen is a retry (at least once), reported apart.
        fire_runs = read_cron_fires(spans)
        fires = Counter(at for _, at in {(job_id, at) for job_id, at, _ in fire_runs})
        duplicates = sorted(at for at, n in fires.items() if n > 1)
        reruns = len(fire_runs) - len({job_id for job_id, _, _ in fire_runs})

        print(f"lost: {left} of {len(ids)}")
        print(
            f"ran twice at once: {len(twice)}"
            + (f" (frozen tails after takeover: {tails}, of which wrote the completion: {tail_completed})")
        )
        where = f", {_near(peak_at, record)}" if peak > LIMIT else ""
        if peak > LIMIT:
            limited = [s for s in runs if s.handler == "limited"]
            _explain(app, _live_at(limited, record, peak_at))
            print(f"  faults: {record}", file=sys.stderr)
        print(f"limit peak: {peak} (limit {LIMIT}{where})")
        print(
            f"cron duplicates: {len(duplicates)} of {len(fires)} fires"
            + (f" {duplicates[:5]}" if duplicates else "")
            + f" (runs again of one fire's job after a kill or freeze: {reruns})"
        )
        print(f"died: {len(died)}" + (f" {died}" if died else ""))
        print(f"drain after last fault: {drained:.1f} s")
        print(f"faults: {', '.join(k for _, k in record.done)}", file=sys.stderr)
        ok = not left and not twice and not tail_completed and peak <= LIMIT and not duplicates and not died
        print(f"chaos: {'PASS' if ok else 'FAIL'}")
        if options.keep:
            print(f"logs and records kept in {root}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        for p in processes:
            if p.popen is not None and p.popen.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.popen.kill()
        if app is not None:
            app.close()
        if proxy is not None:
            proxy.stop()
        server.cleanup()
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)


def _defer(handler: Handler[..., object], calls: list[dict[str, int]]) -> list[int]:
    """Defer ``calls``, waiting out the faults: the driver is a client too."""
    deferred: list[Deferred[object]] = []
    retrying(lambda: deferred.extend(handler.defer_many(calls)))
    return [d.id for d in deferred]


def _stop_all(processes: list[Process]) -> list[int]:
    for p in processes:
        assert p.popen is not None
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    codes = []
    for p in processes:
        assert p.popen is not None
        try:
            codes.append(p.popen.wait(60))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            codes.append(p.popen.wait())
    return codes


def _results(app: App) -> dict[int, str]:
    """Each succeeded job's result: the marker of the attempt that wrote its completion."""
    jobs = app.store.tables.jobs
    with app.store.db.engine.connect() as conn:
        rows = conn.execute(select(jobs.c.id, jobs.c.result).where(jobs.c.status == "succeeded")).all()
    return {int(job_id): str(result) for job_id, result in rows}


def _running_parts(span: Span, record: Faults, until: float) -> list[tuple[float, float]]:
    """When the attempt really ran: not after its process was killed, not while it was frozen."""
    end = span.end if span.end is not None else record.killed_at.get(span.pid, until)
    parts = [(span.start, end)]
    for frozen_from, frozen_to in record.frozen.get(span.pid, []):
        cut = []
        for a, b in parts:
            if b <= frozen_from or a >= frozen_to:
                cut.append((a, b))
                continue
            if a < frozen_from:
                cut.append((a, frozen_from))
            if b > frozen_to:
                cut.append((frozen_to, b))
        parts = cut
    return parts


def _thawed(span: Span, record: Faults) -> float | None:
    """When the attempt's worker woke, if it was frozen during the attempt."""
    for frozen_from, frozen_to in record.frozen.get(span.pid, []):
        if span.start < frozen_from and (span.end is None or span.end > frozen_to):
            return frozen_to
    return None


def _concurrent(runs: list[Span], record: Faults, results: dict[int, str]) -> tuple[list[int], int, int]:
    until = time.time()
    by_job: dict[int, list[Span]] = {}
    for s in runs:
        by_job.setdefault(s.job_id, []).append(s)
    twice: list[int] = []
    tails = tail_completed = 0
    for job_id, spans in by_job.items():
        if len(spans) < 2:
            continue
        for i, a in enumerate(spans):
            for b in spans[i + 1 :]:
                overlap = False
                for a0, a1 in _running_parts(a, record, until):
                    for b0, b1 in _running_parts(b, record, until):
                        if a0 < b1 and b0 < a1:
                            overlap = True
                if not overlap:
                    continue
                thawed = [s for s in (a, b) if _thawed(s, record) is not None]
                if thawed:
                    tails += 1
                    tail_completed += sum(results.get(job_id) == s.marker for s in thawed)
                else:
                    twice.append(job_id)
    return twice, tails, tail_completed


def _live_at(runs: list[Span], record: Faults, at: float) -> list[Span]:
    until = time.time()
    return [s for s in runs if any(a <= at < b for a, b in _running_parts(s, record, until))]


def _explain(app: App, spans: list[Span]) -> None:
    """The database's side of the attempts running at a violation, for whoever reads the report."""
    ids = sorted({s.job_id for s in spans})
    jobs, attempts = app.store.tables.jobs, app.store.tables.attempts
    with app.store.db.engine.connect() as conn:
        job_rows = conn.execute(
            select(jobs.c.id, jobs.c.status, jobs.c.attempts, jobs.c.lease_owner).where(jobs.c.id.in_(ids))
        ).all()
        attempt_rows = conn.execute(
            select(attempts).where(attempts.c.job_id.in_(ids)).order_by(attempts.c.job_id, attempts.c.attempt)
        ).all()
    for s in spans:
        print(f"  running at the peak: {s}", file=sys.stderr)
    for row in job_rows:
        print(f"  job: {tuple(row)}", file=sys.stderr)
    for row in attempt_rows:
        print(f"  attempt: {tuple(row)}", file=sys.stderr)


def _peak(runs: list[Span], record: Faults) -> tuple[int, float]:
    until = time.time()
    events: list[tuple[float, int]] = []
    for s in runs:
        parts = _running_parts(s, record, until)
        if _thawed(s, record) is not None:
            parts = parts[:1]  # its tail after waking is counted as a frozen tail, not a slot
        for a, b in parts:
            events += [(a, 1), (b, -1)]
    events.sort(key=lambda e: (e[0], e[1]))
    peak = current = 0
    peak_at = 0.0
    for at, delta in events:
        current += delta
        if current > peak:
            peak, peak_at = current, at
    return peak, peak_at


def _near(at: float, record: Faults) -> str:
    """The fault that ended last before ``at``, for reading a violation."""
    before = [(t, kind) for t, kind in record.done if t <= at]
    if not before:
        return "before any fault"
    t, kind = max(before)
    return f"{at - t:.1f} s after {kind} ended"
