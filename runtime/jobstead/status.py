"""The job lifecycle, as stored in the database and shown to users."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is in its life.

    ``scheduled`` jobs wait for their run time, ``queued`` ones for a worker;
    ``retrying`` jobs failed and wait for their next attempt. ``dead`` keeps jobs
    whose attempts are exhausted (the dead-letter set); ``failed`` is a permanent
    failure the handler asked for (no retry). ``blocked`` is a workflow step
    whose dependencies have not all finished: never claimed, released (to
    ``queued`` or ``scheduled``) by the completion of its last dependency.
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"
    BLOCKED = "blocked"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


#: A worker may claim a job in one of these states once its run time has come.
CLAIMABLE_STATUSES: tuple[JobStatus, ...] = (
    JobStatus.SCHEDULED,
    JobStatus.QUEUED,
    JobStatus.RETRYING,
)
#: A deduplication key is taken while its job is in one of these states.
LIVE_STATUSES: tuple[JobStatus, ...] = (*CLAIMABLE_STATUSES, JobStatus.RUNNING)
FINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.DEAD}
)


class AttemptOutcome(StrEnum):
    """How one attempt ended; every attempt leaves one row with one of these."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    #: The worker died or lost its lease; the job went back to the queue.
    LOST = "lost"
    #: Handed back on graceful shutdown; does not count as an attempt.
    RELEASED = "released"


def statuses_of(value: JobStatus | str | Iterable[JobStatus | str] | None) -> tuple[JobStatus, ...]:
    """``"dead"``, ``"dead,failed"``, ``JobStatus.DEAD`` or a list of them; ``ValueError`` names a bad one."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, JobStatus) else list(value)
    found: list[JobStatus] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        try:
            status = JobStatus(text)
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise ValueError(f"unknown status {text!r}; one of: {known}") from None
        if status not in found:
            found.append(status)
    return tuple(found)
