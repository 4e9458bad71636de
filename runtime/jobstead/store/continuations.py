"""Continuations: jobs stored with a batch or a workflow, deferred once each when their event comes.

A batch and a workflow keep theirs the same way: a spec per event in their
row's ``continuations`` (``stored``), turned into a job when the event comes
(``Continuations.fire``). What makes each fire exactly once is the same for
both, and lives here so that it cannot drift apart:

1. ``fire`` runs in the transaction that settles the owner, under the owner's
   row lock, so two settlers never decide at once that an event has come.
2. The job goes in with a row of the owner's events table (``batch_events``,
   ``workflow_events``) whose primary key is (owner, event): a row found there
   means it fired already, and a second insert of the same event, should the
   locking ever be wrong, fails the transaction rather than deferring a twin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, insert, select

from ..clock import Clock
from ..retry import RetryPolicy
from .enqueue import Enqueuer
from .records import NewJob


class Continuations:
    """The continuations of one kind of owner: ``fired`` is its events table, ``owner`` that
    table's column naming the owner (``batch_id``, ``workflow_id``)."""

    def __init__(self, enqueuer: Enqueuer, clock: Clock, fired: Table, owner: str) -> None:
        self._enqueuer = enqueuer
        self._clock = clock
        self._fired = fired
        self._owner = owner

    def fire(self, conn: Connection, row: RowMapping | Mapping[str, Any], event: str, **links: Any) -> int | None:
        """Defer the continuation the owner's locked ``row`` stores for ``event``, unless it has
        none or it fired already; the new job's id, or None.

        ``links``: what ties the job to its owner (``batch_id`` and ``batch_event``, or
        ``workflow_id``). The job takes the owner's tenant unless its spec names one.
        """
        spec = (row["continuations"] or {}).get(event)
        if spec is None:
            return None
        owner_id = int(row["id"])
        fired = self._fired
        already = conn.execute(
            select(fired.c.job_id).where(fired.c[self._owner] == owner_id, fired.c.event == event)
        ).first()
        if already is not None:
            return None
        (record,) = self._enqueuer.insert([deferred(spec, tenant=row["tenant"], **links)], connection=conn)
        conn.execute(
            insert(fired).values(
                {self._owner: owner_id, "event": event, "job_id": record.id, "fired_at": self._clock()}
            )
        )
        return record.id


def stored(job: NewJob) -> dict[str, Any]:
    """A continuation as kept with its owner until it fires (a delay was resolved when it was given)."""
    return {
        "handler": job.handler,
        "args": job.args,
        "queue": job.queue,
        "priority": job.priority,
        "max_attempts": job.max_attempts,
        "retry": job.retry.to_json() if job.retry else None,
        "timeout": job.timeout,
        "tenant": job.tenant,
        "metadata": job.metadata,
        "key": job.key,
    }


def deferred(spec: Mapping[str, Any], *, tenant: str | None, **links: Any) -> NewJob:
    """The job a stored continuation becomes, tied to its owner by ``links``."""
    return NewJob(
        handler=spec["handler"],
        args=spec.get("args") or {},
        queue=spec["queue"],
        priority=int(spec.get("priority") or 0),
        max_attempts=spec.get("max_attempts"),
        retry=RetryPolicy.from_json(spec["retry"]) if spec.get("retry") else None,
        timeout=spec.get("timeout"),
        tenant=spec.get("tenant") if spec.get("tenant") is not None else tenant,
        metadata=spec.get("metadata"),
        key=spec.get("key"),
        **links,
    )


__all__ = ["Continuations", "deferred", "stored"]
