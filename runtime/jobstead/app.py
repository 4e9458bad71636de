"""The object an application creates: its handlers, its database, its workers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from sqlalchemy.engine import URL

from .config import resolve_database_url
from .deferred import Deferred
from .errors import ConfigurationError, JobNotFound, UnknownHandler
from .handler import Handler
from .hooks import Hook
from .retry import DEFAULT_RETRY, RetryPolicy
from .store import Store
from .store.control import PauseScope

if TYPE_CHECKING:
    from .worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

#: Types that job arguments use: injecting by one of these would swallow real arguments.
JSON_TYPES: frozenset[type] = frozenset({str, int, float, bool, list, dict, tuple, type(None)})


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
    ) -> None:
        self._database_url = database_url
        self._table_prefix = table_prefix
        self._schema = schema
        self.auto_migrate = auto_migrate
        self._handlers: dict[str, Handler[Any, Any]] = {}
        self._resources: dict[str, Callable[[], Any] | Any] = {}
        self.failure_hooks: list[Hook] = []
        self.dead_hooks: list[Hook] = []
        self.resource_types: dict[type, str] = {}
        self._store: Store | None = None
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

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    store = Store.connect(self._database_url, table_prefix=self._table_prefix, schema=self._schema)
                    if self.auto_migrate:
                        store.ensure_schema()
                    store.registry.publish_handlers(h.definition() for h in self._handlers.values())
                    self._store = store
        return self._store

    def migrate(self) -> None:
        self.store.migrate()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

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
        max_attempts: int = 5,
        retry: RetryPolicy | float | Sequence[float] | None = None,
        timeout: float | None = None,
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
        max_attempts: int = 5,
        retry: RetryPolicy | float | Sequence[float] | None = None,
        timeout: float | None = None,
    ) -> Handler[P, R] | Callable[[Callable[P, R]], Handler[P, R]]:
        """Register a handler: ``@app.handler`` or ``@app.handler(queue=..., concurrency=3)``.

        ``concurrency`` is global: at most that many jobs of this handler run at
        once across every worker process and pod.
        """

        def register(f: Callable[P, R]) -> Handler[P, R]:
            handler_name = name or f.__name__
            if handler_name in self._handlers:
                raise ConfigurationError(f"a handler named {handler_name!r} is already registered in this app")
            h = Handler(
                self,
                f,
                name=handler_name,
                queue=queue,
                priority=priority,
                concurrency=concurrency,
                max_attempts=max_attempts,
                retry=RetryPolicy.coerce(retry) or DEFAULT_RETRY,
                timeout=timeout,
            )
            self._handlers[handler_name] = h
            if self._store is not None:
                self._store.registry.publish_handlers([h.definition()])
            return h

        return register(func) if func is not None else register

    @property
    def handlers(self) -> Mapping[str, Handler[Any, Any]]:
        return dict(self._handlers)

    def get_handler(self, name: str) -> Handler[Any, Any]:
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise UnknownHandler(f"no handler named {name!r} in this app (known: {known})") from None

    # -- pause / resume -------------------------------------------------------

    def pause(self, *, handler: str | None = None, queue: str | None = None) -> bool:
        """Stop claims of one handler, one queue, or (with neither) everything; nothing is lost."""
        return self.store.control.pause(*_pause_scope(handler, queue))

    def resume(self, *, handler: str | None = None, queue: str | None = None) -> bool:
        return self.store.control.resume(*_pause_scope(handler, queue))

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

    def get_job(self, job_id: int) -> Deferred:
        record = self.store.queries.get_job(job_id)
        if record is None:
            raise JobNotFound(f"no job with id {job_id}")
        return Deferred(self.store, record)

    # -- workers -------------------------------------------------------------

    def worker(self, *, queues: Sequence[str] | None = None, concurrency: int = 10, **options: Any) -> Worker:
        from .worker import Worker

        return Worker(self, queues=queues, concurrency=concurrency, **options)

    def run_worker(self, queues: Sequence[str] | None = None, concurrency: int = 10, **options: Any) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (or ``Worker.stop``)."""
        self.worker(queues=queues, concurrency=concurrency, **options).run()


def _pause_scope(handler: str | None, queue: str | None) -> tuple[PauseScope, str]:
    if handler is not None and queue is not None:
        raise ConfigurationError("pause or resume a handler or a queue, not both at once")
    if handler is not None:
        return "handler", handler
    if queue is not None:
        return "queue", queue
    return "all", ""
