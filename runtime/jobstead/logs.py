"""Log output: readable text by default, or one JSON object per line for log pipelines.

Job-related lines carry ``job_id``, ``handler``, ``attempt`` and
``worker_id`` as record attributes (``logger.info(..., extra=job_fields(...))``);
the JSON format puts them in the object, the text format leaves them in the
message where it already says them.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from .lifecycle import one_line

LOG_FORMAT_ENV = "JOBSTEAD_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
#: Record attributes copied into JSON lines when a log call set them.
JOB_FIELDS = ("job_id", "handler", "attempt", "worker_id", "outcome", "duration_seconds", "queue")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def job_fields(*, job_id: int, handler: str, attempt: int, worker_id: str, **more: Any) -> dict[str, Any]:
    return {"job_id": job_id, "handler": handler, "attempt": attempt, "worker_id": worker_id, **more}


def resolve_log_format(explicit: str | None) -> str:
    chosen = explicit or os.environ.get(LOG_FORMAT_ENV) or "text"
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format {chosen!r}: use text or json (--log-format, ${LOG_FORMAT_ENV})")
    return chosen


#: What SQLAlchemy's pool logs, with a traceback, as it throws away a connection whose reset or
#: close failed: after a server restart or a failover, every connection the server dropped.
POOL_DISCARDS = (
    "Exception during reset or similar",
    "Exception closing connection",
    "Exception terminating connection",
)
#: Where the pool's own code lives: the records are matched by it, as Jobstead's pools log under
#: their own names (``jobstead.store.drivers.pool.WaitingQueuePool``), not under ``sqlalchemy.pool``.
_FROM_THE_POOL = os.path.join("sqlalchemy", "pool", "")


class PoolDiscardsInOneLine(logging.Filter):
    """SQLAlchemy's tracebacks for pooled connections it discards, as one warning line each.

    A worker riding out a database restart returned a connection the server
    had already dropped; the pool's rollback on return failed, and SQLAlchemy
    logged a 30-line traceback at ERROR for what it handles itself (the
    connection is discarded, the next checkout gets a new one). The worker's
    own retry already says the database was unreachable, in a line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            _FROM_THE_POOL in record.pathname
            and record.exc_info
            and isinstance(record.msg, str)
            and record.msg.startswith(POOL_DISCARDS)
        ):
            exc = record.exc_info[1]
            record.msg = "discarded a pooled database connection the server had dropped (%s)"
            record.args = (one_line(exc) if exc is not None else "no error given",)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(PoolDiscardsInOneLine())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("alembic").setLevel(logging.WARNING)
