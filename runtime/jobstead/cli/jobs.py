"""``jobstead defer``, ``jobstead jobs ...`` and ``jobstead stats``."""

from __future__ import annotations

import json
from argparse import Namespace
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..errors import InvalidArguments, InvalidOption, InvalidState, JobNotFound, UnknownHandler
from ..options import JobOptions
from ..signature import validate_stored
from ..status import FINAL_STATUSES, AttemptOutcome, JobStatus, statuses_of
from ..store import AttemptRecord, EffectiveSettings, Store
from ..store.bulk import SORT_KEYS, JobSelection, cancel_jobs, find_jobs, purge_jobs, retry_jobs
from ..store.new_jobs import JobDefaults, new_jobs
from ..store.records import LimitUse
from ..transitions import ASK_TO_STOP, CANCEL, RETRYABLE
from .errors import OperationFailed, UsageError
from .loading import app_from_args, store_from_args
from .output import print_json, print_table

#: ``--sort`` values: the short names people type, and the column each means.
SORT_COLUMNS = {"id": "id", "created": "created_at", "run_at": "run_at", "started": "started_at"}
SORT_COLUMNS |= {"finished": "finished_at", "priority": "priority", "attempts": "attempts"}
SORT_CHOICES = tuple(SORT_COLUMNS)
LIST_COLUMNS = ["id", "handler", "status", "queue", "priority", "attempts", "created", "run_at", "finished"]
LIST_COLUMNS += ["duration", "key", "tenant"]
assert set(SORT_COLUMNS.values()) <= set(SORT_KEYS)


def parse_json_object(raw: str, option: str, example: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object, e.g. '{example}'")
    return value


def parse_args_json(raw: str) -> dict[str, Any]:
    return parse_json_object(raw, "--args", '{"to": "a@b.c"}')


def _run_at(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"--run-at: expected an ISO 8601 time like 2030-01-31T09:00:00+02:00, got {raw!r}") from None


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _options(args: Namespace) -> JobOptions:
    """The per-call options, checked exactly as ``configure()`` checks them, errors naming the flag."""
    metadata = None
    if args.metadata is not None:
        metadata = parse_json_object(args.metadata, "--metadata", '{"source": "cli"}')
    try:
        return JobOptions(
            run_at=_run_at(args.run_at),
            delay=args.delay,
            priority=args.priority,
            queue=args.queue,
            key=args.key,
            tenant=args.tenant,
            metadata=metadata,
            max_attempts=args.max_attempts,
        )
    except InvalidOption as exc:
        raise UsageError(f"{_flag(exc.option)} {exc.detail}") from None


def defer(args: Namespace) -> int:
    kwargs = parse_args_json(args.args)
    options = _options(args)
    try:
        if args.app:
            app = app_from_args(args)
            handler = app.get_handler(args.name)
            job = handler.configure(**{k: v for k, v in vars(options).items() if v is not None}).defer(**kwargs)
            print(job.id)
            return 0
        store = store_from_args(args)
        definition = store.registry.handler(args.name)
        if definition is None:
            known = ", ".join(sorted(store.registry.handlers())) or "none registered yet"
            raise UnknownHandler(f"unknown handler {args.name!r} (known: {known})")
        accepts_any = False  # the database keeps named parameters only; **kwargs handlers need --app
        validate_stored(definition.params, accepts_any, kwargs, args.name, definition.param_types)
        jobs = new_jobs(
            args.name,
            [kwargs],
            JobDefaults(definition.queue, definition.priority, definition.flow),
            clock=store.clock,
            queue=options.queue,
            priority=options.priority,
            run_at=options.run_at,
            delay=options.delay,
            key=options.key,
            tenant=options.tenant,
            metadata=options.metadata,
            max_attempts=options.max_attempts,
        )
        record = store.enqueue.insert(jobs)[0]
    except InvalidOption as exc:
        raise UsageError(f"{_flag(exc.option)} {exc.detail}") from None
    except (InvalidArguments, UnknownHandler) as exc:
        raise UsageError(str(exc)) from None
    print(record.id)
    return 0


def _statuses(args: Namespace) -> tuple[JobStatus, ...]:
    try:
        return statuses_of(args.status)
    except ValueError as exc:
        raise UsageError(f"--status: {exc}") from None


#: The statuses each bulk command acts on, in the order its messages name them.
RETRY_STATUSES: tuple[JobStatus, ...] = RETRYABLE
CANCEL_STATUSES: tuple[JobStatus, ...] = tuple(
    s for s in JobStatus if s in CANCEL.applies_to or s in ASK_TO_STOP.applies_to
)
PURGE_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s in FINAL_STATUSES)


