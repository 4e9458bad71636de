"""Writing finished attempts in batches, never dropping one.

Completions queue up while a write is in flight and go together in the next
one, so under load one transaction finishes many jobs, and an idle worker still
writes each completion at once. If the database is unreachable the batch is
kept and tried again: a completion is only dropped when its lease turns out to
be gone (then it is not ours to write).

Where the claim loop asks for it (a global limit, or workflow steps ending:
``ClaimLoop.hand_off``), a write also claims the next jobs in its transaction
(``HandOff``), and hands them to the claim loop (``handed``) instead of saying
room was freed.

While such a write is in flight, a job that ends need not wait for it: its
completion goes in a write of its own beside it (``ALONGSIDE`` of them at most),
with a hand-off of its own, so the slot it held takes the next job one round
trip after it ended, not two. With 10 ms jobs under a global limit of 8, a
slot otherwise sat idle for a third of each job's cycle. Only completions of
jobs in no batch and no workflow go alongside: such a write locks its own
jobs' rows and nothing else (its claim skips locked rows, slots and jobs
alike), so it never waits on a lock another write of this worker holds, and
two writes of one worker cannot deadlock. Whatever settles a batch or a
workflow stays in the one write that is not alongside. Without a hand-off
(no limit) nothing goes alongside: one write at a time batches the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from ..lifecycle import Backoff, log_failure, log_recovery
from ..metrics.worker import WORKER_METRICS
from ..store import Completion, HandOff, Store

logger = logging.getLogger("jobstead.worker")

#: Writes with a hand-off that may be in flight beside the write in flight, each on a pooled
#: connection and a thread of the default executor. One: concurrent writes of one worker slow
#: each other (their claims read the same slots and the same head of the queue, their threads
#: share one interpreter): with jobs of 5-15 ms under a global limit of 8 on a loaded 2-core
#: machine, three beside drained 4% slower than one write at a time, one beside 1% faster.
ALONGSIDE = 1


def _no_hand_off(_completions: Sequence[Completion], _alongside: bool) -> HandOff | None:
    return None


class CompletionWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 500,
        written: Callable[[], None] = lambda: None,
        hand_off: Callable[[Sequence[Completion], bool], HandOff | None] = _no_hand_off,
        handed: Callable[[HandOff, float, bool, bool], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._pending: list[Completion] = []
        #: Ids of pending completions whose job is in a batch or a workflow: never written alongside.
        self._settling: set[int] = set()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_batch = max_batch
        self._writing = 0  # completions in the writes in flight
        #: How many writes are in flight beside the one ``run`` awaits (``_write_alongside``), and their tasks.
        self._alongside = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set while ``run`` awaits a write with a hand-off: completions added meanwhile may go beside it.
        self._serving = False
        #: A ``_send_alongside`` is scheduled on the loop already (one per turn of the loop is enough).
        self._soon = False
        self._backoff = Backoff(0.05, 5.0)
        self._closing = False
        #: Called after each batch is written: the running count in the database just dropped.
        self._written = written
        #: Before each write, given its batch and whether it would go alongside another: a claim to
        #: make in its transaction, if any; after it, whether it was made (the claim is back in
        #: ``handed``, in place of ``written``), and whether the write went alongside.
        self._hand_off = hand_off
        self._handed = handed

    def unwritten(self) -> list[int]:
        """Ids of the finished jobs whose completion waits to be written, from any thread.

        Their leases must go on being renewed until it is: a write that waits
        (a busy database) for longer than the lease would otherwise find the
        job rescued and its result dropped. The batches being written are left
        out: their transactions hold those rows (the rescuer skips them), and a
        renewal would only wait on them. A C-level copy of the list: safe while
        the loop replaces it.
        """
        return [c.job_id for c in tuple(self._pending)]

    def backlog(self) -> int:
        """Finished attempts not yet written, the writes in flight included."""
        return len(self._pending) + self._writing

    def add(self, completion: Completion, *, settles: bool = False) -> None:
        """Queue a completion; ``settles``: its job is in a batch or a workflow (never written alongside)."""
        if settles:
            self._settling.add(completion.job_id)
        self._pending.append(completion)
        self._idle.clear()
        self._ready.set()
        if self._serving and not self._soon:
            # On the loop's next turn: the job's task has left its slot by then (``JobRunner``).
            self._soon = True
            asyncio.get_running_loop().call_soon(self._send_soon)

    async def run(self) -> None:
        backoff = self._backoff
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch, self._pending = (
                    self._pending[: self._max_batch],
                    self._pending[self._max_batch :],
                )
                self._writing += len(batch)
                hand_off = self._hand_off(batch, False) if self._handed is not None else None
                sent_at = time.monotonic()
                try:
                    if hand_off is None:
                        lost = await asyncio.to_thread(self._store.leases.complete, batch)
                    elif hand_off.if_released:  # steps' hand-off alone: no room to claim for alongside
                        lost = await asyncio.to_thread(self._store.leases.complete, batch, hand_off)
                    else:  # completions that end meanwhile may go beside it (``_send_alongside``)
                        self._serving = True
                        try:
                            lost = await asyncio.to_thread(self._store.leases.complete, batch, hand_off)
                        finally:
                            self._serving = False
                except Exception as exc:
                    if hand_off is not None and self._handed is not None:  # rolled back with the writes
                        await self._handed(hand_off, time.monotonic() - sent_at, False, False)
                    delay = self._requeue(batch, hand_off, exc)
                    await asyncio.sleep(delay)
                    if self._closing and delay >= backoff.cap:
                        logger.error(
                            "giving up on %d completions at shutdown; their leases will expire",
                            len(self._pending),
                        )
                        self._pending.clear()
                        self._settling.clear()
                    continue
                self._writing -= len(batch)
                if self._settling:
                    self._settling.difference_update(c.job_id for c in batch)
                if backoff.succeeded():
                    log_recovery(logger, "writing completions")
                if hand_off is not None and self._handed is not None:
                    await self._handed(hand_off, time.monotonic() - sent_at, True, False)
                else:
                    self._written()
                _dropped(lost)
            if self._alongside:  # each sets ``_ready`` when it is back
                continue
            self._idle.set()
            if self._closing:
                return

    def _send_soon(self) -> None:
        self._soon = False
        if self._serving:
            self._send_alongside()

    def _send_alongside(self) -> None:
        """Write the pending completions of jobs in no batch and no workflow beside the write ``run``
        awaits, if the claim loop has a hand-off for them (room it may claim for), and no write is failing."""
        if self._alongside >= ALONGSIDE or self._backoff.failing or not self._pending:
            return
        settling = self._settling
        batch = [c for c in self._pending if c.job_id not in settling][: self._max_batch]
        if not batch:
            return
        hand_off = self._hand_off(batch, True)
        if hand_off is None:
            return
        taken = {c.job_id for c in batch}
        self._pending = [c for c in self._pending if c.job_id not in taken]
        self._writing += len(batch)
        self._alongside += 1
        task = asyncio.ensure_future(self._write_alongside(batch, hand_off))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_alongside(self, batch: list[Completion], hand_off: HandOff) -> None:
        """One write beside the others. If it fails, its batch goes back to the front of the queue,
        for the next write that is not alongside (which backs off if it fails again)."""
        assert self._handed is not None
        sent_at = time.monotonic()
        try:
            try:
                lost = await asyncio.to_thread(self._store.leases.complete, batch, hand_off)
            except Exception as exc:
                await self._handed(hand_off, time.monotonic() - sent_at, False, True)  # rolled back with the writes
                self._requeue(batch, hand_off, exc)
                return
            self._writing -= len(batch)
            if self._backoff.succeeded():
                log_recovery(logger, "writing completions")
            await self._handed(hand_off, time.monotonic() - sent_at, True, True)
            _dropped(lost)
        finally:
            self._alongside -= 1
            self._ready.set()  # ``run`` goes on: the next write, or idle once none is in flight
            if self._serving:  # what ended while this one was in flight, beside the write ``run`` awaits
                self._send_alongside()

    def _requeue(self, batch: list[Completion], hand_off: HandOff | None, exc: Exception) -> float:
        """A write of ``batch`` failed: its completions not committed before the failure
        (``HandOff.written``) go back to the front of the queue; returns the delay to back off."""
        self._writing -= len(batch)
        WORKER_METRICS.database_errors.labels(operation="complete").inc()
        if hand_off is not None and hand_off.written:  # committed before the failure
            batch = [c for c in batch if c.job_id not in hand_off.written]
        self._pending[:0] = batch
        delay, _ = self._backoff.failed()
        log_failure(logger, f"writing {len(batch)} completion(s)", exc, self._backoff, delay)
        return delay

    async def drain(self) -> None:
        """Wait until everything queued so far is written (or given up on at shutdown)."""
        self._closing = True
        self._ready.set()
        await self._idle.wait()


def _dropped(lost: set[int]) -> None:
    for job_id in lost:
        logger.warning("job %s: lease lost before completion was written; result dropped", job_id)
