"""Celery on MariaDB: kombu's SQLAlchemy transport as the broker, SQLAlchemy's result backend.

The MySQL-backed Python peer of the MariaDB column (``bench.mariadb``): Celery
keeps its messages in the ``kombu_message`` table (``sqla+mysql://``) and, with
the database result backend (``db+mysql://``), each task's outcome in
``celery_taskmeta``: a durable record of every finished job, as Jobstead's
completion is, so "drained" means the same on both sides.

What it is not: each fetch takes one message with ``SELECT ... FOR UPDATE``
(no ``SKIP LOCKED``) and hides it at once, so fetches queue on the oldest row,
and a worker killed mid-task loses the message (no lease, no rescue). Kombu
polls every second when the table is empty (its ``polling_interval``, which the
transport's options cannot change: they go to ``create_engine``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.engine import make_url

from . import System

#: Threads per worker process (``-P threads -c N``): the no-op task waits on nothing, the
#: broker round trips are the work.
CONCURRENCY = 8


def broker_url(url: str) -> str:
    """The MariaDB URL as kombu's SQLAlchemy transport takes it."""
    return "sqla+" + _mysqldb(url)


def backend_url(url: str) -> str:
    """The same database as Celery's SQLAlchemy result backend takes it."""
    return "db+" + _mysqldb(url)


def _mysqldb(url: str) -> str:
    return make_url(url).set(drivername="mysql+mysqldb").render_as_string(hide_password=False)


def build_app(url: str, reporter: Any = None) -> Any:
    """The Celery app both sides use, with the ``noop`` task (reporting its start when given a reporter)."""
    from celery import Celery

    app = Celery("bench", broker=broker_url(url), backend=backend_url(url))
    app.conf.task_ignore_result = False  # the result row is the durable record of a finished task
    app.conf.worker_hijack_root_logger = False

    @app.task(name="noop")
    def noop(t: float = 0.0) -> None:
        if reporter is not None:
            reporter.job_started(t)

    return app


class CelerySqla(System):
    name = "celery"
    # Messages are hidden (visible = 0) when fetched and never deleted; a finished task has a row
    # in celery_taskmeta. Unfinished: messages sent less tasks recorded.
    remaining_sql = (
        "SELECT (SELECT count(*) FROM kombu_message) - (SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS')"
    )
    unfinished_sql = remaining_sql + " > 0"
    succeeded_sql = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
    reset_sql = "DELETE FROM kombu_message; DELETE FROM celery_taskmeta"
    knob = "--concurrency"
    knob_value = CONCURRENCY

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._app: Any = None
        self._noop: Any = None

    async def open(self) -> None:
        def install() -> None:
            self._app = build_app(self.url)
            self._noop = self._app.tasks["noop"]
            with self._app.connection_for_write() as conn:
                conn.default_channel.queue_declare("celery")  # kombu's tables
            self._app.backend.ResultSession()  # celery_taskmeta
            self._noop.delay()  # the first publish creates what is left; cleared by every reset

        await asyncio.to_thread(install)

    async def close(self) -> None:
        if self._app is not None:
            self._app.close()

    async def defer_one(self, t: float = 0.0) -> None:
        self._noop.delay(t)

    async def defer_bulk(self, n: int) -> None:
        from celery import group

        # Celery has no bulk insert: a group publishes each message on its own.
        group(self._noop.s(0.0) for _ in range(n)).apply_async()

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return f"{version('celery')} (kombu {version('kombu')})"

    @property
    def configuration(self) -> str:
        return (
            f"`celery worker -P threads -c {self.knob_value}` per process, kombu's SQLAlchemy transport "
            "(`sqla+mysql://`) and the database result backend on the same MariaDB, default prefetch"
        )
