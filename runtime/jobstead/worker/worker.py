"""The worker: claims jobs of the handlers it has, runs them, reports how they ended.

One asyncio loop per process. Async handlers run as tasks on it, sync handlers
on threads (see ``execution``), database calls on the default executor so the
loop never waits on I/O. This module is the worker's lifecycle: start-up
(retried while the database is unreachable), signals, a graceful stop with
its grace period, and the wiring of the parts that do the work:

* the claim loop (``claiming``): claims as many jobs as there are free slots,
  then sleeps until a slot frees, a NOTIFY arrives, or the poll interval passes;
* the job runner (``runner``): starts claimed jobs, runs each handler, decides
  how it ended and hands the completion on;
* the completion writer: batches finished attempts (``completions``);
* the maintenance services (``jobstead.services``): lease renewal on a thread of
  its own (learns of cancellations and lost leases), and on a second thread the
  settings refresh plus the database-wide duties (rescue, retention, worker
  registry) that one process per interval does, whoever takes the turn;
* the listener: wake-ups from the store (LISTEN/NOTIFY on PostgreSQL), where it has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from ..cancel import CancelReason
from ..errors import ConfigurationError
from ..lifecycle import LoopSignals, Sleeper, one_line, until_ready
from ..metrics.server import serve_metrics_once
from ..metrics.worker import WORKER_METRICS, package_version
from ..services import (
    LeaseRenewer,
    PlannerStatistics,
    Rescuer,
    RetentionPruner,
    ServiceThread,
    SettingsRefresh,
    WorkerRegistryPruner,
)
from ..store import Completion, HandlerDefinition, HandOff, LeaseReport, Store
from ..store.registry import host_name
from .claiming import ClaimLoop
from .collector import sized_for_jobs
from .completions import CompletionWriter
from .environment import WorkerEnvironment
from .options import WorkerOptions
from .runner import JobRunner

logger = logging.getLogger("jobstead.worker")


def new_worker_id() -> str:
    """Unique per process start: a restarted pod never inherits a dead worker's leases."""
    return f"{host_name()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class Worker:
    """Claims jobs of its environment's handlers, runs them, reports how they ended.

    Made by ``app.worker(...)``, which hands it what it takes from the app
    (``WorkerEnvironment``) and its checked options (``WorkerOptions``).
    ``run()`` blocks; ``run_async()`` runs on the caller's loop; ``stop()`` from
    anywhere.
    """

    def __init__(self, environment: WorkerEnvironment, options: WorkerOptions | None = None) -> None:
        if not environment.handlers:
            raise ConfigurationError("the worker has no handlers to run: register some with @app.handler")
        self.options = options if options is not None else WorkerOptions()
        self._env = environment
        self.id = new_worker_id()
        self.metrics = WORKER_METRICS
        self.started = threading.Event()
        self.stopped = threading.Event()
        #: How long a stop waits for running jobs; ``stop(grace=...)`` and a second SIGINT change it.
        self.shutdown_grace = self.options.shutdown_grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        #: Cuts the start-up's retry waits short on a stop.
        self._wake: asyncio.Event | None = None
        self._hurried: asyncio.Event | None = None
        #: Why running jobs were not given their grace period, said when they are released.
        self._hurried_by = "no grace period (shutdown_grace 0)"
        self._stop_callbacks: list[Callable[[], None]] = []
        self._signals = LoopSignals(self._on_signal, enabled=self.options.install_signal_handlers)
        # The parts, made once the store is open (``run_async``).
        self._runner: JobRunner | None = None
        self._claims: ClaimLoop | None = None

    # -- control from outside ------------------------------------------------

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once a graceful stop begins (SIGTERM, ``stop()``): how
        ``jobstead run`` stops its scheduler as soon as the worker stops claiming."""
        self._stop_callbacks.append(callback)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT or ``stop()``; blocks the calling thread.

        The collector's young generation is sized for running jobs meanwhile
        (``collector``): whoever blocks on a worker owns its process.
        """
        with sized_for_jobs():
            asyncio.run(self.run_async())

    def stop(self, grace: float | None = None) -> None:
        """Begin a graceful shutdown; callable from any thread or a signal handler."""
        loop = self._loop
        if grace is not None:
            self.shutdown_grace = grace
            if grace == 0 and loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._hurry, "stopped early by stop(grace=0)")
        if loop is None or loop.is_closed():
            self._stopping = True
            return
        try:
            loop.call_soon_threadsafe(self._begin_stop)
        except RuntimeError:
            self._stopping = True

    def _begin_stop(self) -> None:
        if not self._stopping:
            if self.started.is_set():  # before it, the one line is "stopped before it started"
                running = len(self._runner.running) if self._runner is not None else 0
                logger.info("worker %s stopping: no new claims, %d job(s) running", self.id, running)
            for callback in self._stop_callbacks:
                try:
                    callback()
                except Exception:
                    logger.exception("a stop callback failed")
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._claims is not None:
            self._claims.stop()

    # -- main ----------------------------------------------------------------

    async def run_async(self) -> None:
        options = self.options
        if options.metrics_port is not None:
            serve_metrics_once(options.metrics_port)
        self.metrics.set_version(package_version())
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._hurried = asyncio.Event()
        if self.shutdown_grace == 0:
            self._hurried.set()
        # Signals from the start: a Ctrl-C while the database is still unreachable
        # is a stop like any other, not a KeyboardInterrupt through asyncio.run.
        self._signals.install()
        try:
            started = await until_ready(
                self._start_up,
                what=f"worker {self.id} starting",
                is_transient=self._env.is_transient,
                logger=logger,
                stopping=lambda: self._stopping,
                sleeper=Sleeper(self._wake),
            )
        except BaseException:
            self._signals.remove()
            raise
        if started is None:  # stopped before the database came back
            self._signals.remove()
            logger.info("worker %s stopped before it started", self.id)
            self.stopped.set()
            return
        store, settings = started
        writer = CompletionWriter(store, written=self._room_freed, hand_off=self._hand_off, handed=self._handed)
        runner = self._runner = JobRunner(
            self._env,
            worker_id=self.id,
            store=store,
            writer=writer,
            settings=settings,
            concurrency=options.concurrency,
            heartbeat_seconds=options.heartbeat,
            metrics=self.metrics,
        )
        claims = self._claims = ClaimLoop(
            store=store,
            runner=runner,
            worker_id=self.id,
            handlers=list(self._env.handlers),
            queues=options.queues,
            concurrency=options.concurrency,
            lease_seconds=options.lease_seconds,
            heartbeat_seconds=options.heartbeat,
            poll_interval=options.poll_interval,
            metrics=self.metrics,
        )
        if self._stopping:  # stopped while starting: the claim loop stops at once
            claims.stop()
        self.metrics.add_slots(self, options.concurrency, lambda: len(runner.running))
        renewal, duties = self._services(store, runner)
        try:
            rescued = await asyncio.to_thread(store.leases.rescue_expired)  # a restarted pod's old jobs, at once
        except Exception as exc:  # a failover just now, say: the rescuer does it at its next turn
            if not store.is_transient(exc):
                raise
            rescued = []
            logger.warning("rescuing expired jobs at start failed (%s); the rescuer will", one_line(exc))
        if rescued:
            self.metrics.rescued.inc(len(rescued))
            logger.warning("rescued %d job(s) whose worker stopped renewing its lease: %s", len(rescued), rescued)
        renewal.start()
        duties.start()
        # A failover may have lost claims (asynchronous replication): the renewal on the new
        # primary says which, so it runs as soon as a connection is found lost, not at its hour.
        unsubscribe = store.when_connections_lost(renewal.hurry)
        helpers = [asyncio.create_task(writer.run(), name="jobstead-completions")]
        if options.listen and store.supports_listen:
            helpers.append(
                asyncio.create_task(
                    store.listen(options.queues, claims.notified, cancelled=runner.cancel_notice),
                    name="jobstead-listen",
                )
            )
        logger.info(
            "worker %s started: handlers %s, queues %s, concurrency %d",
            self.id,
            ",".join(self._env.handlers),
            ",".join(options.queues) if options.queues else "all",
            options.concurrency,
        )
        self.started.set()
        try:
            await claims.run()
            await self._shut_down(runner, writer)
        finally:
            unsubscribe()
            renewal.stop()
            duties.stop()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                await asyncio.to_thread(store.registry.unregister_worker, self.id)
            except Exception:
                logger.exception("could not unregister worker %s", self.id)
            self._signals.remove()
            self.metrics.remove_slots(self)
            # this worker's series join the process's totals (a run again makes new ones)
            self.metrics.retire(claims.series, runner.series.values())
            self.stopped.set()
            logger.info("worker %s stopped", self.id)

    def _start_up(self) -> tuple[Store, dict[str, HandlerDefinition]]:
        """Everything before the first claim, retried as a whole while the database is unreachable:
        the store, and the handlers' settings as the database has them."""
        env = self._env
        store = env.open_store()
        # Again, even if the app was open already: a deleted code cron comes back when a worker starts.
        store.registry.publish_handlers(env.definitions())
        env.publish_crons()
        store.registry.register_worker(
            self.id,
            handlers=list(env.handlers),
            queues=list(self.options.queues) if self.options.queues else None,
            concurrency=self.options.concurrency,
            crons=list(env.crons),
        )
        return store, store.registry.handlers(list(env.handlers))

    def _services(self, store: Store, runner: JobRunner) -> tuple[ServiceThread, ServiceThread]:
        """Lease renewal on a thread of its own; the other duties together on a second one."""
        every, lease_seconds = self.options.heartbeat, self.options.lease_seconds
        renewal = ServiceThread(
            "jobstead-leases",
            [
                LeaseRenewer(
                    store,
                    self.id,
                    every=every,
                    lease_seconds=lease_seconds,
                    held=runner.held,
                    on_report=self._report_from_thread,
                )
            ],
        )
        duties = ServiceThread(
            "jobstead-maintenance",
            [
                SettingsRefresh(runner.refresh_settings, every=every),
                Rescuer(store, self.id, every=every),
                RetentionPruner(store, self.id, finished=self._env.retention, dead=self._env.dead_retention),
                WorkerRegistryPruner(store, self.id, silent_for=timedelta(seconds=max(lease_seconds * 10, 300))),
                *([PlannerStatistics(store, self.id)] if store.keeps_plans else []),
            ],
        )
        return renewal, duties

    def _room_freed(self) -> None:
        """Completions were written (the writer's callback): the claim loop decides what that frees."""
        if self._claims is not None:
            self._claims.room_freed()

    def _hand_off(self, completions: Sequence[Completion], alongside: bool) -> HandOff | None:
        """The claim a completion write makes in its transaction (the claim loop decides)."""
        return self._claims.hand_off(completions, alongside) if self._claims is not None else None

    async def _handed(self, hand_off: HandOff, took: float, written: bool, alongside: bool) -> None:
        if self._claims is not None:
            await self._claims.handed(hand_off, took, written, alongside)

    def _report_from_thread(self, report: LeaseReport, asked: frozenset[int]) -> None:
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(runner.apply_report, report, asked)

    async def _shut_down(self, runner: JobRunner, writer: CompletionWriter) -> None:
        """Wait up to the grace period for running jobs, then cancel and release the rest; write what finished."""
        running = runner.tasks()
        if running and self.shutdown_grace > 0:
            assert self._hurried is not None
            logger.info("waiting up to %.1f s for %d running job(s)", self.shutdown_grace, len(running))
            # A second Ctrl-C (or stop(grace=0)) ends the wait at once, not when the grace runs out.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.shutdown_grace
            pending: set[asyncio.Future[Any]] = set(running)
            hurried = asyncio.ensure_future(self._hurried.wait())
            try:
                while pending and not hurried.done() and (left := deadline - loop.time()) > 0:
                    done, _ = await asyncio.wait([*pending, hurried], timeout=left, return_when=asyncio.FIRST_COMPLETED)
                    pending -= done
            finally:
                hurried.cancel()
        assert self._hurried is not None
        why = self._hurried_by if self._hurried.is_set() else f"the {self.shutdown_grace:g} s grace period ran out"
        for r in runner.running_jobs():
            logger.warning("job %s still running: %s; cancelling and releasing it", r.job.id, why)
            runner.cancel(r, CancelReason.SHUTDOWN)
        remaining = runner.tasks()
        if remaining:
            await asyncio.wait(remaining, timeout=10)
        await writer.drain()

    # -- signals ---------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping and sig == signal.SIGINT:
            logger.warning("second SIGINT: not waiting for running jobs")
            self._hurry("stopped early by a second Ctrl-C (SIGINT)")
        self._begin_stop()

    def _hurry(self, why: str) -> None:
        """Stop waiting for running jobs: cancel and release them now (also cuts a grace wait short)."""
        self._hurried_by = why
        self.shutdown_grace = 0
        if self._hurried is not None:
            self._hurried.set()
