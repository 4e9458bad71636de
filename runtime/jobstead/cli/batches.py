"""``jobstead batches list|show|cancel``: batches, their statistics and their continuations."""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from ..errors import BatchNotFound
from ..store import BatchRecord, Store
from ..store.records import BATCH_STATUSES
from .errors import OperationFailed, UsageError
from .groups import (
    add_id_command,
    add_list_options,
    cancelled_line,
    fetch,
    print_continuations,
    print_summary,
    stat_cells,
)
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
    add_list_options(p, "batches", BATCH_STATUSES)
    app_option(p, required=False)

    about = "one batch: statistics, continuations and their job ids"
    add_id_command(sub, "show", "batch", show_batch, common, app_option, help=about, json=True)
    text = (
        "cancel a batch: its waiting jobs at once, its running ones told to stop now; "
        "a batch that already completed is left as it is"
    )
    about = "cancel a batch as a whole"
    add_id_command(sub, "cancel", "batch", cancel_batch, common, app_option, help=about, description=text)


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
        [[r.id, r.status, r.tenant or "", *stat_cells(r, STAT_COLUMNS), r.created_at.isoformat()] for r in records],
        empty="no batches",
    )
    return 0


def show_batch(args: Namespace) -> int:
    record = _get(store_from_args(args), args.id)
    if args.json:
        print_json(record.to_json())
        return 0
    print_summary(record, f"batch {record.id}: {record.status}")
    print_continuations(record)
    return 0


def cancel_batch(args: Namespace) -> int:
    store = store_from_args(args)
    before = _get(store, args.id)
    if before.status != "active" or before.cancelled_at is not None:
        raise OperationFailed(f"batch {before.id} already {before.status}")
    stopping = store.batches.cancel(args.id)
    after = _get(store, args.id)
    print(cancelled_line("batch", "job", after, after.stats.cancelled, stopping))
    return 0


def _get(store: Store, batch_id: int) -> BatchRecord:
    """An unknown batch is bad input here (exit 2), as it has always been."""
    return fetch(store.batches.get, batch_id, BatchNotFound, "batch", UsageError)
