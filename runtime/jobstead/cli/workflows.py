"""``jobstead workflows list|show|cancel|retry``: workflows, their steps and their continuations."""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from ..errors import WorkflowNotFound
from ..store import Store, WorkflowRecord
from ..store.records import WORKFLOW_STATUSES
from .batches import _int_at_least
from .errors import OperationFailed
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
    p.add_argument("--tenant", help="only this tenant's workflows")
    p.add_argument("--status", choices=WORKFLOW_STATUSES, help="only workflows in this state")
    p.add_argument("--limit", type=_int_at_least("--limit", 1), default=25)
    p.add_argument("--offset", type=_int_at_least("--offset", 0), default=0)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)

    p = sub.add_parser("show", help="one workflow: its steps, statistics and continuations", parents=[common])
    p.set_defaults(func=show_workflow)
    p.add_argument("id", type=_workflow_id)
    p.add_argument("--json", action="store_true")
    app_option(p, required=False)

    text = (
        "cancel a workflow: its blocked and waiting steps at once, its running ones told to stop now; "
        "a workflow that is already final is left as it is"
    )
    p = sub.add_parser("cancel", help="cancel a workflow as a whole", description=text, parents=[common])
    p.set_defaults(func=cancel_workflow)
    p.add_argument("id", type=_workflow_id)
    app_option(p, required=False)

    text = (
        "retry a workflow: its failed, dead and cancelled steps get one more attempt, and the steps "
        "cancelled because of them wait for them again; continuations that fired stay fired"
    )
    p = sub.add_parser("retry", help="retry what did not succeed in a workflow", description=text, parents=[common])
    p.set_defaults(func=retry_workflow)
    p.add_argument("id", type=_workflow_id)
    app_option(p, required=False)


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
            [
                r.id,
                r.name,
                r.status,
                r.tenant or "",
                *(r.stats.to_json()[c] for c in STAT_COLUMNS),
                r.created_at.isoformat(),
            ]
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
    print(
        f"workflow {record.id} {record.name}: {record.status}" + (f" (tenant {record.tenant})" if record.tenant else "")
    )
    print("stats: " + ", ".join(f"{k} {v}" for k, v in record.stats.to_json().items()))
    if record.metadata:
        print(f"metadata: {record.metadata}")
    print_table(
        ["step", "job", "status", "after", "reason"],
        [[s.name, s.job_id, s.status.value, ",".join(s.after), s.reason or ""] for s in record.steps.values()],
        empty="no steps",
    )
    fired = dict(record.continuations)
    for event in record.events:
        job = f"job {fired[event]}" if event in fired else "not fired yet"
        print(f"on_{event}: {job}")
    return 0


def cancel_workflow(args: Namespace) -> int:
    store = store_from_args(args)
    before = _get(store, args.id)
    if before.status != "active":
        raise OperationFailed(f"workflow {before.id} already {before.status}")
    stopping = store.workflows.cancel(args.id)
    after = _get(store, args.id)
    print(
        f"workflow {after.id} cancelled: {after.stats.cancelled} step(s) cancelled"
        + (f", {len(stopping)} running step(s) told to stop" if stopping else "")
    )
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
    try:
        return store.workflows.get(workflow_id)
    except WorkflowNotFound:
        raise OperationFailed(f"no workflow {workflow_id}") from None


def _workflow_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"workflow id {raw!r}: give a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"workflow id {raw!r}: ids start at 1")
    return value
