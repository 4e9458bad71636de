"""Jobstead: persistent background jobs stored in your application's own database.

The public API is re-exported here; everything else is internal.
"""

from .app import App
from .context import Context
from .deferred import Deferred
from .errors import (
    ConfigurationError,
    InvalidArguments,
    InvalidState,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobsteadError,
    PermanentError,
    UnknownHandler,
)
from .handler import ConfiguredHandler, Handler
from .hooks import FailureEvent
from .retry import RetryPolicy
from .signature import Inject
from .status import JobStatus
from .worker import Worker

__all__ = [
    "App",
    "ConfigurationError",
    "ConfiguredHandler",
    "Context",
    "Deferred",
    "FailureEvent",
    "Handler",
    "Inject",
    "InvalidArguments",
    "InvalidState",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobStatus",
    "JobsteadError",
    "PermanentError",
    "RetryPolicy",
    "UnknownHandler",
    "Worker",
]
