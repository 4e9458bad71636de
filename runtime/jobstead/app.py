"""The object an application creates: its handlers, its database, its workers."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from sqlalchemy import Connection
from sqlalchemy.engine import URL

from .batch import Batch, check_spec, continuation_jobs, in_async_transaction, sync_connection
from .clock import Clock, utcnow
from .config import resolve_database_url
from .cron.schedule import CronSchedule, SecondsFieldWarning
from .deferred import Deferred
from .errors import ConfigurationError, InvalidArguments, InvalidOption, JobNotFound, UnknownHandler
from .flow import FlowControl, RateLimit, SequenceOnFailure
from .handler import Handler, JobSpec
from .hooks import Hook
from .options import (
    AsyncTransaction,
    SyncTransaction,
    check_int,
    check_metadata,
    check_name,
    has_control_characters,
)
from .retry import DEFAULT_RETRY, RetryPolicy
from .signature import CONTEXT
from .status import JobStatus, statuses_of
from .store import BatchRecord, BatchStats, CronDefinition, NewJob, Stats, Store
from .store.control import PauseScope
from .store.drivers import driver_for
from .store.records import BATCH_STATUSES, WORKFLOW_STATUSES, Overlap
from .workflow import WorkflowBuilder, WorkflowRun

if TYPE_CHECKING:
    from .cron.scheduler import Scheduler
    from .worker import Worker

logger = logging.getLogger("jobstead.app")

P = ParamSpec("P")
R = TypeVar("R")

#: Types that job arguments use: injecting by one of these would swallow real arguments.
JSON_TYPES: frozenset[type] = frozenset({str, int, float, bool, list, dict, tuple, type(None)})
#: Names stored in the database (handlers, shared rate limits) are VARCHAR(200).
NAME_LENGTH = 200


class App:
    """Handlers plus the database their jobs live in.

    ``App()`` uses ``$JOBSTEAD_DATABASE_URL``, else the SQLite file
    ``jobstead.db`` in the working directory. Nothing touches the database until
    first use; then the schema is migrated if needed (``auto_migrate``) and the
    app's handlers are published so the CLI and the operator know them.
    """

    def __init__(
        self,
        database_url: str | URL | None = None,
        *,
        table_prefix: str | None = None,
        schema: str | None = None,
        auto_migrate: bool = True,
        clock: Clock | None = None,
        retention: timedelta | None = timedelta(days=7),
        dead_retention: timedelta | None = timedelta(days=30),
    ) -> None:
        self._database_url = database_url
        #: Workers delete succeeded/cancelled jobs older than this, and dead/failed ones older
        #: than ``dead_retention`` (``None``: keep forever).
        self.retention = retention
        self.dead_retention = dead_retention
        #: Time for the store and the scheduler; tests pass a fake one to simulate days in milliseconds.
        self._clock = clock or utcnow
        self._table_prefix = table_prefix
        self._schema = schema
        self.auto_migrate = auto_migrate
        self._handlers: dict[str, Handler[Any, Any]] = {}
        self._crons: dict[str, CronDefinition] = {}
        #: Shared rate limits (``rate_limit``) by name, published with the handlers.
        self._rate_limits: dict[str, RateLimit] = {}
        self._resources: dict[str, Callable[[], Any] | Any] = {}
        self.failure_hooks: list[Hook] = []
        self.dead_hooks: list[Hook] = []
        self.resource_types: dict[type, str] = {}
        self._store: Store | None = None
        #: Connected but maybe not yet migrated and published (``open`` failed half-way, will retry).
        self._connected: Store | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<App {resolve_database_url(self._database_url).render_as_string(hide_password=True)}>"

    # -- configuration -------------------------------------------------------

    def use_database(self, url: str | URL) -> None:
        """Point the app at another database (the CLI's ``--database-url``); only before first use."""
        if self._store is not None:
            raise ConfigurationError("the app's database is already in use; set the URL before deferring jobs")
        self._database_url = url

    @property
    def database_url(self) -> URL:
        return resolve_database_url(self._database_url)

    def open(self, *, pool_size: int | None = None) -> Store:
        """Connect, migrate (with ``auto_migrate``) and publish this app's handlers and crons.

        ``pool_size``: at most this many connections (a worker's ``pool_size``);
        by default 10, and 20 more while they are all busy. It applies to the
        first ``open``: an app already connected with another size refuses it.

        What every process does before its first job; idempotent and safe from
        many threads. Deferring, a worker and a scheduler call it on first use;
        call it yourself to fail (or warm up) at start rather than at the first
        defer. If the database is unreachable it raises, and the next call
        tries again (a worker retries it with backoff until the database is back).
        """
        with self._lock:
            if self._store is not None:
                self._check_pool(self._store, pool_size)
                return self._store
            if self._connected is None:
                pool = {} if pool_size is None else {"pool_size": pool_size, "max_overflow": 0}
                self._connected = Store.connect(
                    self._database_url, table_prefix=self._table_prefix, schema=self._schema, clock=self._clock, **pool
                )
            store = self._connected
            self._check_pool(store, pool_size)
            if self.auto_migrate:
                store.ensure_schema()
            store.registry.publish_handlers(h.definition() for h in self._handlers.values())
            store.registry.publish_rate_limits(self._rate_limits)
            self._publish_crons(store)
            self._store = store
            return store

    @staticmethod
    def _check_pool(store: Store, pool_size: int | None) -> None:
        size = getattr(store.db.engine.pool, "size", None)
        if pool_size is not None and callable(size) and size() != pool_size:
            raise ConfigurationError(
                f"pool_size={pool_size}: the app's database is open already with a pool of {size()}; "
                "give pool_size to the first worker, before the app is used"
            )

    @property
    def store(self) -> Store:
        """The open store (``open()`` on first use)."""
        return self._provide_store()

    def _provide_store(self) -> Store:
        """``store``, as a callable: how this app's handlers and batches reach it (``StoreProvider``)."""
        return self._store if self._store is not None else self.open()

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` means this app's database is unreachable for now (worth retrying)."""
        return driver_for(self.database_url).is_transient(exc)

    def migrate(self) -> None:
        self.store.migrate()

    def close(self) -> None:
        with self._lock:
            if self._connected is not None:
                self._connected.close()
            self._connected = self._store = None

    # -- handlers ------------------------------------------------------------

    @overload
    def handler(self, func: Callable[P, R], /) -> Handler[P, R]: ...

    @overload
    def handler(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        concurrency: int | None = None,
        tenant_concurrency: int | None = None,
        max_attempts: int = 5,
        retry: RetryPolicy | float | Sequence[float] | None = None,
        timeout: float | None = None,
        rate_limit: RateLimit | str | None = None,
        rate_limit_by: str | None = None,
        rate_limits: Sequence[str] = (),
        concurrency_by: str | None = None,
        concurrency_per_key: int | None = None,
        sequence_by: str | None = None,
        sequence_on_failure: SequenceOnFailure = "hold",
        fair_by: str | None = None,
    ) -> Callable[[Callable[P, R]], Handler[P, R]]: ...

    def handler(
        self,
        func: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        concurrency: int | None = None,
        tenant_concurrency: int | None = None,
        max_attempts: int = 5,
        retry: RetryPolicy | float | Sequence[float] | None = None,
        timeout: float | None = None,
        rate_limit: RateLimit | str | None = None,
        rate_limit_by: str | None = None,
        rate_limits: Sequence[str] = (),
        concurrency_by: str | None = None,
        concurrency_per_key: int | None = None,
        sequence_by: str | None = None,
        sequence_on_failure: SequenceOnFailure = "hold",
        fair_by: str | None = None,
    ) -> Handler[P, R] | Callable[[Callable[P, R]], Handler[P, R]]:
        """Register a handler: ``@app.handler`` or ``@app.handler(queue=..., concurrency=3)``.

        ``concurrency`` is global: at most that many jobs of this handler run at
        once across every worker process and pod. ``tenant_concurrency``: at
        most that many of one tenant's jobs of it, so one tenant's backlog
        cannot starve the others (jobs without a tenant are not held by it).

        Flow control (README, "Flow control"): ``rate_limit`` (``"100/s"``,
        ``"10/min"``, ``"5/h"`` or a ``RateLimit``), per key with
        ``rate_limit_by``; ``rate_limits``, shared limits declared with
        ``rate_limit``; ``concurrency_by`` with ``concurrency_per_key``;
        ``sequence_by`` (one at a time per key, in defer order) and
        ``sequence_on_failure``; ``fair_by`` (round robin between keys). A
        ``*_by`` names ``"tenant"`` or a parameter of the handler; the key is
        read from each job's arguments when it is deferred. Every bad value is
        an ``InvalidOption`` here, before anything is registered.
        """
        # Checked before the decorator is applied: a bad option fails where it is written.
        if isinstance(rate_limits, str) or not isinstance(rate_limits, Iterable):
            raise InvalidOption("rate_limits", f'must be a list of names, e.g. ["stripe"], not {rate_limits!r}')
        check_name("queue", queue)  # a NUL or a newline in it breaks every defer on PostgreSQL
        flow = FlowControl(
            rate_limit=None if rate_limit is None else RateLimit.parse(rate_limit),
            rate_limit_by=rate_limit_by,
            rate_limits=tuple(rate_limits),
            concurrency_by=concurrency_by,
            concurrency_per_key=concurrency_per_key,
            sequence_by=sequence_by,
            sequence_on_failure=sequence_on_failure,
            fair_by=fair_by,
        )
        flow.check_shared(self._rate_limits)

        def register(f: Callable[P, R]) -> Handler[P, R]:
            handler_name = name or f.__name__
            if handler_name in self._handlers:
                raise ConfigurationError(f"a handler named {handler_name!r} is already registered in this app")
            h = Handler(
                f,
                store=self._provide_store,
                resource_types=self.resource_types,
                name=handler_name,
                queue=queue,
                priority=priority,
                concurrency=concurrency,
                tenant_concurrency=tenant_concurrency,
                max_attempts=max_attempts,
                retry=RetryPolicy.coerce(retry) or DEFAULT_RETRY,
                timeout=timeout,
                flow=flow,
            )
            self._handlers[handler_name] = h
            if self._store is not None:
                self._store.registry.publish_handlers([h.definition()])
            return h

        return register(func) if func is not None else register

    def rate_limit(self, name: str, rate: RateLimit | str) -> RateLimit:
        """Declare a rate limit shared by several handlers: ``app.rate_limit("stripe", "100/s")``.

        Handlers name it in ``rate_limits=["stripe"]``, and their starts count
        against it together, across every worker (a provider's limit that
        several kinds of job spend). Declare it before the handlers that name
        it; declaring it again with another rate is refused.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_LENGTH or has_control_characters(name):
            raise InvalidOption(
                "rate_limit",
                f'needs a name of 1 to {NAME_LENGTH} printable characters, e.g. "stripe", not {name!r}',
            )
        parsed = RateLimit.parse(rate)
        if self._rate_limits.get(name, parsed) != parsed:
            raise InvalidOption(
                "rate_limit", f"{name!r} is declared already as {self._rate_limits[name]}; declare it once"
            )
        self._rate_limits[name] = parsed
        if self._store is not None:
            self._store.registry.publish_rate_limits({name: parsed})
        return parsed

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        """The shared rate limits declared with ``rate_limit``."""
        return dict(self._rate_limits)

    @property
    def handlers(self) -> Mapping[str, Handler[Any, Any]]:
        return dict(self._handlers)

    def get_handler(self, name: str) -> Handler[Any, Any]:
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise UnknownHandler(f"no handler named {name!r} in this app (known: {known})") from None

    # -- crons ---------------------------------------------------------------

    @overload
    def cron(
        self,
        schedule: str,
        /,
        *,
        handler: Handler[Any, Any] | str,
        name: str | None = None,
        timezone: str = "UTC",
        args: Mapping[str, Any] | None = None,
        overlap: Overlap = "allow",
        starting_deadline: float | timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
        tenant: str | None = None,
    ) -> CronDefinition: ...

    @overload
    def cron(
        self,
        schedule: str,
        /,
        *,
        handler: None = None,
        name: str | None = None,
        timezone: str = "UTC",
        args: Mapping[str, Any] | None = None,
        overlap: Overlap = "allow",
        starting_deadline: float | timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
        tenant: str | None = None,
    ) -> Callable[[Callable[P, R]], Handler[P, R]]: ...

    def cron(
        self,
        schedule: str,
        /,
        *,
        handler: Handler[Any, Any] | str | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        args: Mapping[str, Any] | None = None,
        overlap: Overlap = "allow",
        starting_deadline: float | timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
        tenant: str | None = None,
    ) -> CronDefinition | Callable[[Callable[P, R]], Handler[P, R]]:
        """Run a handler on a schedule: each fire defers one ordinary job of it.

        ``@app.cron("*/15 * * * *", timezone="Europe/Tallinn")`` on a function
        registers it as a handler too (stack it on ``@app.handler(...)`` to set
        handler options); ``app.cron(schedule, handler=h)`` adds a schedule to an
        existing handler. The cron is named after the handler unless ``name`` is
        given (needed for a second cron of one handler). A bad schedule, time
        zone or argument raises ``ConfigurationError`` here, at import time,
        rather than in the scheduler later.

        Code crons are written to the database when a worker or scheduler of the
        app starts; a cron disabled there (``jobstead crons disable``) stays
        disabled. See ``jobstead.cron.schedule`` for the syntax and for DST.
        """
        if callable(schedule):
            raise ConfigurationError("@app.cron needs a schedule first: @app.cron('*/15 * * * *')")
        advice = CronSchedule.parse(schedule, timezone).seconds_field_advice()  # before registering anything
        if advice:
            warnings.warn(advice, SecondsFieldWarning, stacklevel=2)
        options: dict[str, Any] = {
            "name": name,
            "timezone": timezone,
            "args": args,
            "overlap": overlap,
            "starting_deadline": starting_deadline,
            "queue": queue,
            "priority": priority,
            "tenant": tenant,
        }
        if handler is not None:
            target = self.get_handler(handler) if isinstance(handler, str) else self._own(handler)
            return self._add_cron(target, schedule, **options)

        def register(f: Callable[P, R]) -> Handler[P, R]:
            if isinstance(f, Handler):
                h: Handler[P, R] = self._own(f)
                self._add_cron(h, schedule, **options)
                return h
            h = self.handler(f)
            try:
                self._add_cron(h, schedule, **options)
            except ConfigurationError:
                self._handlers.pop(h.name, None)  # leave nothing half-registered
                raise
            return h

        return register

    def _own(self, handler: Handler[P, R]) -> Handler[P, R]:
        if not isinstance(handler, Handler) or self._handlers.get(handler.name) is not handler:
            raise ConfigurationError(f"{handler!r} is not a handler of this app: register it with @app.handler first")
        return handler

    def _add_cron(
        self,
        handler: Handler[Any, Any],
        schedule: str,
        *,
        name: str | None,
        timezone: str,
        args: Mapping[str, Any] | None,
        overlap: Overlap,
        starting_deadline: float | timedelta | None,
        queue: str | None,
        priority: int | None,
        tenant: str | None,
    ) -> CronDefinition:
        cron_name = name or handler.name
        if cron_name in self._crons:
            raise ConfigurationError(f"a cron named {cron_name!r} is already registered: give this one a name=")
        if args is not None and not isinstance(args, Mapping):
            raise ConfigurationError(f"cron {cron_name}: args must be a dict of keyword arguments")
        try:
            bound = handler.signature.bind((), dict(args or {}))
        except InvalidArguments as exc:
            raise ConfigurationError(f"cron {cron_name}: {exc}") from None
        if isinstance(starting_deadline, timedelta):
            starting_deadline = starting_deadline.total_seconds()
        definition = CronDefinition(
            name=cron_name,
            schedule=schedule,
            handler=handler.name,
            timezone=timezone,
            args=bound,
            queue=queue,
            priority=priority,
            tenant=tenant,
            overlap=overlap,
            starting_deadline=starting_deadline,
            source="code",
        )
        definition.check()
        self._crons[cron_name] = definition
        if self._store is not None:
            self._publish_crons(self._store, [definition])
        return definition

    @property
    def crons(self) -> Mapping[str, CronDefinition]:
        """The crons this app defines in code (the database may hold others)."""
        return dict(self._crons)

    def publish_crons(self) -> None:
        """Write the app's code crons to the database (workers and schedulers do this on start)."""
        self._publish_crons(self.store)

    def _publish_crons(self, store: Store, definitions: Sequence[CronDefinition] | None = None) -> None:
        for other in store.crons.publish(self._crons.values() if definitions is None else definitions):
            logger.warning(
                "cron %r is defined in code, but the database's cron of that name comes from %s: keeping that one",
                other.name,
                other.source,
            )

    # -- pause / resume -------------------------------------------------------

    def pause(self, *, handler: str | None = None, queue: str | None = None, force: bool = False) -> bool:
        """Stop claims of one handler, one queue, or (with neither) everything; nothing is lost.

        A name no app published here and this app does not know is refused with
        ``UnknownHandler`` (a typo must not "succeed"), as the CLI refuses it;
        ``force=True`` pauses it anyway (a handler about to be deployed).
        """
        scope, name = _pause_scope(handler, queue)
        store = self.store
        if scope != "all" and not force:
            self._check_known(store, scope, name)
        return store.control.pause(scope, name)

    def resume(self, *, handler: str | None = None, queue: str | None = None) -> bool:
        return self.store.control.resume(*_pause_scope(handler, queue))

    def _check_known(self, store: Store, scope: PauseScope, name: str) -> None:
        from .store.presence import known_in_scope

        ours = self._handlers if scope == "handler" else {h.queue for h in self._handlers.values()}
        known = known_in_scope(store.db, "handler" if scope == "handler" else "queue", ours)
        if name not in known:
            listed = ", ".join(sorted(known)) or "none yet"
            message = (
                f"no {scope} named {name!r} is known to this app or its database (known: {listed}); "
                "force=True to pause it anyway"
            )
            raise UnknownHandler(message) if scope == "handler" else InvalidArguments(message)

    # -- hooks ---------------------------------------------------------------

    def on_failure(self, hook: Hook) -> Hook:
        """Decorator: called after every failed attempt (exception or timeout), sync or async."""
        self.failure_hooks.append(hook)
        return hook

    def on_dead(self, hook: Hook) -> Hook:
        """Decorator: called once a job has failed for good (``dead`` or ``failed``)."""
        self.dead_hooks.append(hook)
        return hook

    # -- resources -----------------------------------------------------------

    def resource(
        self,
        name: str,
        value: Any = None,
        *,
        factory: Callable[[], Any] | None = None,
        type: type | None = None,
    ) -> None:
        """Declare something the worker injects into handlers (a mailer, an HTTP client).

        Handlers ask for it with ``Annotated[T, Inject(name)]`` or, if ``type``
        is given, by annotating a parameter with that type. ``factory`` is called
        once per worker, on first use.
        """
        if (value is None) == (factory is None):
            raise ConfigurationError("give a resource either a value or a factory")
        if type in JSON_TYPES:
            raise ConfigurationError(
                f"resource {name!r}: {type.__name__} is a job-argument type; inject it with "
                f"Annotated[{type.__name__}, Inject({name!r})] instead of by type"
            )
        self._resources[name] = factory if factory is not None else (lambda: value)
        if type is not None:
            self.resource_types[type] = name

    @property
    def resources(self) -> Mapping[str, Callable[[], Any]]:
        return dict(self._resources)

    # -- jobs ----------------------------------------------------------------

    def get_job(self, job_id: int) -> Deferred[Any]:
        record = self.store.queries.get_job(job_id)
        if record is None:
            raise JobNotFound(f"no job with id {job_id}")
        return Deferred(self.store, record)

    # -- batches -------------------------------------------------------------

    def defer_batch(
        self,
        specs: Sequence[JobSpec],
        *,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        session: SyncTransaction | None = None,
        on_success: JobSpec | None = None,
        on_finish: JobSpec | None = None,
        on_failure: JobSpec | None = None,
    ) -> Batch:
        """Defer ``specs`` as one batch, with continuations that run exactly once.

        ``on_success``: when every job succeeded; ``on_finish``: when every job
        reached a final state; ``on_failure``: when the first job ends failed
        or dead. Batch, jobs and continuations are written in one transaction
        (``session``'s, if given); everything is checked before anything is.
        """
        jobs, continuations = self._batch_parts(specs, tenant, metadata, on_success, on_finish, on_failure)
        store = self.store
        conn = sync_connection(session)
        batch_id, _ = store.batches.create(
            jobs, tenant=tenant, metadata=metadata, continuations=continuations, connection=conn
        )
        return self._batch(store.batches.get(batch_id, connection=conn))

    async def defer_batch_async(
        self,
        specs: Sequence[JobSpec],
        *,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        session: SyncTransaction | AsyncTransaction | None = None,
        on_success: JobSpec | None = None,
        on_finish: JobSpec | None = None,
        on_failure: JobSpec | None = None,
    ) -> Batch:
        """``defer_batch`` for async code; ``session`` may be an ``AsyncSession``/``AsyncConnection``."""
        jobs, continuations = self._batch_parts(specs, tenant, metadata, on_success, on_finish, on_failure)
        store = await asyncio.to_thread(lambda: self.store)

        def create(conn: Connection | None) -> BatchRecord:
            batch_id, _ = store.batches.create(
                jobs, tenant=tenant, metadata=metadata, continuations=continuations, connection=conn
            )
            return store.batches.get(batch_id, connection=conn)

        return self._batch(await in_async_transaction(session, create))

    def get_batch(self, batch_id: int) -> Batch:
        """The batch with that id; ``BatchNotFound`` (a ``LookupError``) if there is none."""
        return self._batch(self.store.batches.get(batch_id))

    def batches(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Batch]:
        """Batches newest first, of one tenant and/or in one status."""
        if status is not None and status not in BATCH_STATUSES:
            raise InvalidArguments(f"status: {status!r} is not a batch status ({', '.join(BATCH_STATUSES)})")
        check_int("limit", limit, 1)  # as app.jobs: a database would refuse a negative one with a traceback
        check_int("offset", offset, 0)
        return [
            self._batch(r)
            for r in self.store.batches.list_batches(tenant=tenant, status=status, limit=limit, offset=offset)
        ]

    def batch_stats(self, *, tenant: str | None = None) -> BatchStats:
        """The jobs of every batch of ``tenant`` (None: batches without a tenant), counted by status."""
        return self.store.batches.tenant_stats(tenant)

    def _batch(self, record: BatchRecord) -> Batch:
        return Batch(self._provide_store, self._handlers, record)

    def _batch_parts(
        self,
        specs: Sequence[JobSpec],
        tenant: str | None,
        metadata: dict[str, Any] | None,
        on_success: JobSpec | None,
        on_finish: JobSpec | None,
        on_failure: JobSpec | None,
    ) -> tuple[list[NewJob], dict[str, NewJob]]:
        if isinstance(specs, JobSpec) or not isinstance(specs, Sequence | set | frozenset):
            raise InvalidArguments("defer_batch(): give a list of job specs (handler.job(...))")
        if tenant is not None:
            check_name("tenant", tenant)
        if metadata is not None:
            check_metadata(metadata)
        jobs = [check_spec(self._handlers, spec, "defer_batch()") for spec in specs]
        continuations = continuation_jobs(
            self._handlers, {"success": on_success, "finish": on_finish, "failure": on_failure}
        )
        return jobs, continuations

    # -- workflows -----------------------------------------------------------

    def workflow(
        self,
        name: str,
        *,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_success: JobSpec | None = None,
        on_failure: JobSpec | None = None,
        on_finish: JobSpec | None = None,
    ) -> WorkflowBuilder:
        """A workflow to build: ``add`` steps (jobs that wait for other steps), then ``defer``.

        Nothing is written until ``defer``. Continuations run exactly once:
        ``on_failure`` at the first step that fails or dies, ``on_finish`` when
        the workflow is final, ``on_success`` when every step succeeded.
        """
        return WorkflowBuilder(
            self._provide_store,
            self._handlers,
            name,
            tenant=tenant,
            metadata=metadata,
            on_success=on_success,
            on_failure=on_failure,
            on_finish=on_finish,
        )

    def get_workflow(self, workflow_id: int) -> WorkflowRun:
        """The workflow with that id; ``WorkflowNotFound`` (a ``LookupError``) if there is none."""
        return WorkflowRun(self._provide_store, self.store.workflows.get(workflow_id))

    def workflows(
        self,
        *,
        name: str | None = None,
        tenant: str | None = None,
        status: str | None = None,
        limit: int = 25,
        offset: int = 0,
    ) -> list[WorkflowRun]:
        """Workflows newest first, by name, tenant and/or status."""
        if status is not None and status not in WORKFLOW_STATUSES:
            raise InvalidArguments(f"status: {status!r} is not a workflow status ({', '.join(WORKFLOW_STATUSES)})")
        check_int("limit", limit, 1)
        check_int("offset", offset, 0)
        return [
            WorkflowRun(self._provide_store, r)
            for r in self.store.workflows.list(name=name, tenant=tenant, status=status, limit=limit, offset=offset)
        ]

    # -- workers -------------------------------------------------------------

    def worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        handlers: Sequence[str] | None = None,
        lease_seconds: float = 30.0,
        heartbeat_seconds: float | None = None,
        pool_size: int | None = None,
        poll_interval: float = 1.0,
        shutdown_grace: float = 30.0,
        listen: bool = True,
        install_signal_handlers: bool = True,
        metrics_port: int | None = None,
    ) -> Worker:
        """A worker of this app's handlers (``handlers``: only these); ``run()`` it, or await ``run_async()``.

        The keywords are ``WorkerOptions``' (``jobstead.worker.options``), checked
        here: a bad one raises ``ConfigurationError`` before anything starts.
        """
        from .worker import Worker, WorkerEnvironment, WorkerOptions

        self.check_resources(handlers)
        options = WorkerOptions(
            queues=queues,
            concurrency=concurrency,
            handlers=handlers,
            lease_seconds=lease_seconds,
            heartbeat_seconds=heartbeat_seconds,
            pool_size=pool_size,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
            listen=listen,
            install_signal_handlers=install_signal_handlers,
            metrics_port=metrics_port,
        )
        environment = WorkerEnvironment.of(self, options.handlers, pool_size=options.pool_size)
        return Worker(environment, options)

    def run_worker(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        *,
        handlers: Sequence[str] | None = None,
        lease_seconds: float = 30.0,
        heartbeat_seconds: float | None = None,
        pool_size: int | None = None,
        poll_interval: float = 1.0,
        shutdown_grace: float = 30.0,
        listen: bool = True,
        install_signal_handlers: bool = True,
        metrics_port: int | None = None,
    ) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (or ``Worker.stop``); ``worker()``'s keywords."""
        self.worker(
            queues=queues,
            concurrency=concurrency,
            handlers=handlers,
            lease_seconds=lease_seconds,
            heartbeat_seconds=heartbeat_seconds,
            pool_size=pool_size,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
            listen=listen,
            install_signal_handlers=install_signal_handlers,
            metrics_port=metrics_port,
        ).run()

    def scheduler(
        self,
        *,
        handlers: Sequence[str] | None = None,
        clock: Clock | None = None,
        interval: float = 1.0,
        install_signal_handlers: bool = True,
    ) -> Scheduler:
        """The cron scheduler of this app's handlers (``handlers``: only these); run as many as you like,
        each fire happens once. ``clock``: the scheduler's time (tests); ``interval``: at most this long
        between passes (to see new and changed crons)."""
        from .cron.scheduler import AppCrons, Scheduler

        names = list(handlers) if handlers is not None else list(self._handlers)
        for name in names:
            self.get_handler(name)  # raises UnknownHandler with the list of known ones
        if not names:
            raise ConfigurationError("the scheduler has no handlers to schedule: register some with @app.handler")
        scope = AppCrons(
            open_app=self._open_for_crons,
            current_store=self._provide_store,
            transient=self.is_transient,
            handlers=names,
            code_crons=self._crons.keys,
        )
        return Scheduler(scope, clock=clock, interval=interval, install_signal_handlers=install_signal_handlers)

    def _open_for_crons(self) -> Store:
        """Open (connect, migrate, publish) and publish the code crons again: a deleted one comes back."""
        store = self.open()
        self.publish_crons()
        return store

    # -- added for first users (issue 18) --------------------------------------

    def check_resources(self, handlers: Sequence[str] | None = None) -> None:
        """Refuse to start when a handler asks for a resource nobody declared.

        Resources may be declared after the handlers that use them, so this
        runs when a worker starts (``app.worker()``), before any job is claimed:
        otherwise every job of the handler would fail, attempt after attempt.
        """
        for name in sorted(handlers if handlers is not None else self._handlers):
            handler = self._handlers.get(name)
            if handler is None:
                continue  # the worker reports unknown names itself
            for param, resource in sorted(handler.signature.injected.items()):
                if resource != CONTEXT and resource not in self._resources:
                    declared = ", ".join(sorted(self._resources)) or "none"
                    raise ConfigurationError(
                        f"handler {name}: parameter {param!r} asks for resource {resource!r}, which is not "
                        f"declared (declared: {declared}); add app.resource({resource!r}, factory=...)"
                    )

    def open_store(self) -> Store:
        """A store on the app's database (its prefix and schema) that neither migrates nor publishes.

        For tools that only read or steer existing jobs (the CLI with ``--app``).
        """
        return Store.connect(
            self._database_url, table_prefix=self._table_prefix, schema=self._schema, clock=self._clock
        )

    def jobs(
        self,
        *,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        handler: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Deferred[Any]]:
        """Jobs matching every filter given, newest first (``status``: one or several)."""
        from .store.bulk import JobSelection, find_jobs

        try:
            statuses = statuses_of(status)
        except ValueError as exc:
            raise InvalidArguments(f"status: {exc}") from None
        check_int("limit", limit, 1)  # the CLI's --limit rule: -1 is not "all"
        check_int("offset", offset, 0)
        selection = JobSelection(statuses=statuses, handler=handler, queue=queue, tenant=tenant, since=since)
        store = self.store
        return [Deferred(store, r) for r in find_jobs(store.db, store.clock(), selection, limit=limit, offset=offset)]

    def stats(self, *, tenant: str | None = None) -> Stats:
        """Job counts per status, overall and per handler, queue and tenant (``jobstead stats``)."""
        return self.store.queries.stats(tenant=tenant)


def _pause_scope(handler: str | None, queue: str | None) -> tuple[PauseScope, str]:
    if handler is not None and queue is not None:
        raise ConfigurationError("pause or resume a handler or a queue, not both at once")
    if handler is not None:
        return "handler", handler
    if queue is not None:
        return "queue", queue
    return "all", ""
