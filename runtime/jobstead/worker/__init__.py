"""Workers: claim jobs, run handlers, record how each attempt ended."""

from .environment import WorkerEnvironment
from .options import WorkerOptions
from .worker import Worker, new_worker_id

__all__ = ["Worker", "WorkerEnvironment", "WorkerOptions", "new_worker_id"]
