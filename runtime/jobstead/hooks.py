"""Callbacks on failure, for logging and alerts (like the seed's OnTaskError).

Hooks observe; they cannot change what happens to the job. A hook that raises is
logged and ignored, and a slow sync hook runs off the event loop, so a broken
alerting integration can never stall or fail the worker.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import JobError
from .status import JobStatus

logger = logging.getLogger("jobstead.hooks")


@dataclass(frozen=True)
class FailureEvent:
    """One failed attempt: what failed, how, and what happens to the job next."""

    job_id: int
    handler: str
    attempt: int
    args: dict[str, Any]
    error: JobError
    #: ``retrying`` (another attempt follows), ``dead`` or ``failed`` (it will not run again)
    status: JobStatus
    exception: BaseException | None

    @property
    def final(self) -> bool:
        return self.status in (JobStatus.DEAD, JobStatus.FAILED)


Hook = Callable[[FailureEvent], None] | Callable[[FailureEvent], Awaitable[None]]


async def run_hooks(hooks: Sequence[Hook], event: FailureEvent) -> None:
    for hook in hooks:
        try:
            if inspect.iscoroutinefunction(hook):
                await hook(event)
            else:
                await asyncio.to_thread(hook, event)
        except Exception:
            logger.exception("hook %s failed for job %s", getattr(hook, "__name__", hook), event.job_id)
