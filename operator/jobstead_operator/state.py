"""What every handler shares: the store, the Kubernetes client, one scaler per JobHandler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobstead.store import Store

from .kube import Kube
from .scaling import Scaler
from .spec import JobHandlerSpec


@dataclass
class OperatorState:
    store: Store
    kube: Kube
    scale_down_window: float = 60.0
    idle_cooldown: float = 120.0
    worker_defaults: dict[str, Any] = field(default_factory=dict)
    scalers: dict[tuple[str, str], Scaler] = field(default_factory=dict)
    schema_checked: bool = False
    #: (namespace, name) -> (spec, monotonic time) of the last scale tick: what a wake-up may scale.
    #: Only fresh entries count: a replica that peering paused stops ticking, and so stops waking.
    handlers: dict[tuple[str, str], tuple[JobHandlerSpec, float]] = field(default_factory=dict)

    def ensure_schema(self) -> None:
        """Migrate once, on first use rather than at start: the operator starts during an outage too."""
        if not self.schema_checked:
            self.store.ensure_schema()
            self.schema_checked = True

    def scaler(self, namespace: str, name: str) -> Scaler:
        key = (namespace, name)
        if key not in self.scalers:
            self.scalers[key] = Scaler(window_seconds=self.scale_down_window, idle_cooldown_seconds=self.idle_cooldown)
        return self.scalers[key]
