"""Workflows: jobs that depend on jobs, each released exactly once.

A workflow is a row in ``workflows``, its steps (ordinary jobs with
``jobs.workflow_id`` and a ``step`` name) and its edges (``workflow_edges``,
parent -> child). A step with dependencies is inserted ``blocked``, with
``waiting`` set to their number. This module is the one writer of all three.

What makes a release happen exactly once, whatever races or crashes:

1. Every change that ends a step (a completion or a rescue in
   ``leases._write``, a cancel or delete through ``moves.follow``) calls
   ``settle`` in its own transaction, which locks the rows of the workflows
   it touches first, in id order (``FOR UPDATE``; SQLite's write lock
   serialises everything already). Two parents of one step finishing in two
   workers at once queue on that lock; the second sees the first one's
   decrement.
2. A release is keyed by the parents that just ended, all of a completion
   batch's at once: how many edges each child has from them is read through
   the edges' primary key, each child's ``waiting`` drops by that many, and
   the children at zero (and still ``blocked``) become ``queued`` (or
   ``scheduled``, ``transitions.release_status``). Nothing recounts a child's
   parents, so a fan-in of 1,000 costs each parent what a fan-in of 2 does,
   and a batch of steps of many workflows costs the statements of one.
3. Because it is the completion's own transaction, a crash between the
   parent's end and its children's release cannot happen: both commit or
   neither does.

A parent that ends without succeeding cancels (``transitions.CANCEL_DOWNSTREAM``)
each blocked child whose rule is ``cancel``, with a reason naming the step that
failed, and so on down; a child whose rule is ``run`` counts it as ended.
``workflows.unfinished`` counts the steps not final yet, kept under the same
lock: when it reaches zero the workflow is final (``transitions.workflow_outcome``)
and its continuations fire once each, as a batch's do (``continuations``: a row
per (workflow, event) in ``workflow_events``, under its primary key).
"""

from __future__ import annotations

import builtins
import re
import threading
import unicodedata
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    RowMapping,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)

from ..clock import Clock
from ..errors import InvalidArguments, JobError, WorkflowNotFound
from ..metrics.worker import workflows_ended
from ..status import FINAL_STATUSES, JobStatus
from ..transitions import (
    CANCEL_DOWNSTREAM,
    CANCEL_WITH_WORKFLOW,
    RETRYABLE,
    STOP_WITH_WORKFLOW,
    WAIT_AGAIN,
    Completion,
    UpstreamRule,
    cancel_reason,
    failed_for_good,
    release_status,
    releases,
    shown_status,
    step_retry,
    upstream_failed,
    workflow_outcome,
)
from . import statistics
from .continuations import Continuations, stored
from .database import Database
from .enqueue import Enqueuer
from .ids import check_filter, lookup_id
from .moves import Moved, apply_change, notify_cancel
from .records import (
    WORKFLOW_EVENTS,
    Growth,
    JobRecord,
    NewJob,
    NewStep,
    StepRecord,
    Upstream,
    WorkflowRecord,
    WorkflowStats,
    WorkflowStatus,
    evolve,
)

#: Longest step and workflow name (the column's width).
NAME_LENGTH = 200
#: Ids bound to one statement, under every database's limit on a statement's parameters.
IDS_PER_STATEMENT = 10_000
_NOT_SUCCEEDED = frozenset(FINAL_STATUSES - {JobStatus.SUCCEEDED})
#: What ``transitions.CANCEL_DOWNSTREAM`` makes of a step.
_DOWNSTREAM_STATUS = (CANCEL_DOWNSTREAM.becomes or JobStatus.CANCELLED).value


