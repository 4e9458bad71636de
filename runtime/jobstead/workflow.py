"""Workflows from the app's side: the builder ``app.workflow(...)`` and the ``WorkflowRun`` handle.

A builder collects steps (a unique name, an unsent job from ``handler.job``,
the steps it waits for) and writes nothing until ``defer``: then the graph is
checked whole (``after=`` may name a step added later; a cycle is named) and
the workflow, every step and every edge are written in one transaction, the
caller's if it gives a session. The store does the rest (see
``store/workflows.py`` for why each step is released exactly once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from .batch import check_spec, in_async_transaction, sync_connection
from .errors import InvalidArguments
from .handler import Handler, JobSpec, StoreProvider
from .json_values import check_json
from .options import AsyncTransaction, SyncTransaction, check_metadata
from .options import check_name as check_option_name
from .polling import poll_until, poll_until_async
from .store import NewJob, NewStep, StepRecord, WorkflowRecord, WorkflowStats
from .store.records import WORKFLOW_EVENTS
from .store.workflows import check_name
from .transitions import UpstreamRule

#: One step of a workflow as ``run.steps`` gives it: ``Step(name, job_id, status, after, reason)``
#: (the store's ``StepRecord``, under the name the workflow API is written with).
Step = StepRecord


class WorkflowBuilder:
    """Steps of a workflow not yet written: ``add`` them, then ``defer`` (or ``defer_async``)."""

    def __init__(
        self,
        store: StoreProvider,
        handlers: Mapping[str, Handler[Any, Any]],
        name: str,
        *,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_success: JobSpec | None = None,
        on_failure: JobSpec | None = None,
        on_finish: JobSpec | None = None,
    ) -> None:
        self._store = store
        self._handlers = handlers
        self.name = check_name("workflow name", name)
        if tenant is not None:
            check_option_name("tenant", tenant)
        if metadata is not None:
            check_metadata(metadata)
        self.tenant = tenant
        self.metadata = metadata
        self._continuations = continuation_jobs(
            handlers, {"success": on_success, "failure": on_failure, "finish": on_finish}
        )
        self._steps: dict[str, NewStep] = {}

    def __repr__(self) -> str:
        return f"<WorkflowBuilder {self.name!r} {len(self._steps)} steps>"

    def add(
        self,
        name: str,
        spec: JobSpec,
        *,
        after: Sequence[str] = (),
        on_upstream_failure: str = "cancel",
    ) -> WorkflowBuilder:
        """A step: a name unique in this workflow and an unsent job (``handler.job(...)``).

        ``after``: the steps it waits for (they may be added later: names and
        cycles are checked at ``defer``). ``on_upstream_failure``: ``"cancel"``
        (when one of them fails, dies or is cancelled, so is this step) or
        ``"run"`` (it runs anyway and sees their errors in ``ctx.upstream_failures``).
        """
        self._steps[name] = step(self._handlers, name, spec, after, on_upstream_failure, taken=self._steps)
        return self

    @property
    def steps(self) -> list[str]:
        """The names of the steps added so far, in order."""
        return list(self._steps)

    def defer(self, *, session: SyncTransaction | None = None) -> WorkflowRun:
        """Write the workflow and every step in one transaction (``session``'s, if given)."""
        steps = self._checked()
        store = self._store()
        conn = sync_connection(session)
        record = store.workflows.create(
            self.name,
            steps,
            tenant=self.tenant,
            metadata=self.metadata,
            continuations=self._continuations,
            connection=conn,
        )
        return WorkflowRun(self._store, record)

    async def defer_async(self, *, session: SyncTransaction | AsyncTransaction | None = None) -> WorkflowRun:
        """``defer`` for async code; ``session`` may be an ``AsyncSession``/``AsyncConnection``."""
        steps = self._checked()
        store = await asyncio.to_thread(self._store)

        def create(conn: Connection | None) -> WorkflowRecord:
            return store.workflows.create(
                self.name,
                steps,
                tenant=self.tenant,
                metadata=self.metadata,
                continuations=self._continuations,
                connection=conn,
            )

        return WorkflowRun(self._store, await in_async_transaction(session, create))

    def _checked(self) -> list[NewStep]:
        """The steps as added; the store checks the graph whole (names, cycles) before it writes anything."""
        return list(self._steps.values())


class WorkflowRun:
    """A workflow as last read: ``id``, ``name``, ``status``, ``steps``, ``stats``; ``refresh``,
    ``wait``, ``cancel``, ``retry``."""

    def __init__(self, store: StoreProvider, record: WorkflowRecord) -> None:
        self._store = store
        self.record = record

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.id} {self.name!r} {self.status} {self.stats.finished}/{self.stats.total}>"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def status(self) -> str:
        """``active`` until nothing else can run; then ``succeeded``, ``failed`` or ``cancelled``."""
        return self.record.status

    @property
    def steps(self) -> dict[str, StepRecord]:
        return self.record.steps

    @property
    def stats(self) -> WorkflowStats:
        return self.record.stats

    @property
    def tenant(self) -> str | None:
        return self.record.tenant

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self.record.metadata

    @property
    def continuations(self) -> list[tuple[str, int]]:
        """(event, job id) of each continuation deferred so far."""
        return list(self.record.continuations)

    def to_json(self) -> dict[str, Any]:
        return self.record.to_json()

    def refresh(self) -> WorkflowRun:
        self.record = self._store().workflows.get(self.id)
        return self

    def wait(self, timeout: float | None = None, *, poll: float = 0.05, max_poll: float = 1.0) -> WorkflowStats:
        """Block until the workflow is final (its continuations deferred); return its final stats.

        Never raises for failed steps (look at ``status`` and the stats);
        ``TimeoutError`` when ``timeout`` seconds pass first. Polls the
        workflow's status alone (one row, whatever its number of steps), with
        backoff, and reads the whole workflow once at the end.
        """
        store = self._store()
        if not poll_until(lambda: store.workflows.status(self.id) != "active", timeout, poll, max_poll):
            raise TimeoutError(f"workflow {self.id} still active after {timeout} s ({self.refresh()._progress()})")
        return self.refresh().stats

    async def wait_async(
        self, timeout: float | None = None, *, poll: float = 0.05, max_poll: float = 1.0
    ) -> WorkflowStats:
        """``wait`` for async code: the reads run on a thread, the sleeps on the loop."""
        store = await asyncio.to_thread(self._store)
        if not await poll_until_async(lambda: store.workflows.status(self.id) != "active", timeout, poll, max_poll):
            await asyncio.to_thread(self.refresh)
            raise TimeoutError(f"workflow {self.id} still active after {timeout} s ({self._progress()})")
        return (await asyncio.to_thread(self.refresh)).stats

    def cancel(self) -> None:
        """Cancel blocked and waiting steps at once and tell running ones to stop now; a no-op once final."""
        self._store().workflows.cancel(self.id)
        self.refresh()

    def retry(self) -> None:
        """Failed, dead and cancelled steps get one more attempt; the steps cancelled because of them
        are blocked again. Continuations that fired stay fired."""
        self._store().workflows.retry(self.id)
        self.refresh()

    def _progress(self) -> str:
        return f"{self.stats.finished} of {self.stats.total} steps final"


