"""``jobstead crons list|add|enable|disable|remove``.

Crons added here are ``database`` crons: this command owns them and may remove
them. Code crons (``@app.cron``) and ``CronSchedule`` crons belong to the code
and to the operator; they can be disabled and enabled here, not removed.
"""

from __future__ import annotations

import sys
from argparse import Namespace

from ..errors import ConfigurationError, InvalidArguments, InvalidOption, InvalidState, UnknownHandler
from ..options import INT32, check_int, check_name
from ..signature import validate_stored
from ..store import CronDefinition, CronRecord, Store
from .errors import OperationFailed, UsageError
from .jobs import parse_args_json
from .loading import app_from_args, store_from_args
from .output import print_json, print_table

#: Where to go instead, for crons this command does not own.
OWNERS = {
    "code": "it is defined in code (@app.cron): remove it there, or disable it with `jobstead crons disable {name}`",
    "crd": "it comes from a CronSchedule resource: delete the resource (kubectl delete cronschedule {name}), "
    "or set spec.suspend",
}


def list_crons(args: Namespace) -> int:
    crons = store_from_args(args).crons.list_crons()
    if args.json:
        print_json([c.to_json() for c in crons])
        return 0
    print_table(
        ["name", "schedule", "timezone", "handler", "enabled", "source", "last_fire_at", "next_fire_at", "last_job"],
        [
            [
                c.name,
                c.schedule,
                c.timezone,
                c.handler,
                "yes" if c.enabled else "no",
                c.source,
                c.last_fire_at,
                c.next_fire_at,
                c.last_job_id,
            ]
            for c in crons
        ],
        empty="no crons: add one with @app.cron in code, a CronSchedule resource, or jobstead crons add",
    )
    return 0


def add_cron(args: Namespace) -> int:
    try:  # the same checks as a job's options: a cron's jobs carry them
        if args.priority is not None:
            check_int("priority", args.priority, INT32[0])
        check_name("queue", args.queue)
        check_name("tenant", args.tenant)
    except InvalidOption as exc:
        raise UsageError(f"--{exc.option} {exc.detail}") from None
    definition = CronDefinition(
        name=args.name,
        schedule=args.schedule,
        handler=args.handler,
        timezone=args.timezone,
        args=parse_args_json(args.args),
        queue=args.queue,
        priority=args.priority,
        tenant=args.tenant,
        overlap=args.overlap,
        starting_deadline=args.starting_deadline,
        source="database",
    )
    try:  # before touching the database: a bad schedule writes nothing, not even the schema
        schedule = definition.check()
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    store = _checked_handler(args, definition)
    try:
        cron = store.crons.add(definition)
    except InvalidState as exc:
        raise UsageError(str(exc)) from None
    print(f"cron {cron.name} added: {_summary(cron)}")
    advice = schedule.seconds_field_advice()
    if advice:  # said here, when the cron is defined; listing it later stays quiet
        print(f"jobstead: warning: {advice}", file=sys.stderr)
    return 0


def enable_cron(args: Namespace) -> int:
    return _set_enabled(args, True)


def disable_cron(args: Namespace) -> int:
    return _set_enabled(args, False)


def remove_cron(args: Namespace) -> int:
    store = store_from_args(args)
    cron = _existing(store, args.name)
    if cron.source != "database":
        raise OperationFailed(f"cron {cron.name} was not added here: {OWNERS[cron.source].format(name=cron.name)}")
    if not store.crons.remove(cron.name, source="database"):
        raise UsageError(f"no cron named {args.name!r}")
    print(f"cron {cron.name} removed (its jobs are kept)")
    return 0


def _set_enabled(args: Namespace, enabled: bool) -> int:
    store = store_from_args(args)
    cron = store.crons.set_enabled(args.name, enabled)
    if cron is None:
        raise UsageError(_not_found(store, args.name))
    print(f"cron {cron.name} {'enabled' if enabled else 'disabled'}: {_summary(cron)}")
    if cron.source == "crd":
        sys.stderr.write(
            f"note: cron {cron.name} comes from a CronSchedule resource; the operator sets it again from "
            "spec.suspend when the resource changes\n"
        )
    return 0


def _checked_handler(args: Namespace, definition: CronDefinition) -> Store:
    """The store, once the handler is known and takes these arguments."""
    try:
        if args.app:
            app = app_from_args(args)
            app.get_handler(definition.handler).signature.bind((), definition.args)
            return app.store
        store = store_from_args(args)
        handler = store.registry.handler(definition.handler)
        if handler is None:
            known = ", ".join(sorted(store.registry.handlers())) or "none registered yet"
            raise UnknownHandler(
                f"unknown handler {definition.handler!r} (known: {known}); "
                "start a worker of the app first, or pass --app"
            )
        validate_stored(handler.params, False, definition.args, definition.handler, handler.param_types)
        return store
    except (InvalidArguments, UnknownHandler) as exc:
        raise UsageError(str(exc)) from None


def _existing(store: Store, name: str) -> CronRecord:
    cron = store.crons.get(name)
    if cron is None:
        raise UsageError(_not_found(store, name))
    return cron


def _not_found(store: Store, name: str) -> str:
    known = ", ".join(c.name for c in store.crons.list_crons()) or "none"
    return f"no cron named {name!r} (known: {known})"


def _summary(cron: CronRecord) -> str:
    when = cron.next_fire_at.isoformat() if cron.next_fire_at else "never (disabled)"
    return f"{cron.schedule} ({cron.timezone}) -> {cron.handler}, next fire {when}"
