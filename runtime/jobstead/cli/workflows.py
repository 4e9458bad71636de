"""``jobstead workflows list|show|cancel|retry``: workflows, their steps and their continuations."""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from ..errors import WorkflowNotFound
from ..store import Store, WorkflowRecord
from ..store.records import WORKFLOW_STATUSES
from .errors import OperationFailed
from .groups import Kind, add_id_command, show, stat_cells
from .loading import store_from_args
from .output import print_json, print_table

STAT_COLUMNS = ("total", "blocked", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")
WORKFLOW = Kind("workflow", "workflows", "step", WORKFLOW_STATUSES, WorkflowNotFound, OperationFailed)


def add_commands(
    commands: Any, common: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser], app_option: Any
) -> None:
    """Register ``workflows list|show|cancel|retry`` on the CLI's subcommands."""
    sub = WORKFLOW.add_group(commands, common, parser_class, about="list, show, cancel and retry workflows")
    WORKFLOW.add_list_command(sub, list_workflows, common, app_option).add_argument(
        "--name", help="only workflows of this name"
    )
    about = "one workflow: its steps, statistics and continuations"
    WORKFLOW.add_show_command(sub, show_workflow, common, app_option, about=about)
    WORKFLOW.add_cancel_command(sub, cancel_workflow, common, app_option, waiting="its blocked and waiting steps")
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
    record = WORKFLOW.fetch(store_from_args(args).workflows.get, args.id)
    show(record, args.json, f"workflow {record.id} {record.name}: {record.status}", lambda: _print_steps(record))
    return 0


def _print_steps(record: WorkflowRecord) -> None:
    print_table(
        ["step", "job", "status", "after", "reason"],
        [[s.name, s.job_id, s.status.value, ",".join(s.after), s.reason or ""] for s in record.steps.values()],
        empty="no steps",
    )


def cancel_workflow(args: Namespace) -> int:
    store = store_from_args(args)
    print(WORKFLOW.cancel(store.workflows.get, store.workflows.cancel, args.id))
    return 0


def retry_workflow(args: Namespace) -> int:
    store = store_from_args(args)
    WORKFLOW.fetch(store.workflows.get, args.id)
    retried = store.workflows.retry(args.id)
    if not retried:
        raise OperationFailed(f"workflow {args.id}: no failed, dead or cancelled step to retry")
    print(f"workflow {args.id} retried: {len(retried)} step(s)")
    return 0
