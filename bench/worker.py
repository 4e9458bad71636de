"""One worker process of one system: ``python -m bench.worker SYSTEM --url URL [options]``.

The harness starts these as separate OS processes (one per "worker process" in
the figures), each running the system's own worker loop with a no-op async
handler named ``noop(t: float)``. The handler's only work is the probe call:
``t`` is the defer time of a latency probe job (0 for throughput jobs).

Each system's worker is set up the way its documentation recommends for
throughput (bench/README.md says how and where that comes from); the options
here are only the knobs those recommendations name.

"Ready" (see ``bench.probe``) is sent once the worker's loop has made its first
fetch, so the harness can start timing only after every process is up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import threading
from typing import Any

from .probe import PROGRESS_ENV, Reporter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("system", choices=["jobstead", "pgqueuer", "procrastinate", "oban", "chancy", "celery"])
    parser.add_argument("--url", required=True, help="SQLAlchemy-style URL (postgresql+psycopg://...)")
    parser.add_argument("--concurrency", type=int, default=50, help="jobs in flight per process")
    parser.add_argument("--batch-size", type=int, default=10, help="pgqueuer: jobs per dequeue")
    parser.add_argument("--limit", type=int, default=None, help="jobstead: global concurrency limit of noop")
    parser.add_argument("--flow", default=None, help="jobstead: flow control options of noop, as JSON (bench.flow)")
    parser.add_argument(
        "--spread", default=None, help="jobstead: HANDLERSxQUEUES more no-op handlers over that many queues"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=None, help="jobstead: seconds between idle claims (default: its own)"
    )
    args = parser.parse_args(argv)
    reporter = Reporter()
    if args.system == "jobstead":
        run_jobstead(args, reporter)
    elif args.system == "pgqueuer":
        asyncio.run(run_pgqueuer(args, reporter))
    elif args.system == "oban":
        import uvloop  # what `oban start` runs on

        uvloop.run(run_oban(args, reporter))
    elif args.system == "chancy":
        asyncio.run(run_chancy(args, reporter))
    elif args.system == "celery":
        run_celery(args, reporter)
    else:
        asyncio.run(run_procrastinate(args, reporter))


def libpq_url(url: str) -> str:
    """The plain libpq form the peers' drivers take."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def run_jobstead(args: argparse.Namespace, reporter: Reporter) -> None:
    from .systems.jobstead import build_app

    if os.environ.get(PROGRESS_ENV):
        from jobstead.store.leases import Leases

        original = Leases.complete

        def complete(self: Leases, completions: Any, *more: Any) -> set[int]:
            lost = original(self, completions, *more)  # committed when it returns
            reporter.jobs_done(len(completions) - len(lost))
            return lost

        Leases.complete = complete  # type: ignore[method-assign]

    spread = None
    if args.spread:
        handlers, queues = args.spread.split("x")
        spread = (int(handlers), int(queues))
    flow = json.loads(args.flow) if args.flow else None
    app = build_app(args.url, limit=args.limit, reporter=reporter, spread=spread, flow=flow)
    polling = {} if args.poll_interval is None else {"poll_interval": args.poll_interval}
    worker = app.worker(concurrency=args.concurrency, **polling)

    def announce() -> None:
        # ``started`` is set right before the claim loop's first claim.
        worker.started.wait()
        reporter.ready()

    threading.Thread(target=announce, daemon=True).start()
    worker.run()  # SIGTERM: graceful stop


async def run_pgqueuer(args: argparse.Namespace, reporter: Reporter) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, PgQueuer
    from pgqueuer.models import Job

    connection = await asyncpg.connect(dsn=libpq_url(args.url))
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        reporter.job_started(float(job.payload or b"0"))

    _announce_on_first_call(pgq.qm.queries, "dequeue", reporter)
    if os.environ.get(PROGRESS_ENV):
        log_jobs = pgq.qm.queries.log_jobs

        async def logged(job_status: Any) -> None:
            await log_jobs(job_status)  # autocommitted: the jobs moved to pgqueuer_log
            reporter.jobs_done(len(job_status))

        pgq.qm.queries.log_jobs = logged
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    await pgq.run(batch_size=args.batch_size)


async def run_procrastinate(args: argparse.Namespace, reporter: Reporter) -> None:
    from .systems.procrastinate import build_app

    app = build_app(args.url, pool_size=args.concurrency + 1, reporter=reporter)
    async with app.open_async():
        _announce_on_first_call(app.job_manager, "fetch_job", reporter)
        # install_signal_handlers (the default) turns SIGTERM into a graceful stop
        await app.run_worker_async(concurrency=args.concurrency)


async def run_oban(args: argparse.Namespace, reporter: Reporter) -> None:
    """As ``oban start`` does: orjson for JSON, one Oban with the queue, stopped on SIGTERM."""
    import orjson
    from oban import Oban
    from psycopg.types.json import set_json_dumps, set_json_loads

    from .systems import oban as system

    set_json_dumps(orjson.dumps)
    set_json_loads(orjson.loads)
    system.reporter = reporter
    system.noop_worker()
    pool = await Oban.create_pool(libpq_url(args.url))
    oban = Oban(pool=pool, queues={"default": args.concurrency})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with oban:
            # started: the producer listens and fetches on the next insert notification
            reporter.ready()
            await stop.wait()
    finally:
        await pool.close()


async def run_chancy(args: argparse.Namespace, reporter: Reporter) -> None:
    from chancy import Worker

    from .systems import chancy as system

    system.reporter = reporter
    app = system.build_app(args.url)
    async with app:
        await app.declare(system.queue(args.concurrency), upsert=True)
        worker = Worker(app)  # registers SIGTERM/SIGINT for a graceful stop (its default)
        _announce_on_first_call(worker, "fetch_jobs", reporter)
        async with worker:
            await worker.wait_for_shutdown()


def run_celery(args: argparse.Namespace, reporter: Reporter) -> None:
    """``celery worker`` with threads (the no-op task waits on nothing), on MariaDB (``bench.mariadb``)."""
    from celery.signals import worker_ready

    from .systems.celery_sqla import build_app

    app = build_app(args.url, reporter)
    worker_ready.connect(lambda **_: reporter.ready(), weak=False)  # its consumer is up
    # SIGTERM: Celery's warm shutdown
    app.worker_main(
        [
            "worker",
            *("-P", "threads", "-c", str(args.concurrency)),
            *("--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"),
        ]
    )


def _announce_on_first_call(owner: Any, method: str, reporter: Reporter) -> None:
    """Wrap ``owner.method`` (an async fetch) so its first return sends ``ready``.

    The first fetch happens once the worker's loop (and its LISTEN) is set up;
    the wrapper removes itself after that, so the hot path is untouched.
    """
    original = getattr(owner, method)

    async def first_call(*a: Any, **kw: Any) -> Any:
        try:
            return await original(*a, **kw)
        finally:
            setattr(owner, method, original)
            reporter.ready()

    setattr(owner, method, first_call)


if __name__ == "__main__":
    main()
