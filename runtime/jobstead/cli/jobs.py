"""``jobstead defer``, ``jobstead jobs ...`` and ``jobstead stats``."""

from __future__ import annotations

import json
from argparse import Namespace
from datetime import timedelta
from typing import Any

from ..errors import InvalidArguments, InvalidState, JobNotFound, UnknownHandler
from ..signature import validate_stored
from ..status import JobStatus
from ..store import JobFilter, NewJob, Store
from .errors import OperationFailed, UsageError
from .loading import app_from_args, store_from_args
from .output import print_json, print_table


def parse_args_json(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError('--args must be a JSON object of keyword arguments, e.g. \'{"to": "a@b.c"}\'')
    return value


def defer(args: Namespace) -> int:
    kwargs = parse_args_json(args.args)
    if args.delay is not None and args.delay < 0:
        raise UsageError("--delay cannot be negative")
    delay = timedelta(seconds=args.delay) if args.delay is not None else None
    try:
        if args.app:
            app = app_from_args(args)
            handler = app.get_handler(args.name)
            job = handler.configure(
                delay=delay,
                priority=args.priority,
                queue=args.queue,
                key=args.key,
                tenant=args.tenant,
            ).defer(**kwargs)
            print(job.id)
            return 0
        store = store_from_args(args)
        definition = store.registry.handler(args.name)
        if definition is None:
            known = ", ".join(sorted(store.registry.handlers())) or "none registered yet"
            raise UnknownHandler(f"unknown handler {args.name!r} (known: {known})")
        accepts_any = False  # the database keeps named parameters only; **kwargs handlers need --app
        validate_stored(definition.params, accepts_any, kwargs, args.name)
        record = store.enqueue.insert(
            [
                NewJob(
                    handler=args.name,
                    args=kwargs,
                    queue=args.queue or definition.queue,
                    priority=definition.priority if args.priority is None else args.priority,
                    run_at=store.clock() + delay if delay else None,
                    key=args.key,
                    tenant=args.tenant,
                )
            ]
        )[0]
    except (InvalidArguments, UnknownHandler) as exc:
        raise UsageError(str(exc)) from None
    print(record.id)
    return 0


def list_jobs(args: Namespace) -> int:
    store = store_from_args(args)
    status = _status(args.status)
    jobs = store.queries.list_jobs(
        JobFilter(
            status=status,
            handler=args.handler,
            queue=args.queue,
            tenant=args.tenant,
            limit=args.limit,
        )
    )
    if args.json:
        print_json([j.to_json() for j in jobs])
        return 0
    print_table(
        ["id", "handler", "status", "queue", "priority", "attempts", "run_at", "key", "tenant"],
        [
            [
                j.id,
                j.handler,
                j.status.value,
                j.queue,
                j.priority,
                j.attempts,
                j.run_at,
                j.key,
                j.tenant,
            ]
            for j in jobs
        ],
    )
    return 0


def show_job(args: Namespace) -> int:
    store = store_from_args(args)
    job = store.queries.get_job(args.id)
    if job is None:
        raise UsageError(f"no job with id {args.id}")
    document = job.to_json() | {
        "args": job.args,
        "result": job.result,
        "error": job.error.to_json() if job.error else None,
        "checkpoint": job.checkpoint,
        "attempts_log": [a.to_json() for a in store.queries.attempts(job.id)],
    }
    if args.json:
        print_json(document)
        return 0
    for key, value in document.items():
        if key in ("attempts_log", "error"):
            continue
        print(f"{key:>12}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    if job.error:
        print(f"{'error':>12}: {job.error.type}: {job.error.message}")
        if job.error.traceback:
            print(job.error.traceback.rstrip())
    for attempt in document["attempts_log"]:
        err = attempt["error"]
        print(
            f"  attempt {attempt['attempt']}: {attempt['outcome']} on {attempt['worker_id']} "
            f"{attempt['started_at']} -> {attempt['finished_at']}"
            + (f" ({err['type']}: {err['message']})" if err else "")
        )
    return 0


def retry_job(args: Namespace) -> int:
    store = store_from_args(args)
    try:
        job = store.control.retry(args.id)
    except JobNotFound as exc:
        raise UsageError(str(exc)) from None
    except InvalidState as exc:
        raise OperationFailed(str(exc)) from None
    print(f"job {job.id} queued again (attempt {job.attempts + 1} of {job.max_attempts})")
    return 0


def cancel_job(args: Namespace) -> int:
    store = store_from_args(args)
    try:
        job = store.control.cancel(args.id)
    except JobNotFound as exc:
        raise UsageError(str(exc)) from None
    if job.status is JobStatus.CANCELLED:
        print(f"job {job.id} cancelled")
    elif job.cancel_requested:
        print(f"job {job.id} is running: asked its worker to stop")
    else:
        raise OperationFailed(f"job {job.id} already ended {job.status.value}; nothing to cancel")
    return 0


def stats(args: Namespace) -> int:
    store: Store = store_from_args(args)
    result = store.queries.stats(tenant=args.tenant)
    if args.json:
        print_json(result.to_json() | {"workers": len(store.registry.workers()), "paused": store.control.paused()})
        return 0
    statuses = [s.value for s in JobStatus]
    print_table(
        ["handler", *statuses],
        [[h, *(c.get(s, 0) for s in statuses)] for h, c in result.by_handler.items()],
    )
    print()
    counts = ", ".join(f"{s} {n}" for s, n in result.by_status.items() if n)
    print(f"total: {counts or 'no jobs'}")
    return 0


def _status(raw: str | None) -> JobStatus | None:
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        raise UsageError(f"unknown status {raw!r}; one of: {', '.join(s.value for s in JobStatus)}") from None


def purge_jobs(args: Namespace) -> int:
    """Delete finished jobs now, as workers' retention does on its own schedule."""
    if args.older_than is None and args.dead_older_than is None:
        raise UsageError(
            "say what to purge: --older-than (succeeded, cancelled) and/or --dead-older-than (dead, failed)"
        )
    store = store_from_args(args)
    deleted = store.retention.prune(finished=args.older_than, dead=args.dead_older_than)
    print(f"purged {deleted} job(s)")
    return 0