class Workflows:
    def __init__(self, db: Database, clock: Clock, enqueuer: Enqueuer) -> None:
        self._db = db
        self._clock = clock
        self._enqueuer = enqueuer
        self._continuations = Continuations(enqueuer, clock, db.tables.workflow_events, "workflow_id")
        #: The workflows each open transaction ended, as (name, outcome): counted once it commits
        #: (``counted``), forgotten with the connection if it does not.
        self._ended: weakref.WeakKeyDictionary[Connection, list[tuple[str, str]]] = weakref.WeakKeyDictionary()
        self._ended_lock = threading.Lock()
        #: The settling path's statements, each built once (``_statement``).
        self._statements: dict[tuple[Any, ...], Any] = {}

    def _statement(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The statement ``key`` names, built by ``build`` the first time only.

        Every value in it is a bound parameter, so one object serves every
        completion. Built anew for each, the settling statements cost a worker
        about 1.5 ms of CPU per completion write (a fifth of the write's):
        building the release UPDATE alone took 0.6 ms and its cache key 0.3 ms,
        and on a busy machine a write's wall time grows with the CPU it needs
        (its thread shares the cores with the claim loop and the database).
        SQLAlchemy statements are immutable, so one is shared by every thread; two
        threads that build it at once each get an equal one, and one is kept.
        """
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = build()
        return stmt

    @contextmanager
    def counted(self, transaction: AbstractContextManager[Connection]) -> Iterator[Connection]:
        """``transaction``'s connection; once it has committed, the workflows it ended are counted
        (``jobstead_workflows_total``). A transaction that fails counts nothing."""
        with transaction as conn:
            yield conn
        with self._ended_lock:
            ended = self._ended.pop(conn, [])
        workflows_ended(ended)

    def _note_ended(self, conn: Connection, name: str, outcome: str) -> None:
        with self._ended_lock:
            self._ended.setdefault(conn, []).append((name, outcome))

    # -- writing a new workflow --------------------------------------------------------

    def create(
        self,
        name: str,
        steps: Sequence[NewStep],
        *,
        tenant: str | None = None,
        metadata: dict[str, Any] | None = None,
        continuations: Mapping[str, NewJob] | None = None,
        connection: Connection | None = None,
    ) -> WorkflowRecord:
        """Write a workflow, its steps and edges in one transaction (the caller's, if given).

        The steps are checked first (``check_steps``): nothing is written if one
        is wrong. The record handed back is built from what was written, not
        read back (a workflow of 10,000 steps would take a read as long again).
        """
        check_name("workflow name", name)
        check_steps(steps)
        given = dict(continuations or {})
        unknown = set(given) - set(WORKFLOW_EVENTS)
        if unknown:
            raise InvalidArguments(f"unknown workflow event(s) {sorted(unknown)}: use {', '.join(WORKFLOW_EVENTS)}")
        if connection is not None:
            at_once = self._create_at_once(connection, name, steps, tenant, metadata, given) if steps else None
            return at_once if at_once is not None else self._create(connection, name, steps, tenant, metadata, given)
        created = self._create_at_once(None, name, steps, tenant, metadata, given) if steps else None
        if created is None:
            with self.counted(self._db.engine.begin()) as conn:
                created = self._create(conn, name, steps, tenant, metadata, given)
        statistics.after_bulk_write(self._db, len(steps))  # committed: its steps and edges
        return created

    def _create_at_once(
        self,
        conn: Connection | None,
        name: str,
        steps: Sequence[NewStep],
        tenant: str | None,
        metadata: dict[str, Any] | None,
        continuations: dict[str, NewJob],
    ) -> WorkflowRecord | None:
        """``_create`` as one statement where the driver offers it (``Enqueuer.insert_workflow``):
        without ``conn``, in a transaction of its own. None: not written; ``_create`` does it."""
        now = self._clock()
        row = _new_row(name, tenant, metadata, continuations, len(steps), now)
        edges = [(parent, step.name, step.on_upstream_failure.value) for step in steps for parent in step.after]
        # A stand-in workflow id: the statement writes the real one (``insert_workflow``).
        written = self._enqueuer.insert_workflow(row, self._step_jobs(0, tenant, steps), edges, now, conn)
        if written is None:
            return None
        workflow_id, records = written
        return self._new_record(workflow_id, name, tenant, metadata, steps, records, continuations, now)

    def _create(
        self,
        conn: Connection,
        name: str,
        steps: Sequence[NewStep],
        tenant: str | None,
        metadata: dict[str, Any] | None,
        continuations: dict[str, NewJob],
    ) -> WorkflowRecord:
        workflows = self._db.tables.workflows
        now = self._clock()
        row = _new_row(name, tenant, metadata, continuations, len(steps), now)
        workflow_id = int(conn.execute(insert(workflows).values(row).returning(workflows.c.id)).scalar_one())
        records = self._add_steps(conn, workflow_id, tenant, steps, {})
        if not steps:  # an empty workflow is done at once
            self._finish_if_done(conn, [dict(self._lock(conn, workflow_id))], ())
            return self._get(conn, workflow_id)
        listed = [records[step.name] for step in steps]
        return self._new_record(workflow_id, name, tenant, metadata, steps, listed, continuations, now)

    @staticmethod
    def _new_record(
        workflow_id: int,
        name: str,
        tenant: str | None,
        metadata: dict[str, Any] | None,
        steps: Sequence[NewStep],
        records: Sequence[JobRecord],
        continuations: Mapping[str, NewJob],
        now: datetime,
    ) -> WorkflowRecord:
        """A workflow just written, from what was sent (``records``: its steps' jobs, in ``steps``' order)."""
        by_name = {
            step.name: StepRecord(step.name, record.id, record.status, list(step.after), None)
            for step, record in zip(steps, records, strict=True)
        }
        return WorkflowRecord(
            id=workflow_id,
            name=name,
            status="active",
            tenant=tenant,
            metadata=metadata,
            stats=WorkflowStats.from_counts(dict(Counter(s.status.value for s in by_name.values()))),
            steps=by_name,
            continuations=[],
            created_at=now,
            finished_at=None,
            events=tuple(sorted(continuations)),
        )

    def _add_steps(
        self,
        conn: Connection,
        workflow_id: int,
        tenant: str | None,
        steps: Sequence[NewStep],
        existing: Mapping[str, int],
        waiting: Mapping[str, int] | None = None,
    ) -> dict[str, JobRecord]:
        """Insert ``steps`` (blocked while they wait) and their edges; return the new steps' records by name."""
        jobs = self._step_jobs(workflow_id, tenant, steps, waiting)
        records = self._enqueuer.insert(jobs, connection=conn) if jobs else []
        written = {step.name: record for step, record in zip(steps, records, strict=True)}
        ids = {name: record.id for name, record in written.items()}
        known = {**existing, **ids}
        edges = [
            {
                "workflow_id": workflow_id,
                "parent_id": known[parent],
                "child_id": ids[step.name],
                "on_failure": step.on_upstream_failure.value,
            }
            for step in steps
            for parent in step.after
        ]
        self._db.driver.insert_many(conn, self._db.tables.workflow_edges, edges)
        return written

    @staticmethod
    def _step_jobs(
        workflow_id: int, tenant: str | None, steps: Sequence[NewStep], waiting: Mapping[str, int] | None = None
    ) -> list[NewJob]:
        """The jobs of ``steps``: each waits for its parents (or as ``waiting`` says), in the workflow's tenant."""
        return [
            evolve(
                step.job,
                workflow_id=workflow_id,
                step=step.name,
                waiting=len(step.after) if waiting is None else waiting[step.name],
                tenant=tenant if tenant is not None else step.job.tenant,
            )
            for step in steps
        ]

    # -- settling: the exactly-once part ---------------------------------------------------

    def settle(
        self,
        conn: Connection,
        ended: Mapping[int, Sequence[tuple[int, JobStatus]]],
        growth: Mapping[int, Growth] | None = None,
        names: Mapping[int, str] | None = None,
    ) -> dict[int, str]:
        """Steps just ended, by workflow, as (job id, final status): release, cancel downstream, finish.

        In ``conn``'s transaction: the one that ended them. ``growth``: the steps
        that succeeded steps (by job id) added as they ran, written first.
        ``names``: the step names of ended steps whose rows are gone (deleted).

        Returns the steps it queued, by job id, with their queue: no worker is
        woken for them yet. The caller claims what it can of them in this same
        transaction, then wakes the workers of the rest with ``wake`` (a NOTIFY woke a
        claim in every worker process for each, and all but one found nothing).
        """
        rows = self._lock_counting(conn, {workflow_id: len(steps) for workflow_id, steps in ended.items()})
        for workflow_id, row in rows.items():
            for job_id, status in ended[workflow_id]:
                added = (growth or {}).get(job_id)
                if added is not None and status is JobStatus.SUCCEEDED:
                    row["unfinished"] = int(row["unfinished"]) + self._grow(conn, row, added)
        return self._settle(conn, rows, ended, names)

    def wake(self, conn: Connection, released: Mapping[int, str], taken: Collection[int] = ()) -> None:
        """Wake the workers of the queues of the ``released`` steps (``settle``) not ``taken`` already
        (claimed in this transaction), once it commits."""
        queues = sorted({queue for job_id, queue in released.items() if job_id not in taken})
        if queues:
            self._db.driver.notify(conn, self._db.tables.notify_channel, queues)

    # -- growing at run time ------------------------------------------------------------------

    def check_growth(self, growth: Growth) -> None:
        """``InvalidArguments`` naming what is wrong with ``growth`` as the workflow is now (``ctx.add_steps``)."""
        with self._db.engine.connect() as conn:
            self._check_growth(conn, growth)

    def judge_growth(self, conn: Connection, completions: Sequence[Completion]) -> list[Completion]:
        """The completions to write: a success whose added steps no longer fit its workflow (another
        step added the same name meanwhile, a ``before=`` step was released) fails instead, for good.

        In the completion's transaction, under its workflows' locks (taken here first), so that what
        was checked is what is written.
        """
        growing = {c.growth.workflow_id for c in completions if c.growth is not None}
        for workflow_id in sorted(growing):
            self._lock(conn, workflow_id, missing_ok=True)
        judged: list[Completion] = []
        for c in completions:
            if c.growth is not None and c.status is JobStatus.SUCCEEDED:
                try:
                    self._check_growth(conn, c.growth)
                except (InvalidArguments, WorkflowNotFound) as exc:
                    c = failed_for_good(c.job_id, c.owner, c.attempt, c.finished_at, JobError.from_exception(exc))
            judged.append(c)
        return judged

    def _graph(
        self, conn: Connection, workflow_id: int
    ) -> tuple[dict[str, tuple[int, JobStatus]], dict[str, list[str]]]:
        """A workflow's steps (name: (job id, status)) and what each waits for (name: parent names)."""
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        steps = {
            str(name): (int(job_id), JobStatus(status))
            for job_id, name, status in conn.execute(
                select(jobs.c.id, jobs.c.step, jobs.c.status).where(
                    jobs.c.workflow_id == workflow_id, jobs.c.step.is_not(None)
                )
            ).all()
        }
        name_of = {job_id: name for name, (job_id, _) in steps.items()}
        after: dict[str, list[str]] = defaultdict(list)
        for parent_id, child_id in conn.execute(
            select(edges.c.parent_id, edges.c.child_id).where(edges.c.workflow_id == workflow_id)
        ).all():
            if int(parent_id) in name_of and int(child_id) in name_of:
                after[name_of[int(child_id)]].append(name_of[int(parent_id)])
        return steps, after

    def _check_growth(self, conn: Connection, growth: Growth) -> None:
        if self._lock(conn, growth.workflow_id, missing_ok=True, share=True) is None:
            raise WorkflowNotFound(f"no workflow {growth.workflow_id}")
        steps, after = self._graph(conn, growth.workflow_id)
        check_steps(growth.steps, steps.keys())
        for name in growth.before:
            if name not in steps:
                raise InvalidArguments(f"before={name!r} names no existing step of this workflow")
            if steps[name][1] is not JobStatus.BLOCKED:
                raise InvalidArguments(f"before={name!r}: that step is {steps[name][1].value}, no longer blocked")
        for step in growth.steps:
            for parent in step.after:
                status = steps.get(parent, (0, None))[1]
                if status in _NOT_SUCCEEDED:
                    raise InvalidArguments(f"step {step.name!r}: after={parent!r} already ended {status}")
        graph = {**after, **{step.name: list(step.after) for step in growth.steps}}
        cycle = find_cycle(graph, extra=growth.before, new=[step.name for step in growth.steps])
        if cycle:
            raise InvalidArguments("steps wait for each other in a cycle: " + " -> ".join(cycle))

    def _grow(self, conn: Connection, row: Mapping[str, Any], growth: Growth) -> int:
        """Write the steps a step added as it ran (checked by ``judge_growth``); return how many.

        Each waits for its parents that are new, not final, or the adding step
        itself (whose success this transaction settles next, counting it down
        like any other parent); ``before=`` steps wait for every new step too.
        """
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        workflow_id = int(row["id"])
        steps, _ = self._graph(conn, workflow_id)
        new = {step.name for step in growth.steps}
        waiting = {
            step.name: sum(1 for p in step.after if p in new or p == growth.step or not steps[p][1].is_final)
            for step in growth.steps
        }
        written = self._add_steps(
            conn, workflow_id, row["tenant"], growth.steps, {n: i for n, (i, _) in steps.items()}, waiting
        )
        ids = {name: record.id for name, record in written.items()}
        for name in growth.before:
            child = steps[name][0]
            rule = conn.execute(select(edges.c.on_failure).where(edges.c.child_id == child).limit(1)).scalar()
            self._db.driver.insert_many(
                conn,
                edges,
                [
                    {
                        "workflow_id": workflow_id,
                        "parent_id": parent,
                        "child_id": child,
                        "on_failure": rule or UpstreamRule.CANCEL.value,
                    }
                    for parent in ids.values()
                ],
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == child, jobs.c.status == JobStatus.BLOCKED.value)
                .values(waiting=jobs.c.waiting + len(ids))
            )
        workflows = self._db.tables.workflows
        conn.execute(
            update(workflows).where(workflows.c.id == workflow_id).values(unfinished=workflows.c.unfinished + len(ids))
        )
        return len(ids)

    def _settle(
        self,
        conn: Connection,
        rows: Mapping[int, Mapping[str, Any]],
        ended: Mapping[int, Sequence[tuple[int, JobStatus]]],
        known: Mapping[int, str] | None = None,
    ) -> dict[int, str]:
        """``ended``'s consequences, for every workflow of ``rows`` at once: each is its locked row,
        its ``unfinished`` already without its steps that ended. Returns the steps queued (``settle``).

        However many steps and workflows a completion batch ends, the common case (every step
        succeeded) costs the same few statements: one count-down keyed by all their edges, and
        for the workflows now done one count of their steps (``_finish_if_done``).
        """
        now = self._clock()
        ended = {workflow_id: ended[workflow_id] for workflow_id in rows}
        failed = [job_id for steps in ended.values() for job_id, status in steps if status is not JobStatus.SUCCEEDED]
        names = {**self._names(conn, failed), **(known or {})}
        # (workflow, parent id, how it ended, the step whose failure it carries down, how that one ended)
        frontier = [
            (workflow_id, job_id, status, names.get(job_id, "?"), status)
            for workflow_id, steps in sorted(ended.items())
            for job_id, status in steps
        ]
        cascaded: Counter[int] = Counter()
        released: dict[int, str] = {}
        while frontier:
            ok = [p for _, p, status, _, _ in frontier if status is JobStatus.SUCCEEDED]
            bad = [p for _, p, status, _, _ in frontier if status is not JobStatus.SUCCEEDED]
            released.update(self._count_down(conn, ok, bad, now))
            downstream: list[tuple[int, int, JobStatus, str, JobStatus]] = []
            for workflow_id, parent, status, origin, origin_status in frontier:
                if status is not JobStatus.SUCCEEDED:
                    cancelled = self._cancel_downstream(conn, parent, upstream_failed(origin, origin_status), now)
                    downstream += [
                        (workflow_id, child, JobStatus.CANCELLED, origin, origin_status) for child in cancelled
                    ]
                    cascaded[workflow_id] += len(cancelled)
            frontier = downstream
        for workflow_id, finished in sorted(cascaded.items()):
            self._count_finished(conn, workflow_id, finished)
        self._finish_if_done(
            conn,
            [
                {**row, "unfinished": int(row["unfinished"]) - cascaded[workflow_id]}
                for workflow_id, row in rows.items()
            ],
            {
                workflow_id
                for workflow_id, steps in ended.items()
                if any(status in (JobStatus.FAILED, JobStatus.DEAD) for _, status in steps)
            },
        )
        return released

    def _count_down(self, conn: Connection, ok: Sequence[int], bad: Sequence[int], now: datetime) -> dict[int, str]:
        """Count the blocked children of the parents that ended down, and release those that wait for
        none now (``transitions.release_status``); return those queued now, with their queue.

        Each child waits for as many fewer as it has edges from these parents that count as
        ended (``transitions.releases``): counted by the UPDATE itself, one statement per
        group of parents (all succeeded, nearly always), each child found through the edges'
        primary key and counted through their index by child, then written through the jobs'
        primary key. Nothing recounts a child's other parents, and the statement keeps one
        text whatever the number of ids (``Driver.in_bound_list``): a statement rendered and
        planned anew for each batch cost a worker tens of ms of its time, under the
        workflow's lock. The count was a SELECT of its own before: one round trip more in
        every completion that ends a step, each a few ms on a loaded machine.

        A child whose rule is ``cancel`` never reaches zero through a parent that failed (that
        edge is not counted, nor is the child touched): ``_cancel_downstream`` cancels it next.
        """
        jobs = self._db.tables.jobs
        driver = self._db.driver
        rows: list[Any] = []
        for parents, status in ((ok, JobStatus.SUCCEEDED), (bad, JobStatus.FAILED)):
            rules = tuple(sorted(rule.value for rule in UpstreamRule if releases(status, rule)))
            if not parents or not rules:
                continue
            stmt = self._statement(("count_down", rules), partial(self._count_down_statement, rules))
            for chunk in _chunks(sorted(set(parents))):
                rows += driver.execute_update(conn, stmt, {"parents": chunk, "of_parents": chunk, "now": now}).all()
        by_delay: dict[float, list[int]] = defaultdict(list)
        for job_id, _, status, delay in rows:
            if status == JobStatus.SCHEDULED.value and delay is not None and delay > 0:
                by_delay[float(delay)].append(int(job_id))
        for delay, ids in sorted(by_delay.items()):  # a statement per distinct delay: a few at most
            conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(run_at=now + timedelta(seconds=delay)))
        return {int(job_id): str(queue) for job_id, queue, status, _ in rows if status == JobStatus.QUEUED.value}

    def _count_down_statement(self, rules: Sequence[str]) -> Any:
        """The release UPDATE of ``_count_down`` for parents whose edges count when their rule is
        one of ``rules``: the parents (twice: ``parents``, ``of_parents``) and ``now`` bound."""
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        driver = self._db.driver
        # A step given a ``delay`` waits it from now (its run_at is set by ``_count_down``, from
        # what this returns); an absolute run_at stays as it was, queued at once if it has passed.
        now = bindparam("now", type_=jobs.c.run_at.type)
        due = and_(jobs.c.run_at <= now, or_(jobs.c.release_delay.is_(None), jobs.c.release_delay <= 0))
        released = case((due, release_status(True).value), else_=release_status(False).value)
        counts = _one_of(edges.c.on_failure, rules)
        # "IS TRUE" keeps the status test out of any index condition: through the primary key
        # only, never a scan of every blocked step of every workflow (the status index's offer).
        blocked = (jobs.c.status == JobStatus.BLOCKED.value).is_(true())
        returned = (jobs.c.id, jobs.c.queue, jobs.c.status, jobs.c.release_delay)
        parents = driver.bound_list_rows("parents", edges.c.parent_id.type)
        if parents is not None:
            # The parents' edges, found through the primary key (parent first) and counted per
            # child, joined to the children through theirs: each edge is read once. A count per
            # child through the child's index read all of its edges and tested each against
            # every parent given: for a fan-in of 10,000, 10,000 edges for a batch of 370 at each
            # completion write, 16 ms of the server's time under the workflow's lock. From the
            # parents as rows (whose number the planner takes to be small), the joins go through
            # the indexes: estimated from the edges, a join went through a scan of every job.
            # LATERAL, and OFFSET so that it stays one (a plain subquery is flattened into a join,
            # which the planner, its statistics of the edges stale after a big defer, made a scan
            # of every edge): each parent's edges through the primary key, parent by parent.
            each = (
                select(edges.c.child_id)
                .where(edges.c.parent_id == parents.c.value, counts)
                .offset(literal_column("0"))
                .lateral("each")
            )
            counted = (
                select(each.c.child_id, func.count().label("fewer"))
                .select_from(parents.join(each, true()))
                .group_by(each.c.child_id)
                .subquery("counted")
            )
            left = jobs.c.waiting - counted.c.fewer
            return (
                update(jobs)
                .where(jobs.c.id == counted.c.child_id, blocked)
                .values(status=case((left <= 0, released), else_=jobs.c.status), waiting=left)
                .returning(*returned)
            )
        fewer = (
            select(func.count())
            .where(edges.c.child_id == jobs.c.id, driver.in_bound_list(edges.c.parent_id, "parents"), counts)
            .scalar_subquery()
        )
        children = select(edges.c.child_id).where(driver.in_bound_list(edges.c.parent_id, "of_parents"), counts)
        left = jobs.c.waiting - fewer
        # SET renders in the table's column order, status before waiting: MySQL and MariaDB
        # evaluate assignments left to right with the values already set, so status must
        # read the old ``waiting`` there, as PostgreSQL and SQLite read it anyway.
        return (
            update(jobs)
            .where(driver.id_in(jobs.c.id, children), blocked)
            .values(status=case((left <= 0, released), else_=jobs.c.status), waiting=left)
            .returning(*returned)
        )

    def _cancel_downstream(self, conn: Connection, parent: int, reason: JobError, now: datetime) -> list[int]:
        """The blocked children of ``parent`` whose rule is ``cancel``, cancelled with ``reason``; their ids."""
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        cancelled_by = [rule.value for rule in UpstreamRule if not releases(JobStatus.FAILED, rule)]
        children = select(edges.c.child_id).where(edges.c.parent_id == parent, edges.c.on_failure.in_(cancelled_by))
        blocked = jobs.c.status == JobStatus.BLOCKED.value
        found = list(
            conn.execute(
                select(jobs.c.id)
                .where(self._db.driver.id_in(jobs.c.id, children), blocked.is_(true()))
                .order_by(jobs.c.id)
                .with_for_update()
            ).scalars()
        )
        if found:
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(found), blocked)
                .values(
                    status=_DOWNSTREAM_STATUS,
                    finished_at=now,
                    cancel_requested=False,
                    error=reason.to_json(),
                )
            )
        return found

    def _count_finished(self, conn: Connection, workflow_id: int, finished: int) -> None:
        if finished:
            workflows = self._db.tables.workflows
            conn.execute(
                update(workflows)
                .where(workflows.c.id == workflow_id)
                .values(unfinished=workflows.c.unfinished - finished)
            )

    def _finish_if_done(self, conn: Connection, rows: Sequence[Mapping[str, Any]], failed: Collection[int]) -> None:
        """Fire ``on_failure`` of the workflows in ``failed`` (a step of theirs just failed or died);
        once nothing can run in one, its final status, ``on_success`` and ``on_finish``.

        ``rows``: the workflows' locked rows, ``unfinished`` as it now is. The steps of
        all those done are counted in one statement, and their status written in one per outcome.
        """
        for row in rows:
            if int(row["id"]) in failed:
                self._continuations.fire(conn, row, "failure", workflow_id=int(row["id"]))
        done = {int(row["id"]): row for row in rows if int(row["unfinished"]) <= 0}
        if not done:
            return
        workflows, jobs = self._db.tables.workflows, self._db.tables.jobs
        ended_badly = (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)
        counts: dict[int, Counter[JobStatus]] = defaultdict(Counter)
        badly = self._statement(
            ("ended_badly",),
            lambda: (
                select(jobs.c.workflow_id, jobs.c.status, func.count())
                .where(
                    self._db.driver.in_bound_list(jobs.c.workflow_id, "workflows"),
                    jobs.c.step.is_not(None),
                    _one_of(jobs.c.status, sorted(s.value for s in ended_badly)),
                )
                .group_by(jobs.c.workflow_id, jobs.c.status)
            ),
        )
        for workflow_id, status, n in conn.execute(badly, {"workflows": sorted(done)}).all():
            counts[int(workflow_id)][JobStatus(status)] = int(n)
        outcomes: dict[int, WorkflowStatus] = {}
        for workflow_id, row in done.items():
            c = counts[workflow_id]
            status = workflow_outcome(failed=c[JobStatus.FAILED] + c[JobStatus.DEAD], cancelled=c[JobStatus.CANCELLED])
            if row["cancelled_at"] is not None and status == "succeeded":
                status = "cancelled"
            outcomes[workflow_id] = status  # type: ignore[assignment]
        changed: dict[str, list[int]] = defaultdict(list)
        for workflow_id, row in done.items():
            if row["status"] != outcomes[workflow_id] or row["finished_at"] is None:
                changed[outcomes[workflow_id]].append(workflow_id)
        finish = self._statement(
            ("finish",),
            lambda: (
                update(workflows)
                .where(self._db.driver.in_bound_list(workflows.c.id, "workflows"))
                .values(
                    status=bindparam("outcome", type_=workflows.c.status.type),
                    finished_at=bindparam("ended_at", type_=workflows.c.finished_at.type),
                )
            ),
        )
        for status, ids in sorted(changed.items()):
            conn.execute(finish, {"workflows": sorted(ids), "outcome": status, "ended_at": self._clock()})
            for workflow_id in ids:
                self._note_ended(conn, str(done[workflow_id]["name"]), status)
        for workflow_id, row in sorted(done.items()):
            if outcomes[workflow_id] == "succeeded":
                self._continuations.fire(conn, row, "success", workflow_id=workflow_id)
            self._continuations.fire(conn, row, "finish", workflow_id=workflow_id)

    # -- steering: what moves from outside mean, cancel, retry ------------------------------

    def follow(self, conn: Connection, moved: Sequence[Moved]) -> None:
        """Steps changed from outside (``moves.follow``): those that ended settle their workflow;
        those made live again (a retry of one job) reopen it."""
        ended: dict[int, list[tuple[int, JobStatus]]] = defaultdict(list)
        names: dict[int, str] = {}
        revived: Counter[int] = Counter()
        revived_ids: list[int] = []
        for m in moved:
            record = m.record
            if record.workflow_id is None or record.step is None:
                continue
            if m.change.settles_batch(m.previous):  # a live step ended, or went
                status = JobStatus.CANCELLED if m.change.deletes else record.status
                ended[record.workflow_id].append((record.id, status))
                names[record.id] = record.step
            elif m.change.revives and m.previous.is_final:
                revived[record.workflow_id] += 1
                revived_ids.append(record.id)
        if ended:
            self.wake(conn, self.settle(conn, ended, names=names))
        for workflow_id in sorted(revived):
            if self._lock(conn, workflow_id, missing_ok=True) is not None:
                self._reopen(conn, workflow_id, unfinished_by=revived[workflow_id])
        if revived_ids:  # under their workflows' locks: a parent ending now is either counted or releases them
            self._wait_again(conn, revived_ids)

    def _wait_again(self, conn: Connection, job_ids: Sequence[int]) -> None:
        """Steps made live again by hand wait again for their parents that have not ended
        (``transitions.WAIT_AGAIN``): ``blocked``, ``waiting`` for that many, released as at defer."""
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        parent = jobs.alias("parent")
        waits = conn.execute(
            select(edges.c.child_id, func.count())
            .select_from(edges.join(parent, parent.c.id == edges.c.parent_id))
            .where(
                edges.c.child_id.in_(sorted(job_ids)),
                parent.c.status.not_in(sorted(s.value for s in FINAL_STATUSES)),
            )
            .group_by(edges.c.child_id)
        ).all()
        by_count: dict[int, list[int]] = defaultdict(list)
        for child_id, count in waits:
            by_count[int(count)].append(int(child_id))
        now = self._clock()
        for count, ids in sorted(by_count.items()):
            which = jobs.c.id.in_(sorted(ids))
            apply_change(self._db, conn, WAIT_AGAIN, which, now)
            conn.execute(update(jobs).where(which, jobs.c.status == JobStatus.BLOCKED.value).values(waiting=count))

    def cancel(self, workflow_id: int) -> list[int]:
        """Cancel every waiting step at once and tell running ones to stop now; return the running ones' ids.

        Cancelling a workflow that is already final changes nothing.
        """
        jobs, workflows = self._db.tables.jobs, self._db.tables.workflows
        now = self._clock()
        with self.counted(self._db.begin_bounded()) as conn:
            row = self._lock(conn, workflow_id)
            if row["status"] != "active":
                return []
            conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(cancelled_at=now))
            # The steps each change applies to, read first and then locked by primary key: a
            # locking scan of the workflow's steps would also wait on the rows of steps being
            # completed right now (InnoDB locks every row it visits), and a running step whose
            # row is locked is one: its completion waits for this workflow's row, which we hold,
            # so waiting for its row would be a deadlock. It is ending anyway (skipped); the
            # workflow is cancelled once it has.
            moved: list[Moved] = []
            for change in (CANCEL_WITH_WORKFLOW, STOP_WITH_WORKFLOW):
                ids = self._step_ids(conn, workflow_id, change.applies_to)
                if ids:
                    which = jobs.c.id.in_(ids)
                    moved += apply_change(self._db, conn, change, which, now, skip_locked=change.tells_workers)
            notify_cancel(self._db, conn, [m.record.id for m in moved if m.change.tells_workers])
            ended = [(m.record.id, m.record.status) for m in moved if m.change.ends]
            locked = self._lock_counting(conn, {workflow_id: len(ended)}) or {workflow_id: dict(row)}
            self.wake(conn, self._settle(conn, locked, {workflow_id: ended}))
            return [m.record.id for m in moved if m.change.tells_workers]

    def retry(self, workflow_id: int) -> list[int]:
        """Give each failed, dead or cancelled step one more attempt; return their ids.

        A step that waits for another step being retried is ``blocked`` again
        (those cancelled because of a failure are); the others are queued.
        Continuations that fired stay fired; ``on_success`` may still fire
        once, if the workflow now succeeds.
        """
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        now = self._clock()
        with self._db.begin_bounded() as conn:
            self._lock(conn, workflow_id)
            steps = conn.execute(
                select(jobs.c.id, jobs.c.status, jobs.c.attempts, jobs.c.queue)
                .where(jobs.c.workflow_id == workflow_id, jobs.c.step.is_not(None))
                .order_by(jobs.c.id)
                .with_for_update()
            ).all()
            retried = [s for s in steps if JobStatus(s.status) in RETRYABLE]
            if not retried:
                return []
            retried_ids = {int(s.id) for s in retried}
            # Every dependency that is not a success (those retried now included) is waited for again.
            parent = jobs.alias("parent")
            waits: dict[int, int] = dict(
                conn.execute(
                    select(edges.c.child_id, func.count())
                    .select_from(edges.join(parent, parent.c.id == edges.c.parent_id))
                    .where(edges.c.workflow_id == workflow_id, parent.c.status != JobStatus.SUCCEEDED.value)
                    .group_by(edges.c.child_id)
                ).all()
            )
            changes: dict[Any, list[int]] = defaultdict(list)
            for s in retried:
                changes[step_retry(waits=waits.get(s.id, 0) > 0, ran=int(s.attempts) > 0)].append(int(s.id))
            for change, ids in changes.items():
                apply_change(self._db, conn, change, jobs.c.id.in_(ids), now)
            # Blocked steps, retried or not, wait for what is not a success now.
            blocked = {int(s.id) for s in steps if JobStatus(s.status) is JobStatus.BLOCKED} | {
                i for change, ids in changes.items() if change.becomes is JobStatus.BLOCKED for i in ids
            }
            by_count: dict[int, list[int]] = defaultdict(list)
            for job_id in blocked:
                by_count[int(waits.get(job_id, 0))].append(job_id)
            for count, ids in by_count.items():
                conn.execute(update(jobs).where(jobs.c.id.in_(sorted(ids))).values(waiting=count))
            queued = {s.queue for s in retried if s.id in retried_ids and waits.get(s.id, 0) == 0}
            if queued:
                self._db.driver.notify(conn, self._db.tables.notify_channel, sorted(queued))
            self._reopen(conn, workflow_id, cancelled=False)
            return sorted(retried_ids)

    def _reopen(
        self, conn: Connection, workflow_id: int, *, unfinished_by: int | None = None, cancelled: bool = True
    ) -> None:
        """Active again, with its count of unfinished steps moved by ``unfinished_by`` (or recounted)."""
        workflows, jobs = self._db.tables.workflows, self._db.tables.jobs
        values: dict[str, Any] = {"status": "active", "finished_at": None}
        if unfinished_by is not None:
            values["unfinished"] = workflows.c.unfinished + unfinished_by
        else:
            values["unfinished"] = conn.execute(
                select(func.count()).where(
                    jobs.c.workflow_id == workflow_id,
                    jobs.c.step.is_not(None),
                    jobs.c.status.not_in(sorted(s.value for s in FINAL_STATUSES)),
                )
            ).scalar_one()
        if not cancelled:
            values["cancelled_at"] = None
        conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(values))

    # -- locking and counting ------------------------------------------------------------

    def _lock(self, conn: Connection, workflow_id: int, *, missing_ok: bool = False, share: bool = False) -> RowMapping:
        """The workflow's row, locked for this transaction (``share``: only read, no lock)."""
        workflows = self._db.tables.workflows
        looked_up = lookup_id(workflow_id, "workflow")
        row = None
        if looked_up is not None:
            stmt = select(workflows).where(workflows.c.id == looked_up)
            row = conn.execute(stmt if share else stmt.with_for_update()).mappings().first()
        if row is None and not missing_ok:
            raise WorkflowNotFound(f"no workflow {workflow_id}")
        return row  # type: ignore[return-value]

    def _lock_counting(self, conn: Connection, ended: Mapping[int, int]) -> dict[int, dict[str, Any]]:
        """The rows of the workflows in ``ended``, locked, each written with ``ended[id]`` fewer
        unfinished steps (and so read); those that are gone are left out.

        One workflow (a fan-in's batch is one): the UPDATE that counts is the lock, one statement
        where the database returns what it updates. Several: locked in id order first, one order
        for every settler so that none waits for another in a cycle, then counted by one
        statement per distinct number of steps ended.
        """
        workflows = self._db.tables.workflows
        driver = self._db.driver
        if len(ended) == 1:
            ((workflow_id, n),) = ended.items()
            stmt = self._statement(
                ("count_one",),
                lambda: (
                    update(workflows)
                    .where(workflows.c.id == bindparam("workflow_id", type_=workflows.c.id.type))
                    .values(unfinished=workflows.c.unfinished - bindparam("ended", type_=Integer))
                    .returning(*workflows.c)
                ),
            )
            counted = driver.execute_update(conn, stmt, {"workflow_id": workflow_id, "ended": n}).mappings().first()
            return {} if counted is None else {workflow_id: dict(counted)}
        # Through the primary key alone (no other row is locked on the way, on any database), so
        # the plain locking read serves: prebuilt, where ``Driver.lock_rows`` would build its own.
        lock = self._statement(
            ("lock_many",),
            lambda: (
                select(workflows)
                .where(driver.in_bound_list(workflows.c.id, "workflows"))
                .order_by(workflows.c.id)
                .with_for_update()
            ),
        )
        locked = conn.execute(lock, {"workflows": sorted(ended)})
        rows = {int(found["id"]): dict(found) for found in locked.mappings().all()}
        by_count: dict[int, list[int]] = defaultdict(list)
        for workflow_id, row in rows.items():
            row["unfinished"] = int(row["unfinished"]) - ended[workflow_id]
            by_count[ended[workflow_id]].append(workflow_id)
        count = self._statement(
            ("count_many",),
            lambda: (
                update(workflows)
                .where(driver.in_bound_list(workflows.c.id, "workflows"))
                .values(unfinished=workflows.c.unfinished - bindparam("ended", type_=Integer))
            ),
        )
        for n, ids in sorted(by_count.items()):
            conn.execute(count, {"workflows": sorted(ids), "ended": n})
        return rows

    def _step_ids(self, conn: Connection, workflow_id: int, statuses: Collection[JobStatus]) -> list[int]:
        """The steps of a workflow in ``statuses``, read without locking anything."""
        jobs = self._db.tables.jobs
        return list(
            conn.execute(
                select(jobs.c.id).where(
                    jobs.c.workflow_id == workflow_id,
                    jobs.c.step.is_not(None),
                    jobs.c.status.in_(sorted(s.value for s in statuses)),
                )
            ).scalars()
        )

    def _names(self, conn: Connection, job_ids: Sequence[int]) -> dict[int, str]:
        if not job_ids:
            return {}
        jobs = self._db.tables.jobs
        return {
            int(i): str(step)
            for i, step in conn.execute(select(jobs.c.id, jobs.c.step).where(jobs.c.id.in_(sorted(job_ids)))).all()
        }

    def _counts(self, conn: Connection, workflow_id: int) -> Counter[JobStatus]:
        jobs = self._db.tables.jobs
        rows = conn.execute(
            select(jobs.c.status, func.count())
            .where(jobs.c.workflow_id == workflow_id, jobs.c.step.is_not(None))
            .group_by(jobs.c.status)
        ).all()
        return Counter({JobStatus(status): int(n) for status, n in rows})

    # -- reading ---------------------------------------------------------------------------

    def get(self, workflow_id: int, *, connection: Connection | None = None) -> WorkflowRecord:
        """The workflow as it is now (in ``connection``'s transaction, which may not have committed it yet)."""
        if connection is not None:
            return self._get(connection, workflow_id)
        with self._db.engine.connect() as conn:
            return self._get(conn, workflow_id)

    def status(self, workflow_id: int) -> WorkflowStatus:
        """Just the workflow's status: one row, for waiting on a workflow of any size."""
        workflows = self._db.tables.workflows
        found = None
        if (looked_up := lookup_id(workflow_id, "workflow")) is not None:
            with self._db.engine.connect() as conn:
                found = conn.execute(select(workflows.c.status).where(workflows.c.id == looked_up)).scalar()
        if found is None:
            raise WorkflowNotFound(f"no workflow {workflow_id}")
        status: WorkflowStatus = found
        return status

    def _get(self, conn: Connection, workflow_id: int) -> WorkflowRecord:
        workflows = self._db.tables.workflows
        looked_up = lookup_id(workflow_id, "workflow")
        row = None
        if looked_up is not None:
            row = conn.execute(select(workflows).where(workflows.c.id == looked_up)).mappings().first()
        if row is None:
            raise WorkflowNotFound(f"no workflow {workflow_id}")
        return self._record(conn, row, steps=True)

    def list(
        self,
        name: str | None = None,
        tenant: str | None = None,
        status: str | None = None,
        limit: int = 25,
        offset: int = 0,
        *,
        steps: bool = True,
    ) -> builtins.list[WorkflowRecord]:
        """Newest first. ``steps=False`` leaves each record's ``steps`` empty (its stats are still counted):
        for lists of workflows with many steps."""
        check_filter("name", name)
        check_filter("tenant", tenant)
        workflows = self._db.tables.workflows
        stmt = select(workflows).order_by(workflows.c.id.desc()).limit(limit).offset(offset)
        if name is not None:
            stmt = stmt.where(workflows.c.name == name)
        if tenant is not None:
            stmt = stmt.where(workflows.c.tenant == tenant)
        if status is not None:
            stmt = stmt.where(workflows.c.status == status)
        with self._db.engine.connect() as conn:
            return [self._record(conn, row, steps=steps) for row in conn.execute(stmt).mappings().all()]

    def upstream(self, job_id: int) -> builtins.list[Upstream]:
        """The direct dependencies of step ``job_id`` with their results and errors: one read for all."""
        jobs, edges = self._db.tables.jobs, self._db.tables.workflow_edges
        stmt = (
            select(jobs.c.step, jobs.c.status, jobs.c.result, jobs.c.error)
            .select_from(edges.join(jobs, jobs.c.id == edges.c.parent_id))
            .where(edges.c.child_id == job_id)
            .order_by(jobs.c.id)
        )
        with self._db.engine.connect() as conn:
            return [
                Upstream(
                    step=str(step),
                    status=JobStatus(status),
                    result=result if status == JobStatus.SUCCEEDED.value else None,
                    error=None if status == JobStatus.SUCCEEDED.value else JobError.from_json(error),
                )
                for step, status, result, error in conn.execute(stmt).all()
            ]

    def _record(self, conn: Connection, row: RowMapping, *, steps: bool) -> WorkflowRecord:
        t = self._db.tables
        jobs, edges, fired_events = t.jobs, t.workflow_edges, t.workflow_events
        workflow_id = int(row["id"])
        now = self._clock()
        of_workflow = and_(jobs.c.workflow_id == workflow_id, jobs.c.step.is_not(None))
        by_name: dict[str, StepRecord] = {}
        counts: Counter[str] = Counter()
        if steps:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.step, jobs.c.status, jobs.c.run_at, jobs.c.error)
                .where(of_workflow)
                .order_by(jobs.c.id)
            ).all()
            name_of = {int(r.id): str(r.step) for r in rows}
            after: dict[int, list[str]] = defaultdict(list)
            for parent_id, child_id in conn.execute(
                select(edges.c.parent_id, edges.c.child_id)
                .where(edges.c.workflow_id == workflow_id)
                .order_by(edges.c.child_id, edges.c.parent_id)
            ).all():
                if int(parent_id) in name_of:
                    after[int(child_id)].append(name_of[int(parent_id)])
            for r in rows:
                status = shown_status(r.status, r.run_at <= now)
                counts[status.value] += 1
                by_name[str(r.step)] = StepRecord(
                    name=str(r.step),
                    job_id=int(r.id),
                    status=status,
                    after=list(after.get(int(r.id), ())),
                    reason=cancel_reason(status, JobError.from_json(r.error)),
                )
        else:
            due = jobs.c.run_at <= now
            for status, is_due, n in conn.execute(
                select(jobs.c.status, due, func.count()).where(of_workflow).group_by(jobs.c.status, due)
            ).all():
                counts[shown_status(status, bool(is_due)).value] += int(n)
        fired = conn.execute(
            select(fired_events.c.event, fired_events.c.job_id)
            .where(fired_events.c.workflow_id == workflow_id)
            .order_by(fired_events.c.fired_at, fired_events.c.event)
        ).all()
        workflow_status: WorkflowStatus = row["status"]
        return WorkflowRecord(
            id=workflow_id,
            name=row["name"],
            status=workflow_status,
            tenant=row["tenant"],
            metadata=row["metadata"],
            stats=WorkflowStats.from_counts(dict(counts)),
            steps=by_name,
            continuations=[(str(event), int(job_id)) for event, job_id in fired],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            cancelled_at=row["cancelled_at"],
            events=tuple(sorted((row["continuations"] or {}).keys())),
        )


