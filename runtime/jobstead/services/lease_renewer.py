"""Renewing the leases of the jobs this worker runs, and learning which it lost or should stop."""

from __future__ import annotations

from collections.abc import Callable, Collection

from ..store import LeaseReport, Store
from .base import Service


class LeaseRenewer(Service):
    """Every few seconds: extend this worker's leases, record its heartbeat, report back.

    The report says which jobs the worker no longer holds (rescued while it
    stalled, or claimed on a primary that failed over before its standby had
    the claim: stop them, write nothing) and which were asked to cancel.
    The report goes with the ids it asked about: only those can it judge.
    """

    name = "lease renewal"
    #: A failed renewal is retried this soon, backoff or not: after a failover the first renewal
    #: on the new primary is what stops the runs whose claims it never received (asynchronous
    #: replication), and each of them may be running a second time elsewhere until then. A
    #: try is one connection attempt (refused at once by a host that is down), four a second.
    retry_within = 0.25

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        every: float,
        lease_seconds: float,
        held: Callable[[], Collection[int]],
        on_report: Callable[[LeaseReport, frozenset[int]], None],
    ) -> None:
        super().__init__(every)
        self._store = store
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._held = held
        self._on_report = on_report

    def run_once(self) -> None:
        held = self._held()
        report = self._store.leases.renew(self._worker_id, self._lease_seconds, held)
        self._on_report(report, frozenset(held))
        self._store.registry.worker_heartbeat(self._worker_id, len(held))
