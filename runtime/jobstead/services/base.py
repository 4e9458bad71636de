"""Maintenance services: small periodic duties, each with its own interval, on a thread of their own.

On threads, not the event loop: an async handler that hogs the loop (CPU work
without an await) must not make the worker look dead and get its jobs run a
second time elsewhere. Lease renewal gets a thread to itself, so a slow
prune can never delay it; the other duties share one.

A failing duty backs off alone (``lifecycle.Backoff``) and logs one line when
it starts failing and one when it recovers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..lifecycle import Backoff, log_failure, log_recovery
from ..metrics.worker import WORKER_METRICS

logger = logging.getLogger("jobstead.services")


class Service:
    """One periodic duty. Subclasses set ``name`` and implement ``run_once``."""

    name: str = "service"
    #: After a failure the next try comes with backoff, but within this many seconds (None: ``every``).
    retry_within: float | None = None

    def __init__(self, every: float) -> None:
        if every <= 0:
            raise ValueError(f"{self.name}: interval must be positive")
        self.every = every

    def run_once(self) -> None:
        raise NotImplementedError


@dataclass
class _Schedule:
    service: Service
    due: float
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))


class ServiceThread:
    """Runs ``services`` on one daemon thread, each when its own interval comes due."""

    def __init__(self, name: str, services: Sequence[Service], *, start_delayed: bool = True) -> None:
        now = time.monotonic()
        # Delayed start: the worker just did each duty once itself, and many pods start at once.
        self._schedules = [_Schedule(s, now + (s.every if start_delayed else 0.0)) for s in services]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if self._schedules:
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def run_due(self) -> None:
        """One pass: every service whose time has come (tests call this directly)."""
        for schedule in self._schedules:
            now = time.monotonic()
            if now < schedule.due:
                continue
            service = schedule.service
            try:
                service.run_once()
            except Exception as exc:
                WORKER_METRICS.database_errors.labels(operation=service.name).inc()
                delay, _first = schedule.backoff.failed()
                log_failure(logger, service.name, exc, schedule.backoff, delay)
                schedule.due = time.monotonic() + min(delay, service.every, service.retry_within or service.every)
                continue
            if schedule.backoff.succeeded():
                log_recovery(logger, service.name)
            schedule.due = max(schedule.due + service.every, time.monotonic())

    def hurry(self) -> None:
        """Run every service now rather than when due (from any thread): what it would learn is needed now."""
        now = time.monotonic()
        for schedule in self._schedules:
            schedule.due = min(schedule.due, now)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.run_due()
            wait = min(s.due for s in self._schedules) - time.monotonic()
            self._wake.wait(max(wait, 0.01))
