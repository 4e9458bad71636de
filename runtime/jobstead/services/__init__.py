"""Maintenance services, each a small periodic duty (see ``base``).

Per worker: ``LeaseRenewer`` (its own thread), ``SettingsRefresh``.
Per database, by whoever takes the turn: ``Rescuer``, ``RetentionPruner``,
``WorkerRegistryPruner``, ``PlannerStatistics``.
"""

from .base import Service, ServiceThread
from .lease_renewer import LeaseRenewer
from .planner_statistics import PlannerStatistics
from .rescuer import Rescuer
from .retention_pruner import RetentionPruner
from .settings_refresh import SettingsRefresh
from .worker_registry_pruner import WorkerRegistryPruner

__all__ = [
    "LeaseRenewer",
    "PlannerStatistics",
    "Rescuer",
    "RetentionPruner",
    "Service",
    "ServiceThread",
    "SettingsRefresh",
    "WorkerRegistryPruner",
]
