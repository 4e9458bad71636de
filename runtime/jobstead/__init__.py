"""Jobstead: persistent background jobs stored in your application's own database.

The public API is re-exported here; everything else is internal. ``Worker``
is imported on first use: it pulls in the PostgreSQL wake-up code (psycopg),
which an app that only defers jobs, or runs on SQLite, never needs. So is
``__version__``.
"""

from typing import TYPE_CHECKING, Any

from .app import App
from .batch import Batch, JobSpec
from .cancel import CancelReason
from .context import Context
from .cron.schedule import SecondsFieldWarning
from .deferred import Deferred
from .errors import (
    BatchNotFound,
    ConfigurationError,
    InvalidArguments,
    InvalidOption,
    InvalidState,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobsteadError,
    PermanentError,
    UnknownHandler,
    WorkflowNotFound,
)
from .flow import RateLimit
from .handler import ConfiguredHandler, Handler
from .hooks import FailureEvent
from .retry import RetryPolicy
from .signature import Inject
from .status import JobStatus
from .store.records import BatchStats, StepRecord, WorkflowStats
from .workflow import Step, WorkflowBuilder, WorkflowRun

if TYPE_CHECKING:
    from .worker import Worker


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from .worker import Worker

        return Worker
    if name == "__version__":  # importlib.metadata scans the installed packages: only when asked
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("jobstead")
        except PackageNotFoundError:  # a source tree that was never installed
            return "unknown"
    raise AttributeError(f"module 'jobstead' has no attribute {name!r}")


__all__ = [
    "App",
    "Batch",
    "BatchNotFound",
    "BatchStats",
    "CancelReason",
    "ConfigurationError",
    "ConfiguredHandler",
    "Context",
    "Deferred",
    "FailureEvent",
    "Handler",
    "Inject",
    "InvalidArguments",
    "InvalidOption",
    "InvalidState",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobSpec",
    "JobStatus",
    "JobsteadError",
    "PermanentError",
    "RateLimit",
    "RetryPolicy",
    "SecondsFieldWarning",
    "Step",
    "StepRecord",
    "UnknownHandler",
    "Worker",
    "WorkflowBuilder",
    "WorkflowNotFound",
    "WorkflowRun",
    "WorkflowStats",
    "__version__",
]
