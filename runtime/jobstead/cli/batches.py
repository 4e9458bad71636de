"""``jobstead batches list|show|cancel``: batches, their statistics and their continuations."""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from ..errors import BatchNotFound
from ..store import Store
from ..store.records import BATCH_STATUSES
from .errors import UsageError
from .groups import Kind, show, stat_cells
from .loading import store_from_args
from .output import print_json, print_table

STAT_COLUMNS = ("total", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")
#: An unknown batch is bad input here (exit 2), as it has always been.
BATCH = Kind("batch", "batches", "job", BATCH_STATUSES, BatchNotFound, UsageError, cancels_once=True)


def add_commands(
    commands: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser], app_option: Any
) -> None:
    """Register ``batches list|show|cancel`` on the CLI's subcommands."""
    sub = BATCH.add_group(commands, common, parser_class, about="list, show and cancel batches")
    BATCH.add_list_command(sub, list_batches, common, app_option)
    about = "one batch: statistics, continuations and their job ids"
    BATCH.add_show_command(sub, show_batch, common, app_option, about=about)
    BATCH.add_cancel_command(sub, cancel_batch, common, app_option, waiting="its waiting jobs")


def list_batches(args: Namespace) -> int:
    store: Store = store_from_args(args)
    records = store.batches.list_batches(tenant=args.tenant, status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        print_json([r.to_json() for r in records])
        return 0
    print_table(
        ["id", "status", "tenant", *STAT_COLUMNS, "created"],
        [[r.id, r.status, r.tenant or "", *stat_cells(r, STAT_COLUMNS), r.created_at.isoformat()] for r in records],
        empty="no batches" + (f" of tenant {args.tenant}" if args.tenant else ""),
    )
    return 0


def show_batch(args: Namespace) -> int:
    record = BATCH.fetch(store_from_args(args).batches.get, args.id)
    show(record, args.json, f"batch {record.id}: {record.status}")
    return 0


def cancel_batch(args: Namespace) -> int:
    store = store_from_args(args)
    print(BATCH.cancel(store.batches.get, store.batches.cancel, args.id))
    return 0
