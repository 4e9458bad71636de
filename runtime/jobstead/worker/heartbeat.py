"""Lease renewal and housekeeping, on a thread of its own.

On a thread, not the event loop: an async handler that hogs the loop (CPU work
without an await) must not make the worker look dead and get its jobs run a
second time elsewhere. The job really is still running, so its lease must be
renewed regardless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from datetime import timedelta

from ..store import LeaseReport, Store

logger = logging.getLogger("jobstead.worker")


class Heartbeat:
    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        interval: float,
        lease_seconds: float,
        held: Callable[[], Collection[int]],
        on_report: Callable[[LeaseReport, float], None],
        on_settings: Callable[[], None],
        prune: Callable[[], int] | None = None,
        prune_every: float = 300.0,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._interval = interval
        self._lease_seconds = lease_seconds
        self._held = held
        self._on_report = on_report
        self._on_settings = on_settings
        self._prune = prune
        self._prune_every = prune_every
        self._pruned_at = time.monotonic()  # not at start: many pods start at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobstead-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def beat(self) -> None:
        """One round: renew leases, report, refresh settings, rescue the dead's jobs."""
        started = time.monotonic()
        held = self._held()  # after `started`: a job missing here started later, and is not judged
        report = self._store.leases.renew(self._worker_id, self._lease_seconds, held)
        self._on_report(report, started)
        self._store.registry.worker_heartbeat(self._worker_id, len(held))
        self._on_settings()
        rescued = self._store.leases.rescue_expired()
        if rescued:
            logger.warning(
                "rescued %d job(s) whose worker stopped renewing its lease: %s",
                len(rescued),
                rescued,
            )
        self._store.registry.prune_workers(timedelta(seconds=max(self._lease_seconds * 10, 300)))
        if self._prune is not None and time.monotonic() - self._pruned_at >= self._prune_every:
            self._pruned_at = time.monotonic()
            deleted = self._prune()
            if deleted:
                logger.info("retention: deleted %d finished job(s)", deleted)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except Exception:
                logger.exception("heartbeat failed; retrying in %.1f s", self._interval)