def names_of(statuses: Sequence[JobStatus], last: str = "or") -> str:
    """``dead, failed or cancelled``: statuses as a message names them."""
    *head, tail = [s.value for s in statuses]
    return f"{', '.join(head)} {last} {tail}" if head else tail


def _statuses_that(
    args: Namespace, allowed: Sequence[JobStatus], verb: str, kind: str | None = None
) -> tuple[JobStatus, ...]:
    """``--status``, refused whole (one line, exit 2) if it names a status the command never acts on:
    ``jobs retry --status succeeded`` printed "retried 0 job(s)", as if no job had matched. ``kind``:
    how the message names the allowed statuses (default: each of them)."""
    given = _statuses(args)
    others = [s.value for s in given if s not in allowed]
    if others:
        raise UsageError(f"--status: only {kind or names_of(allowed)} jobs can be {verb}, not {', '.join(others)}")
    return given


def _selection(args: Namespace, store: Store) -> JobSelection:
    since = store.clock() - args.since if args.since is not None else None
    return JobSelection(
        statuses=_statuses(args), handler=args.handler, queue=args.queue, tenant=args.tenant, since=since
    )


def _nothing_matches(args: Namespace) -> str:
    filters = [f"--{f} {getattr(args, f)}" for f in ("status", "handler", "queue", "tenant") if getattr(args, f)]
    if args.since is not None:
        filters.append(f"--since {args.since}")
    if args.offset:
        filters.append(f"--offset {args.offset}")
    return f"no jobs match {' '.join(filters)}" if filters else "no jobs match: the table holds none"


def list_jobs(args: Namespace) -> int:
    if args.offset < 0:
        raise UsageError(f"--offset cannot be negative, got {args.offset}")
    _statuses(args)  # a bad --status is a usage error before any connection
    store = store_from_args(args)
    jobs = find_jobs(
        store.db,
        store.clock(),
        _selection(args, store),
        limit=args.limit,
        offset=args.offset,
        sort=SORT_COLUMNS[args.sort],  # type: ignore[arg-type]  # checked by the assert above
        descending=not args.asc,
    )
    if args.json:
        print_json([j.to_json() for j in jobs])
        return 0
    print_table(
        LIST_COLUMNS,
        [
            [
                j.id,
                j.handler,
                j.status.value,
                j.queue,
                j.priority,
                j.attempts,
                j.created_at,
                j.run_at,
                j.finished_at,
                _duration(j.started_at, j.finished_at),
                j.key,
                j.tenant,
            ]
            for j in jobs
        ],
        empty=_nothing_matches(args),
    )
    return 0


def _duration(started: datetime | None, finished: datetime | None) -> str | None:
    if started is None or finished is None:
        return None
    seconds = (finished - started).total_seconds()
    if seconds < 60:
        return f"{seconds:.2f}s"
    return str(timedelta(seconds=round(seconds)))


