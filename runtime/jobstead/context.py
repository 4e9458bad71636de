"""What a running handler can know and do about its own job."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .cancel import CancelReason
from .errors import InvalidArguments, JobError
from .status import JobStatus

if TYPE_CHECKING:
    from .store.records import Growth, Upstream

logger = logging.getLogger("jobstead.job")

#: Guards the one-time creation of a context's event against a cancel arriving from another thread.
_EVENT_LOCK = threading.Lock()


class Context:
    """Injected into any handler parameter annotated ``Context``.

    ``cancelled`` turns true when the job is cancelled, times out, loses its
    lease or the worker shuts down: a long sync handler should look at it between
    units of work (async handlers are cancelled for real). ``checkpoint`` saves
    progress that the next attempt receives as ``checkpoint_data``.

    A worker builds one per job, so what most jobs never use (the event a sync
    handler sleeps on, the logger adapter) is made on first use.
    """

    #: Why the read of ``_upstream`` made before an async step ran failed (``read_upstream_off_loop``).
    _upstream_error: Exception | None = None

    def __init__(
        self,
        *,
        job_id: int,
        handler: str,
        attempt: int,
        max_attempts: int,
        queue: str,
        args: dict[str, Any],
        tenant: str | None,
        metadata: dict[str, Any] | None,
        checkpoint_data: Any,
        worker_id: str,
        created_at: datetime,
        save_checkpoint: Callable[[Any], bool],
        batch_id: int | None = None,
        workflow_id: int | None = None,
        step: str | None = None,
        read_upstream: Callable[[], list[Upstream]] | None = None,
        check_growth: Callable[[Growth], None] | None = None,
        handlers: Mapping[str, object] | None = None,
    ) -> None:
        self.job_id = job_id
        #: The batch this job belongs to (in a continuation: the batch it continues), else None.
        self.batch_id = batch_id
        #: The workflow this job is a step of (in a continuation: the workflow it continues), else None.
        self.workflow_id = workflow_id
        #: This step's name in its workflow (None outside a workflow, and in a continuation).
        self.step = step
        self._read_upstream = read_upstream
        self._check_growth = check_growth
        #: The app's handlers by name (given by the worker): a step added must be a job of one of them.
        self._handlers = handlers
        #: Steps added by ``add_steps``, written with this attempt's success (and only then).
        self.growth: Growth | None = None
        self.handler = handler
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.queue = queue
        self.args = args
        self.tenant = tenant
        self.metadata = metadata or {}
        self.checkpoint_data = checkpoint_data
        self.worker_id = worker_id
        self.created_at = created_at
        self._save_checkpoint = save_checkpoint
        self._cancelled: threading.Event | None = None
        self.cancel_reason: CancelReason | None = None

    @cached_property
    def _upstream(self) -> list[Upstream]:
        """This step's direct dependencies, read once (one query for all of them): on first use in a
        sync handler (on its own thread), before the call for an async one (``read_upstream_off_loop``)."""
        if self._upstream_error is not None:
            raise self._upstream_error
        return self._read_upstream() if self._read_upstream is not None else []

    async def read_upstream_off_loop(self) -> None:
        """Read ``_upstream`` now, on a thread: what a worker does before it calls an async step,
        whose ``ctx.upstream`` would otherwise block the event loop (and every job on it) for a read."""
        if self._read_upstream is not None and "_upstream" not in self.__dict__:
            try:
                self.__dict__["_upstream"] = await asyncio.to_thread(self._read_upstream)
            except Exception as exc:  # raised where the handler reads it, as a sync handler's read would be
                self._upstream_error = exc

    @property
    def upstream(self) -> dict[str, Any]:
        """{step name: result} of this step's direct dependencies that succeeded."""
        return {u.step: u.result for u in self._upstream if u.status is JobStatus.SUCCEEDED}

    @property
    def upstream_failures(self) -> dict[str, JobError]:
        """{step name: error} of this step's direct dependencies that did not succeed (only a step
        with ``on_upstream_failure="run"`` runs with any). A cancelled one without an error of its
        own gets one saying it was cancelled."""
        return {
            u.step: u.error or JobError("jobstead.Cancelled", f"step {u.step!r} was cancelled", "")
            for u in self._upstream
            if u.status is not JobStatus.SUCCEEDED
        }

    def add_steps(self, steps: Iterable[tuple[str, Any, Sequence[str]]], *, before: Sequence[str] = ()) -> None:
        """Add steps to this step's workflow: each ``(name, spec, after)``, ``spec`` a ``handler.job(...)``.

        ``after`` names existing or new steps; ``before`` names existing blocked
        steps that must now also wait for every new step. Checked now against
        the workflow as it is (``InvalidArguments`` naming the problem fails
        this attempt) and written in the same transaction as this attempt's
        success: a step that fails adds nothing, a retried one never adds twice.
        """
        from .store.records import Growth, NewJob, NewStep  # the API's value types, read only when used

        if self.workflow_id is None or self.step is None or self._check_growth is None:
            raise InvalidArguments("add_steps(): only a step of a workflow can add steps to it")
        if isinstance(steps, str | bytes) or not isinstance(steps, Iterable):
            raise InvalidArguments(f"add_steps(): give a list of (name, spec, after) tuples, not {steps!r}")
        added: list[NewStep] = []
        for entry in steps:
            if not isinstance(entry, tuple) or len(entry) != 3:
                raise InvalidArguments(f"add_steps(): give (name, spec, after) tuples, not {entry!r}")
            name, spec, after = entry
            job = getattr(spec, "job", None)
            if not isinstance(job, NewJob):
                raise InvalidArguments(
                    f"add_steps(): step {name!r}: expected a job spec (handler.job(...)), not {spec!r}"
                )
            if self._handlers is not None and self._handlers.get(job.handler) is not getattr(spec, "made_by", None):
                # As wf.add refuses it: a job of another app's handler would be written and never run.
                raise InvalidArguments(
                    f"add_steps(): step {name!r}: handler {job.handler!r} is not registered in this app"
                )
            if (after_names := _step_names(after)) is None:
                raise InvalidArguments(f"add_steps(): step {name!r}: after takes a list of step names, not {after!r}")
            added.append(NewStep(name, job, after_names))
        if (before_names := _step_names(before)) is None:
            raise InvalidArguments(f"add_steps(): before= takes a list of step names, not {before!r}")
        earlier = self.growth
        growth = Growth(
            self.workflow_id,
            self.step,
            (*(earlier.steps if earlier else ()), *added),
            tuple(dict.fromkeys((*(earlier.before if earlier else ()), *before_names))),
        )
        self._check_growth(growth)
        self.growth = growth

    @cached_property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logger, {"job_id": self.job_id, "handler": self.handler, "attempt": self.attempt})

    @property
    def cancelled(self) -> bool:
        return self.cancel_reason is not None

    def request_cancel(self, reason: CancelReason) -> None:
        with _EVENT_LOCK:
            if self.cancel_reason is None:
                self.cancel_reason = reason
                if self._cancelled is not None:
                    self._cancelled.set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early if the job is cancelled."""
        with _EVENT_LOCK:
            if self._cancelled is None:
                self._cancelled = threading.Event()
                if self.cancel_reason is not None:
                    self._cancelled.set()
            event = self._cancelled
        return event.wait(timeout)

    def checkpoint(self, data: Any) -> None:
        """Commit ``data`` (JSON) as this job's progress, now.

        If the worker no longer holds the job's lease the write is refused and
        ``cancelled`` turns true: someone else owns the job now.
        """
        self.checkpoint_data = data
        if not self._save_checkpoint(data):
            self.request_cancel(CancelReason.LEASE_LOST)

    async def acheckpoint(self, data: Any) -> None:
        """``checkpoint`` for async handlers, off the event loop."""
        await asyncio.to_thread(self.checkpoint, data)


def _step_names(value: object) -> tuple[str, ...] | None:
    """``value`` as step names, once each in order, or None when it is no list of strings.

    A lone string is refused rather than read as its letters, and None rather
    than a TypeError failing the attempt with a traceback.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return None
    names = tuple(value)
    return tuple(dict.fromkeys(names)) if all(isinstance(n, str) for n in names) else None
