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


def _no_hand_off(_completions: Sequence[Completion]) -> HandOff | None:
    return None


class CompletionWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 500,
        written: Callable[[], None] = lambda: None,
        hand_off: Callable[[Sequence[Completion]], HandOff | None] = _no_hand_off,
        handed: Callable[[HandOff, float, bool], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._pending: list[Completion] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_batch = max_batch
        self._writing = 0  # completions in the write in flight
        self._closing = False
        #: Called after each batch is written: the running count in the database just dropped.
        self._written = written
        #: Before each write, given its batch: a claim to make in its transaction, if any; after
        #: it, whether it was made (the claim is back in ``handed``, in place of ``written``).
        self._hand_off = hand_off
        self._handed = handed

    def unwritten(self) -> list[int]:
        """Ids of the finished jobs whose completion waits to be written, from any thread.

        Their leases must go on being renewed until it is: a write that waits
        (a busy database) for longer than the lease would otherwise find the
        job rescued and its result dropped. The batch being written is left
        out: its transaction holds those rows (the rescuer skips them), and a
        renewal would only wait on it. A C-level copy of the list: safe while
        the loop replaces it.
        """
        return [c.job_id for c in tuple(self._pending)]

    def backlog(self) -> int:
        """Finished attempts not yet written, the write in flight included."""
        return len(self._pending) + self._writing

    def add(self, completion: Completion) -> None:
        self._pending.append(completion)
        self._idle.clear()
        self._ready.set()

    async def run(self) -> None:
        backoff = Backoff(0.05, 5.0)
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch, self._pending = (
                    self._pending[: self._max_batch],
                    self._pending[self._max_batch :],
                )
                self._writing = len(batch)
                hand_off = self._hand_off(batch) if self._handed is not None else None
                sent_at = time.monotonic()
                try:
                    if hand_off is None:
                        lost = await asyncio.to_thread(self._store.leases.complete, batch)
                    else:
                        lost = await asyncio.to_thread(self._store.leases.complete, batch, hand_off)
                except Exception as exc:
                    if hand_off is not None and self._handed is not None:  # rolled back with the writes
                        await self._handed(hand_off, time.monotonic() - sent_at, False)
                    self._writing = 0
                    WORKER_METRICS.database_errors.labels(operation="complete").inc()
                    if hand_off is not None and hand_off.written:  # committed before the failure
                        batch = [c for c in batch if c.job_id not in hand_off.written]
                    self._pending[:0] = batch
                    delay, _ = backoff.failed()
                    log_failure(logger, f"writing {len(batch)} completion(s)", exc, backoff, delay)
                    await asyncio.sleep(delay)
                    if self._closing and delay >= backoff.cap:
                        logger.error(
                            "giving up on %d completions at shutdown; their leases will expire",
                            len(batch),
                        )
                        self._pending.clear()
                    continue
                self._writing = 0
                if backoff.succeeded():
                    log_recovery(logger, "writing completions")
                if hand_off is not None and self._handed is not None:
                    await self._handed(hand_off, time.monotonic() - sent_at, True)
                else:
                    self._written()
                for job_id in lost:
                    logger.warning("job %s: lease lost before completion was written; result dropped", job_id)
            self._idle.set()
            if self._closing:
                return

    async def drain(self) -> None:
        """Wait until everything queued so far is written (or given up on at shutdown)."""
        self._closing = True
        self._ready.set()
        await self._idle.wait()
