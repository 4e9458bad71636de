"""The claim loop: claims jobs and keeps every slot of the worker busy while there is work.

One claim is in flight at a time, awaited on this loop's own connection
(``Store.async_alone``; on a thread where there is none, or the claim needs a
transaction). Claimed jobs go to the runner's small buffer (``prefetch``) and
start the moment a slot frees, so slots do not wait for a claim's round trip.
A claim that finds fewer jobs than it asked for means the queue is empty: no
further claim until a NOTIFY, a written completion (room under a global
limit) or the poll interval.

Under a global limit (nothing is claimed ahead there), each batch of
completions claims the next jobs in its own transaction (``hand_off``, then
``handed``): the slots the finished jobs held go to this worker's next jobs
in the same commit, one transaction per job instead of two.

The loop's state between two wake-ups is the ``ClaimLoop`` itself: the claim
in flight and what it asked for, whether it is idle until a wake-up, and
what feeds the claim pace. ``run`` is the loop; each claim is sent by
``_send`` and received by ``_receive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..lifecycle import Backoff, log_failure, log_recovery
from ..metrics.worker import ClaimSeries, WorkerMetrics
from ..store import ClaimedJob, Completion, HandOff, Store
from .prefetch import ClaimPace
from .runner import JobRunner

if TYPE_CHECKING:
    from ..store.drivers.async_alone import AsyncAlone

logger = logging.getLogger("jobstead.worker")


class ClaimLoop:
    """Claims for one worker: ``run`` until ``stop``; ``notified`` and ``room_freed`` wake it."""

    def __init__(
        self,
        *,
        store: Store,
        runner: JobRunner,
        worker_id: str,
        handlers: Sequence[str],
        queues: Sequence[str] | None,
        concurrency: int,
        lease_seconds: float,
        heartbeat_seconds: float,
        poll_interval: float,
        metrics: WorkerMetrics,
    ) -> None:
        self._store = store
        self._runner = runner
        self._worker_id = worker_id
        self._handlers = list(handlers)
        self._queues = list(queues) if queues else None
        self._lease_seconds = lease_seconds
        #: A claim that took longer than this (a frozen process) may have lost its leases already.
        self._stale_after = lease_seconds - heartbeat_seconds
        self._poll_interval = poll_interval
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        #: Set by a NOTIFY, a stop, or room freed in the database: claim again now.
        self._wake = asyncio.Event()
        self._stopping = False
        self._backoff = Backoff(0.1, 10.0)
        self._pace = ClaimPace(concurrency)
        #: This worker's own claim series: counted without a lock.
        self.series = ClaimSeries(metrics)
        # -- the state between wake-ups --
        #: The claim in flight, how many jobs it asked for and when it was sent.
        self._claim: asyncio.Future[list[ClaimedJob]] | None = None
        self._asked = 0
        self._sent_at = 0.0
        #: Set: wait for a wake-up (or this loop time) before claiming again.
        self._idle_until: float | None = None
        #: Jobs started since the pace was last fed, and when that was.
        self._started_since = 0
        self._observed_at = time.monotonic()
        #: Jobs asked for by the completion writes in flight (``hand_off``), together.
        self._handing = 0
        #: When a claim or a hand-off last came back with fewer jobs than it asked for (monotonic).
        self._found_short_at = 0.0
        #: Since when this worker's writes have handed its slots on (None: the last one did not).
        self._handing_since: float | None = None
        #: Set once ``run`` hands its buffered jobs back: a hand-off after that is handed back too.
        self._released = False

    # -- wake-ups, from the loop's own callbacks --------------------------------------

    def notified(self, _queue: str) -> None:
        """A NOTIFY: a job was deferred on a queue listened to."""
        self._wake.set()

    def room_freed(self) -> None:
        """Completions were written: the slots they held are free, and under a global or
        per-tenant limit there is room in the database too, so claim again.

        Without a limit nothing new became claimable: a claim now would only
        find the queue as empty as the last one did, and, being in flight when
        the next NOTIFY came, make that job wait for it to return first.
        """
        self._runner.slot_freed.set()
        if not self._runner.may_claim_ahead():
            self._wake.set()

    def hand_off(self, completions: Sequence[Completion] = (), alongside: bool = False) -> HandOff | None:
        """The claim a completion write about to start should make in its transaction, if any.

        Only where the claim waits on no lock (``JobRunner.claims_wait_on_no_lock``),
        never once stopping, and for the free slots no claim or hand-off in flight
        has asked for yet; and only where the write is what makes the work claimable:

        * completions make room (``JobRunner.may_hand_off``: a global limit, a
          rate or a sequence);
        * a workflow step among ``completions`` ends, so may release the steps
          after it: they are queued in this transaction, and claimed in it too
          (``HandOff.if_released``: only if it released any), so they start
          without a claim's round trip, and wake no other worker: a NOTIFY
          for each woke a claim in every worker process, and all but one
          found nothing (``Leases.complete`` sends it only for the steps this
          claim did not take). Without a NOTIFY to wake the loop (SQLite,
          MariaDB, a worker that does not listen) they would otherwise wait
          for the next poll.

        ``alongside``: the write would go beside others in flight (``CompletionWriter``), so
        only for room: its completions end no step. Several hand-offs may be in flight at
        once; each asks only for slots the others did not (``_handing``).

        Not for one write per poll interval: its slots go to whoever claims first.
        """
        runner = self._runner
        releasing = runner.note_releasing(completions)
        handing = runner.may_hand_off()
        if self._stopping or not (handing or releasing) or (alongside and not handing):
            return None
        if not runner.claims_wait_on_no_lock():
            return None
        now = time.monotonic()
        if self._handing_since is None:
            self._handing_since = now
        elif now - self._handing_since >= self._poll_interval:
            if alongside:  # the next write that is not alongside frees its slots for whoever claims first
                return None
            # Once a poll interval, this write only frees its slots, for whoever claims first: a
            # worker serving other queues (higher priorities) or idle would never get one otherwise.
            self._handing_since = None
            return None
        in_flight = (self._asked if self._claim is not None else 0) + self._handing
        want = self._room() - len(runner.buffered) - in_flight
        if want <= 0:
            return None
        self._handing += want
        handlers = self._handlers
        if handing and not releasing and self._idle_until is not None and not self._wake.is_set():
            # The last claim found nothing of the other handlers, and nothing was deferred since (no
            # NOTIFY): only the held-back handlers' jobs can have become claimable. Claimed too, the
            # others' cost a walk past the held-back handlers' whole backlog in the queue's index at
            # every write (a third of each job cycle at a global limit of 8 with 20,000 waiting).
            handlers = runner.held_back_handlers()
        return HandOff(
            self._worker_id,
            handlers,
            self._queues,
            want,
            self._lease_seconds,
            if_released=not handing,
            ends_steps=releasing,
        )

    def _room(self) -> int:
        """Free slots, as many as the handlers' global limits could fill (``JobRunner.room_under_limits``)."""
        runner = self._runner
        free = runner.free_slots()
        room = runner.room_under_limits()
        return free if room is None else min(free, room + len(runner.buffered))

    async def handed(self, hand_off: HandOff, took: float, written: bool, alongside: bool = False) -> None:
        """A completion write with a hand-off is back: its jobs are buffered as a claim's are.

        Not ``written`` and not ``made``: the claim rolled back with it; the writer tries again.
        A hand-off that took fewer jobs than it asked is an empty claim: no
        claim before a wake-up or the poll interval. One that took all it
        asked claims again, unless a claim in flight asked for the rest:
        otherwise that claim, come back empty, was claimed again at once, and
        a claim that found nothing ran beside every write; nor if such a claim
        (or hand-off) came back short since this one was sent: it told already.
        Nor does one that went ``alongside`` another write: it asked only for
        what the others left (often its own slot alone), and the write that
        asked for the rest tells; a claim beside each of them found nothing.
        """
        self._handing -= hand_off.limit
        if not hand_off.made:  # rolled back, or the write released no step: a write like any other
            if written:
                self.room_freed()
            return
        # Made: its claim was committed, even if a write after it failed (``HandOff.written``).
        jobs = hand_off.claimed
        runner = self._runner
        runner.slot_freed.set()
        if jobs and took > self._stale_after:
            await self._hand_back_stale(jobs, took)
            return
        runner.buffer(jobs)
        if self._released:  # ``run`` is over: nobody starts them
            await runner.release_buffered()
            return
        if not self._stopping:  # at once: through ``run`` they waited for two more turns of the loop
            self._started_since += runner.start_buffered()
        now = time.monotonic()
        if len(jobs) < hand_off.limit:
            self._found_short_at = now
        if len(jobs) < hand_off.limit and not self._wake.is_set() and self._idle_until is None:
            self._idle_until = self._loop.time() + self._poll_interval
            room_at = self._store.claims.rate_room_at(self._handlers, self._queues)
            if room_at is not None:
                wait = (room_at - self._store.clock()).total_seconds()
                self._idle_until = min(self._idle_until, self._loop.time() + max(wait, 0.0))
        elif (
            len(jobs) >= hand_off.limit and self._claim is None and not alongside and self._found_short_at < now - took
        ):
            # All it asked for: there may be more. Not while a claim is in flight: that claim
            # asked for the rest and tells (an empty one idles the loop, as it should).
            self._wake.set()

    def stop(self) -> None:
        """No new claims; ``run`` returns once the claim in flight is back."""
        self._stopping = True
        self._wake.set()
        self._runner.slot_freed.set()

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and start jobs until ``stop``; then hand buffered jobs back."""
        runner, loop = self._runner, self._loop
        slot_freed, wake = runner.slot_freed, self._wake
        slot_waiter = asyncio.ensure_future(slot_freed.wait())
        wake_waiter: asyncio.Future[Any] | None = None
        on_loop = self._store.async_alone()
        try:
            while not self._stopping:
                self._started_since += runner.start_buffered()
                if self._claim is None and self._idle_until is None:
                    self._send(on_loop)
                waits: set[asyncio.Future[Any]] = {slot_waiter}
                timeout = None
                if self._claim is not None:
                    waits.add(self._claim)
                if self._idle_until is not None:
                    if wake_waiter is None:
                        wake_waiter = asyncio.ensure_future(wake.wait())
                    waits.add(wake_waiter)
                    timeout = max(0.0, self._idle_until - loop.time())
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if slot_waiter in done:
                    slot_freed.clear()
                    slot_waiter = asyncio.ensure_future(slot_freed.wait())
                if self._idle_until is not None and (wake_waiter in done or loop.time() >= self._idle_until):
                    self._idle_until = None
                    if wake_waiter is not None and not wake_waiter.done():
                        wake_waiter.cancel()
                    wake_waiter = None
                if self._claim is not None and self._claim in done:
                    await self._receive(self._claim)
        finally:
            for waiter in (slot_waiter, wake_waiter):
                if waiter is not None:
                    waiter.cancel()
            claim, self._claim = self._claim, None
            if claim is not None:  # stopping while a claim is in flight: its jobs are ours
                with contextlib.suppress(Exception):
                    runner.buffer(await claim)
            self._released = True
            await runner.release_buffered()
            if on_loop is not None:
                await on_loop.close()

    def _send(self, on_loop: AsyncAlone | None) -> None:
        """Claim when a slot would otherwise idle, or the buffer is half spent.

        Not while completions of a worker that hands off wait to be written:
        that write claims for the slots they free (``hand_off``). A claim sent
        beside it took the room it was counted on, so the write took only the
        slots its own jobs held, and that "full" hand-off asked for one more
        claim: a claim that found nothing ran beside every write.
        """
        runner = self._runner
        if runner.completions_unwritten() and runner.may_hand_off():
            return
        free = self._room() - self._handing  # the completion writes in flight asked for those
        buffered = len(runner.buffered)
        ahead = self._pace.ahead if runner.may_claim_ahead() else 0
        if free > buffered or (ahead and buffered <= ahead // 2):
            self._asked = free + ahead - buffered
            self._wake.clear()
            self._sent_at = time.monotonic()
            self._claim = asyncio.ensure_future(
                self._store.claims.claim_async(
                    on_loop,
                    worker_id=self._worker_id,
                    handlers=self._handlers,
                    queues=self._queues,
                    limit=self._asked,
                    lease_seconds=self._lease_seconds,
                )
            )

    async def _receive(self, claim: asyncio.Future[list[ClaimedJob]]) -> None:
        """The claim came back: buffer its jobs, feed the pace, or back off on an error."""
        self._claim = None
        try:
            jobs = claim.result()
        except Exception as exc:
            self._metrics.database_errors.labels(operation="claim").inc()
            delay, _ = self._backoff.failed()
            log_failure(logger, "claiming jobs", exc, self._backoff, delay)
            self._idle_until = self._loop.time() + delay
            return
        took = time.monotonic() - self._sent_at
        self.series.observe(took)
        if self._backoff.succeeded():
            log_recovery(logger, "claiming jobs")
        if jobs and took > self._stale_after:
            await self._hand_back_stale(jobs, took)
            return
        now = time.monotonic()
        self._pace.observe(started=self._started_since, seconds=now - self._observed_at, claim_seconds=took)
        self._observed_at, self._started_since = now, 0
        self._runner.buffer(jobs)
        if len(jobs) < self._asked:
            self._found_short_at = now
        if len(jobs) < self._asked and not self._wake.is_set():
            self._idle_until = self._loop.time() + self._poll_interval
            room_at = self._store.claims.rate_room_at(self._handlers, self._queues)
            if room_at is not None:  # a rate held jobs back: claim again as soon as it has room
                wait = (room_at - self._store.clock()).total_seconds()
                self._idle_until = min(self._idle_until, self._loop.time() + max(wait, 0.0))

    async def _hand_back_stale(self, jobs: list[ClaimedJob], took: float) -> None:
        """Jobs whose claim took about a lease (the process froze, or starved, meanwhile) are
        not started: their leases may be gone and the jobs running elsewhere already. They
        are handed back unspent where the lease still holds; elsewhere the release is a no-op."""
        logger.warning(
            "claim of %d job(s) took %.1f s, about the lease (%.1f s; frozen?): handing them back unstarted",
            len(jobs),
            took,
            self._lease_seconds,
        )
        store = self._store
        for job in jobs:
            try:
                await asyncio.to_thread(store.leases.release, job.id, self._worker_id, job.attempts)
            except Exception as exc:  # its lease expires and it is rescued: nothing is lost
                logger.warning("job %s: could not hand it back (%s); it is rescued when its lease ends", job.id, exc)
