"""Argument parsing and dispatch for the ``jobstead`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import NoReturn

from ..errors import ConfigurationError, JobsteadError
from . import crons, jobs, operator, processes
from . import dashboard as dashboard_command
from .errors import OperationFailed, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line on stderr (and exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _job_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"job ids are whole numbers, got {raw!r}") from None


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {raw!r}")
    return value


def _positive_seconds(raw: str) -> float:
    value = _seconds(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {raw!r}")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(raw: str) -> timedelta:
    """``90``, ``45s``, ``30m``, ``12h``, ``7d``, ``2w``."""
    text = raw.strip().lower()
    unit = DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90, 30m, 12h or 7d, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration like 90, 30m, 12h or 7d, got {raw!r}")
    return timedelta(seconds=value)


def build_parser() -> argparse.ArgumentParser:
    # Options every command accepts, before or after the command name.
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="database URL (default: $JOBSTEAD_DATABASE_URL, else the app's, else sqlite:///jobstead.db)",
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])

    parser = _Parser(prog="jobstead", description="Persistent background jobs.", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=handler)
        return p

    def app_option(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--app", required=required, default=None, help="the app, as module:attribute")

    p = command("migrate", processes.migrate, "create or upgrade the database schema")
    app_option(p, required=False)

    for name, func, text in (
        ("worker", processes.worker, "run a worker"),
        ("run", processes.run, "run a worker and the cron scheduler in one process"),
    ):
        p = command(name, func, text)
        app_option(p, required=True)
        p.add_argument(
            "--queue",
            action="append",
            help="serve this queue (repeat, in priority order; default all)",
        )
        p.add_argument("--concurrency", type=_positive_int, default=10, help="jobs run at once by this process")
        p.add_argument("--handler", action="append", help="run only this handler (repeatable)")
        p.add_argument("--lease-seconds", type=_seconds, default=30.0, help=argparse.SUPPRESS)
        p.add_argument(
            "--shutdown-grace",
            type=_seconds,
            default=30.0,
            help="seconds running jobs get on SIGTERM",
        )
        p.add_argument("--poll-interval", type=_seconds, default=1.0, help=argparse.SUPPRESS)
        p.add_argument("--scheduler-interval", type=_positive_seconds, default=1.0, help=argparse.SUPPRESS)

    p = command("scheduler", processes.scheduler, "run the cron scheduler (any number may run: each fire happens once)")
    app_option(p, required=True)
    p.add_argument("--handler", action="append", help="schedule only this handler's crons (repeatable)")
    p.add_argument(
        "--interval",
        dest="scheduler_interval",
        type=_positive_seconds,
        default=1.0,
        help="seconds between looks for new and changed crons",
    )

    crons_parser = commands.add_parser("crons", help="list, add, enable, disable and remove crons", parents=[common])
    cron_commands = crons_parser.add_subparsers(dest="crons_command", required=True, parser_class=_Parser)
    p = cron_commands.add_parser("list", help="every cron with its last and next fire time", parents=[common])
    p.set_defaults(func=crons.list_crons)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)
    p = cron_commands.add_parser("add", help="add a cron to the database (source: database)", parents=[common])
    p.set_defaults(func=crons.add_cron)
    p.add_argument("name", help="cron name (unique)")
    p.add_argument("--schedule", required=True, help="5 crontab fields, 6 with seconds last, or @hourly, @daily, ...")
    p.add_argument("--handler", required=True, help="handler whose job each fire defers")
    p.add_argument("--args", default="{}", help="keyword arguments of each job, as a JSON object")
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule (default UTC)")
    p.add_argument("--queue", help="queue of the jobs (default: the handler's)")
    p.add_argument("--priority", type=int, help="priority of the jobs (default: the handler's)")
    p.add_argument("--tenant")
    p.add_argument(
        "--overlap",
        choices=["allow", "skip", "replace"],
        default="allow",
        help="while the previous job is live: fire anyway, skip, or cancel it and fire",
    )
    p.add_argument(
        "--starting-deadline",
        type=_positive_seconds,
        help="skip a fire found more than this many seconds late (default: run the latest missed one once)",
    )
    app_option(p, required=False)
    for name, func, text in (
        ("enable", crons.enable_cron, "enable a cron (missed fire times are not caught up)"),
        ("disable", crons.disable_cron, "disable a cron; a code cron stays disabled across restarts"),
        ("remove", crons.remove_cron, "remove a cron added with `crons add` (its jobs are kept)"),
    ):
        p = cron_commands.add_parser(name, help=text, parents=[common])
        p.set_defaults(func=func)
        p.add_argument("name")
        app_option(p, required=False)

    p = command("defer", jobs.defer, "defer a job of a handler")
    p.add_argument("name", help="handler name")
    p.add_argument("--args", default="{}", help="keyword arguments as a JSON object")
    p.add_argument("--delay", type=_seconds, help="start no sooner than this many seconds from now")
    p.add_argument("--priority", type=int)
    p.add_argument("--queue")
    p.add_argument("--key", help="deduplication key: returns the live job holding it, if any")
    p.add_argument("--tenant")
    app_option(p, required=False)

    jobs_parser = commands.add_parser("jobs", help="list, inspect, retry and cancel jobs", parents=[common])
    job_commands = jobs_parser.add_subparsers(dest="jobs_command", required=True, parser_class=_Parser)
    p = job_commands.add_parser("list", help="list jobs, newest first", parents=[common])
    p.set_defaults(func=jobs.list_jobs)
    p.add_argument("--status")
    p.add_argument("--handler")
    p.add_argument("--queue")
    p.add_argument("--tenant")
    p.add_argument("--limit", type=_positive_int, default=100)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)
    p = job_commands.add_parser("purge", help="delete finished jobs older than an age", parents=[common])
    p.set_defaults(func=jobs.purge_jobs)
    p.add_argument("--older-than", type=_duration, help="succeeded and cancelled jobs finished this long ago (7d)")
    p.add_argument("--dead-older-than", type=_duration, help="dead and failed jobs finished this long ago (30d)")
    app_option(p, required=False)
    for name, func, text in (
        ("show", jobs.show_job, "one job with its arguments, result, error and attempts"),
        ("retry", jobs.retry_job, "queue a dead, failed or cancelled job again"),
        ("cancel", jobs.cancel_job, "cancel a waiting job, or ask a running one to stop"),
    ):
        p = job_commands.add_parser(name, help=text, parents=[common])
        p.set_defaults(func=func)
        p.add_argument("id", type=_job_id)
        app_option(p, required=False)
        if name == "show":
            p.add_argument("--json", action="store_true")

    p = command("stats", jobs.stats, "job counts per status, handler and queue")
    p.add_argument("--tenant")
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)

    p = command("operator", operator.operator, "run the Kubernetes operator (needs jobstead[operator])")
    p.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument("--standalone", action="store_true", help="no peering: act even if other operators run")
    p.add_argument("--peering", default="jobstead", help="kopf peering name shared by operator replicas")
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority, highest acts (default: below 0, older replicas first; any value >= 0 outranks them)",
    )
    p.add_argument(
        "--peering-lifetime",
        type=_positive_int,
        default=60,
        help="seconds a replica's keep-alive lasts: the next one takes over this long after a silent death",
    )
    p.add_argument(
        "--scale-down-window", type=_seconds, default=60.0, help="seconds of stable load before scaling down"
    )
    p.add_argument("--idle-cooldown", type=_seconds, default=120.0, help="seconds idle before scaling to zero")
    p.add_argument(
        "--liveness-endpoint",
        help="serve kopf's health check for probes, e.g. http://0.0.0.0:8080/healthz (default: none)",
    )
    p.add_argument("--webhook-host", help="serve the validating webhook; the API server calls https://HOST:PORT")
    p.add_argument("--webhook-service", help="serve the validating webhook behind this Service (NAMESPACE/NAME)")
    p.add_argument("--webhook-port", type=_positive_int, default=9443, help="port the webhook listens on")
    p.add_argument("--webhook-cert-dir", help="tls.crt, tls.key, ca.crt (e.g. from cert-manager); default self-signed")

    dashboard_command.register(commands, common)

    for name, func, text in (
        ("pause", processes.pause, "stop claims of a handler, a queue or everything"),
        ("resume", processes.resume, "undo a pause"),
    ):
        p = command(name, func, text)
        p.add_argument("--handler")
        p.add_argument("--queue")
        p.add_argument("--all", action="store_true")
        app_option(p, required=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    processes.configure_logging(getattr(args, "log_level", "info"))
    try:
        return int(args.func(args))
    except (UsageError, OperationFailed) as exc:
        sys.stderr.write(f"jobstead: error: {exc}\n")
        return exc.exit_code
    except ConfigurationError as exc:
        sys.stderr.write(f"jobstead: error: {exc}\n")
        return 2
    except JobsteadError as exc:
        sys.stderr.write(f"jobstead: error: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
