"""Waiting for something the database will say is done: a batch, a workflow.

One backoff for every ``wait``/``wait_async`` of a handle: poll often at
first (most waits are short), then less, never past the deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .errors import InvalidArguments


def check_wait(timeout: object, poll: object, max_poll: object) -> None:
    """A ``wait``'s arguments, refused before the loop: a NaN timeout never passes (the wait never
    ends) and a poll of zero or less reads the database in a busy loop."""

    if timeout is not None:
        given = _seconds(timeout)
        if given is None:
            raise InvalidArguments(f"timeout must be a number of seconds (or None: no limit), not {timeout!r}")
        if given < 0:
            raise InvalidArguments(f"timeout cannot be negative ({timeout!r}); 0 looks once without waiting")
    for name, value in (("poll", poll), ("max_poll", max_poll)):
        given = _seconds(value)
        if given is None or given <= 0:
            raise InvalidArguments(f"{name} must be a positive number of seconds, not {value!r}")


def _seconds(value: object) -> float | None:
    """``value`` as a finite number of seconds, or None if it is none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def poll_until(done: Callable[[], bool], timeout: float | None, poll: float, max_poll: float) -> bool:
    """Call ``done`` with backoff until it is true (True) or ``timeout`` seconds pass (False)."""
    check_wait(timeout, poll, max_poll)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = poll
    while not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 1.5, max_poll)
    return True


async def poll_until_async(done: Callable[[], bool], timeout: float | None, poll: float, max_poll: float) -> bool:
    """``poll_until`` for async code: ``done`` runs on a thread, the sleeps on the loop."""
    check_wait(timeout, poll, max_poll)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = poll
    while not await asyncio.to_thread(done):
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(delay if deadline is None else max(0.0, min(delay, deadline - loop.time())))
        delay = min(delay * 1.5, max_poll)
    return True
