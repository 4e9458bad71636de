"""How many jobs a worker claims ahead of its free slots.

A claim is a database round trip. Without claiming ahead, a slot that frees
while a claim is in flight (or just after one returned) stays idle for that
whole round trip: with 5-15 ms jobs at concurrency 100 that is about half of
the slots' time. So the worker keeps a small buffer of claimed jobs and starts
one the moment a slot frees; the buffer is sized to what the slots finish
during one claim round trip (twice that, so a refill starts while half is
left), measured as the worker runs, and never more than the concurrency.

Claimed jobs are ``running`` in the database from the claim on: they count
against global and per-tenant limits and hold a lease. A buffered job would
hold a limit's slot without running, so nothing is claimed ahead while any of
the worker's handlers has a limit (``ahead`` is then 0 and the worker claims
exactly its free slots, as before).
"""

from __future__ import annotations

import math

#: Weight of the newest measurement in the moving averages: a few claims make a trend.
_WEIGHT = 0.3


class ClaimPace:
    """Moving averages of the start rate and of the claim round trip; ``ahead`` follows from them."""

    __slots__ = ("_capacity", "_latency", "_rate")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._rate = 0.0  # jobs started per second
        self._latency = 0.0  # seconds per claim

    def observe(self, *, started: int, seconds: float, claim_seconds: float) -> None:
        """``started`` jobs began in the last ``seconds``; the last claim took ``claim_seconds``."""
        if seconds > 0:
            self._rate += _WEIGHT * (started / seconds - self._rate)
        self._latency += _WEIGHT * (claim_seconds - self._latency)

    @property
    def ahead(self) -> int:
        """Jobs to hold claimed beyond the free slots: what the slots start during two claim round trips.

        Rounded down: a worker whose slots start fewer than one job per two round
        trips (long jobs, a quiet queue) holds none back from other workers.
        """
        return min(self._capacity, math.floor(2 * self._rate * self._latency))
