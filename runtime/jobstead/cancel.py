"""Why a running job was told to stop: one named reason, not a string compared in four places.

The reason decides how the attempt ends: ``CANCELLED`` (someone asked: the
CLI, the API, a batch cancel, the dashboard) ends the job ``cancelled``;
``TIMED_OUT`` fails the attempt (a retry follows if allowed); ``SHUTDOWN``
hands the job back unfinished, the attempt not spent; ``LEASE_LOST`` writes
nothing at all, since the job now belongs to another worker.

A ``StrEnum``, so handlers that compare ``ctx.cancel_reason`` with the plain
strings (``"cancelled"``, ``"shutdown"``) keep working.
"""

from __future__ import annotations

from enum import StrEnum


class CancelReason(StrEnum):
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease lost"
