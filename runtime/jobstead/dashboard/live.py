"""One change feed per dashboard process, however many tabs are open.

On PostgreSQL it LISTENs on the channel the store NOTIFYs on every defer and
resume, so a new job shows within milliseconds; a slow poll of
``DashboardQueries.signature`` (a few index look-ups) catches what sends no
notification (completions, pauses, crons). On SQLite the poll is all there
is. Tabs never query on their own: each waits for the feed's version to move,
then re-renders its page at most once a second (``MIN_INTERVAL``), so the
cost of an open dashboard is bounded by the number of tabs, not the job rate.
The feed runs only while at least one tab listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from ..store import Store
from .queries import DashboardQueries

logger = logging.getLogger("jobstead.dashboard")

#: Seconds between two refreshes of one tab, at most.
MIN_INTERVAL = 1.0
#: Seconds between SSE comments that keep proxies from closing an idle stream.
KEEPALIVE = 15.0


class ChangeFeed:
    def __init__(
        self,
        queries: DashboardQueries,
        *,
        poll_interval: float,
        listen: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        """``listen(changed)``: a coroutine function that calls ``changed()`` per notification, forever."""
        self._queries = queries
        self._poll_interval = poll_interval
        self._listen = listen
        self._version = 0
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def version(self) -> int:
        return self._version

    def close(self) -> None:
        """End every open stream (the server is stopping): tabs reconnect to the next server."""
        self._closing = True
        self.bump()

    def bump(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _run(self) -> None:
        listener = asyncio.ensure_future(self._listen(self.bump)) if self._listen else None
        try:
            last: tuple[Any, ...] | None = None
            while True:
                try:
                    current = await run_in_threadpool(self._queries.signature)
                except Exception as exc:  # the database is down: try again, keep the stream open
                    logger.warning("dashboard live updates: %s", type(exc).__name__)
                    current = None
                if current is not None and last is not None and current != last:
                    self.bump()
                last = current if current is not None else last
                await asyncio.sleep(self._poll_interval)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener

    async def changes(self) -> AsyncIterator[int]:
        """Yield after each change, at most once per ``MIN_INTERVAL``; a burst becomes one refresh."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new server (or test client) on another event loop
            self._loop, self._changed, self._task, self._listeners = loop, asyncio.Event(), None, 0
        self._listeners += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            seen = self._version
            while True:
                if self._version == seen:
                    waiter = self._changed
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter.wait(), KEEPALIVE)
                if self._closing:
                    return
                if self._version == seen:
                    yield -1  # nothing new: a keep-alive
                    continue
                seen = self._version
                yield seen
                await asyncio.sleep(MIN_INTERVAL)
        finally:
            self._listeners -= 1
            if self._listeners == 0 and self._task is not None:
                self._task.cancel()
                self._task = None


T = TypeVar("T")


class Shared(Generic[T]):
    """One computation serves every caller at one feed version for ``max_age`` seconds.

    Every open tab refreshes on the same change: the first one's counts serve
    the others, and a new change (a new version) always recomputes, so no tab
    is shown counts from before the change it was told about.
    """

    def __init__(self, compute: Callable[[], T], *, max_age: float) -> None:
        self._compute = compute
        self._max_age = max_age
        self._lock = threading.Lock()
        self._value: tuple[int, float, T] | None = None

    def get(self, version: int) -> T:
        with self._lock:
            fresh = self._value is not None and self._value[0] == version
            if not fresh or self._value is None or time.monotonic() - self._value[1] >= self._max_age:
                self._value = (version, time.monotonic(), self._compute())
            return self._value[2]

    def clear(self) -> None:
        """After an action: the next page shows its effect."""
        with self._lock:
            self._value = None


def store_listener(store: Store) -> Callable[[Callable[[], None]], Any]:
    """The store's wake-ups (LISTEN/NOTIFY on PostgreSQL), with the same reconnecting loop as workers."""

    async def run(changed: Callable[[], None]) -> None:
        await store.listen(None, lambda _queue: changed(), cancelled=lambda _ids: changed())

    return run
