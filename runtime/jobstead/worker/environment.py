"""What a worker needs from the app that runs it, handed over once, and nothing more.

The worker used to reach through ``App`` for its store, handlers, resources
and hooks, so any attribute of the app was a dependency. It now gets this
small, frozen bundle instead (procrastinate hands its worker only its job
manager for the same reason): a reader sees at a glance what a worker
depends on, and a worker can be given a store or hooks without an app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..hooks import Hook
from ..store import CronDefinition, HandlerDefinition, Store

if TYPE_CHECKING:
    from ..app import App
    from ..handler import Handler


@dataclass(frozen=True)
class WorkerEnvironment:
    #: Connect, migrate and publish (``App.open``): retried by the worker until the database answers.
    open_store: Callable[[], Store]
    #: Write the app's code crons again (a deleted one comes back when a worker starts).
    publish_crons: Callable[[], None]
    #: Whether an error means the database is unreachable for now.
    is_transient: Callable[[BaseException], bool]
    #: The handlers this worker runs, by name.
    handlers: Mapping[str, Handler[Any, Any]]
    #: Code crons of those handlers (recorded with the worker, for the operator to re-create).
    crons: Sequence[CronDefinition]
    resources: Mapping[str, Callable[[], Any]]
    failure_hooks: Sequence[Hook]
    dead_hooks: Sequence[Hook]
    retention: timedelta | None
    dead_retention: timedelta | None

    @classmethod
    def of(cls, app: App, handler_names: Sequence[str], *, pool_size: int | None = None) -> WorkerEnvironment:
        handlers = {name: app.get_handler(name) for name in handler_names}  # UnknownHandler lists known ones
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
