"""What every handler shares: the Kubernetes client, the Secrets read, the database pool, one scaler per JobHandler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .databases import Databases
from .kube import Kube
from .scaling import Scaler
from .secretrefs import DatabaseSecrets
from .spec import JobHandlerSpec
from .targets import DatabaseTarget

#: The pool user that holds the operator's own default database open for as long as it runs.
DEFAULT_USER = ("default", "", "")


@dataclass
class OperatorState:
    kube: Kube
    databases: Databases
    secrets: DatabaseSecrets
    #: ``$JOBSTEAD_DATABASE_URL``: for CronSchedules that name no database and have no JobHandler to follow.
    default_target: DatabaseTarget | None = None
    scale_down_window: float = 60.0
    idle_cooldown: float = 120.0
    worker_defaults: dict[str, Any] = field(default_factory=dict)
    #: Worker pods serve ``/metrics`` on this port unless their JobHandler's ``spec.metrics`` says otherwise.
    worker_metrics_port: int | None = None
    scalers: dict[tuple[str, str], Scaler] = field(default_factory=dict)
    #: (namespace, name) -> (spec, monotonic time) of the last scale tick: what a wake-up may scale.
    #: Only fresh entries count: a replica that peering paused stops ticking, and so stops waking.
    handlers: dict[tuple[str, str], tuple[JobHandlerSpec, float]] = field(default_factory=dict)

    def scaler(self, namespace: str, name: str) -> Scaler:
        key = (namespace, name)
        if key not in self.scalers:
            self.scalers[key] = Scaler(window_seconds=self.scale_down_window, idle_cooldown_seconds=self.idle_cooldown)
        return self.scalers[key]
