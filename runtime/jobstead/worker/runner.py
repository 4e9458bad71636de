"""Running the jobs a worker holds: from claimed to a completion handed to the writer.

The worker's part that sees each job: it keeps the jobs claimed but not
started (``prefetch``: in claim order, leased like running ones) and the
running ones, starts buffered jobs as slots free, builds a handler's
arguments (its ``Context`` and resources only when it asks for them), runs it
(``execution``), turns how it ended into a ``Completion`` (``outcome.decide``)
and hands that to the ``CompletionWriter``; then the failure hooks. It also
applies what the lease renewals and cancel notices report: a job cancelled or
lost is stopped, or never started.

Everything here runs on the worker's event loop, once per job, so it is kept
lean: no task names, no ``Context`` unless the handler takes one, a job's
metric series looked up once per (handler, queue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from .. import tracing
from ..cancel import CancelReason
from ..context import Context
from ..errors import ArgumentsDoNotFit
from ..hooks import FailureEvent, run_hooks
from ..logs import job_fields
from ..metrics.worker import JobSeries, WorkerMetrics, attempt_outcome
from ..signature import CONTEXT
from ..status import JobStatus
from ..store import ClaimedJob, Completion, EffectiveSettings, HandlerDefinition, LeaseReport, Store
from .completions import CompletionWriter
from .environment import RunnableHandler, WorkerEnvironment
from .execution import Finished, call_handler
from .outcome import decide

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


class JobRunner:
    """The jobs one worker holds (buffered and running), and the running of each."""

    def __init__(
        self,
        environment: WorkerEnvironment,
        *,
        worker_id: str,
        store: Store,
        writer: CompletionWriter,
        settings: dict[str, HandlerDefinition],
        concurrency: int,
        heartbeat_seconds: float,
        metrics: WorkerMetrics,
    ) -> None:
        self._env = environment
        self._handlers: Mapping[str, RunnableHandler] = environment.handlers
        self._handler_names = list(environment.handlers)
        self._worker_id = worker_id
        self._store = store
        self._writer = writer
        self._concurrency = concurrency
        #: A sync handler asked to stop gets this long to notice ``ctx.cancelled`` before it is abandoned.
        self._heartbeat_seconds = heartbeat_seconds
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        #: Set whenever a job leaves a slot (the claim loop waits on it).
        self.slot_freed = asyncio.Event()
        self.running: dict[int, _Running] = {}
        #: Claimed, not started yet (see ``prefetch``): in claim order, leased like running ones.
        self.buffered: dict[int, ClaimedJob] = {}
        #: The handlers' rows as the database has them (limits, retries, timeouts the operator or the
        #: CLI may change), replaced whole by ``refresh_settings``; a handler without one runs by its code.
        self.settings = settings
        #: This worker's metric series per (handler, queue).
        self.series: dict[tuple[str, str], JobSeries] = {}
        self._resource_values: dict[str, Any] = {}
        #: Finished workflow steps whose completion is not written yet (``note_releasing``).
        self._steps_ending: set[int] = set()

    # -- what the claim loop and the lease renewals ask --------------------------

    def refresh_settings(self) -> None:
        """Read the handlers' rows again (any thread: the dict is replaced, never changed)."""
        self.settings = self._store.registry.handlers(self._handler_names)

    def held(self) -> tuple[int, ...]:
        """Ids of every job whose lease this worker must renew, from any thread (C-level copies).

        Finished ones stay held until their completion is written.
        """
        return (*self.running, *self.buffered, *self._writer.unwritten())

    def may_claim_ahead(self) -> bool:
        """Claim ahead only when no handler of this worker has a limit, a rate or a sequence: for those, a
        completion written is what makes room (``ClaimLoop.room_freed`` claims again then)."""
        return not any(self._held_back(name) for name in self._handler_names)

    def held_back_handlers(self) -> list[str]:
        """This worker's handlers with a limit, a rate or a sequence: those whose jobs a completion
        written may make claimable, where no other handler's can be."""
        return [name for name in self._handler_names if self._held_back(name)]

    def _held_back(self, name: str) -> bool:
        settings = self.settings.get(name) or self._handlers[name].definition()
        return (
            settings.concurrency is not None
            or settings.tenant_concurrency is not None
            or settings.flow.concurrency_per_key is not None
            or settings.flow.rate_limit is not None
            or bool(settings.flow.rate_limits)
            or settings.flow.sequence_by is not None  # a completion may let a key's next job start
        )

    def may_hand_off(self) -> bool:
        """Whether completions may claim the next jobs in their own transaction (``ClaimLoop.hand_off``):
        where nothing is claimed ahead, and no handler's claim waits on a lock (``claims_wait_on_no_lock``)."""
        return not self.may_claim_ahead() and self.claims_wait_on_no_lock()

    def claims_wait_on_no_lock(self) -> bool:
        """Whether no handler's claim waits on a lock (a limit per key locks the handler's row, fair
        sharing and rates per key write rows others may hold): only then may a completion claim in its
        transaction, which holds its jobs' rows until it commits and must not wait on another claim."""
        for name in self._handler_names:
            settings = self.settings.get(name) or self._handlers[name].definition()
            flow = settings.flow
            if (
                settings.tenant_concurrency is not None
                or flow.concurrency_per_key is not None
                or flow.fair_by is not None
                or flow.rate_limit_by is not None
            ):
                return False
        return True

    def room_under_limits(self) -> int | None:
        """How many more jobs the global limits of this worker's handlers could let it hold, when every
        handler has one (None: one has none, the slots alone decide).

        A worker of 50 slots serving one handler limited to 8 has 8 slots at
        most, wherever the others are: a claim for the 42 others could take
        nothing, yet it ran beside each completion write (a round trip and a
        claim's CPU per job cycle, on the path of the next start).
        """
        total = 0
        for name in self._handler_names:
            settings = self.settings.get(name) or self._handlers[name].definition()
            if settings.concurrency is None:
                return None
            total += settings.concurrency
        return max(0, total - len(self.running) - len(self.buffered))

    def note_releasing(self, completions: Sequence[Completion]) -> bool:
        """Whether any of these completions ends a workflow step for good, so may release others
        (``ClaimLoop.hand_off``); each is looked at once (``_finish`` noted the steps)."""
        found = False
        for completion in completions:
            if completion.job_id in self._steps_ending:
                self._steps_ending.discard(completion.job_id)
                found = found or completion.final_at is not None
        return found

    def completions_unwritten(self) -> bool:
        """Whether finished jobs wait for their completion's write, or it is in flight."""
        return self._writer.backlog() > 0

    def free_slots(self) -> int:
        """Slots not running a job, less the unwritten completions beyond one slot's worth each.

        Back-pressure: without it a worker claims faster than it writes when the
        database slows (a deep queue: 350,000 claimed jobs waited unwritten, each
        renewed every heartbeat, and the renewals and completions locked each
        other). Up to ``concurrency`` unwritten completions are free, so claims
        and writes still overlap (a limit of one slot each made drains about a
        fifth slower): a worker never holds more than twice its concurrency.
        """
        backlog = self._writer.backlog()
        return self._concurrency - len(self.running) - max(0, backlog - self._concurrency)

    def buffer(self, jobs: list[ClaimedJob]) -> None:
        """Hold claimed jobs until slots free (``start_buffered``).

        A job claimed while this worker runs it means the database lost the
        claim of that run (a failover before an asynchronous standby had it):
        the run stops at once, as on a lost lease, and the new claim starts
        when it has.
        """
        for job in jobs:
            running = self.running.get(job.id)
            if running is not None and running.cancel_reason is None:
                self.cancel(running, CancelReason.LEASE_LOST)
            self.buffered[job.id] = job

    def start_buffered(self) -> int:
        """Start buffered jobs in the free slots; how many started."""
        free = self.free_slots()
        if not self.buffered or free <= 0:
            return 0
        now = self._store.clock()  # once for the lot: the clock is a call per job otherwise
        # The oldest first, as claimed; one still running here (``buffer``) waits until it stopped.
        starting = list(islice((job_id for job_id in self.buffered if job_id not in self.running), free))
        for job_id in starting:
            self._start(self.buffered.pop(job_id), now)
        return len(starting)

    async def release_buffered(self) -> None:
        """Stopping: hand buffered jobs back to the queue, as a shutdown releases a running job."""
        jobs = list(self.buffered.values())
        self.buffered.clear()
        if not jobs:
            return
        store, worker_id = self._store, self._worker_id

        def release() -> None:
            for job in jobs:
                store.leases.release(job.id, worker_id, job.attempts)

        try:
            await asyncio.to_thread(release)
        except Exception:
            logger.exception("could not release %d claimed job(s); their leases will expire", len(jobs))

    def cancel_notice(self, job_ids: list[int]) -> None:
        """Someone cancelled these jobs (a job or its batch): stop the ones held here now."""
        for job_id in job_ids:
            self._settle_buffered(job_id, CancelReason.CANCELLED)
            running = self.running.get(job_id)
            if running is not None and running.cancel_reason is None:
                logger.info("job %s: cancellation requested", job_id)
                self.cancel(running, CancelReason.CANCELLED)

    def apply_report(self, report: LeaseReport, asked: frozenset[int]) -> None:
        """What a lease renewal found: jobs no longer ours (rescued meanwhile), jobs asked to cancel.

        Only the jobs the renewal asked about are judged by it: a job claimed
        after it read ``held``, or moved from the buffer to a slot while it
        read, was not asked about, and its absence from the answer says
        nothing. (Judged by time instead, a job stamped as it started but put
        in its slot a moment later, while the renewal read, was stopped as
        lost although its lease was fine.)
        """
        for job_id in [job_id for job_id in self.buffered if job_id in asked]:
            if job_id not in report.held:
                self._settle_buffered(job_id, CancelReason.LEASE_LOST)
            elif job_id in report.cancel_requested:
                self._settle_buffered(job_id, CancelReason.CANCELLED)
        for job_id, running in list(self.running.items()):
            if running.cancel_reason is not None or job_id not in asked:
                continue
            if job_id not in report.held:
                self.cancel(running, CancelReason.LEASE_LOST)
            elif job_id in report.cancel_requested:
                logger.info("job %s: cancellation requested", job_id)
                self.cancel(running, CancelReason.CANCELLED)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The running jobs' tasks (a shutdown waits for them)."""
        return [r.task for r in self.running.values() if r.task is not None]

    def running_jobs(self) -> Iterator[_Running]:
        return iter(list(self.running.values()))

    def cancel(self, running: _Running, reason: CancelReason) -> None:
        running.request_cancel(reason)
        task = running.task
        assert task is not None
        if running.is_async or reason in (CancelReason.SHUTDOWN, CancelReason.LEASE_LOST):
            task.cancel()
        else:  # a sync handler gets one heartbeat to notice ctx.cancelled, then is abandoned
            self._loop.call_later(self._heartbeat_seconds, task.cancel)

    def _settle_buffered(self, job_id: int, reason: CancelReason) -> None:
        """A buffered (claimed, not started) job was cancelled or lost its lease: never start it."""
        job = self.buffered.pop(job_id, None)
        if job is None:
            return
        if reason is CancelReason.LEASE_LOST:
            logger.warning("job %s: lease lost before it started; another worker owns it now", job.id)
            return
        logger.info("job %s: cancellation requested before it started", job.id)
        settings = self.settings.get(job.handler) or self._handlers[job.handler].definition()
        finished = Finished(cancelled=True)
        completion = decide(
            job, settings, finished, owner=self._worker_id, now=self._store.clock(), cancel_reason=reason
        )
        self._finish(job, completion)

    # -- one job -------------------------------------------------------------------

    def _start(self, job: ClaimedJob, now: datetime) -> None:
        # Per job, so kept lean: no task name, no Context unless the handler takes one.
        handler = self._handlers[job.handler]
        settings = self.settings.get(job.handler) or handler.definition()
        series = self._series(job)
        running = _Running(job, handler.is_async, time.monotonic(), series)
        running.task = self._loop.create_task(self._execute(running, handler, settings))
        self.running[job.id] = running
        series.queue_wait.observe(max(0.0, (now - job.run_at).total_seconds()))

    def _context(self, running: _Running, settings: HandlerDefinition) -> Context:
        if running.ctx is not None:
            return running.ctx
        job, leases, worker_id = running.job, self._store.leases, self._worker_id
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
            worker_id=worker_id,
            created_at=job.created_at,
            save_checkpoint=lambda data: leases.checkpoint(job.id, worker_id, job.attempts, data),
            batch_id=job.batch_id,
            workflow_id=job.workflow_id,
            step=job.step,
            read_upstream=(lambda: self._store.workflows.upstream(job.id)) if job.step is not None else None,
            check_growth=self._store.workflows.check_growth if job.step is not None else None,
            handlers=self._handlers,
        )
        if running.cancel_reason is not None:  # asked to stop before it started
            ctx.request_cancel(running.cancel_reason)
        running.ctx = ctx
        return ctx

    async def _execute(self, running: _Running, handler: RunnableHandler, settings: HandlerDefinition) -> None:
        store = self._store
        job = running.job
        try:
            try:
                kwargs = self._arguments(running, handler, settings)
            except ArgumentsDoNotFit as exc:  # the handler never ran: no duration, no hooks
                finished = Finished(exception=exc)
                completion = decide(
                    job, settings, finished, owner=self._worker_id, now=store.clock(), cancel_reason=None
                )
                self._finish(job, completion, series=running.series)
                return
            try:
                if handler.is_async and running.ctx is not None and running.ctx.step is not None:
                    await running.ctx.read_upstream_off_loop()
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
                await asyncio.to_thread(store.leases.release, job.id, self._worker_id, job.attempts)
                return
            if reason is CancelReason.LEASE_LOST:
                logger.warning(
                    "job %s: lease lost while running (rescued, or its claim lost in a failover); stopped", job.id
                )
                running.series.lost.inc()
                running.series.duration.observe(time.monotonic() - running.claimed_at)
                return
            completion = decide(job, settings, finished, owner=self._worker_id, now=store.clock(), cancel_reason=reason)
            if running.ctx is not None and running.ctx.growth is not None and completion.status is JobStatus.SUCCEEDED:
                completion.growth = running.ctx.growth  # the steps it added go with its success, or not at all
            self._finish(job, completion, running.claimed_at, running.series)
            if completion.error is not None and completion.status is not JobStatus.CANCELLED:
                await self._run_failure_hooks(job, completion, finished.exception)
        except Exception:
            logger.exception("job %s: internal error; its lease will expire and it will be retried", job.id)
        finally:
            if self.running.get(job.id) is running:  # not a second claim of it started since (``buffer``)
                del self.running[job.id]
            self.slot_freed.set()

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
                raise ArgumentsDoNotFit(f"{handler.name}(): stored arguments do not fit the handler: {exc}") from None
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
                raise ArgumentsDoNotFit(f"resource {name!r} is not declared: use app.resource({name!r}, ...)")
            self._resource_values[name] = factories[name]()
        return self._resource_values[name]

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

    def _series(self, job: ClaimedJob) -> JobSeries:
        """The metric series of a (handler, queue), looked up once: label lookups cost more than the counts."""
        key = (job.handler, job.queue)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = JobSeries(self._metrics, job.handler, job.queue)
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
                    worker_id=self._worker_id,
                    queue=job.queue,
                    outcome=outcome,
                    duration_seconds=None if took is None else round(took, 6),
                ),
            )
        if job.workflow_id is not None:
            self._steps_ending.add(job.id)
        # A batch or a workflow is settled by its completion's write: never one beside another (``CompletionWriter``).
        self._writer.add(completion, settles=job.batch_id is not None or job.workflow_id is not None)
