"""``jobstead workflows list|show|cancel|retry``: workflows, their steps and their continuations."""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from ..errors import WorkflowNotFound
from ..store import Store, WorkflowRecord
from ..store.records import WORKFLOW_STATUSES
from .errors import OperationFailed
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

STAT_COLUMNS = ("total", "blocked", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")


def add_commands(
    commands: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser], app_option: Any
) -> None:
    """Register ``workflows list|show|cancel|retry`` on the CLI's subcommands."""
    workflows = commands.add_parser("workflows", help="list, show, cancel and retry workflows", parents=[common])
    sub = workflows.add_subparsers(dest="workflows_command", required=True, parser_class=parser_class)

    p = sub.add_parser("list", help="workflows, newest first, with their statistics", parents=[common])
    p.set_defaults(func=list_workflows)
    p.add_argument("--name", help="only workflows of this name")
    add_list_options(p, "workflows", WORKFLOW_STATUSES)
    app_option(p, required=False)

    about = "one workflow: its steps, statistics and continuations"
    add_id_command(sub, "show", "workflow", show_workflow, common, app_option, help=about, json=True)
    text = (
        "cancel a workflow: its blocked and waiting steps at once, its running ones told to stop now; "
        "a workflow that is already final is left as it is"
    )
    about = "cancel a workflow as a whole"
    add_id_command(sub, "cancel", "workflow", cancel_workflow, common, app_option, help=about, description=text)
    text = (
        "retry a workflow: its failed, dead and cancelled steps get one more attempt, and the steps "
        "cancelled because of them wait for them again; continuations that fired stay fired"
    )
    about = "retry what did not succeed in a workflow"
    add_id_command(sub, "retry", "workflow", retry_workflow, common, app_option, help=about, description=text)


def list_workflows(args: Namespace) -> int:
    store: Store = store_from_args(args)
    records = store.workflows.list(
        name=args.name, tenant=args.tenant, status=args.status, limit=args.limit, offset=args.offset, steps=False
    )
    if args.json:
        print_json([{k: v for k, v in r.to_json().items() if k != "steps"} for r in records])
        return 0
    print_table(
        ["id", "name", "status", "tenant", *STAT_COLUMNS, "created"],
        [
            [r.id, r.name, r.status, r.tenant or "", *stat_cells(r, STAT_COLUMNS), r.created_at.isoformat()]
            for r in records
        ],
        empty="no workflows",
    )
    return 0


def show_workflow(args: Namespace) -> int:
    record = _get(store_from_args(args), args.id)
    if args.json:
        print_json(record.to_json())
        return 0
    print_summary(record, f"workflow {record.id} {record.name}: {record.status}")
    print_table(
        ["step", "job", "status", "after", "reason"],
        [[s.name, s.job_id, s.status.value, ",".join(s.after), s.reason or ""] for s in record.steps.values()],
        empty="no steps",
    )
    print_continuations(record)
    return 0


def cancel_workflow(args: Namespace) -> int:
    store = store_from_args(args)
    before = _get(store, args.id)
    if before.status != "active":
        raise OperationFailed(f"workflow {before.id} already {before.status}")
    stopping = store.workflows.cancel(args.id)
    after = _get(store, args.id)
    print(cancelled_line("workflow", "step", after, after.stats.cancelled, stopping))
    return 0


def retry_workflow(args: Namespace) -> int:
    store = store_from_args(args)
    _get(store, args.id)
    retried = store.workflows.retry(args.id)
    if not retried:
        raise OperationFailed(f"workflow {args.id}: no failed, dead or cancelled step to retry")
    print(f"workflow {args.id} retried: {len(retried)} step(s)")
    return 0


def _get(store: Store, workflow_id: int) -> WorkflowRecord:
    """An unknown workflow is one line and exit 1."""
    return fetch(store.workflows.get, workflow_id, WorkflowNotFound, "workflow", OperationFailed)
