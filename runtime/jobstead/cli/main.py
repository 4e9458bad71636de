"""Argument parsing and dispatch for the ``jobstead`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError, OperationalError

from ..cron.schedule import SecondsFieldWarning
from ..errors import ConfigurationError, JobsteadError
from . import batches, crons, jobs, operator, processes, workflows
from . import dashboard as dashboard_command
from .database import failure_line
from .durations import duration, positive_seconds, seconds
from .errors import OperationFailed, UsageError
from .loading import target_url


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


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {raw!r}: give a whole number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {raw!r}: must be between 1 and 65535")
    return port


#: Ids are 64-bit on PostgreSQL and SQLite alike.
MAX_ID = 2**63 - 1


def _job_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"job ids are whole numbers, got {raw!r}") from None
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"job ids are between 1 and {MAX_ID}, got {raw!r}")
    return value


class _Version(argparse.Action):
    """``--version``, looked up only when asked: reading package metadata costs every other command time."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        try:
            found = version("jobstead")
        except PackageNotFoundError:  # a source tree that was never installed
            found = "unknown"
        print(f"jobstead {found}")
        raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    # Options every command accepts, before or after the command name.
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="database URL (default: $JOBSTEAD_DATABASE_URL, else the app's, else sqlite:///jobstead.db)",
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])
    common.add_argument(
        "--log-format",
        default=argparse.SUPPRESS,
        choices=["text", "json"],
        help="text (default) or json: one object per line (also $JOBSTEAD_LOG_FORMAT)",
    )

    parser = _Parser(prog="jobstead", description="Persistent background jobs.", parents=[common])
    parser.add_argument("--version", action=_Version)
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
        p.add_argument(
            "--lease-seconds",
            type=positive_seconds,
            default=30.0,
            help="how long a job stays this worker's without a renewal (30s); renewed every sixth of it, "
            "at most every 5s, on a thread of its own. Another worker takes the job over once it expires",
        )
        p.add_argument(
            "--pool-size",
            type=_positive_int,
            default=None,
            help="database connections this process keeps at most (default 10, plus 20 while busy); "
            "the LISTEN connection is one more",
        )
        p.add_argument(
            "--shutdown-grace",
            type=seconds,
            default=30.0,
            help="how long running jobs get to finish on SIGTERM (30s; 0: hand them back at once)",
        )
        p.add_argument(
            "--poll-interval",
            type=positive_seconds,
            default=1.0,
            help="how often to look for jobs when no wake-up comes (1s); SQLite and poolers rely on it",
        )
        p.add_argument("--scheduler-interval", type=positive_seconds, default=1.0, help=argparse.SUPPRESS)
        p.add_argument("--metrics-port", type=_port, default=None, help="serve Prometheus metrics on this port")

    p = command("scheduler", processes.scheduler, "run the cron scheduler (any number may run: each fire happens once)")
    app_option(p, required=True)
    p.add_argument("--handler", action="append", help="schedule only this handler's crons (repeatable)")
    p.add_argument(
        "--interval",
        dest="scheduler_interval",
        type=positive_seconds,
        default=1.0,
        help="time between looks for new and changed crons (1s)",
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
        type=positive_seconds,
        help="skip a fire found more than this late, e.g. 60s (default: run the latest missed one once)",
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
    p.add_argument("--delay", type=duration, help="start no sooner than this from now: 90, 30s, 5m, 2h, 1d")
    p.add_argument("--run-at", help="start no sooner than this time, ISO 8601 (2030-01-31T09:00+02:00; no zone: UTC)")
    p.add_argument("--priority", type=int, help="higher runs first within a queue (default: the handler's)")
    p.add_argument("--queue", help="default: the handler's")
    p.add_argument("--key", help="deduplication key: returns the live job holding it, if any")
    p.add_argument("--tenant")
    p.add_argument("--metadata", help="free-form JSON object stored with the job (ctx.metadata)")
    p.add_argument("--max-attempts", type=int, help="attempts before the job is dead (default: the handler's)")
    app_option(p, required=False)

    jobs_parser = commands.add_parser("jobs", help="list, inspect, retry and cancel jobs", parents=[common])
    job_commands = jobs_parser.add_subparsers(dest="jobs_command", required=True, parser_class=_Parser)

    def job_filters(p: argparse.ArgumentParser, status_help: str) -> None:
        p.add_argument("--status", help=status_help)
        p.add_argument("--handler")
        p.add_argument("--queue")
        p.add_argument("--tenant")
        p.add_argument("--since", type=duration, help="only jobs created this recently: 30m, 12h, 7d")

    text = "list jobs, newest first"
    p = job_commands.add_parser("list", help=text, description=text, parents=[common])
    p.set_defaults(func=jobs.list_jobs)
    job_filters(p, "one status or several: dead,failed")
    p.add_argument("--limit", type=_positive_int, default=100)
    p.add_argument("--offset", type=int, default=0, help="skip this many (the next page: --offset 100)")
    p.add_argument("--sort", choices=jobs.SORT_CHOICES, default="id", help="order by this column (default id)")
    p.add_argument("--asc", action="store_true", help="oldest (smallest) first")
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)
    text = (
        "delete finished jobs: by age (--older-than, --dead-older-than, what workers' retention does) "
        "or by filter (--status ... [--handler] [--queue] [--tenant] [--since])"
    )
    p = job_commands.add_parser("purge", help="delete finished jobs", description=text, parents=[common])
    p.set_defaults(func=jobs.purge_jobs_command)
    p.add_argument("--older-than", type=duration, help="jobs finished this long ago: 7d (succeeded, cancelled)")
    p.add_argument("--dead-older-than", type=duration, help="dead and failed jobs finished this long ago: 30d")
    job_filters(p, "purge finished jobs in these states: succeeded,cancelled,dead,failed")
    app_option(p, required=False)
    text = "one job with its arguments, result, error and attempts"
    p = job_commands.add_parser("show", help=text, description=text, parents=[common])
    p.set_defaults(func=jobs.show_job)
    p.add_argument("id", type=_job_id)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)
    for name, func, short, text, states in (
        (
            "retry",
            jobs.retry_job,
            "queue a dead, failed or cancelled job again",
            "Queue a dead, failed or cancelled job again, with one more attempt; or every job a filter "
            "selects (--status dead [--handler H] [--queue Q] [--tenant T] [--since 1d]). "
            "A job in another state is refused: exit 1.",
            jobs.RETRY_STATUSES,
        ),
        (
            "cancel",
            jobs.cancel_job,
            "cancel a waiting job, or ask a running one to stop",
            "Cancel a waiting job at once, or ask a running one to stop; or every job a filter selects "
            "(--status queued,retrying [--handler H] ...). A job already in a final state (succeeded, "
            "failed, dead, cancelled) is left as it is: prints 'job N already <status>' and exits 1.",
            jobs.CANCEL_STATUSES,
        ),
    ):
        p = job_commands.add_parser(name, help=short, description=text, parents=[common])
        p.set_defaults(func=func)
        p.add_argument("id", type=_job_id, nargs="?", help="the job; or select several with the options")
        job_filters(p, f"{name} every job in these states, several comma-separated; of {jobs.names_of(states)} only")
        app_option(p, required=False)

    batches.add_commands(commands, common, _Parser, app_option)
    workflows.add_commands(commands, common, _Parser, app_option)

    p = command("metrics", processes.metrics, "serve the database-wide Prometheus gauges (one process per database)")
    p.add_argument("--port", type=_port, required=True, help="serve /metrics on this port")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen on this address (default 127.0.0.1, like the dashboard; 0.0.0.0 to be scraped from elsewhere)",
    )
    p.add_argument("--tenant-labels", action="store_true", help="label batch gauges by tenant")
    app_option(p, required=False)

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
    p.add_argument("--scale-down-window", type=seconds, default=60.0, help="stable load before scaling down (60s)")
    p.add_argument("--idle-cooldown", type=seconds, default=120.0, help="idle time before scaling to zero (2m)")
    p.add_argument(
        "--liveness-endpoint",
        help="serve kopf's health check for probes, e.g. http://0.0.0.0:8080/healthz (default: none)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics (the operator's and its databases' gauges) on this port "
        "(default: $JOBSTEAD_OPERATOR_METRICS_PORT, else none)",
    )
    p.add_argument("--metrics-host", default="0.0.0.0", help="listen on this address for metrics (default all)")
    p.add_argument(
        "--worker-metrics-port",
        type=_port,
        default=None,
        help="worker pods serve metrics on this port unless their JobHandler's spec.metrics says otherwise",
    )
    p.add_argument("--webhook-host", help="serve the validating webhook; the API server calls https://HOST:PORT")
    p.add_argument("--webhook-service", help="serve the validating webhook behind this Service (NAMESPACE/NAME)")
    p.add_argument("--webhook-port", type=_positive_int, default=9443, help="port the webhook listens on")
    p.add_argument("--webhook-cert-dir", help="tls.crt, tls.key, ca.crt (e.g. from cert-manager); default self-signed")

    dashboard_command.register(commands, common)

    for name, func, text in (
        (
            "pause",
            processes.pause,
            "stop claims of a handler, a queue or everything (`jobstead pause list` shows what is paused)",
        ),
        ("resume", processes.resume, "undo a pause"),
    ):
        p = command(name, func, text)
        if name == "pause":
            p.add_argument("action", nargs="?", choices=["list"], help="list: show what is paused")
            p.add_argument("--json", action="store_true", help="with list: one JSON document")
        p.add_argument("--handler")
        p.add_argument("--queue")
        p.add_argument("--all", action="store_true")
        p.add_argument("--force", action="store_true", help="accept a handler or queue name no app has published here")
        app_option(p, required=False)
    return parser