# -- checking a graph before anything is written ---------------------------------------------


def check_name(label: str, name: object) -> str:
    """A step's or a workflow's name: shown in tables, graphs and reasons, so one printable line
    (and PostgreSQL stores no NUL)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidArguments(f"{label} must be a non-empty string, not {name!r}")
    if len(name) > NAME_LENGTH:
        raise InvalidArguments(f"{label} {name[:40]!r}...: at most {NAME_LENGTH} characters")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidArguments(f"{label} {name[:40]!r} has a control character (a newline, a tab, a NUL...)")
    return name


def check_steps(steps: Sequence[NewStep], existing: Collection[str] = (), *, blocked: Iterable[str] = ()) -> None:
    """Refuse a graph that cannot run, naming the problem: a duplicate name, an ``after`` naming no
    step, a step with a deduplication key, a cycle (named, step by step).

    ``existing``: the names a workflow already has (steps added at run time may
    wait for them); ``blocked``: existing steps that will also wait for every
    new step (``before=``), which a new step must then not wait for.
    """
    names: set[str] = set(existing)
    for step in steps:
        check_name("step name", step.name)
        if step.name in names:
            raise InvalidArguments(f"step {step.name!r}: a step of that name is already in the workflow")
        names.add(step.name)
        if step.job.key is not None:
            raise InvalidArguments(f"step {step.name!r}: a step runs once per workflow already; give it no key")
    for step in steps:
        for parent in step.after:
            if parent not in names:
                raise InvalidArguments(f"step {step.name!r}: after={parent!r} names no step of this workflow")
    cycle = find_cycle({step.name: step.after for step in steps}, extra=blocked, new=[s.name for s in steps])
    if cycle:
        raise InvalidArguments("steps wait for each other in a cycle: " + " -> ".join(cycle))


def find_cycle(
    after: Mapping[str, Sequence[str]], *, extra: Iterable[str] = (), new: Sequence[str] = ()
) -> list[str] | None:
    """A cycle in "X waits for Y" (as [X, Y, ..., X]), or None; iterative, for graphs of any depth.

    ``extra``: steps that wait for every step in ``new`` as well.
    """
    waits: dict[str, list[str]] = {name: list(parents) for name, parents in after.items()}
    for name in extra:
        waits.setdefault(name, []).extend(new)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in waits:
        if state.get(start):
            continue
        path = [start]
        stack = [iter(waits.get(start, ()))]
        state[start] = 1
        while stack:
            parent = next(stack[-1], None)
            if parent is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            seen = state.get(parent)
            if seen == 1:
                return [*path[path.index(parent) :], parent]
            if seen is None:
                state[parent] = 1
                path.append(parent)
                stack.append(iter(waits.get(parent, ())))
    return None


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """``ids`` in slices a statement takes as bound values on every database (SQLite's limit is 32,766)."""
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        yield ids[start : start + IDS_PER_STATEMENT]


__all__ = ["Workflows", "check_name", "check_steps", "find_cycle"]


def _one_of(column: ColumnElement[str], values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with our own constants (rules, statuses) in the statement's text.

    An IN of a Python list is an expanding parameter, rendered into the text again at every
    execution: in the count-down and the finish of every completion of a step, under the
    workflow's lock.
    """
    listed = list(values)
    assert all(re.fullmatch(r"[a-z_]+", v) for v in listed), listed  # constants, never input
    return column.in_([literal_column(f"'{v}'") for v in listed])


def _new_row(
    name: str,
    tenant: str | None,
    metadata: dict[str, Any] | None,
    continuations: Mapping[str, NewJob],
    steps: int,
    now: datetime,
) -> dict[str, Any]:
    """A new workflow's row: active, ``steps`` unfinished, its continuations kept until they fire."""
    return {
        "name": name,
        "tenant": tenant,
        "metadata": metadata,
        "status": "active",
        "continuations": {event: stored(job) for event, job in continuations.items()},
        "unfinished": steps,
        "created_at": now,
    }
