"""``jobstead migrate``, ``worker``, ``run``, ``pause`` and ``resume``."""

from __future__ import annotations

import logging
from argparse import Namespace

from ..errors import ConfigurationError, UnknownHandler
from ..store import Store
from ..store.control import PauseScope
from .errors import UsageError
from .loading import app_from_args, database_override, store_from_args


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def migrate(args: Namespace) -> int:
    store = app_from_args(args).store if args.app else Store.connect(database_override(args))
    store.migrate()
    url = store.db.engine.url.render_as_string(hide_password=True)
    print(f"schema is current ({url}, prefix {store.tables.prefix!r})")
    return 0


def worker(args: Namespace) -> int:
    app = app_from_args(args)
    try:
        w = app.worker(
            queues=args.queue,
            concurrency=args.concurrency,
            handlers=args.handler,
            lease_seconds=args.lease_seconds,
            shutdown_grace=args.shutdown_grace,
            poll_interval=args.poll_interval,
        )
    except (ConfigurationError, UnknownHandler) as exc:
        raise UsageError(str(exc)) from None
    w.run()
    return 0


def run(args: Namespace) -> int:
    """Worker and scheduler in one process: the embedded default for one machine."""
    return worker(args)


def pause(args: Namespace) -> int:
    store = store_from_args(args)
    scope, name = _scope(args)
    changed = store.control.pause(scope, name)
    print(f"{_what(scope, name)} {'paused' if changed else 'was already paused'}")
    return 0


def resume(args: Namespace) -> int:
    store = store_from_args(args)
    scope, name = _scope(args)
    changed = store.control.resume(scope, name)
    print(f"{_what(scope, name)} {'resumed' if changed else 'was not paused'}")
    return 0


def _scope(args: Namespace) -> tuple[PauseScope, str]:
    given: list[tuple[PauseScope, str]] = []
    if args.handler:
        given.append(("handler", args.handler))
    if args.queue:
        given.append(("queue", args.queue))
    if args.all:
        given.append(("all", ""))
    if len(given) != 1:
        raise UsageError("say what to pause or resume: exactly one of --handler H, --queue Q or --all")
    return given[0]


def _what(scope: str, name: str) -> str:
    return "everything" if scope == "all" else f"{scope} {name!r}"
