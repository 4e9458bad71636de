"""The worker: claims jobs of the handlers it has, runs them, reports how they ended.

One asyncio loop per process. Async handlers run as tasks on it, sync handlers
on threads (see ``execution``), database calls on the default executor so the
loop never waits on I/O. Four cooperating parts:

* the claim loop: claims as many jobs as there are free slots, then sleeps until
  a slot frees, a NOTIFY arrives, or the poll interval passes;
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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from .. import tracing
from ..cancel import CancelReason
from ..context import Context
from ..errors import ConfigurationError, InvalidArguments, JobError
from ..hooks import FailureEvent, run_hooks
from ..lifecycle import Backoff, LoopSignals, Sleeper, log_failure, log_recovery, until_ready
from ..logs import job_fields
from ..metrics.server import serve_metrics_once
from ..metrics.worker import WORKER_METRICS, ClaimSeries, JobSeries, attempt_outcome, package_version
from ..services import (
    LeaseRenewer,
    PlannerStatistics,
    Rescuer,
    RetentionPruner,
    ServiceThread,
    SettingsRefresh,
    WorkerRegistryPruner,
)
from ..signature import CONTEXT
from ..status import AttemptOutcome, JobStatus
from ..store import ClaimedJob, Completion, EffectiveSettings, HandlerDefinition, LeaseReport, Store
from ..store.registry import host_name
from .collector import sized_for_jobs
from .completions import CompletionWriter
from .environment import RunnableHandler, WorkerEnvironment
from .execution import Finished, call_handler
from .options import WorkerOptions
from .outcome import decide
from .prefetch import ClaimPace

logger = logging.getLogger("jobstead.worker")


@dataclass(slots=True)
class _Running:
    """A job this worker runs, and why it was asked to stop, if it was.

    The ``Context`` is made only for handlers that take one (most take none);
    when it exists it is the one place the reason is kept, so a reason it sets
    itself (a checkpoint that found the lease gone) counts too.
    """

    job: ClaimedJob
    is_async: bool
    claimed_at: float
    series: JobSeries
    task: asyncio.Task[None] | None = None
    ctx: Context | None = None
    _reason: CancelReason | None = None

    @property
    def cancel_reason(self) -> CancelReason | None:
        if self.ctx is not None:
            return self.ctx.cancel_reason
        return self._reason

    def request_cancel(self, reason: CancelReason) -> None:
        if self.ctx is not None:
            self.ctx.request_cancel(reason)
        elif self._reason is None:
            self._reason = reason


def new_worker_id() -> str:
    """Unique per process start: a restarted pod never inherits a dead worker's leases."""
    return f"{host_name()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class Worker:
    """Claims jobs of its environment's handlers, runs them, reports how they ended.

    Made by ``app.worker(...)``, which hands it what it takes from the app
    (``WorkerEnvironment``) and its checked options (``WorkerOptions``).
    """

    def __init__(self, environment: WorkerEnvironment, options: WorkerOptions | None = None) -> None:
        options = options if options is not None else WorkerOptions()
        if not environment.handlers:
            raise ConfigurationError("the worker has no handlers to run: register some with @app.handler")
        self.options = options
        self._env = environment
        self._store: Store | None = None
        self.id = new_worker_id()
        self.queues = list(options.queues) if options.queues else None
        self.concurrency = options.concurrency
        self.handler_names = list(environment.handlers)
        self.lease_seconds = options.lease_seconds
        self.heartbeat_seconds = options.heartbeat
        self.poll_interval = options.poll_interval
        self.shutdown_grace = options.shutdown_grace
        self.metrics = WORKER_METRICS
        self._metric_series: dict[tuple[str, str], JobSeries] = {}
        self._claim_series: ClaimSeries | None = None
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._running: dict[int, _Running] = {}
        #: Claimed, not started yet (see ``prefetch``): in claim order, leased like running ones.
        self._prefetched: dict[int, tuple[ClaimedJob, float]] = {}
        self._settings: dict[str, HandlerDefinition] = {}
        self._handlers = self._env.handlers
        self._resource_values: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._slot_freed: asyncio.Event | None = None
        self._writer: CompletionWriter | None = None
        self._stop_callbacks: list[Callable[[], None]] = []
        self._hurried: asyncio.Event | None = None
        self._signals = LoopSignals(self._on_signal, enabled=options.install_signal_handlers)

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
                    loop.call_soon_threadsafe(self._hurry)
        if loop is None or loop.is_closed():
            self._stopping = True
            return
        try:
            loop.call_soon_threadsafe(self._begin_stop)
        except RuntimeError:
            self._stopping = True

    def _on_notify(self, _queue: str) -> None:
        if self._wake is not None:
            self._wake.set()

    def _room_freed(self) -> None:
        """Completions were written: the slots they held are free, and under a global or
        per-tenant limit there is room in the database too, so claim again.

        Without a limit nothing new became claimable: a claim now would only
        find the queue as empty as the last one did, and, being in flight when
        the next NOTIFY came, make that job wait for it to return first.
        """
        if self._slot_freed is not None:
            self._slot_freed.set()
        if self._wake is not None and not self._may_claim_ahead():
            self._wake.set()

    def _on_cancel_notice(self, job_ids: list[int]) -> None:
        """Someone cancelled these jobs (a job or its batch): stop the ones running here now."""
        for job_id in job_ids:
            self._settle_prefetched(job_id, CancelReason.CANCELLED)
            running = self._running.get(job_id)
            if running is not None and running.cancel_reason is None:
                logger.info("job %s: cancellation requested", job_id)
                self._cancel(running, CancelReason.CANCELLED)

    def _begin_stop(self) -> None:
        if not self._stopping:
            logger.info("worker %s stopping: no new claims, %d job(s) running", self.id, len(self._running))
            for callback in self._stop_callbacks:
                try:
                    callback()
                except Exception:
                    logger.exception("a stop callback failed")
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._slot_freed is not None:
            self._slot_freed.set()

    # -- main ----------------------------------------------------------------

    async def run_async(self) -> None:
        if self.options.metrics_port is not None:
            serve_metrics_once(self.options.metrics_port)
        self.metrics.set_version(package_version())
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._hurried = asyncio.Event()
        if self.shutdown_grace == 0:
            self._hurried.set()
        store = await until_ready(
            self._start_up,
            what=f"worker {self.id} starting",
            is_transient=self._env.is_transient,
            logger=logger,
            stopping=lambda: self._stopping,
            sleeper=Sleeper(self._wake),
        )
        if store is None:  # stopped before the database came back
            self.stopped.set()
            return
        self.metrics.add_slots(self, self.concurrency, lambda: len(self._running))
        self._writer = CompletionWriter(store, written=self._room_freed)
        renewal, duties = self._services(store)
        rescued = await asyncio.to_thread(store.leases.rescue_expired)  # a restarted pod's old jobs, at once
        if rescued:
            self.metrics.rescued.inc(len(rescued))
            logger.warning("rescued %d job(s) whose worker stopped renewing its lease: %s", len(rescued), rescued)
        renewal.start()
        duties.start()
        helpers = [asyncio.create_task(self._writer.run(), name="jobstead-completions")]
        if self.options.listen and store.supports_listen:
            helpers.append(
                asyncio.create_task(
                    store.listen(self.queues, self._on_notify, cancelled=self._on_cancel_notice), name="jobstead-listen"
                )
            )
        self._signals.install()
        logger.info(
            "worker %s started: handlers %s, queues %s, concurrency %d",
            self.id,
            ",".join(self.handler_names),
            ",".join(self.queues) if self.queues else "all",
            self.concurrency,
        )
        self.started.set()
        try:
            await self._claim_loop()
            await self._shut_down()
        finally:
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
            self._retire_series()
            self.stopped.set()
            logger.info("worker %s stopped", self.id)

    def _start_up(self) -> Store:
        """Everything before the first claim, retried as a whole while the database is unreachable."""
        env = self._env
        store = self._store = env.open_store()
        # Again, even if the app was open already: a deleted code cron comes back when a worker starts.
        store.registry.publish_handlers(env.definitions())
        env.publish_crons()
        store.registry.register_worker(
            self.id,
            handlers=self.handler_names,
            queues=self.queues,
            concurrency=self.concurrency,
            crons=list(env.crons),
        )
        self._refresh_settings()
        return store

    def _opened(self) -> Store:
        assert self._store is not None, "the worker's store is opened by run_async"
        return self._store

    def _services(self, store: Store) -> tuple[ServiceThread, ServiceThread]:
        """Lease renewal on a thread of its own; the other duties together on a second one."""
        renewal = ServiceThread(
            "jobstead-leases",
            [
                LeaseRenewer(
                    store,
                    self.id,
                    every=self.heartbeat_seconds,
                    lease_seconds=self.lease_seconds,
                    # C-level copies: safe from another thread; finished jobs stay held until written
                    held=lambda: (
                        *self._running,
                        *self._prefetched,
                        *(self._writer.unwritten() if self._writer else ()),
                    ),
                    on_report=self._report_from_thread,
                )
            ],
        )
        duties = ServiceThread(
            "jobstead-maintenance",
            [
                SettingsRefresh(self._refresh_settings, every=self.heartbeat_seconds),
                Rescuer(store, self.id, every=self.heartbeat_seconds),
                RetentionPruner(store, self.id, finished=self._env.retention, dead=self._env.dead_retention),
                WorkerRegistryPruner(store, self.id, silent_for=timedelta(seconds=max(self.lease_seconds * 10, 300))),
                *([PlannerStatistics(store, self.id)] if store.keeps_plans else []),
            ],
        )
        return renewal, duties

    async def _claim_loop(self) -> None:
        """Claim jobs and start them, keeping every slot busy while there is work.

        One claim is in flight at a time, awaited on this loop's own connection
        (``Store.async_alone``; on a thread where there is none, or the claim
        needs a transaction). Claimed jobs go to a small buffer (``prefetch``)
        and start the moment a slot frees, so slots do not wait for a claim's
        round trip. A claim that finds fewer jobs than it asked
        for means the queue is empty: no further claim until a NOTIFY, a written
        completion (room under a global limit) or the poll interval.
        """
        assert self._wake is not None and self._slot_freed is not None
        store = self._opened()
        backoff = Backoff(0.1, 10.0)
        pace = ClaimPace(self.concurrency)
        claims = self._claim_series = ClaimSeries(self.metrics)  # this worker's own: counted without a lock
        loop = asyncio.get_running_loop()
        claim: asyncio.Future[list[ClaimedJob]] | None = None
        asked = 0
        claim_started = 0.0
        last_observed, started_since = time.monotonic(), 0
        idle_until: float | None = None  # set: wait for a wake-up (or this loop time) before claiming
        slot_waiter = asyncio.ensure_future(self._slot_freed.wait())
        wake_waiter: asyncio.Future[Any] | None = None
        on_loop = store.async_alone()
        try:
            while not self._stopping:
                started_since += self._start_prefetched()
                free = self._free_slots()
                buffered = len(self._prefetched)
                if claim is None and idle_until is None:
                    ahead = pace.ahead if self._may_claim_ahead() else 0
                    # Claim when a slot would otherwise idle, or the buffer is half spent.
                    if free > buffered or (ahead and buffered <= ahead // 2):
                        asked = free + ahead - buffered
                        self._wake.clear()
                        claim_started = time.monotonic()
                        claim = asyncio.ensure_future(
                            store.claims.claim_async(
                                on_loop,
                                worker_id=self.id,
                                handlers=self.handler_names,
                                queues=self.queues,
                                limit=asked,
                                lease_seconds=self.lease_seconds,
                            )
                        )
                waits: set[asyncio.Future[Any]] = {slot_waiter}
                timeout = None
                if claim is not None:
                    waits.add(claim)
                if idle_until is not None:
                    if wake_waiter is None:
                        wake_waiter = asyncio.ensure_future(self._wake.wait())
                    waits.add(wake_waiter)
                    timeout = max(0.0, idle_until - loop.time())
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if slot_waiter in done:
                    self._slot_freed.clear()
                    slot_waiter = asyncio.ensure_future(self._slot_freed.wait())
                if idle_until is not None and (wake_waiter in done or loop.time() >= idle_until):
                    idle_until = None
                    if wake_waiter is not None and not wake_waiter.done():
                        wake_waiter.cancel()
                    wake_waiter = None
                if claim is None or claim not in done:
                    continue
                try:
                    jobs = claim.result()
                except Exception as exc:
                    self.metrics.database_errors.labels(operation="claim").inc()
                    delay, _ = backoff.failed()
                    log_failure(logger, "claiming jobs", exc, backoff, delay)
                    idle_until = loop.time() + delay
                    continue
                finally:
                    claim = None
                took = time.monotonic() - claim_started
                claims.observe(took)
                if backoff.succeeded():
                    log_recovery(logger, "claiming jobs")
                if jobs and took > self.lease_seconds - self.heartbeat_seconds:
                    await self._hand_back_stale(jobs, took)
                    continue
                now = time.monotonic()
                pace.observe(started=started_since, seconds=now - last_observed, claim_seconds=took)
                last_observed, started_since = now, 0
                claimed_at = time.monotonic()  # after the claim returned: a renewal read before has no claim of it
                for job in jobs:
                    self._prefetched[job.id] = (job, claimed_at)
                if len(jobs) < asked and not self._wake.is_set():
                    idle_until = loop.time() + self.poll_interval
        finally:
            for waiter in (slot_waiter, wake_waiter):
                if waiter is not None:
                    waiter.cancel()
            if claim is not None:  # stopping while a claim is in flight: its jobs are ours
                with contextlib.suppress(Exception):
                    for job in await claim:
                        self._prefetched[job.id] = (job, time.monotonic())
            await self._release_prefetched(store)
            if on_loop is not None:
                await on_loop.close()

    def _may_claim_ahead(self) -> bool:
        """Claim ahead only when no handler of this worker has a global or per-tenant limit."""
        for name in self.handler_names:
            settings = self._settings.get(name) or self._handlers[name].definition()
            if settings.concurrency is not None or settings.tenant_concurrency is not None:
                return False
        return True

    def _free_slots(self) -> int:
        """Slots not running a job, less the unwritten completions beyond one slot's worth each.

        Back-pressure: without it a worker claims faster than it writes when the
        database slows (a deep queue: 350,000 claimed jobs waited unwritten, each
        renewed every heartbeat, and the renewals and completions locked each
        other). Up to ``concurrency`` unwritten completions are free, so claims
        and writes still overlap (a limit of one slot each made drains about a
        fifth slower): a worker never holds more than twice its concurrency.
        """
        backlog = self._writer.backlog() if self._writer is not None else 0
        return self.concurrency - len(self._running) - max(0, backlog - self.concurrency)

    def _start_prefetched(self) -> int:
        """Start buffered jobs in the free slots; how many started."""
        free = self._free_slots()
        if not self._prefetched or free <= 0:
            return 0
        now = self._opened().clock()  # once for the lot: the clock is a call per job otherwise
        starting = list(islice(self._prefetched, free))  # the oldest first, as claimed
        for job_id in starting:
            self._start(self._prefetched.pop(job_id)[0], now)
        return len(starting)

    def _settle_prefetched(self, job_id: int, reason: CancelReason) -> None:
        """A buffered (claimed, not started) job was cancelled or lost its lease: never start it."""
        entry = self._prefetched.pop(job_id, None)
        if entry is None:
            return
        job = entry[0]
        if reason is CancelReason.LEASE_LOST:
            logger.warning("job %s: lease lost before it started; another worker owns it now", job.id)
            return
        logger.info("job %s: cancellation requested before it started", job.id)
        store = self._opened()
        settings = self._settings.get(job.handler) or self._handlers[job.handler].definition()
        finished = Finished(cancelled=True)
        self._finish(job, decide(job, settings, finished, owner=self.id, now=store.clock(), cancel_reason=reason))

    async def _release_prefetched(self, store: Store) -> None:
        """Stopping: hand buffered jobs back to the queue, as a shutdown releases a running job."""
        jobs = [job for job, _ in self._prefetched.values()]
        self._prefetched.clear()
        if not jobs:
            return

        def release() -> None:
            for job in jobs:
                store.leases.release(job.id, self.id, job.attempts)

        try:
            await asyncio.to_thread(release)
        except Exception:
            logger.exception("could not release %d claimed job(s); their leases will expire", len(jobs))

    async def _hand_back_stale(self, jobs: list[ClaimedJob], took: float) -> None:
        """Jobs whose claim took about a lease (the process froze, or starved, meanwhile) are
        not started: their leases may be gone and the jobs running elsewhere already. They
        are handed back unspent where the lease still holds; elsewhere the release is a no-op."""
        logger.warning(
            "claim of %d job(s) took %.1f s, about the lease (%.1f s; frozen?): handing them back unstarted",
            len(jobs),
            took,
            self.lease_seconds,
        )
        store = self._opened()
        for job in jobs:
            try:
                await asyncio.to_thread(store.leases.release, job.id, self.id, job.attempts)
            except Exception as exc:  # its lease expires and it is rescued: nothing is lost
                logger.warning("job %s: could not hand it back (%s); it is rescued when its lease ends", job.id, exc)

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (NOTIFY, stop) or ``seconds`` pass."""
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _shut_down(self) -> None:
        running = [r.task for r in self._running.values() if r.task is not None]
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
        for r in list(self._running.values()):
            logger.warning("job %s still running after the grace period: cancelling and releasing it", r.job.id)
            self._cancel(r, CancelReason.SHUTDOWN)
        remaining = [r.task for r in self._running.values() if r.task is not None]
        if remaining:
            await asyncio.wait(remaining, timeout=10)
        assert self._writer is not None
        await self._writer.drain()

    # -- one job -------------------------------------------------------------

    def _start(self, job: ClaimedJob, now: datetime) -> None:
        # Per job, so kept lean: no task name, no Context unless the handler takes one.
        handler = self._handlers[job.handler]
        settings = self._settings.get(job.handler) or handler.definition()
        series = self._series(job)
        running = _Running(job, handler.is_async, time.monotonic(), series)
        running.task = self._loop.create_task(self._execute(running, handler, settings))  # type: ignore[union-attr]
        self._running[job.id] = running
        series.queue_wait.observe(max(0.0, (now - job.run_at).total_seconds()))

    def _context(self, running: _Running, settings: HandlerDefinition) -> Context:
        if running.ctx is not None:
            return running.ctx
        job, leases = running.job, self._opened().leases
        ctx = Context(
            job_id=job.id,
            handler=job.handler,
            attempt=job.attempts,
            max_attempts=EffectiveSettings.of(job, settings).max_attempts,
            queue=job.queue,
            args=job.args,
            tenant=job.tenant,
            metadata=job.metadata,
            checkpoint_data=job.checkpoint,
            worker_id=self.id,
            created_at=job.created_at,
            save_checkpoint=lambda data: leases.checkpoint(job.id, self.id, job.attempts, data),
            batch_id=job.batch_id,
        )
        if running.cancel_reason is not None:  # asked to stop before it started
            ctx.request_cancel(running.cancel_reason)
        running.ctx = ctx
        return ctx

    async def _execute(self, running: _Running, handler: RunnableHandler, settings: HandlerDefinition) -> None:
        store = self._opened()
        job = running.job
        try:
            try:
                kwargs = self._arguments(running, handler, settings)
            except InvalidArguments as exc:
                self._finish(
                    job,
                    Completion(
                        job_id=job.id,
                        owner=self.id,
                        attempt=job.attempts,
                        finished_at=store.clock(),
                        outcome=AttemptOutcome.FAILED,
                        status=JobStatus.FAILED,
                        error=JobError.from_exception(exc),
                    ),
                    series=running.series,
                )
                return
            try:
                call = call_handler(
                    handler.func,
                    kwargs,
                    is_async=handler.is_async,
                    timeout=EffectiveSettings.timeout_of(job, settings),
                    on_abandon=lambda: running.request_cancel(CancelReason.TIMED_OUT),
                )
                finished = await (tracing.running(job, call) if tracing.ENABLED else call)
            except asyncio.CancelledError:
                finished = Finished(cancelled=True)
            reason = running.cancel_reason
            if reason is CancelReason.SHUTDOWN and finished.cancelled:
                await asyncio.to_thread(store.leases.release, job.id, self.id, job.attempts)
                return
            if reason is CancelReason.LEASE_LOST:
                logger.warning("job %s: lease lost while running; another worker owns it now", job.id)
                running.series.lost.inc()
                running.series.duration.observe(time.monotonic() - running.claimed_at)
                return
            completion = decide(job, settings, finished, owner=self.id, now=store.clock(), cancel_reason=reason)
            self._finish(job, completion, running.claimed_at, running.series)
            if completion.error is not None and completion.status is not JobStatus.CANCELLED:
                await self._run_failure_hooks(job, completion, finished.exception)
        except Exception:
            logger.exception("job %s: internal error; its lease will expire and it will be retried", job.id)
        finally:
            self._running.pop(job.id, None)
            if self._slot_freed is not None:
                self._slot_freed.set()

    async def _run_failure_hooks(self, job: ClaimedJob, completion: Completion, exc: BaseException | None) -> None:
        assert completion.error is not None
        event = FailureEvent(
            job_id=job.id,
            handler=job.handler,
            attempt=job.attempts,
            args=job.args,
            error=completion.error,
            status=completion.status,
            exception=exc,
        )
        await run_hooks(self._env.failure_hooks, event)
        if event.final:
            await run_hooks(self._env.dead_hooks, event)

    def _retire_series(self) -> None:
        """Stopped: this worker's metric series join the process's totals (a run again makes new ones)."""
        self.metrics.retire(self._claim_series, self._metric_series.values())
        self._claim_series = None
        self._metric_series = {}

    def _series(self, job: ClaimedJob) -> JobSeries:
        """The metric series of a (handler, queue), looked up once: label lookups cost more than the counts."""
        key = (job.handler, job.queue)
        series = self._metric_series.get(key)
        if series is None:
            series = self._metric_series[key] = JobSeries(self.metrics, job.handler, job.queue)
        return series

    def _finish(
        self, job: ClaimedJob, completion: Completion, started: float | None = None, series: JobSeries | None = None
    ) -> None:
        if series is None:
            series = self._series(job)
        series.finished(completion.outcome, completion.status).inc()
        took = None if started is None else time.monotonic() - started
        if took is not None:
            series.duration.observe(took)
        if logger.isEnabledFor(logging.INFO):  # one line per finished attempt, what `make run` shows
            outcome = attempt_outcome(completion.outcome, completion.status)
            error = f": {completion.error.type}" if completion.error is not None else ""
            logger.info(
                "job %s (%s) attempt %d %s%s%s",
                job.id,
                job.handler,
                job.attempts,
                outcome,
                error,
                "" if took is None else f" in {took * 1000:.0f} ms",
                extra=job_fields(
                    job_id=job.id,
                    handler=job.handler,
                    attempt=job.attempts,
                    worker_id=self.id,
                    queue=job.queue,
                    outcome=outcome,
                    duration_seconds=None if took is None else round(took, 6),
                ),
            )
        assert self._writer is not None
        self._writer.add(completion)

    def _arguments(self, running: _Running, handler: RunnableHandler, settings: HandlerDefinition) -> dict[str, Any]:
        """The call's keyword arguments: the stored ones (checked against the handler as it is now) plus
        what the worker injects."""
        job, signature = running.job, handler.signature
        stored = job.args.keys()
        fits = (signature.accepts_any or stored <= signature.names) and signature.required <= stored
        if not fits:
            try:
                signature.public.bind(**job.args)
            except TypeError as exc:
                raise InvalidArguments(f"{handler.name}(): stored arguments do not fit the handler: {exc}") from None
        if not signature.injected:
            return job.args
        kwargs = dict(job.args)
        for param, resource in signature.injected.items():
            kwargs[param] = self._context(running, settings) if resource == CONTEXT else self._resource(resource)
        return kwargs

    def _resource(self, name: str) -> Any:
        if name not in self._resource_values:
            factories = self._env.resources
            if name not in factories:
                raise InvalidArguments(f"resource {name!r} is not declared: use app.resource({name!r}, ...)")
            self._resource_values[name] = factories[name]()
        return self._resource_values[name]

    def _cancel(self, running: _Running, reason: CancelReason) -> None:
        running.request_cancel(reason)
        task = running.task
        assert task is not None
        if running.is_async or reason in (CancelReason.SHUTDOWN, CancelReason.LEASE_LOST):
            task.cancel()
        else:  # a sync handler gets one heartbeat to notice ctx.cancelled, then is abandoned
            assert self._loop is not None
            self._loop.call_later(self.heartbeat_seconds, task.cancel)

    # -- heartbeat callbacks ---------------------------------------------------

    def _report_from_thread(self, report: LeaseReport, renewed_at: float) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._apply_report, report, renewed_at)

    def _apply_report(self, report: LeaseReport, renewed_at: float) -> None:
        for job_id, (_, claimed_at) in list(self._prefetched.items()):
            if claimed_at < renewed_at and job_id not in report.held:
                self._settle_prefetched(job_id, CancelReason.LEASE_LOST)
            elif job_id in report.cancel_requested:
                self._settle_prefetched(job_id, CancelReason.CANCELLED)
        for job_id, running in list(self._running.items()):
            if running.cancel_reason is not None:
                continue
            if running.claimed_at < renewed_at and job_id not in report.held:
                self._cancel(running, CancelReason.LEASE_LOST)
            elif job_id in report.cancel_requested:
                logger.info("job %s: cancellation requested", job_id)
                self._cancel(running, CancelReason.CANCELLED)

    def _refresh_settings(self) -> None:
        self._settings = self._opened().registry.handlers(self.handler_names)

    # -- signals ---------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping and sig == signal.SIGINT:
            logger.warning("second SIGINT: not waiting for running jobs")
            self._hurry()
        self._begin_stop()

    def _hurry(self) -> None:
        """Stop waiting for running jobs: cancel and release them now (also cuts a grace wait short)."""
        self.shutdown_grace = 0
        if self._hurried is not None:
            self._hurried.set()
