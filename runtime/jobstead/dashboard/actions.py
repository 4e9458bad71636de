"""What the dashboard's buttons do: each goes through the store, and each leaves an audit row.

Bulk actions loop over the store's one-job operations a chunk of ids at a
time: each job gets exactly the checks (state, deduplication key) the CLI's
``jobs retry`` and ``jobs cancel`` apply, and no transaction stays open over
thousands of rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidState, JobNotFound
from ..store import Store
from ..store.control import PauseScope
from ..store.new_jobs import JobDefaults, new_jobs
from .auth import User
from .queries import CANCELLABLE, RETRYABLE, DashboardQueries, JobFilter

BulkVerb = Literal["retry", "cancel"]
BULK_VERBS: tuple[BulkVerb, ...] = ("retry", "cancel")
PAUSE_SCOPES: tuple[PauseScope, ...] = ("all", "queue", "handler")


class ActionRefused(Exception):
    """A valid request the current state does not allow (shown as a 409 page)."""


@dataclass(frozen=True)
class Done:
    """What an action did, in a sentence for the page and the audit log."""

    message: str


class Actions:
    def __init__(self, store: Store, queries: DashboardQueries) -> None:
        self._store = store
        self._queries = queries

    def _audit(self, user: User, action: str, target: str, outcome: str) -> Done:
        self._store.audit.record(actor=user.name, action=action, target=target, outcome=outcome)
        return Done(outcome)

    # -- one job -----------------------------------------------------------------

    def retry(self, user: User, job_id: int) -> Done:
        try:
            self._store.control.retry(job_id)
        except InvalidState as exc:
            raise ActionRefused(str(exc)) from None
        return self._audit(user, "retry", f"job {job_id}", f"job {job_id} queued again")

    def cancel(self, user: User, job_id: int) -> Done:
        record = self._store.control.cancel(job_id)
        if record.cancel_requested and not record.status.is_final:
            outcome = f"job {job_id} is running: asked to stop"
        elif record.status.value == "cancelled":
            outcome = f"job {job_id} cancelled"
        else:
            raise ActionRefused(f"job {job_id} is {record.status.value}; only waiting or running jobs can be cancelled")
        return self._audit(user, "cancel", f"job {job_id}", outcome)

    def delete(self, user: User, job_id: int) -> Done:
        try:
            self._store.control.delete(job_id)
        except InvalidState as exc:
            raise ActionRefused(str(exc)) from None
        return self._audit(user, "delete", f"job {job_id}", f"job {job_id} deleted")

    # -- many jobs ---------------------------------------------------------------

    def bulk(self, user: User, verb: BulkVerb, ids: Iterable[int]) -> Done:
        """Retry or cancel each selected job; jobs whose state does not allow it are counted, not failed."""
        changed, skipped = self._each(verb, ids)
        target = "selected jobs"
        return self._audit(user, f"bulk-{verb}", target, _summary(verb, changed, skipped))

    def bulk_matching(self, user: User, verb: BulkVerb, where: JobFilter) -> Done:
        statuses = RETRYABLE if verb == "retry" else CANCELLABLE
        changed = skipped = 0
        for chunk in self._queries.ids_matching(where, statuses):
            c, s = self._each(verb, chunk)
            changed, skipped = changed + c, skipped + s
        target = "jobs matching " + (", ".join(f"{k}={v}" for k, v in where.params().items()) or "everything")
        return self._audit(user, f"bulk-{verb}", target, _summary(verb, changed, skipped))

    def _each(self, verb: BulkVerb, ids: Iterable[int]) -> tuple[int, int]:
        changed = skipped = 0
        for job_id in ids:
            try:
                if verb == "retry":
                    self._store.control.retry(job_id)
                    changed += 1
                else:
                    record = self._store.control.cancel(job_id)
                    if record.status.value == "cancelled" or record.cancel_requested:
                        changed += 1
                    else:
                        skipped += 1
            except (InvalidState, JobNotFound):
                skipped += 1
        return changed, skipped

    # -- workflows ---------------------------------------------------------------

    def cancel_workflow(self, user: User, workflow_id: int) -> Done:
        """Blocked and waiting steps cancelled at once, running ones told to stop (the store decides which)."""
        status = self._workflow_status(workflow_id)
        if status != "active":
            raise ActionRefused(f"workflow {workflow_id} is {status}; only an active workflow can be cancelled")
        running = self._store.workflows.cancel(workflow_id)
        outcome = f"workflow {workflow_id} cancelled" + (
            f": {len(running)} running step{'s' if len(running) != 1 else ''} asked to stop" if running else ""
        )
        return self._audit(user, "workflow-cancel", f"workflow {workflow_id}", outcome)

    def retry_workflow(self, user: User, workflow_id: int) -> Done:
        self._workflow_status(workflow_id)
        retried = self._store.workflows.retry(workflow_id)
        if not retried:
            raise ActionRefused(f"workflow {workflow_id} has no failed, dead or cancelled step to retry")
        steps = f"{len(retried)} step{'s' if len(retried) != 1 else ''}"
        return self._audit(
            user, "workflow-retry", f"workflow {workflow_id}", f"workflow {workflow_id}: {steps} run again"
        )

    def _workflow_status(self, workflow_id: int) -> str:
        status = self._queries.workflow_status(workflow_id)
        if status is None:
            raise JobNotFound(f"no workflow with id {workflow_id}")
        return status

    # -- pauses and crons --------------------------------------------------------

    def pause(self, user: User, scope: PauseScope, name: str) -> Done:
        what = _pause_target(scope, name)
        changed = self._store.control.pause(scope, name)
        return self._audit(user, "pause", what, f"{what} paused" if changed else f"{what} was already paused")

    def resume(self, user: User, scope: PauseScope, name: str) -> Done:
        what = _pause_target(scope, name)
        changed = self._store.control.resume(scope, name)
        return self._audit(user, "resume", what, f"{what} resumed" if changed else f"{what} was not paused")

    def set_cron(self, user: User, name: str, enabled: bool) -> Done:
        if self._store.crons.set_enabled(name, enabled) is None:
            raise JobNotFound(f"no cron named {name!r}")
        verb = "enable" if enabled else "disable"
        return self._audit(user, f"cron-{verb}", f"cron {name}", f"cron {name} {verb}d")

    def run_cron_now(self, user: User, name: str) -> Done:
        """Defer one ordinary job with the cron's handler, arguments, queue, priority and tenant.

        It is not a fire: the cron's schedule, last fire and overlap policy are
        untouched, and the next scheduled fire happens as planned.
        """
        cron = self._store.crons.get(name)
        if cron is None:
            raise JobNotFound(f"no cron named {name!r}")
        definition = self._store.registry.handler(cron.handler)
        defaults = JobDefaults(definition.queue, definition.priority, definition.flow) if definition else JobDefaults()
        jobs = new_jobs(
            cron.handler,
            [dict(cron.args)],
            defaults,
            clock=self._store.clock,
            queue=cron.queue,
            priority=cron.priority,
            tenant=cron.tenant,
        )
        record = self._store.enqueue.insert(jobs)[0]
        return self._audit(user, "cron-run-now", f"cron {name}", f"cron {name} run now as job {record.id}")


def _pause_target(scope: PauseScope, name: str) -> str:
    return "everything" if scope == "all" else f"{scope} {name}"


def _summary(verb: BulkVerb, changed: int, skipped: int) -> str:
    done = "queued again" if verb == "retry" else "cancelled or asked to stop"
    text = f"{changed} job{'s' if changed != 1 else ''} {done}"
    return text + (f", {skipped} skipped (not in a state that allows it)" if skipped else "")
