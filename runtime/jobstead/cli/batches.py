"""``jobstead batches list|show|cancel``: batches, their statistics and their continuations."""

from __future__ import annotations

import argparse
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from ..errors import BatchNotFound
from ..store import BatchRecord, Store
from ..store.records import BATCH_STATUSES
from .errors import OperationFailed, UsageError
from .loading import store_from_args
from .output import print_json, print_table

STAT_COLUMNS = ("total", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")


def add_commands(
    commands: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser], app_option: Any
) -> None:
    """Register ``batches list|show|cancel`` on the CLI's subcommands."""
    batches = commands.add_parser("batches", help="list, show and cancel batches", parents=[common])
    sub = batches.add_subparsers(dest="batches_command", required=True, parser_class=parser_class)

    p = sub.add_parser("list", help="batches, newest first, with their statistics", parents=[common])
    p.set_defaults(func=list_batches)
    p.add_argument("--tenant", help="only this tenant's batches")
    p.add_argument("--status", choices=BATCH_STATUSES, help="only batches in this state")
    p.add_argument("--limit", type=_int_at_least("--limit", 1), default=25)
    p.add_argument("--offset", type=_int_at_least("--offset", 0), default=0)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)

    p = sub.add_parser("show", help="one batch: statistics, continuations and their job ids", parents=[common])
    p.set_defaults(func=show_batch)
    p.add_argument("id", type=_batch_id)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)

    text = (
        "cancel a batch: its waiting jobs at once, its running ones told to stop now; "
        "a batch that already completed is left as it is"
    )
    p = sub.add_parser("cancel", help="cancel a batch as a whole", description=text, parents=[common])
    p.set_defaults(func=cancel_batch)
    p.add_argument("id", type=_batch_id)
    app_option(p, required=False)


def list_batches(args: Namespace) -> int:
    store: Store = store_from_args(args)
    records = store.batches.list_batches(tenant=args.tenant, status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        print_json([r.to_json() for r in records])
        return 0
    if not records:
        print("no batches" + (f" of tenant {args.tenant}" if args.tenant else ""))
        return 0
    print_table(
        ["id", "status", "tenant", *STAT_COLUMNS, "created"],
        [
            [r.id, r.status, r.tenant or "", *(r.stats.to_json()[c] for c in STAT_COLUMNS), r.created_at.isoformat()]
            for r in records
        ],
        empty="no batches",
    )
    return 0


def show_batch(args: Namespace) -> int:
    record = _get(store_from_args(args), args.id)
    if args.json:
        print_json(record.to_json())
        return 0
    print(f"batch {record.id}: {record.status}" + (f" (tenant {record.tenant})" if record.tenant else ""))
    print("stats: " + ", ".join(f"{k} {v}" for k, v in record.stats.to_json().items()))
    if record.metadata:
        print(f"metadata: {record.metadata}")
    fired = dict(record.continuations)
    for event in record.events:
        job = f"job {fired[event]}" if event in fired else "not fired yet"
        print(f"on_{event}: {job}")
    return 0


def cancel_batch(args: Namespace) -> int:
    store = store_from_args(args)
    before = _get(store, args.id)
    if before.status != "active" or before.cancelled_at is not None:
        raise OperationFailed(f"batch {before.id} already {before.status}")
    stopping = store.batches.cancel(args.id)
    after = _get(store, args.id)
    print(
        f"batch {after.id} cancelled: {after.stats.cancelled} job(s) cancelled"
        + (f", {len(stopping)} running job(s) told to stop" if stopping else "")
    )
    return 0


def _get(store: Store, batch_id: int) -> BatchRecord:
    try:
        return store.batches.get(batch_id)
    except BatchNotFound:
        raise UsageError(f"no batch {batch_id}") from None


def _batch_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch id {raw!r}: give a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch id {raw!r}: ids start at 1")
    return value


def _int_at_least(option: str, low: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``low``, the error naming ``option``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {raw!r}: give a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{option} {raw!r}: must be at least {low}")
        return value

    return parse
