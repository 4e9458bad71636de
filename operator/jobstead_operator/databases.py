"""One store per app database, opened on first use and closed when no resource names it any more.

The operator serves every app of the cluster, each with its own database. A
resource (a JobHandler, a CronSchedule, the operator's own default) *uses*
a database; the pool keeps one ``AppDatabase`` per distinct target, shared by
every resource that resolves to it, and closes it when the last one lets go.

Each open database has:

* a store whose calls run on two threads of its own: at most two of the
  operator's connections per database, and a database that hangs (an
  unreachable host) stalls its own resources only, never the others';
* once its schema is current: the cron scheduler (as a task in kopf's event
  loop; the database makes every fire happen once, so every replica may run
  it) and, on PostgreSQL, one LISTEN connection for the wake-up.

Nothing here raises for a database that is down: the callers turn
``SQLAlchemyError`` into ``Ready=False`` reason ``DatabaseUnavailable`` and
try again at their next tick, so an outage heals without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import InvalidRequestError

from jobstead.cron.scheduler import REPUBLISH_EVERY, Scheduler
from jobstead.store import Store

from .targets import DatabaseTarget

logger = logging.getLogger("jobstead.operator")
T = TypeVar("T")
#: Threads, and so at most connections, the operator uses per database (the scheduler adds one).
THREADS_PER_DATABASE = 2
#: A database that does not answer a connect within this is unavailable (libpq ``connect_timeout``).


class SchemaMissing(Exception):
    """The job tables are missing or old and the operator was told not to migrate."""


#: Who uses a database: ("JobHandler", namespace, name), ("CronSchedule", ...), or ("default", "", "").
User = tuple[str, str, str]
Wake = Callable[["AppDatabase", str], None]


@dataclass(eq=False)
class AppDatabase:
    target: DatabaseTarget
    store: Store
    executor: ThreadPoolExecutor
    users: set[User] = field(default_factory=set)
    schema_current: bool = False
    scheduler: Scheduler | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False
    #: ``time.monotonic()`` of the last ``call``: the metrics show only databases this replica works on.
    last_call: float = field(default_factory=time.monotonic)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on this database's own threads (one closed meanwhile is unavailable)."""
        if self.closed:
            raise InvalidRequestError(f"{self.target.masked} was closed: no resource uses it any more")
        self.last_call = time.monotonic()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))


def _connect(target: DatabaseTarget) -> Store:
    # The driver bounds connection attempts (PostgreSQL: libpq's connect_timeout), so a
    # database that does not answer fails fast and shows DatabaseUnavailable.
    return Store.connect(target.url, table_prefix=target.table_prefix, schema=target.schema)


@dataclass
class Databases:
    """The pool: ``use`` binds a user to a target, ``release`` unbinds it; ``ready`` migrates and starts services."""

    migrate: bool = True
    republish_every: float = REPUBLISH_EVERY
    wake: Wake | None = None
    _open: dict[DatabaseTarget, AppDatabase] = field(default_factory=dict)
    _bound: dict[User, DatabaseTarget] = field(default_factory=dict)
    _schema_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def of(self, user: User) -> AppDatabase | None:
        target = self._bound.get(user)
        return self._open.get(target) if target is not None else None

    def open_databases(self) -> list[AppDatabase]:
        return list(self._open.values())

    def open_targets(self) -> list[DatabaseTarget]:
        return list(self._open)

    def users_of(self, target: DatabaseTarget) -> set[User]:
        database = self._open.get(target)
        return set(database.users) if database else set()

    async def use(self, user: User, target: DatabaseTarget) -> tuple[AppDatabase, DatabaseTarget | None]:
        """Bind ``user`` to ``target``: (its database, the target it used before if that was another one)."""
        previous = self._bound.get(user)
        if previous == target:
            return self._open[target], None
        database = self._open.get(target)
        if database is None:
            database = AppDatabase(
                target=target,
                store=_connect(target),
                executor=ThreadPoolExecutor(THREADS_PER_DATABASE, thread_name_prefix="jobstead-db"),
            )
            self._open[target] = database
            logger.info("database %s opened", target.masked)
        database.users.add(user)
        self._bound[user] = target
        if previous is not None:
            await self._let_go(user, previous)
        return database, previous

    async def release(self, user: User) -> None:
        target = self._bound.pop(user, None)
        if target is not None:
            await self._let_go(user, target)

    async def ready(self, database: AppDatabase) -> None:
        """Migrate on first use (or ``SchemaMissing``), then start its scheduler and listener."""
        if database.schema_current:
            return
        # Alembic keeps its running context in module globals: two checks at once, even of two
        # databases, break each other. One at a time, process-wide; each database only once.
        async with self._schema_lock:
            if database.schema_current:
                return
            store = database.store
            if not await database.call(store.schema_is_current):
                if not self.migrate:
                    raise SchemaMissing(
                        f"the job tables in {database.target.masked} are missing or out of date, and this operator "
                        "does not migrate ($JOBSTEAD_OPERATOR_MIGRATE=false): run `jobstead migrate` with that "
                        "database's URL (and its schema and table prefix), or let the operator migrate"
                    )
                await database.call(store.migrate)
                logger.info("database %s: job tables created or upgraded", database.target.masked)
            database.schema_current = True
        if database.target not in self._open or database.tasks:
            return  # closed meanwhile, or already started
        self._start_services(database)

    def _start_services(self, database: AppDatabase) -> None:
        scheduler = Scheduler(store=database.store, install_signal_handlers=False, republish_every=self.republish_every)
        database.scheduler = scheduler
        database.tasks.append(asyncio.create_task(scheduler.run_async(), name=f"scheduler {database.target.masked}"))
        if database.store.supports_listen and self.wake is not None:
            wake = self.wake

            def on_notify(queue: str) -> None:
                wake(database, queue)

            database.tasks.append(
                asyncio.create_task(database.store.listen(None, on_notify), name=f"listen {database.target.masked}")
            )

    async def _let_go(self, user: User, target: DatabaseTarget) -> None:
        database = self._open.get(target)
        if database is None:
            return
        database.users.discard(user)
        if not database.users:
            del self._open[target]
            await self._close(database)

    async def _close(self, database: AppDatabase) -> None:
        database.closed = True
        if database.scheduler is not None:
            database.scheduler.stop()
        for task in database.tasks:
            if task.get_name().startswith("listen"):
                task.cancel()
        for task in database.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(database.executor, database.store.close)  # after the calls in flight
        database.executor.shutdown(wait=False)
        logger.info("database %s closed: no resource uses it any more", database.target.masked)

    async def close_all(self) -> None:
        for target in list(self._open):
            database = self._open.pop(target)
            await self._close(database)
        self._bound.clear()