def _one_line(exc: BaseException) -> str:
    """An error as the one line the CLI promises: line breaks in user input (names, JSON) become spaces."""
    return " ".join(str(exc).split())


# The commands that publish an app's code crons: the one place a cron's
# definition is reported on. Every other command that imports the app stays quiet.
_PUBLISHING_COMMANDS = frozenset({"worker", "run", "scheduler"})


def _plain_warnings(command: str) -> None:
    """Warnings as one line each, without Python's file path and source line."""

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        sys.stderr.write(f"jobstead: warning: {message}\n")

    warnings.showwarning = show
    if command not in _PUBLISHING_COMMANDS:
        warnings.filterwarnings("ignore", category=SecondsFieldWarning)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _plain_warnings(args.command)
    try:
        processes.configure_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", None))
    except UsageError as exc:
        print(f"jobstead: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below
        return code
    except BrokenPipeError:
        # `jobstead jobs list | head`: the reader is gone, which is fine. Point
        # stdout at /dev/null so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE
    except DBAPIError as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("jobstead.cli").exception("database error")
        sys.stderr.write(f"jobstead: error: {failure_line(exc, target_url(args))}\n")
        return 2 if isinstance(exc, OperationalError) else 1
    except (UsageError, OperationFailed) as exc:
        sys.stderr.write(f"jobstead: error: {_one_line(exc)}\n")
        return exc.exit_code
    except ConfigurationError as exc:
        sys.stderr.write(f"jobstead: error: {_one_line(exc)}\n")
        return 2
    except JobsteadError as exc:
        sys.stderr.write(f"jobstead: error: {_one_line(exc)}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
