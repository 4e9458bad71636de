"""Waiting for something the database will say is done: a batch, a workflow.

One backoff for every ``wait``/``wait_async`` of a handle: poll often at
first (most waits are short), then less, never past the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def poll_until(done: Callable[[], bool], timeout: float | None, poll: float, max_poll: float) -> bool:
    """Call ``done`` with backoff until it is true (True) or ``timeout`` seconds pass (False)."""
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
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = poll
    while not await asyncio.to_thread(done):
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(delay if deadline is None else max(0.0, min(delay, deadline - loop.time())))
        delay = min(delay * 1.5, max_poll)
    return True
