"""Workers: claim jobs, run handlers, record how each attempt ended."""

from .worker import Worker, new_worker_id

__all__ = ["Worker", "new_worker_id"]
