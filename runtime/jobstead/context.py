"""What a running handler can know and do about its own job."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .status import JobStatus

logger = logging.getLogger("jobstead.job")


class Context:
    """Injected into any handler parameter annotated ``Context``.

    ``cancelled`` turns true when the job is cancelled, times out, loses its
    lease or the worker shuts down: a long sync handler should look at it between
    units of work (async handlers are cancelled for real). ``checkpoint`` saves
    progress that the next attempt receives as ``checkpoint_data``.
    """

    def __init__(
        self,
        *,
        job_id: int,
        handler: str,
        attempt: int,
        max_attempts: int,
        queue: str,
        args: dict[str, Any],
        tenant: str | None,
        metadata: dict[str, Any] | None,
        checkpoint_data: Any,
        worker_id: str,
        created_at: datetime,
        save_checkpoint: Callable[[Any], bool],
    ) -> None:
        self.job_id = job_id
        self.handler = handler
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.queue = queue
        self.args = args
        self.tenant = tenant
        self.metadata = metadata or {}
        self.checkpoint_data = checkpoint_data
        self.worker_id = worker_id
        self.created_at = created_at
        self._save_checkpoint = save_checkpoint
        self._cancelled = threading.Event()
        self.cancel_reason: JobStatus | str | None = None
        self.log = logging.LoggerAdapter(logger, {"job_id": job_id, "handler": handler, "attempt": attempt})

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def request_cancel(self, reason: str) -> None:
        if not self._cancelled.is_set():
            self.cancel_reason = reason
            self._cancelled.set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early if the job is cancelled."""
        return self._cancelled.wait(timeout)

    def checkpoint(self, data: Any) -> None:
        """Commit ``data`` (JSON) as this job's progress, now.

        If the worker no longer holds the job's lease the write is refused and
        ``cancelled`` turns true: someone else owns the job now.
        """
        self.checkpoint_data = data
        if not self._save_checkpoint(data):
            self.request_cancel("lease lost")

    async def acheckpoint(self, data: Any) -> None:
        """``checkpoint`` for async handlers, off the event loop."""
        await asyncio.to_thread(self.checkpoint, data)
