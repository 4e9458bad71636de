"""``jobstead migrate``, ``worker``, ``scheduler``, ``run``, ``pause`` and ``resume``."""

from __future__ import annotations

import asyncio
import logging
from argparse import Namespace
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, UnknownHandler
from ..logs import configure_logging as setup_logging
from ..logs import resolve_log_format
from ..store import Store
from ..store.control import PauseScope
from ..store.presence import known_in_scope, schema_revision
from .errors import UsageError
from .loading import app_from_args, database_override, store_from_args
from .output import print_json, print_table

if TYPE_CHECKING:
    from ..app import App
    from ..cron.scheduler import Scheduler
    from ..worker import Worker

logger = logging.getLogger("jobstead.cli")


def configure_logging(level: str, log_format: str | None = None) -> None:
    """``--log-level`` and ``--log-format`` (text, or json: one object per line; also ``$JOBSTEAD_LOG_FORMAT``)."""
    try:
        chosen = resolve_log_format(log_format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    setup_logging(level, chosen)


def migrate(args: Namespace) -> int:
    """Says what it did: created the schema, upgraded it (from which revision), or nothing."""
    app = app_from_args(args) if args.app else None
    store = app.open_store() if app is not None else Store.connect(database_override(args))
    before = schema_revision(store.db)
    store.migrate()
    after = schema_revision(store.db)
    if app is not None:
        _ = app.store  # publishes its handlers and crons, as every process of the app does at start
    where = f"{store.db.engine.url.render_as_string(hide_password=True)}, prefix {store.tables.prefix!r}"
    if before is None:
        print(f"created the Jobstead schema at revision {after} ({where})")
    elif before != after:
        print(f"upgraded the schema from revision {before} to {after} ({where})")
    else:
        print(f"schema is current at revision {after}: nothing to do ({where})")
    return 0


def worker(args: Namespace) -> int:
    _worker(app_from_args(args), args).run()
    return 0


def scheduler(args: Namespace) -> int:
    _scheduler(app_from_args(args), args).run()
    return 0


def run(args: Namespace) -> int:
    """Worker and scheduler in one process (one event loop): the embedded default for one machine.

    The worker owns the signals; when it begins to stop, the scheduler stops
    deferring too, and if the scheduler dies the worker is stopped with it, so
    the process never runs half of what it was asked to. The scheduler starts
    once the worker has: one start-up (migrate, publish) at a time, and a
    database that will never answer (bad credentials, no such database) is
    reported once, by the worker's start, as the process's one error line.
    """
    app = app_from_args(args)
    w = _worker(app, args)
    s = _scheduler(app, args, install_signal_handlers=False)
    from ..worker.collector import sized_for_jobs

    with sized_for_jobs():  # as Worker.run does: this process is the worker's
        asyncio.run(_run_both(w, s))
    return 0


async def _run_both(w: Worker, s: Scheduler) -> None:
    w.on_stop(s.stop)
    worker = asyncio.create_task(w.run_async(), name="jobstead-worker")
    while not w.started.is_set() and not worker.done():
        await asyncio.wait({worker}, timeout=0.05)
    if worker.done():  # it never started: stopped first, or its error is the process's
        await worker
        return
    task = asyncio.create_task(s.run_async(), name="jobstead-scheduler")

    def scheduler_ended(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            logger.error("the scheduler failed; stopping the worker too")
            w.stop()

    task.add_done_callback(scheduler_ended)
    try:
        await worker
    finally:
        s.stop()
        await task


def _worker(app: App, args: Namespace) -> Worker:
    try:
        return app.worker(
            queues=args.queue,
            concurrency=args.concurrency,
            handlers=args.handler,
            lease_seconds=args.lease_seconds,
            pool_size=args.pool_size,
            shutdown_grace=args.shutdown_grace,
            poll_interval=args.poll_interval,
            metrics_port=args.metrics_port,
        )
    except (ConfigurationError, UnknownHandler) as exc:
        raise UsageError(str(exc)) from None


def _scheduler(app: App, args: Namespace, *, install_signal_handlers: bool = True) -> Scheduler:
    try:
        return app.scheduler(
            handlers=args.handler,
            interval=args.scheduler_interval,
            install_signal_handlers=install_signal_handlers,
        )
    except (ConfigurationError, UnknownHandler) as exc:
        raise UsageError(str(exc)) from None


def pause(args: Namespace) -> int:
    if args.action == "list":
        return _list_pauses(args)
    scope, name = _scope(args)
    store = store_from_args(args)
    _check_known(args, store, scope, name, also=())
    changed = store.control.pause(scope, name)
    print(f"{_what(scope, name)} {'paused' if changed else 'was already paused'}")
    return 0


def resume(args: Namespace) -> int:
    scope, name = _scope(args)
    store = store_from_args(args)
    _check_known(args, store, scope, name, also=[n for s, n in store.control.paused() if s == scope])
    changed = store.control.resume(scope, name)
    print(f"{_what(scope, name)} {'resumed' if changed else 'was not paused'}")
    return 0


def _list_pauses(args: Namespace) -> int:
    if args.handler or args.queue or args.all:
        raise UsageError("`pause list` takes no --handler, --queue or --all")
    paused = store_from_args(args).control.paused()
    if args.json:
        print_json([{"scope": scope, "name": name or None} for scope, name in paused])
    elif not paused:
        print("nothing is paused")
    else:
        print_table(["scope", "name"], [[scope, name or None] for scope, name in paused], empty="nothing is paused")
    return 0


def _check_known(args: Namespace, store: Store, scope: PauseScope, name: str, also: Iterable[str]) -> None:
    """A typo must not "succeed": the name has to be one some app published here, unless ``--force``."""
    if scope == "all" or args.force:
        return
    if args.app:
        app = app_from_args(args)
        also = [*also, *(app.handlers if scope == "handler" else {h.queue for h in app.handlers.values()})]
    known = known_in_scope(store.db, "handler" if scope == "handler" else "queue", also)
    if name not in known:
        listed = ", ".join(sorted(known)) or "none yet"
        raise UsageError(
            f"no {scope} named {name!r} is known to this database (known: {listed}); "
            f"--force to {args.command} it anyway"
        )


def _scope(args: Namespace) -> tuple[PauseScope, str]:
    given: list[tuple[PauseScope, str]] = []
    if args.handler:
        given.append(("handler", args.handler))
    if args.queue:
        given.append(("queue", args.queue))
    if args.all:
        given.append(("all", ""))
    if len(given) != 1:
        raise UsageError("say what to pause or resume: exactly one of --handler H, --queue Q or --all")
    return given[0]


def _what(scope: str, name: str) -> str:
    return "everything" if scope == "all" else f"{scope} {name!r}"


def metrics(args: Namespace) -> int:
    """``jobstead metrics``: the database-wide gauges, served by this one process (no app code needed)."""
    import time

    from prometheus_client import CollectorRegistry

    from ..metrics.database import DatabaseCollector
    from ..metrics.server import serve_metrics
    from ..store.drivers import driver_for
    from .database import describe
    from .loading import target_url

    url = target_url(args)
    is_transient = driver_for(url).is_transient  # an unsupported database fails here, before serving
    collector = DatabaseCollector(None, tenant_labels=args.tenant_labels)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        serve_metrics(args.port, host=args.host, registry=registry, announce=False)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(f"serving database metrics of the {describe(url)} on http://{args.host}:{args.port}/metrics", flush=True)
    try:
        # A database still starting (or failing over) is waited for, as a worker does;
        # meanwhile the scrape says jobstead_database_up 0.
        collector.store = asyncio.run(_store_when_ready(args, is_transient))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


async def _store_when_ready(args: Namespace, is_transient: Callable[[BaseException], bool]) -> Store | None:
    """``store_from_args``, retried with backoff while the database is unreachable."""
    from ..lifecycle import Sleeper, until_ready

    return await until_ready(
        lambda: store_from_args(args),
        what="metrics starting",
        is_transient=is_transient,
        logger=logger,
        stopping=lambda: False,
        sleeper=Sleeper(),
    )