def show_job(args: Namespace) -> int:
    store = store_from_args(args)
    job = store.queries.get_job(args.id)
    if job is None:
        raise UsageError(f"no job with id {args.id}")
    attempts = store.queries.attempts(job.id)
    handler = store.registry.handler(job.handler)
    limit = EffectiveSettings.max_attempts_of(job.max_attempts, handler.max_attempts if handler else None)
    document = job.to_json() | {
        "max_attempts": limit,  # what the text's "attempts: N of M" says, not null for the handler's default
        "args": job.args,
        "result": job.result,
        "error": job.error.to_json() if job.error else None,
        "checkpoint": job.checkpoint,
        "attempts_log": [a.to_json() for a in attempts],
        "held_by": store.claims.held_by(job.id),
    }
    if args.json:
        print_json(document)
        return 0
    released = sum(1 for a in attempts if a.outcome is AttemptOutcome.RELEASED)
    shown = document | {
        "attempts": f"{job.attempts} of {limit}"
        + (f" (+{released} run(s) handed back on shutdown, not counted)" if released else ""),
        "worker": job.lease_owner or _last_worker(attempts),
    }
    for key, value in shown.items():
        if key in ("attempts_log", "error", "max_attempts", "held_by"):
            continue
        print(f"{key:>12}: {_shown(value)}")
    if document["held_by"] is not None:
        print(f"{'sequence':>12}: held by job {document['held_by']}")
    if job.error:
        print(f"{'error':>12}: {job.error.type}: {job.error.message}")
        if job.error.traceback:
            print(job.error.traceback.rstrip())
    for attempt in attempts:
        err = attempt.error
        number = (
            "run handed back on shutdown (not counted)"
            if attempt.outcome is AttemptOutcome.RELEASED
            else f"attempt {attempt.attempt}"
        )
        print(
            f"  {number}: {attempt.outcome.value} on {attempt.worker_id or '-'} "
            f"{_shown(attempt.started_at)} -> {_shown(attempt.finished_at)}"
            + (f" ({err.type}: {err.message})" if err else "")
        )
    return 0


def _last_worker(attempts: list[AttemptRecord]) -> str | None:
    """The worker of the latest attempt: who ran a job that no worker holds now."""
    named = [a.worker_id for a in attempts if a.worker_id]
    return f"{named[-1]} (last attempt)" if named else None


