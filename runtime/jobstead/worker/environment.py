"""What a worker needs from the app that runs it, handed over once, and nothing more.

The worker used to reach through ``App`` for its store, handlers, resources
and hooks, so any attribute of the app was a dependency, and the app and the
worker imported each other. It now gets this small, frozen bundle instead
(procrastinate hands its worker only its job manager for the same reason): a
reader sees at a glance what a worker depends on, and a worker can be given a
store or hooks without an app. ``App.worker()`` builds it (``of``); the
worker never sees the app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from ..errors import ConfigurationError
from ..hooks import Hook
from ..signature import HandlerSignature
from ..store import CronDefinition, HandlerDefinition, Store


class RunnableHandler(Protocol):
    """What the worker uses of a handler (``jobstead.Handler`` is one): its code and its defaults."""

    @property
    def name(self) -> str: ...
    @property
    def func(self) -> Callable[..., Any]: ...
    @property
    def is_async(self) -> bool: ...
    @property
    def signature(self) -> HandlerSignature: ...
    def definition(self) -> HandlerDefinition: ...


class WorkerSource(Protocol):
    """What ``WorkerEnvironment.of`` takes from an app (``jobstead.App`` is one)."""

    @property
    def handlers(self) -> Mapping[str, RunnableHandler]: ...
    @property
    def crons(self) -> Mapping[str, CronDefinition]: ...
    @property
    def resources(self) -> Mapping[str, Callable[[], Any]]: ...
    @property
    def failure_hooks(self) -> Sequence[Hook]: ...
    @property
    def dead_hooks(self) -> Sequence[Hook]: ...
    @property
    def retention(self) -> timedelta | None: ...
    @property
    def dead_retention(self) -> timedelta | None: ...
    def get_handler(self, name: str) -> RunnableHandler: ...
    def open(self, *, pool_size: int | None = None) -> Store: ...
    def publish_crons(self) -> None: ...
    def is_transient(self, exc: BaseException) -> bool: ...


@dataclass(frozen=True)
class WorkerEnvironment:
    #: Connect, migrate and publish (``App.open``): retried by the worker until the database answers.
    open_store: Callable[[], Store]
    #: Write the app's code crons again (a deleted one comes back when a worker starts).
    publish_crons: Callable[[], None]
    #: Whether an error means the database is unreachable for now.
    is_transient: Callable[[BaseException], bool]
    #: The handlers this worker runs, by name.
    handlers: Mapping[str, RunnableHandler]
    #: Code crons of those handlers (recorded with the worker, for the operator to re-create).
    crons: Sequence[CronDefinition]
    resources: Mapping[str, Callable[[], Any]]
    failure_hooks: Sequence[Hook]
    dead_hooks: Sequence[Hook]
    retention: timedelta | None
    dead_retention: timedelta | None

    @classmethod
    def of(
        cls, app: WorkerSource, handler_names: Sequence[str] | None = None, *, pool_size: int | None = None
    ) -> WorkerEnvironment:
        """The environment of a worker of ``app`` running ``handler_names`` (``None``: every handler)."""
        names = list(handler_names) if handler_names is not None else list(app.handlers)
        if not names:
            raise ConfigurationError("the worker has no handlers to run: register some with @app.handler")
        handlers = {name: app.get_handler(name) for name in names}  # UnknownHandler lists known ones
        return cls(
            open_store=lambda: app.open(pool_size=pool_size),
            publish_crons=app.publish_crons,
            is_transient=app.is_transient,
            handlers=handlers,
            crons=[c for c in app.crons.values() if c.handler in handlers],
            resources=app.resources,
            failure_hooks=app.failure_hooks,
            dead_hooks=app.dead_hooks,
            retention=app.retention,
            dead_retention=app.dead_retention,
        )

    def definitions(self) -> list[HandlerDefinition]:
        return [h.definition() for h in self.handlers.values()]