def step(
    handlers: Mapping[str, Handler[Any, Any]],
    name: str,
    spec: object,
    after: object,
    on_upstream_failure: object,
    *,
    taken: Mapping[str, object] = {},  # read only
) -> NewStep:
    """One step, checked now (``InvalidArguments`` naming it): nothing is written if one is wrong."""
    check_name("step name", name)
    if name in taken:
        raise InvalidArguments(f"step {name!r}: a step of that name is already in the workflow")
    job = check_spec(handlers, spec, f"step {name!r}")
    if job.key is not None:
        raise InvalidArguments(f"step {name!r}: a step runs once per workflow already; give it no key")
    check_json(job.args, f"step {name!r}")
    if isinstance(after, str | bytes) or not isinstance(after, Sequence | set | frozenset):
        raise InvalidArguments(f"step {name!r}: after= takes a list of step names, not {after!r}")
    for parent in after:
        if not isinstance(parent, str) or not parent:
            raise InvalidArguments(f"step {name!r}: after= takes step names, not {parent!r}")
    rules = [rule.value for rule in UpstreamRule]
    if on_upstream_failure not in rules:
        raise InvalidArguments(f"step {name!r}: on_upstream_failure must be one of {', '.join(rules)}")
    return NewStep(name, job, tuple(dict.fromkeys(after)), UpstreamRule(str(on_upstream_failure)))


def continuation_jobs(handlers: Mapping[str, Handler[Any, Any]], given: dict[str, object]) -> dict[str, NewJob]:
    """A workflow's continuations, checked now."""
    jobs: dict[str, NewJob] = {}
    for event, spec in given.items():
        if spec is None:
            continue
        assert event in WORKFLOW_EVENTS
        job = check_spec(handlers, spec, f"on_{event}")
        if job.run_at is not None:
            raise InvalidArguments(
                f"on_{event}: a continuation runs when its workflow gets there; give it no delay or run_at"
            )
        if job.key is not None:
            raise InvalidArguments(f"on_{event}: a continuation runs once per workflow already; give it no key")
        jobs[event] = job
    return jobs


__all__ = ["Step", "WorkflowBuilder", "WorkflowRun"]
