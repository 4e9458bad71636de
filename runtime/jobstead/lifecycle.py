"""What every long-running part shares: backoff after failures, signals, and a sleep that can be cut short.

The worker's claim loop, the completion writer, the scheduler and the
maintenance services all run "do a round, sleep, again, until stopped", and
all must survive a database that is down for a while: retry with growing
delays, say so once when it starts failing and once when it recovers, never
exit on a transient error. That behaviour lives here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Exponential delays after consecutive failures, reset by a success.

    ``failed`` returns how long to wait and whether this failure started a
    failing streak; ``succeeded`` whether it ended one. Callers log on those
    two transitions only: one line per state change, not one per retry.
    """

    def __init__(self, initial: float, cap: float, factor: float = 2.0) -> None:
        if initial <= 0 or cap < initial or factor < 1:
            raise ValueError("backoff needs 0 < initial <= cap and factor >= 1")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._next = initial
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self) -> tuple[float, bool]:
        """The delay before the next try, and whether this is the first failure of a streak."""
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        self.failures += 1
        return delay, self.failures == 1

    def succeeded(self) -> bool:
        """Reset; True if a failing streak just ended."""
        recovered = self.failures > 0
        self._next = self.initial
        self.failures = 0
        return recovered


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and first message line, no traceback, no SQL dump."""
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def log_failure(logger: logging.Logger, what: str, exc: BaseException, backoff: Backoff, delay: float) -> None:
    """Log a failed round: in full when a streak starts, then once more briefly per retry at debug level."""
    if backoff.failures == 1:
        logger.warning("%s failed (%s); retrying with backoff, next in %.1f s", what, one_line(exc), delay)
    else:
        logger.debug("%s failed again (%s); next try in %.1f s", what, one_line(exc), delay)


def log_recovery(logger: logging.Logger, what: str) -> None:
    logger.info("%s works again", what)


class Sleeper:
    """An asyncio sleep that ``wake`` (from any thread) cuts short."""

    def __init__(self, event: asyncio.Event | None = None) -> None:
        self._event = event if event is not None else asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def clear(self) -> None:
        self._event.clear()

    def set(self) -> None:
        """Wake from the loop's own thread."""
        self._event.set()

    def wake(self) -> None:
        """Wake from any thread (or a signal handler)."""
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self._loop.call_soon_threadsafe(self._event.set)

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=seconds)


class LoopSignals:
    """SIGTERM and SIGINT delivered to a callback on an asyncio loop.

    Only in the main thread (Python allows signal handlers nowhere else), and
    only when asked: a worker embedded in a web app leaves signals to its host.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, on_signal: Callable[[signal.Signals], None], *, enabled: bool = True) -> None:
        self._on_signal = on_signal
        self._enabled = enabled
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        if not self._enabled or threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def remove(self) -> None:
        if self._loop is None:
            return
        for sig in self.SIGNALS:
            self._loop.remove_signal_handler(sig)
        self._loop = None


async def until_ready(
    step: Callable[[], T],
    *,
    what: str,
    is_transient: Callable[[BaseException], bool],
    logger: logging.Logger,
    stopping: Callable[[], bool],
    sleeper: Sleeper,
) -> T | None:
    """Run the blocking ``step`` (on a thread) until it works; None if stopped first.

    A transient database error (down, restarting) is retried with backoff,
    logged once when the wait starts and once when it ends; any other error
    (bad credentials, a missing database, a bug) is raised at once.
    """
    backoff = Backoff(0.5, 15.0)
    while not stopping():
        try:
            result = await asyncio.to_thread(step)
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay, first = backoff.failed()
            if first:
                logger.warning(
                    "%s: database unreachable (%s); waiting for it, retrying with backoff", what, one_line(exc)
                )
            sleeper.clear()
            await sleeper.sleep(delay)
            continue
        if backoff.succeeded():
            logger.info("%s: database reachable again", what)
        return result
    return None
