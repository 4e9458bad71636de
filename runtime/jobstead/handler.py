"""A registered handler, the per-call options ``configure`` adds to it, and ``JobSpec`` (an unsent job of it).

A handler knows nothing of the app that registered it beyond a way to reach
the app's store (``StoreProvider``): the app opens its database on first use,
so the handler asks for the store each time it defers instead of holding one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar, overload

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from .collector_pause import collector_paused
from .deferred import Deferred
from .errors import ConfigurationError, InvalidArguments, InvalidOption
from .flow import MAX_CONCURRENCY, NO_FLOW_CONTROL, FlowControl
from .options import AsyncTransaction, JobOptions, SyncTransaction, as_delay
from .retry import RetryPolicy
from .signature import HandlerSignature
from .store import HandlerDefinition, JobRecord, NewJob, Store
from .store.new_jobs import JobDefaults, new_jobs

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: The options of a plain ``defer``: none (frozen, so one instance serves every call; checking
#: a fresh one each time was a few microseconds of a single defer).
NO_OPTIONS = JobOptions()

#: The store of the app a handler belongs to, opened on first call (``App.store``).
StoreProvider: TypeAlias = Callable[[], Store]


@dataclass(frozen=True)
class JobSpec:
    """A job not yet sent: the handler that made it, its checked arguments and its resolved options."""

    made_by: Handler[Any, Any]
    job: NewJob

    @property
    def handler(self) -> str:
        return self.job.handler

    @property
    def args(self) -> dict[str, Any]:
        return self.job.args

    def __repr__(self) -> str:
        return f"JobSpec({self.job.handler}, {self.job.args!r})"


class Handler(Generic[P, R]):
    """A function registered with ``@app.handler``; call it directly, or ``defer`` it."""

    def __init__(
        self,
        func: Callable[P, R],
        *,
        store: StoreProvider,
        resource_types: Mapping[type, str],
        name: str,
        queue: str,
        priority: int,
        concurrency: int | None,
        max_attempts: int,
        tenant_concurrency: int | None = None,
        retry: RetryPolicy,
        timeout: float | None,
        flow: FlowControl = NO_FLOW_CONTROL,
    ) -> None:
        # Limits are flow controls: refused as the other ones are, naming the option with a form that works.
        for option, limit in (("concurrency", concurrency), ("tenant_concurrency", tenant_concurrency)):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
                raise InvalidOption(
                    option,
                    f"must be a whole number of at least 1 (or None for no limit), e.g. {option}=8, not {limit!r}",
                )
            if limit is not None and limit > MAX_CONCURRENCY:
                raise InvalidOption(
                    option,
                    f"must be at most {MAX_CONCURRENCY:,} (or None for no limit), e.g. {option}=8, not {limit:,}",
                )
        if max_attempts < 1:
            raise ConfigurationError(f"handler {name}: max_attempts must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"handler {name}: timeout must be positive")
        self.store = store
        self.func = func
        self.name = name
        self.queue = queue
        self.priority = priority
        self.concurrency = concurrency
        self.tenant_concurrency = tenant_concurrency
        self.max_attempts = max_attempts
        self.retry = retry
        self.timeout = timeout
        self.signature = HandlerSignature.of(func, name, resource_types)
        if tenant_concurrency is not None and flow.concurrency_by is not None:
            raise InvalidOption(
                "tenant_concurrency",
                'is the short form of concurrency_by="tenant", concurrency_per_key=N: give one or the other',
            )
        flow.check_keys(self.signature.names, self.signature.injected, accepts_any=self.signature.accepts_any)
        #: Rate limits, limits per key, sequences and fair sharing (``jobstead.flow``).
        self.flow = flow
        self.is_async = inspect.iscoroutinefunction(func)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

        self._defaults = JobDefaults(queue, priority, flow)

    def __repr__(self) -> str:
        return f"<Handler {self.name}>"

    def _job_defaults(self, store: Store) -> JobDefaults:
        """What its jobs get when the caller leaves it unset, with the flow control keys the handler
        row names (a JobHandler may set them, not the code): what claims read (``Registry.keys_of``).

        Built again only when those keys were read anew (every few seconds at most): a frozen
        init per defer was a visible part of a single defer's own time.
        """
        flow = store.registry.keys_of(self.name, self.flow)
        defaults = self._defaults
        if defaults.flow is not flow or defaults.queue != self.queue or defaults.priority != self.priority:
            defaults = self._defaults = JobDefaults(self.queue, self.priority, flow)
        return defaults

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def definition(self) -> HandlerDefinition:
        return HandlerDefinition(
            name=self.name,
            queue=self.queue,
            priority=self.priority,
            concurrency=self.concurrency,
            tenant_concurrency=self.tenant_concurrency,
            max_attempts=self.max_attempts,
            retry=self.retry,
            timeout=self.timeout,
            params=self.signature.params(),
            param_types=self.signature.param_types(),
            source="code",
            flow=self.flow,
        )

    def configure(
        self,
        *,
        session: SyncTransaction | AsyncTransaction | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        priority: int | None = None,
        queue: str | None = None,
        key: str | None = None,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | float | list[float] | None = None,
        timeout: float | None = None,
    ) -> ConfiguredHandler[P, R]:
        return ConfiguredHandler(
            self,
            JobOptions(
                session=session,
                run_at=run_at,
                delay=as_delay(delay),
                priority=priority,
                queue=queue,
                key=key,
                tenant=tenant,
                metadata=metadata,
                max_attempts=max_attempts,
                retry=_retry_option(retry),
                timeout=timeout,
            ),
        )

    def job(self, *args: Any, **kwargs: Any) -> JobSpec:
        """An unsent job of this handler (for ``app.defer_batch``), checked now like ``defer``."""
        return self.configure().job(*args, **kwargs)

    @overload
    def defer(self: Handler[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    @overload
    def defer(self: Handler[P, T], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    def defer(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return ConfiguredHandler(self, NO_OPTIONS).defer(*args, **kwargs)

    @overload
    async def defer_async(self: Handler[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    @overload
    async def defer_async(self: Handler[P, T], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    async def defer_async(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return await ConfiguredHandler(self, NO_OPTIONS).defer_async(*args, **kwargs)

    @overload
    def defer_many(
        self: Handler[P, Coroutine[Any, Any, T]], calls: Iterable[Mapping[str, Any]]
    ) -> list[Deferred[T]]: ...
    @overload
    def defer_many(self: Handler[P, T], calls: Iterable[Mapping[str, Any]]) -> list[Deferred[T]]: ...
    def defer_many(self, calls: Iterable[Mapping[str, Any]]) -> list[Deferred[Any]]:
        return ConfiguredHandler(self, NO_OPTIONS).defer_many(calls)

    @overload
    async def defer_many_async(
        self: Handler[P, Coroutine[Any, Any, T]], calls: Iterable[Mapping[str, Any]]
    ) -> list[Deferred[T]]: ...
    @overload
    async def defer_many_async(self: Handler[P, T], calls: Iterable[Mapping[str, Any]]) -> list[Deferred[T]]: ...
    async def defer_many_async(self, calls: Iterable[Mapping[str, Any]]) -> list[Deferred[Any]]:
        return await ConfiguredHandler(self, NO_OPTIONS).defer_many_async(calls)


class ConfiguredHandler(Generic[P, R]):
    """A handler plus per-call options: ``handler.configure(...).defer(...)``.

    ``defer`` is typed loosely on purpose: it takes the handler's parameters
    minus the injected ones (``Context``, resources), which a ParamSpec cannot
    express; ``HandlerSignature.bind`` checks the call at run time instead.
    """

    def __init__(self, handler: Handler[P, R], options: JobOptions) -> None:
        self.handler = handler
        self.options = options

    def configure(self, **changes: Any) -> ConfiguredHandler[P, R]:
        merged = self.handler.configure(**{**_public(self.options), **changes})
        return merged

    def _new_jobs(self, arguments: Iterable[dict[str, Any]]) -> list[NewJob]:
        """One job per set of arguments, all with these options over the handler's defaults (``new_jobs``)."""
        o, h = self.options, self.handler
        store = h.store()
        return new_jobs(
            h.name,
            arguments,
            h._job_defaults(store),
            clock=store.clock,  # read only for a delay
            queue=o.queue,
            priority=o.priority,
            run_at=o.run_at,
            delay=o.delay,
            key=o.key,
            tenant=o.tenant,
            metadata=o.metadata,
            max_attempts=o.max_attempts,
            retry=o.retry,
            timeout=o.timeout,
        )

    def _bind_each(self, calls: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return self.handler.signature.bind_each(calls, f"{self.handler.name}.defer_many()")

    def job(self, *args: Any, **kwargs: Any) -> JobSpec:
        """An unsent job with these options (for ``app.defer_batch``); arguments and options checked now."""
        if self.options.session is not None:
            raise InvalidArguments(f"{self.handler.name}.job(): give the session to defer_batch(), not configure()")
        (job,) = self._new_jobs([self.handler.signature.bind(args, kwargs)])
        return JobSpec(self.handler, job)

    @overload
    def defer(self: ConfiguredHandler[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    @overload
    def defer(self: ConfiguredHandler[P, T], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    def defer(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Store one job; in ``session``'s transaction when one was configured."""
        jobs = self._new_jobs([self.handler.signature.bind(args, kwargs)])
        return self._insert_sync(jobs)[0]

    @overload
    def defer_many(
        self: ConfiguredHandler[P, Coroutine[Any, Any, T]], calls: Iterable[Mapping[str, Any]]
    ) -> list[Deferred[T]]: ...
    @overload
    def defer_many(self: ConfiguredHandler[P, T], calls: Iterable[Mapping[str, Any]]) -> list[Deferred[T]]: ...
    def defer_many(self, calls: Iterable[Mapping[str, Any]]) -> list[Deferred[Any]]:
        """Store many jobs (each a mapping of keyword arguments) in one transaction."""
        listed = list(calls)
        with collector_paused(len(listed)):  # thousands of acyclic objects: nothing to collect
            return self._insert_sync(self._new_jobs(self._bind_each(listed)))

    @overload
    async def defer_async(
        self: ConfiguredHandler[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
    ) -> Deferred[T]: ...
    @overload
    async def defer_async(self: ConfiguredHandler[P, T], *args: Any, **kwargs: Any) -> Deferred[T]: ...
    async def defer_async(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        await self._keys_read()
        jobs = self._new_jobs([self.handler.signature.bind(args, kwargs)])
        return (await self._insert_async(jobs))[0]

    @overload
    async def defer_many_async(
        self: ConfiguredHandler[P, Coroutine[Any, Any, T]], calls: Iterable[Mapping[str, Any]]
    ) -> list[Deferred[T]]: ...
    @overload
    async def defer_many_async(
        self: ConfiguredHandler[P, T], calls: Iterable[Mapping[str, Any]]
    ) -> list[Deferred[T]]: ...
    async def defer_many_async(self, calls: Iterable[Mapping[str, Any]]) -> list[Deferred[Any]]:
        await self._keys_read()
        listed = list(calls)
        # Paused as defer_many's, but never across an await: a coroutine dropped there in a
        # reference cycle would wait for the collector to close it, and keep it off meanwhile.
        with collector_paused(len(listed)):
            jobs = self._new_jobs(self._bind_each(listed))
        return await self._insert_async(jobs)

    async def _keys_read(self) -> None:
        """Read the handler rows' keys on a thread when they are due (``Registry.keys_of``), so the
        event loop never waits on that read."""
        registry = self.handler.store().registry
        if registry.keys_stale():
            await asyncio.to_thread(registry.keys_of, self.handler.name, self.handler.flow)

    def _insert_sync(self, jobs: list[NewJob]) -> list[Deferred[Any]]:
        store = self.handler.store()
        session = self.options.session
        if isinstance(session, AsyncSession | AsyncConnection):
            raise InvalidArguments("an async session needs defer_async(), not defer()")
        connection = session.connection() if isinstance(session, Session) else session
        return [Deferred(store, r) for r in store.enqueue.insert(jobs, connection)]

    async def _insert_async(self, jobs: list[NewJob]) -> list[Deferred[Any]]:
        store = self.handler.store()
        session = self.options.session

        def insert(connection: Connection | None = None) -> list[JobRecord]:
            """Run to its end wherever it runs (a thread, a greenlet), so its pause always ends."""
            with collector_paused(len(jobs)):
                return store.enqueue.insert(jobs, connection)

        if session is None:
            records = await asyncio.to_thread(insert)
        elif isinstance(session, AsyncSession):
            records = await session.run_sync(lambda s: insert(s.connection()))
        elif isinstance(session, AsyncConnection):
            records = await session.run_sync(insert)
        else:  # a sync session from async code: still its transaction, just blocking
            records = insert(session.connection() if isinstance(session, Session) else session)
        with collector_paused(len(records)):
            return [Deferred(store, r) for r in records]


def _retry_option(retry: RetryPolicy | float | list[float] | None) -> RetryPolicy | None:
    try:
        return RetryPolicy.coerce(retry)
    except ConfigurationError as exc:
        raise InvalidOption("retry", str(exc).removeprefix("retry ")) from None


def _public(options: JobOptions) -> dict[str, Any]:
    return {k: v for k, v in vars(options).items() if v is not None}


__all__ = ["ConfiguredHandler", "Handler", "JobOptions", "JobSpec", "StoreProvider"]
