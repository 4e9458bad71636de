"""Forgetting workers that stopped heartbeating long ago: once per interval per database."""

from __future__ import annotations

from datetime import timedelta

from ..store import Store
from .base import Service

WORKER_REGISTRY_EVERY = 60.0


class WorkerRegistryPruner(Service):
    """Deletes worker rows silent for ``silent_for``; their jobs are the rescuer's business."""

    name = "worker registry"

    def __init__(
        self, store: Store, worker_id: str, *, silent_for: timedelta, every: float = WORKER_REGISTRY_EVERY
    ) -> None:
        super().__init__(every)
        self._store = store
        self._worker_id = worker_id
        self._silent_for = silent_for

    def run_once(self) -> None:
        if self._store.turns.take(self.name, timedelta(seconds=self.every), by=self._worker_id):
            self._store.registry.prune_workers(self._silent_for)