def _shown(value: Any) -> str:
    """A value as a person reads it: JSON for structures, '-' for nothing (never Python's None)."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _one_or_many(args: Namespace, verb: str) -> bool:
    """True for a bulk request (filters), False for one job by id; refuses a mix or neither."""
    filters = [f for f in ("status", "handler", "queue", "tenant", "since") if getattr(args, f) is not None]
    if args.id is not None and filters:
        raise UsageError(f"give a job id or filters (--{filters[0]} ...), not both")
    if args.id is None and args.status is None:
        raise UsageError(f"say which jobs to {verb}: a job id, or --status S [--handler H] [--queue Q] ...")
    return args.id is None


def retry_job(args: Namespace) -> int:
    bulk = _one_or_many(args, "retry")
    _statuses_that(args, RETRY_STATUSES, "retried")
    store = store_from_args(args)
    if bulk:
        count = retry_jobs(store.db, store.clock, _selection(args, store), batches=store.batches)
        print(f"retried {count} job(s)")
        return 0
    try:
        job = store.control.retry(args.id)
    except JobNotFound as exc:
        raise UsageError(str(exc)) from None
    except InvalidState as exc:
        raise OperationFailed(str(exc)) from None
    handler = store.registry.handler(job.handler)
    limit = EffectiveSettings.max_attempts_of(job.max_attempts, handler.max_attempts if handler else None)
    print(f"job {job.id} queued again (attempt {job.attempts + 1} of {limit})")
    return 0


def cancel_job(args: Namespace) -> int:
    bulk = _one_or_many(args, "cancel")
    _statuses_that(args, CANCEL_STATUSES, "cancelled")
    store = store_from_args(args)
    if bulk:
        counts = cancel_jobs(store.db, store.clock, _selection(args, store), batches=store.batches)
        print(f"cancelled {counts.cancelled} job(s); asked {counts.asked_to_stop} running job(s) to stop")
        return 0
    before = store.queries.get_job(args.id)
    if before is None:
        raise UsageError(f"no job with id {args.id}")
    if before.status.is_final:  # the rule: a final state is never changed, and saying so is a failure
        raise OperationFailed(f"job {before.id} already {before.status.value}")
    try:
        job = store.control.cancel(args.id)
    except JobNotFound as exc:
        raise UsageError(str(exc)) from None
    if job.status is JobStatus.CANCELLED:
        print(f"job {job.id} cancelled")
    elif job.cancel_requested:
        print(f"job {job.id} is running: asked its worker to stop")
    else:  # it finished between our look and the cancel
        raise OperationFailed(f"job {job.id} already {job.status.value}")
    return 0


def stats(args: Namespace) -> int:
    store: Store = store_from_args(args)
    result = store.queries.stats(tenant=args.tenant)
    workers = store.registry.workers()
    paused = store.control.paused()
    batch_stats = store.batches.tenant_stats(args.tenant) if args.tenant is not None else None
    limits = store.registry.limit_use()
    if args.json:
        extra: dict[str, Any] = {"workers": len(workers), "paused": paused, "limits": [u.to_json() for u in limits]}
        if batch_stats is not None:
            extra["batches"] = batch_stats.to_json()
        print_json(result.to_json() | extra)
        return 0
    statuses = [s.value for s in JobStatus]
    for title, groups in (("handler", result.by_handler), ("queue", result.by_queue), ("tenant", result.by_tenant)):
        if not groups:
            continue
        print_table(
            [title, *statuses],
            [[name, *(c.get(s, 0) for s in statuses)] for name, c in groups.items()],
            empty=f"no {title}s",
        )
        print()
    if limits:
        print_table(
            ["limit", "handler", "in use", "of"],
            [[_limit_name(u), u.handler or "(shared)", u.in_use, u.of] for u in limits],
            empty="no limits",
        )
        print()
    counts = ", ".join(f"{s} {n}" for s, n in result.by_status.items() if n)
    print(f"total: {counts or 'no jobs'}")
    running = sum(int(w.get("running") or 0) for w in workers)
    print(f"workers: {len(workers)}" + (f" ({running} job(s) running)" if workers else ""))
    print("paused: " + (", ".join(_pause_name(scope, name) for scope, name in paused) or "nothing"))
    if batch_stats is not None:
        print(f"batch jobs of tenant {args.tenant}: " + ", ".join(f"{k} {v}" for k, v in batch_stats.to_json().items()))
    return 0


def _limit_name(use: LimitUse) -> str:
    """A limit as the stats table names it: its period, and for a limit per key its key and the keys at it."""
    name = use.limit if use.per is None else f"{use.limit} (per {use.per:g} s)"
    if use.by is not None:
        name += f" by {use.by}: busiest key shown, {use.at_limit or 0} at the limit"
    return name


def _pause_name(scope: str, name: str) -> str:
    return "everything" if scope == "all" else f"{scope} {name}"


def purge_jobs_command(args: Namespace) -> int:
    """Delete finished jobs now: by age as workers' retention does, or the ones a filter selects."""
    by_filter = any(getattr(args, f) is not None for f in ("status", "handler", "queue", "tenant", "since"))
    if not by_filter and args.older_than is None and args.dead_older_than is None:
        raise UsageError(
            "say what to purge: --older-than (succeeded, cancelled) and/or --dead-older-than (dead, failed), "
            "or --status S [--handler H] [--queue Q] [--tenant T] [--since D]"
        )
    if by_filter:
        if args.dead_older_than is not None:
            raise UsageError("with --status, say the age with --older-than (it applies to every status given)")
        _statuses_that(args, PURGE_STATUSES, "purged", kind="finished")
        store = store_from_args(args)
        selection = _selection(args, store)
        before = store.clock() - args.older_than if args.older_than is not None else None
        deleted = purge_jobs(store.db, store.clock, selection, before)
    else:
        store = store_from_args(args)
        deleted = store.retention.prune(finished=args.older_than, dead=args.dead_older_than)
    print(f"purged {deleted} job(s)")
    return 0
