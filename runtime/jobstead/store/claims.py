"""Claiming jobs: the hot path, and the one place the concurrency limits live (global and per key).

Two paths, chosen per claim:

* Handlers without a limit: one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR
  UPDATE SKIP LOCKED)) RETURNING ...`` statement (SQLite: ``id IN (...)``).
  Concurrent workers skip each other's rows instead of waiting on them.
* Handlers with a global limit only: the claim takes free rows of the
  handler's ``slots`` (``_take_slotted``), one per job, SKIP LOCKED: claimers
  of one limited handler take different slots instead of waiting on one lock.
* Handlers with a limit per key: the claim first locks their ``handlers`` rows (``FOR
  UPDATE``), then counts their running jobs, then claims at most the remaining
  room. Every claim of a limited handler holds that row lock until commit, so two
  workers can never both see "2 of 3 running" and both take the third slot; the
  limit holds across every process and pod. Completions do not need the lock:
  they only ever make room. A limit per key (``tenant_concurrency``, or
  ``concurrency_by`` with ``concurrency_per_key``) is counted under the same
  lock, per value of the key column the job stored at defer, together with the
  global limit (``_per_key``). Such a handler with a rate per key or fair
  sharing has those choose its jobs, skipping any whose key is full
  (``KeyLimit.has_room``), still under the lock and within the global limit.

On SQLite the transaction itself is the lock (``BEGIN IMMEDIATE``).

Where claimers can skip each other's locked rows (``Driver.skip_locked``), a
claim that finds nothing in its way is one autocommitted statement
(``_claim_alone``): the pause and limit read rides in it as a CTE, and every
row it takes is checked against that read in the same statement, so a pause or
a new limit still takes effect from the next claim. It reports what blocks
claims too; as soon as something concerns this claimer (a pause of one of its
handlers or queues, a limit on one of its handlers) its next claims take the
transaction above until nothing does any more. One round trip instead of four
(BEGIN, the read, the UPDATE, COMMIT): the defer-to-start delay at low rates is
mostly round trips.

The same holds for a claimer of one handler with a global limit only
(``_slotted_alone``): once a claim saw nothing but that handler's slots in its
way, its claims are the slotted claim as one autocommitted statement, the read
riding in it, and the claim a completion makes in its own transaction (a
hand-off) is one statement too; anything else in its way (a pause, a rate, the
limit lifted) and it takes no slot, and the full claim runs at once instead.

On PostgreSQL a claim's commit does not wait for its WAL flush
(``Driver.unflushed_commit_row``, a transaction-local ``synchronous_commit =
off`` read in the same statement): the fsync was most of a one-job claim's
time. A server crash before the flush undoes the claim whole, so the job is
queued again with its attempt not counted, as after a worker crash; the next
commit that does wait (a completion, a defer) flushes the claim first, since
the log is written in order. Defers and completions always wait.

Pauses and which handlers have a limit are read at the start of each claim,
in the same transaction (``_blocked``): a pause, or a limit the operator just
set, takes effect from the next claim.

Every statement is built once per shape (one queue or all, paused queues or
none, a subquery or a list of ids) with bound parameters, and kept: building
SQLAlchemy constructs anew for each claim cost more than a millisecond of
CPU, most of a one-job claim.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Connection,
    Integer,
    Select,
    String,
    Update,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.sql.elements import Grouping

from ..clock import Clock
from ..flow import TENANT
from ..retry import RetryPolicy
from ..status import CLAIMABLE_STATUSES, LIVE_STATUSES, JobStatus
from .database import Database
from .records import ClaimedJob

if TYPE_CHECKING:
    from .drivers.async_alone import AsyncAlone


@dataclass(frozen=True)
class Blocked:
    """What stops a claim: a global pause, paused queues and handlers, handlers with a limit."""

    everything: bool
    queues: set[str]
    handlers: set[str]
    #: Handlers limited per key (tenant or key), whose claims lock their rows.
    limited: set[str]
    #: Handlers with a global limit only, claimed through their slots.
    slotted: set[str] = field(default_factory=set)
    #: Handlers with a rate limit (their own, or shared ones): claimed no faster than their rates.
    rated: set[str] = field(default_factory=set)
    #: Handlers with ``sequence_by``: only the first unfinished job of each key may start.
    sequenced: set[str] = field(default_factory=set)
    #: Handlers with ``fair_by``: starts go round the keys with a backlog.
    fair: set[str] = field(default_factory=set)

    def concerns(self, handlers: Collection[str], queues: Collection[str] | None) -> bool:
        """Whether any of this can stop a claim of ``handlers`` in ``queues``."""
        scopes = [("all", "")] if self.everything else []
        scopes += [("queue", q) for q in self.queues] + [("handler", h) for h in self.handlers]
        scopes += [("slots", h) for h in self.slotted] + [("rate", h) for h in self.rated]
        scopes += [("sequence", h) for h in self.sequenced] + [("fair", h) for h in self.fair]
        return concerns(scopes + [("limit", h) for h in self.limited], handlers, queues)


#: The room of a handler with a limit per key but no global one.
UNLIMITED = 1 << 30


@dataclass
class KeyLimit:
    """A handler's limit per key, for one claim: at most ``cap`` running jobs per value of ``column``.

    ``tenant_concurrency`` is one over the ``tenant`` column that leaves jobs
    without a tenant alone; ``concurrency_by`` + ``concurrency_per_key`` one
    over the key read at defer (or ``tenant``), where jobs without a key are a
    group of their own (``null_is_a_key``). ``running`` is kept up to date as
    the claim takes jobs (``took``), so a claim over several queues counts each.
    """

    cap: int
    column: str
    null_is_a_key: bool
    running: dict[str | None, int]
    #: The key of each job offered to this claim (``Claims._per_key``), by id.
    offered: dict[int, str | None]
    #: The handler's sequence, if it has one (``JobSequence``): only each key's first job may start.
    sequence: JobSequence | None = None

    def has_room(self, key: str | None, chosen: dict[str | None, int]) -> bool:
        """Whether one more job of ``key`` fits, beside the ``chosen`` ones not taken yet."""
        if key is None and not self.null_is_a_key:
            return True
        return self.running.get(key, 0) + chosen.get(key, 0) < self.cap

    def took(self, job_id: int) -> None:
        """Count a job this claim took as running under its key."""
        key = self.offered.get(job_id)
        if key is not None or (job_id in self.offered and self.null_is_a_key):
            self.running[key] = self.running.get(key, 0) + 1


@dataclass(frozen=True)
class JobSequence:
    """A handler's ``sequence_by``: the column its key is in, and whether failed and dead jobs hold it."""

    column: str
    hold: bool


#: Handler -> its limit per key, for one claim.
KeyLimits = dict[str, KeyLimit]


#: How many ranked jobs a claim with a rate per key looks at (the best of each key first).
KEYED_RATE_LOOKAHEAD = 2000
#: ``rate_slots.kind`` of the rings of rates per key (named by ``ring_name``).
KEYED_RING = "key"
#: The turn key of jobs without a ``fair_by`` key (one group of their own).
NO_KEY = "\x1fnone"


@dataclass(frozen=True)
class KeyedRate:
    """A handler's ``rate_limit`` with ``rate_limit_by``: one ring of ``limit`` rows per key."""

    column: str
    limit: int
    per: float


def ring_name(handler: str, key: str | None) -> str:
    """The ring of one key of a handler's rate per key (jobs without the key: one ring of their own);
    past the column's 200 characters, the SHA-256 of the two (equal keys, equal rings)."""
    name = f"{handler}\x1fnull" if key is None else f"{handler}\x1fk:{key}"
    if len(name) > 200:
        return "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return name


@dataclass
class RateRing:
    """The rows of one rate free for this claim (locked), and how many of them its starts took."""

    kind: str
    name: str
    per: float
    free: list[int]
    used: int = 0


class Rates:
    """The rates of the handlers of one claim: how many more each may start, counted as they do.

    A shared rate is one ring whichever handler takes from it, so two handlers
    of one claim count against it together.
    """

    def __init__(self, of: dict[str, list[RateRing]], keyed: dict[str, KeyedRate] | None = None) -> None:
        self.of = of
        #: Handlers with a rate per key (``Claims._within_key_rates``).
        self.keyed = keyed or {}
        #: When the first key this claim's rates per key held back has room again.
        self.room: datetime | None = None

    def allow(self, handler: str, wanted: int) -> int:
        rings = self.of.get(handler)
        return wanted if not rings else min(wanted, *(len(r.free) - r.used for r in rings))

    def took(self, handler: str, count: int) -> None:
        for ring in self.of.get(handler, ()):
            ring.used += count

    def rings(self) -> list[RateRing]:
        return list({id(r): r for rings in self.of.values() for r in rings}.values())


#: How a claim picks its jobs: a candidates subquery of a shape (one queue?, paused queues
#: to skip?) with its parameters, or a list of ids chosen beforehand (limited handlers).
Pick = tuple[tuple[bool, bool], dict[str, Any]] | list[int]


#: Who claims: (handlers, queues) as a claimer passes them.
Claimer = tuple[tuple[str, ...], tuple[str, ...] | None]


def concerns(scopes: Sequence[tuple[str, str]], handlers: Collection[str], queues: Collection[str] | None) -> bool:
    """Whether any of these pauses and limits (``scope``, ``name``) can stop a claim of ``handlers`` in ``queues``."""
    for scope, name in scopes:
        if scope == "all":
            return True
        if scope in ("handler", "limit", "slots", "rate", "sequence", "fair") and name in handlers:
            return True
        if scope == "queue" and (queues is None or name in queues):
            return True
    return False


#: What ``Claims._alone_steps`` yields: a statement and its parameters (read once its connection is held).
AloneStep = tuple[Select[Any], Callable[[], dict[str, Any]]]


def _run_steps(
    steps: Generator[AloneStep, Sequence[Sequence[Any]], list[ClaimedJob]],
    rows: Callable[[Select[Any], Callable[[], dict[str, Any]]], Sequence[Sequence[Any]]],
) -> list[ClaimedJob]:
    """Drive ``Claims._alone_steps`` on this thread: each statement run by ``rows``; what it claimed."""
    try:
        statement, params = next(steps)
        while True:
            statement, params = steps.send(rows(statement, params))
    except StopIteration as done:
        claimed: list[ClaimedJob] = done.value
        return claimed


def _only_slotted(blocked: Blocked, handlers: Sequence[str], queues: Sequence[str] | None) -> bool:
    """Whether a claim of ``handlers`` in ``queues`` is one handler's slotted claim and nothing else:
    a global limit only, no pause in its way, one queue or all of them (``Claims._slotted_alone``)."""
    if len(handlers) != 1 or handlers[0] not in blocked.slotted or (queues is not None and len(queues) != 1):
        return False
    return not replace(blocked, slotted=set()).concerns(handlers, queues)


def _status_in(column: ColumnElement[str], statuses: Iterable[JobStatus]) -> ColumnElement[bool]:
    """``status IN (...)`` with the statuses in the statement's text, not bound as parameters.

    Only then can a prepared statement's generic plan use the partial indexes
    whose predicates name statuses (ready jobs, unfinished ones): with
    parameters it cannot prove the predicate, and the server re-planned every
    claim to use them (0.6 ms of planning per claim).
    """
    values = [s.value for s in statuses]
    return column.in_(bindparam(f"statuses_{'_'.join(values)}", values, literal_execute=True, expanding=True))


class Claims:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._statements: dict[tuple[Any, ...], Any] = {}
        #: Claimers whose last claim saw nothing in their way: their next one is one statement.
        self._clear: set[Claimer] = set()
        #: Claimers whose last claim a rate held back: when its next row frees (``rate_room_at``).
        self._rate_room: dict[Claimer, datetime] = {}
        #: Claimers of one handler with a global limit only, whose last claim saw nothing else in the
        #: way: their next claim is the slotted claim as one statement (``_slotted_alone``).
        self._slotted_clear: set[Claimer] = set()

    def claim(
        self,
        *,
        worker_id: str,
        handlers: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` ready jobs of ``handlers``, serving ``queues`` in order."""
        if limit <= 0 or not handlers:
            return []
        claimer: Claimer = (tuple(handlers), None if queues is None else tuple(queues))
        if claimer in self._clear:
            return self._claim_alone(claimer, worker_id, limit, lease_seconds)
        if claimer in self._slotted_clear:
            statement, params = self._slotted_alone_statement(claimer, worker_id, limit, lease_seconds, in_claim=False)
            found = self._slotted_found(claimer, self._db.driver.rows_alone(self._db.engine, statement, params))
            if found is not None:
                return found
        with self._db.engine.begin() as conn:
            return self._claim_in(conn, claimer, worker_id, limit, lease_seconds, unflushed=True)

    def claim_in(
        self,
        conn: Connection,
        *,
        worker_id: str,
        handlers: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        """``claim`` inside the caller's transaction: a completion's hand-off (``Leases.complete``).

        The jobs the caller just finished no longer run as this transaction
        sees them, so the slots they held are free to it, and to no other
        claimer before it commits: a worker that has work keeps its slots.
        The full claim (pauses, limits, rates, queue order), and its commit
        waits for the flush as the caller's does. For a claimer nothing stood
        in the way of (``_clear``), the claim as ``_alone`` makes it, reading
        the pauses and limits as it claims: one round trip instead of two in
        the completion's transaction (a workflow step's, releasing the next),
        each a millisecond or more on a loaded machine.
        """
        if limit <= 0 or not handlers:
            return []
        claimer: Claimer = (tuple(handlers), None if queues is None else tuple(queues))
        if claimer in self._clear:
            steps = self._alone_steps(claimer, worker_id, limit, lease_seconds, in_claim=True)
            return _run_steps(steps, lambda statement, params: conn.execute(statement, params()).all())
        if claimer in self._slotted_clear:
            statement, params = self._slotted_alone_statement(claimer, worker_id, limit, lease_seconds, in_claim=True)
            found = self._slotted_found(claimer, conn.execute(statement, params()).all())
            if found is not None:
                return found
        return self._claim_in(conn, claimer, worker_id, limit, lease_seconds, unflushed=False)

    def hand_off_statement(
        self, *, worker_id: str, handlers: Sequence[str], queues: Sequence[str] | None, limit: int, lease_seconds: float
    ) -> tuple[Select[Any], Callable[[], dict[str, Any]]] | None:
        """A hand-off's claim as one statement and its parameters, for the completion to send along
        (``Driver.complete_alone_then``), where it is one (``_slotted_alone``); None: claim as usual.

        Its rows go to ``hand_off_found``."""
        claimer: Claimer = (tuple(handlers), None if queues is None else tuple(queues))
        if limit <= 0 or claimer not in self._slotted_clear:
            return None
        return self._slotted_alone_statement(claimer, worker_id, limit, lease_seconds, in_claim=True)

    def hand_off_found(
        self, handlers: Sequence[str], queues: Sequence[str] | None, rows: Sequence[Sequence[Any]]
    ) -> list[ClaimedJob] | None:
        """What a ``hand_off_statement`` claimed; None if it found something in its way and claimed
        nothing: the caller makes the full claim (``claim_in``) in the same transaction."""
        return self._slotted_found((tuple(handlers), None if queues is None else tuple(queues)), rows)

    def _slotted_alone_statement(
        self, claimer: Claimer, worker_id: str, limit: int, lease_seconds: float, *, in_claim: bool
    ) -> tuple[Select[Any], Callable[[], dict[str, Any]]]:
        """The one-statement slotted claim of a ``_slotted_clear`` claimer, and its parameters (a
        function: the claim's time is read once the connection is held, as ``_alone_steps`` does).

        ``in_claim``: run inside a completion's transaction (a hand-off): its commit waits for the
        flush, and its locks are bounded like a claim's (``_blocked``).
        """
        handlers, queues = claimer
        queue = queues[0] if queues else None
        shape = (queue is not None, False)

        def params() -> dict[str, Any]:
            given = self._claim_params(worker_id, lease_seconds, handlers, limit, queue)
            return {**given, "slot_handler": handlers[0], "bound_seconds": lease_seconds}

        return self._slotted_alone(shape, in_claim), params

    def _claim_params(
        self, worker_id: str, lease_seconds: float, handlers: Sequence[str], limit: int, queue: str | None
    ) -> dict[str, Any]:
        """What a one-statement claim binds, its time read now: call it once the connection is held."""
        now = self._clock()
        given: dict[str, Any] = {
            "owner": worker_id,
            "expires": now + timedelta(seconds=lease_seconds),
            "started": now,
            "now": now,
            "handlers": list(handlers),
            "limit": limit,
        }
        if queue is not None:
            given["in_queue"] = queue
        return given

    def _slotted_found(self, claimer: Claimer, rows: Sequence[Sequence[Any]]) -> list[ClaimedJob] | None:
        """The jobs a ``_slotted_alone`` statement claimed; None if something it read now stands in the
        claimer's way (it claimed nothing then): the caller makes the full claim instead, at once.

        The statement took no slot while anything but the handler's own slots concerned it; if
        its slots are gone (the limit was lifted), the full claim finds out what to do instead.
        """
        handlers, queues = claimer
        scopes = list(zip(rows[0][0], rows[0][1], strict=True)) if rows[0][0] else []
        claimed = self._jobs(row[2:] for row in rows if row[2] is not None)
        own = ("slots", handlers[0])
        if own not in scopes or concerns([s for s in scopes if s != own], handlers, queues):
            self._slotted_clear.discard(claimer)
            if not claimed:
                return None
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return claimed

    def _claim_in(
        self,
        conn: Connection,
        claimer: Claimer,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        *,
        unflushed: bool,
    ) -> list[ClaimedJob]:
        handlers, queues = claimer
        blocked = self._blocked(conn, handlers, lease_seconds, unflushed=unflushed)
        if self._db.driver.one_statement_claim and not blocked.concerns(handlers, queues):
            self._clear.add(claimer)
        if self._db.driver.one_statement_claim and _only_slotted(blocked, handlers, queues):
            self._slotted_clear.add(claimer)
        if blocked.everything:
            return []
        mine = [h for h in handlers if h not in blocked.handlers]
        room: dict[str, int] = {}
        unlimited_now: list[str] = []
        key_limits: KeyLimits = {}
        if any(h in blocked.limited for h in mine):
            room, unlimited_now, key_limits = self._room(conn, [h for h in mine if h in blocked.limited])
        # The claim's time, read only now that its connection and any handler row lock are held:
        # read before waiting for them it was up to 400 ms early under load, and it is the jobs'
        # ``started_at`` and the rate rows' stamp (a window's count in real time must hold).
        now = self._clock()
        rates = self._rate_rings(conn, [h for h in mine if h in blocked.rated], now, limit)
        keyed = rates.keyed
        sequences = self._sequences(conn, [h for h in mine if h in blocked.sequenced])
        fair = self._fair_columns(conn, [h for h in mine if h in blocked.fair])
        # One by one, each within its slots, its rates or its sequences.
        capped = [
            h
            for h in mine
            if h in blocked.slotted
            or ((h in rates.of or h in sequences or h in keyed or h in fair) and h not in blocked.limited)
        ]
        free = [h for h in mine if h not in blocked.limited and h not in capped]
        special = {*rates.of, *sequences, *keyed, *fair}
        free += [h for h in unlimited_now if h not in special]
        capped += [h for h in unlimited_now if h in special]
        own_picks = [h for h in key_limits if h in keyed or h in fair]
        claimed: list[ClaimedJob] = []
        for queue in queues or (None,):
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            if queue in blocked.queues:
                continue

            def take(name: str, want: int, in_queue: str | None = queue, **how: Any) -> list[ClaimedJob]:
                """``_take_slotted`` for one handler in this queue, with its sequence, rates and fairness."""
                return self._take_slotted(
                    conn,
                    now,
                    in_queue,
                    name,
                    want,
                    blocked.queues,
                    worker_id,
                    lease_seconds,
                    sequence=sequences.get(name),
                    keyed_rate=keyed.get(name),
                    rates=rates,
                    fair_column=fair.get(name),
                    **how,
                )

            for name in capped:
                want = rates.allow(name, limit - len(claimed))
                if want > 0:
                    taken = take(
                        name,
                        want,
                        use_slots=name in blocked.slotted,
                        one_statement=name not in rates.of and name not in keyed and name not in fair,
                    )
                    rates.took(name, len(taken))
                    claimed += taken
            for name, limit_per_key in key_limits.items():
                limit_per_key.sequence = sequences.get(name)
            # Limited per key with a rate per key or fair sharing: those choose the jobs, within the limits.
            for name in own_picks:
                want = min(room[name], rates.allow(name, limit - len(claimed)))
                if want > 0:
                    taken = take(name, want, use_slots=False, one_statement=False, key_limit=key_limits[name])
                    room[name] -= len(taken)
                    for job in taken:
                        key_limits[name].took(job.id)
                    rates.took(name, len(taken))
                    claimed += taken
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            for name in room:
                room[name] = rates.allow(name, room[name])
            picked_room = {name: n for name, n in room.items() if name not in own_picks}
            which = self._pick(conn, now, queue, free, picked_room, key_limits, wanted, blocked.queues)
            if which:
                taken = self._take(conn, now, which, worker_id, lease_seconds)
                for job in taken:
                    if job.handler in room:
                        room[job.handler] -= 1
                    if job.handler in key_limits:
                        key_limits[job.handler].took(job.id)
                    rates.took(job.handler, 1)
                claimed += taken
        self._stamp(conn, rates, now)
        self._note_rate_room(conn, claimer, rates, now, held_back=len(claimed) < limit)
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return claimed

    def rate_room_at(self, handlers: Sequence[str], queues: Sequence[str] | None) -> datetime | None:
        """When a rate that held back this claimer's last claim has room again (None: none did).

        The claim loop sleeps until then rather than for its poll interval, so
        a job a rate held back starts as soon as the window allows.
        """
        return self._rate_room.get((tuple(handlers), None if queues is None else tuple(queues)))

    def held_by(self, job_id: int) -> int | None:
        """The job holding this waiting job's sequence back (the first of its key that holds it), if any.

        The same rule the claim applies (``_first_of_its_key``): what ``jobs
        show`` says of a job that does not start.
        """
        jobs, handlers = self._db.tables.jobs, self._db.tables.handlers
        with self._db.engine.connect() as conn:
            row = conn.execute(
                select(
                    jobs.c.handler,
                    jobs.c.status,
                    jobs.c.sequence_key,
                    jobs.c.tenant,
                    handlers.c.sequence_by,
                    handlers.c.sequence_on_failure,
                )
                .select_from(jobs.join(handlers, handlers.c.name == jobs.c.handler))
                .where(jobs.c.id == job_id)
            ).first()
            if row is None or row.sequence_by is None or row.status not in {s.value for s in CLAIMABLE_STATUSES}:
                return None
            column = TENANT if row.sequence_by == TENANT else "sequence_key"
            key = row.tenant if column == TENANT else row.sequence_key
            if key is None:
                return None
            holding = list(LIVE_STATUSES)  # a blocked step waits for its workflow, not its sequence
            if row.sequence_on_failure != "continue":
                holding += [JobStatus.FAILED, JobStatus.DEAD]
            first: int | None = conn.execute(
                select(jobs.c.id)
                .where(
                    jobs.c.handler == row.handler,
                    jobs.c[column] == key,
                    jobs.c.id < job_id,
                    _status_in(jobs.c.status, holding),
                )
                .order_by(jobs.c.id)
                .limit(1)
            ).scalar()
            return first

    def _note_rate_room(self, conn: Connection, claimer: Claimer, rates: Rates, now: datetime, held_back: bool) -> None:
        """After a claim a rate held back: the earliest time one of its spent rates frees a row."""
        self._rate_room.pop(claimer, None)
        spent = [ring for ring in rates.rings() if ring.used >= len(ring.free)]
        if not held_back or not (spent or rates.room):
            return
        table = self._db.tables.rate_slots
        soonest: datetime | None = rates.room
        for ring in spent:
            oldest = conn.execute(
                select(func.min(table.c.used_at)).where(table.c.kind == ring.kind, table.c.name == ring.name)
            ).scalar()
            if oldest is not None:
                at = oldest + timedelta(seconds=ring.per)
                soonest = at if soonest is None else min(soonest, at)
        if soonest is not None:
            self._rate_room[claimer] = soonest

    async def claim_async(
        self,
        on_loop: AsyncAlone | None,
        *,
        worker_id: str,
        handlers: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        """``claim`` for a caller on an event loop: the one-statement claim is awaited on
        ``on_loop`` (no thread); a claim that needs the transaction goes to a thread, and so
        does every claim while ``on_loop`` has no connection the server will give it."""
        claimer: Claimer = (tuple(handlers), None if queues is None else tuple(queues))
        if on_loop is None or limit <= 0 or not handlers or claimer not in self._clear or not await on_loop.usable():
            return await asyncio.to_thread(
                self.claim,
                worker_id=worker_id,
                handlers=handlers,
                queues=queues,
                limit=limit,
                lease_seconds=lease_seconds,
            )
        steps = self._alone_steps(claimer, worker_id, limit, lease_seconds)
        try:
            statement, params = next(steps)
            while True:
                statement, params = steps.send(await on_loop.rows(statement, params))
        except StopIteration as done:
            claimed: list[ClaimedJob] = done.value
            return claimed

    def _claim_alone(self, claimer: Claimer, worker_id: str, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        steps = self._alone_steps(claimer, worker_id, limit, lease_seconds)
        return _run_steps(steps, partial(self._db.driver.rows_alone, self._db.engine))

    def _alone_steps(
        self, claimer: Claimer, worker_id: str, limit: int, lease_seconds: float, *, in_claim: bool = False
    ) -> Generator[AloneStep, Sequence[Sequence[Any]], list[ClaimedJob]]:
        """The claim as one autocommitted statement per queue, for a claimer nothing stood in the way of.

        Each statement reads the pauses and limits as it claims and takes no
        row they cover; if they concern this claimer, its next claims go
        through ``claim``'s transaction (which handles limits) again.

        Yields each statement with its parameters and is sent its rows, so the
        same steps run on a thread (``_claim_alone``) or on an event loop
        (``claim_async``). The parameters are a function, called once the
        statement's connection is held: the claim's time is read then.
        ``in_claim``: inside a completion's transaction (``claim_in``).
        """
        handlers, queues = claimer
        claimed: list[ClaimedJob] = []
        for queue in queues or (None,):
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            shape = (queue is not None, False)

            def params(wanted: int = wanted, queue: str | None = queue) -> dict[str, Any]:
                given = self._claim_params(worker_id, lease_seconds, handlers, wanted, queue)
                return {**given, "bound_seconds": lease_seconds} if in_claim else given

            rows = yield self._alone(shape, in_claim), params
            scopes, names = rows[0][0], rows[0][1]
            claimed += self._jobs(row[2:] for row in rows if row[2] is not None)
            if scopes and concerns(list(zip(scopes, names, strict=True)), handlers, queues):
                self._clear.discard(claimer)
                break
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return claimed

    def _alone(self, shape: tuple[bool, bool], in_claim: bool = False) -> Select[Any]:
        """``WITH blocked AS (pauses, limits), claimed AS (UPDATE ... unless blocked RETURNING ...)``:
        one row per claimed job, each with what blocks claims (one row with no job if none was claimed).

        ``in_claim``: run inside a completion's transaction (a hand-off, ``claim_in``): its commit
        waits for the flush, and its locks are bounded like a claim's (``_blocked``)."""
        stmt = self._statements.get(("alone", shape, in_claim))
        if stmt is None:
            jobs = self._db.tables.jobs
            c = jobs.c
            blocked = self._blocked_select(with_bound=in_claim, unflushed=not in_claim).cte("blocked")
            scope, name = blocked.c[0], blocked.c[1]
            not_blocked = ~exists().where(
                or_(
                    scope == "all",
                    and_(scope.in_(("handler", "limit", "slots", "rate", "sequence", "fair")), name == c.handler),
                    and_(scope == "queue", name == c.queue),
                )
            )
            claimed = self._build_update(shape, not_blocked).cte("claimed")
            head = select(
                select(func.array_agg(scope)).scalar_subquery().label("scopes"),
                select(func.array_agg(name)).scalar_subquery().label("names"),
            ).subquery("head")
            stmt = select(head.c.scopes, head.c.names, *claimed.c).select_from(head.outerjoin(claimed, true()))
            self._statements[("alone", shape, in_claim)] = stmt
        return stmt

    def _blocked(
        self, conn: Connection, handlers: Sequence[str], bound_seconds: float, *, unflushed: bool = True
    ) -> Blocked:
        """Pauses, and which of ``handlers`` have a global limit: one small read before the claim.

        Read up front rather than checked per row inside the claim: correlated
        ``NOT EXISTS`` conditions make PostgreSQL read every ready row instead
        of walking the ordered index to the ``LIMIT`` (the benchmark showed it).
        A pause or a limit set meanwhile takes effect at the next claim.

        It also bounds the claim's transaction (``Driver.lock_bound_row``, no
        extra round trip): a claimer frozen before its commit, holding a
        limited handler's row and the rows it took, is cut off by the server
        after ``bound_seconds`` (the lease: its claims would be void by then
        anyway), instead of stopping every claim of that handler for as long
        as it stays frozen.
        """
        rows = conn.execute(
            self._blocked_query(unflushed), {"handlers": list(handlers), "bound_seconds": bound_seconds}
        ).all()
        return Blocked(
            everything=any(scope == "all" for scope, _ in rows),
            queues={name for scope, name in rows if scope == "queue"},
            handlers={name for scope, name in rows if scope == "handler"},
            limited={name for scope, name in rows if scope == "limit"},
            slotted={name for scope, name in rows if scope == "slots"},
            rated={name for scope, name in rows if scope == "rate"},
            sequenced={name for scope, name in rows if scope == "sequence"},
            fair={name for scope, name in rows if scope == "fair"},
        )

    def _blocked_query(self, unflushed: bool) -> CompoundSelect[Any]:
        """The read of ``_blocked``; ``unflushed``: the claim's commit skips the fsync (not a hand-off's)."""
        stmt = self._statements.get(("blocked", unflushed))
        if stmt is None:
            stmt = self._statements[("blocked", unflushed)] = self._blocked_select(with_bound=True, unflushed=unflushed)
        return stmt

    def _blocked_select(self, *, with_bound: bool, unflushed: bool = True) -> CompoundSelect[Any]:
        """(scope, name) rows: every pause, and a ``limit`` row per handler of ``handlers`` with a limit."""
        pauses, handler_rows = self._db.tables.pauses, self._db.tables.handlers
        parts: list[Select[Any]] = [
            select(pauses.c.scope, pauses.c.name),
            # Limited per key: "limit"; with a global limit only: "slots" (``_take_slotted``).
            select(
                case(
                    (
                        and_(handler_rows.c.tenant_concurrency.is_(None), handler_rows.c.concurrency_per_key.is_(None)),
                        literal("slots", String),
                    ),
                    else_=literal("limit", String),
                ),
                handler_rows.c.name,
            ).where(
                self._db.driver.in_bound_list(handler_rows.c.name, "handlers"),
                or_(
                    handler_rows.c.concurrency.is_not(None),
                    handler_rows.c.tenant_concurrency.is_not(None),
                    handler_rows.c.concurrency_per_key.is_not(None),
                ),
            ),
            select(literal("rate", String), handler_rows.c.name).where(
                self._db.driver.in_bound_list(handler_rows.c.name, "handlers"),
                or_(handler_rows.c.rate_limit.is_not(None), handler_rows.c.rate_limits.is_not(None)),
            ),
            select(literal("sequence", String), handler_rows.c.name).where(
                self._db.driver.in_bound_list(handler_rows.c.name, "handlers"), handler_rows.c.sequence_by.is_not(None)
            ),
            select(literal("fair", String), handler_rows.c.name).where(
                self._db.driver.in_bound_list(handler_rows.c.name, "handlers"), handler_rows.c.fair_by.is_not(None)
            ),
        ]
        bound = self._db.driver.lock_bound_row("bound_seconds") if with_bound else None
        if bound is not None:
            parts.append(bound)  # scope "bound": not a pause nor a limit, ignored below
        skip_flush = self._db.driver.unflushed_commit_row() if unflushed else None
        if skip_flush is not None:
            parts.append(skip_flush)  # scope "unflushed": ignored likewise; the claim's commit skips the fsync
        return union_all(*parts)

    def _room(self, conn: Connection, limited: list[str]) -> tuple[dict[str, int], list[str], KeyLimits]:
        """Lock the limited handlers' rows; return their free slots and the ones no longer limited.

        For each handler with a limit per key (``tenant_concurrency``, or
        ``concurrency_by`` with ``concurrency_per_key``), also that limit and
        how many of each key's jobs run now.
        """
        h = self._db.tables.handlers
        jobs = self._db.tables.jobs
        rows = conn.execute(
            select(h.c.name, h.c.concurrency, h.c.tenant_concurrency, h.c.concurrency_by, h.c.concurrency_per_key)
            .where(
                h.c.name.in_(limited),
                or_(
                    h.c.concurrency.is_not(None),
                    h.c.tenant_concurrency.is_not(None),
                    h.c.concurrency_per_key.is_not(None),
                ),
            )
            .order_by(h.c.name)  # one lock order for everyone: no deadlocks
            .with_for_update()
        ).all()
        limits = {row.name: UNLIMITED if row.concurrency is None else int(row.concurrency) for row in rows}
        key_limits: KeyLimits = {}
        for row in rows:
            if row.concurrency_per_key is not None and row.concurrency_by is not None:
                column = "tenant" if row.concurrency_by == TENANT else "concurrency_key"
                key_limits[row.name] = KeyLimit(int(row.concurrency_per_key), column, True, {}, {})
            elif row.tenant_concurrency is not None:
                key_limits[row.name] = KeyLimit(int(row.tenant_concurrency), "tenant", False, {}, {})
        running: dict[str, int] = {}
        if limits:
            running = {
                name: int(n)
                for name, n in conn.execute(
                    select(jobs.c.handler, func.count())
                    .where(_status_in(jobs.c.status, [JobStatus.RUNNING]), jobs.c.handler.in_(list(limits)))
                    .group_by(jobs.c.handler)
                ).all()
            }
        for column in sorted({limit.column for limit in key_limits.values()}):
            names = [name for name, limit in key_limits.items() if limit.column == column]
            key = jobs.c[column]
            for name, value, n in conn.execute(
                select(jobs.c.handler, key, func.count())
                .where(_status_in(jobs.c.status, [JobStatus.RUNNING]), jobs.c.handler.in_(names))
                .group_by(jobs.c.handler, key)
            ).all():
                key_limits[name].running[value] = int(n)
        room = {name: cap - running.get(name, 0) for name, cap in limits.items()}
        return room, [name for name in limited if name not in limits], key_limits

    def _per_key(
        self,
        conn: Connection,
        shape: tuple[bool, bool],
        params: dict[str, Any],
        limit: KeyLimit,
    ) -> list[Any]:
        """Ready jobs of one handler limited per key, best first, none past its key's free slots.

        A window (``row_number`` per key) keeps each key to its cap, so a key
        with 100,000 jobs at the front of the queue cannot hide the others'.
        Windows cannot be locked (``FOR UPDATE``): the rows are locked
        afterwards, by id; claims of this handler are serialised on its row
        lock already, so nobody else is choosing among them meanwhile.
        """
        jobs = self._db.tables.jobs
        key = jobs.c[limit.column]
        one_queue, skip_queues = shape
        conditions: list[ColumnElement[bool]] = [
            _status_in(jobs.c.status, CLAIMABLE_STATUSES),
            jobs.c.run_at <= params["now"],
            jobs.c.handler.in_(params["handlers"]),
        ]
        if one_queue:
            conditions.append(jobs.c.queue == params["in_queue"])
        elif skip_queues:
            conditions.append(jobs.c.queue.not_in(params["paused"]))
        if limit.sequence is not None:
            conditions.append(self._first_of_its_key(limit.sequence))
        rank = func.row_number().over(partition_by=key, order_by=(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id))
        ranked = select(jobs.c.id, jobs.c.priority, jobs.c.run_at, key.label("key"), rank.label("rn")).where(
            *conditions
        )
        sub = ranked.subquery()
        within: ColumnElement[bool] = sub.c.rn <= limit.cap
        if not limit.null_is_a_key:
            within = or_(within, sub.c.key.is_(None))
        rows = conn.execute(
            select(sub.c.id, sub.c.priority, sub.c.run_at, sub.c.key)
            .where(within)
            .order_by(sub.c.priority.desc(), sub.c.run_at, sub.c.id)
        ).all()
        chosen: list[Any] = []
        taken = dict(limit.running)
        for row in rows:
            if len(chosen) >= params["limit"]:
                break
            if row.key is not None or limit.null_is_a_key:
                if taken.get(row.key, 0) >= limit.cap:
                    continue
                taken[row.key] = taken.get(row.key, 0) + 1
            chosen.append(row)
        if not chosen:
            return []
        locked = set(
            conn.execute(
                select(jobs.c.id)
                .where(jobs.c.id.in_([r.id for r in chosen]), _status_in(jobs.c.status, CLAIMABLE_STATUSES))
                .with_for_update(skip_locked=True, of=jobs)
            ).scalars()
        )
        found = [r for r in chosen if r.id in locked]
        limit.offered.update((r.id, r.key) for r in found)
        return found

    def _take_slotted(
        self,
        conn: Connection,
        now: datetime,
        queue: str | None,
        handler: str,
        wanted: int,
        paused_queues: Collection[str],
        worker_id: str,
        lease_seconds: float,
        *,
        use_slots: bool = True,
        one_statement: bool = True,
        sequence: JobSequence | None = None,
        keyed_rate: KeyedRate | None = None,
        rates: Rates | None = None,
        fair_column: str | None = None,
        key_limit: KeyLimit | None = None,
    ) -> list[ClaimedJob]:
        """Claim jobs of a handler with a global limit into its free slots: one job per slot.

        Without ``use_slots`` (a handler with a rate limit but no global limit),
        just up to ``wanted`` of its ready jobs. ``one_statement``: the whole
        take may be one statement where the driver can (not while a rate's
        rows are held in the claim's transaction: their count is ``wanted``).

        A slot is free when the claim it names (``job_id``, ``attempt``) no
        longer runs: finished, given back, rescued or deleted; completions need
        not free it. Free slots are read, then locked by (slot, ``token``) with
        SKIP LOCKED: a locking read sees the slot as it is now, so a slot
        another claimer took meanwhile (its token bumped) is not taken twice,
        and claimers of one handler take different slots instead of waiting
        for each other on one lock. Each slot taken names its job and bumps
        its token, in this transaction.
        """
        shape = (queue is not None, queue is None and bool(paused_queues))
        params: dict[str, Any] = {"now": now, "handlers": [handler], "limit": wanted}
        if queue is not None:
            params["in_queue"] = queue
        elif paused_queues:
            params["paused"] = list(paused_queues)
        if keyed_rate is not None:
            # The rate per key decides which jobs; the slots, if any, how many.
            want = wanted
            taken_slots: list[Any] = []
            if use_slots:
                taken_slots = self._lock_free_slots(conn, handler, wanted)
                want = len(taken_slots)
            ids, stamp = self._within_key_rates(
                conn, now, shape, params, want, keyed_rate, handler, sequence, rates, key_limit
            )
            claimed = self._take(conn, now, ids, worker_id, lease_seconds) if ids else []
            self._stamp_keys(conn, handler, stamp, now)
            if use_slots:
                self._hold_slots(conn, handler, taken_slots, claimed)
            return claimed
        if fair_column is not None:
            taken_slots = self._lock_free_slots(conn, handler, wanted) if use_slots else []
            want = len(taken_slots) if use_slots else wanted
            served = self._fair_ids(conn, shape, params, want, handler, fair_column, sequence, key_limit)
            claimed = self._take(conn, now, [i for i, _ in served], worker_id, lease_seconds) if served else []
            self._served(conn, handler, [key for i, key in served if i in {j.id for j in claimed}])
            if use_slots:
                self._hold_slots(conn, handler, taken_slots, claimed)
            return claimed
        if not use_slots:
            ids = self._ready_ids(conn, shape, sequence, params)
            return self._take(conn, now, ids, worker_id, lease_seconds) if ids else []
        if one_statement and sequence is None and self._db.driver.one_statement_claim:
            lease = {"owner": worker_id, "expires": now + timedelta(seconds=lease_seconds), "started": now}
            return self._jobs(conn.execute(self._slotted(shape), {**params, **lease, "slot_handler": handler}))
        taken = self._lock_free_slots(conn, handler, wanted)
        if not taken:
            return []
        ids = self._ready_ids(conn, shape, sequence, {**params, "limit": len(taken)})
        if not ids:
            return []
        claimed = self._take(conn, now, ids, worker_id, lease_seconds)
        self._hold_slots(conn, handler, taken, claimed)
        return claimed

    def _lock_free_slots(self, conn: Connection, handler: str, wanted: int) -> list[Any]:
        """Up to ``wanted`` of the handler's free slots, locked by (slot, token) (see ``_take_slotted``)."""
        slots = self._db.tables.slots
        free = [
            (int(n), int(token))
            for n, token in conn.execute(self._free_slots().where(slots.c.handler == handler).order_by(slots.c.n))
        ]
        if not free:
            return []
        return list(
            conn.execute(
                select(slots.c.n)
                .where(slots.c.handler == handler, tuple_(slots.c.n, slots.c.token).in_(free))
                .order_by(slots.c.n)
                .limit(wanted)
                .with_for_update(skip_locked=True)
            ).all()
        )

    def _hold_slots(self, conn: Connection, handler: str, taken: list[Any], claimed: list[ClaimedJob]) -> None:
        """Each slot taken names the job it holds (and bumps its token)."""
        slots = self._db.tables.slots
        held = dict(zip((slot.n for slot in taken), sorted(claimed, key=lambda j: j.id), strict=False))
        if held:  # one statement for every slot taken
            conn.execute(
                update(slots)
                .where(slots.c.handler == handler, slots.c.n.in_(list(held)))
                .values(
                    job_id=case({n: job.id for n, job in held.items()}, value=slots.c.n),
                    attempt=case({n: job.attempts for n, job in held.items()}, value=slots.c.n),
                    token=slots.c.token + 1,
                )
            )

    def _within_key_rates(
        self,
        conn: Connection,
        now: datetime,
        shape: tuple[bool, bool],
        params: dict[str, Any],
        want: int,
        rate: KeyedRate,
        handler: str,
        sequence: JobSequence | None,
        rates: Rates | None,
        key_limit: KeyLimit | None = None,
    ) -> tuple[list[int], dict[str, list[int]]]:
        """Ready jobs of a handler with a rate per key, best first, none past its key's free rows.

        Each key's ring is made on first use (rows inserted, a conflict with a
        claimer inserting them too left to it), then its free rows are locked
        SKIP LOCKED as for any rate. Jobs without the key are one group
        (ring ``null``). Returns the ids chosen (locked) and, per ring, the
        rows their starts take. With a limit per key (``key_limit``, under its
        handler's lock), no key of that limit goes past it either: each key's
        best jobs are then not cut to the rate, since some may have to wait.
        """
        if want <= 0:
            return [], {}
        jobs, rings = self._db.tables.jobs, self._db.tables.rate_slots
        key = jobs.c[rate.column]
        one_queue, skip_queues = shape
        conditions: list[ColumnElement[bool]] = [
            _status_in(jobs.c.status, CLAIMABLE_STATUSES),
            jobs.c.run_at <= params["now"],
            jobs.c.handler == handler,
        ]
        if one_queue:
            conditions.append(jobs.c.queue == params["in_queue"])
        elif skip_queues:
            conditions.append(jobs.c.queue.not_in(params["paused"]))
        if sequence is not None:
            conditions.append(self._first_of_its_key(sequence))
        rank = func.row_number().over(partition_by=key, order_by=(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id))
        limited_key = jobs.c[key_limit.column] if key_limit is not None else literal(None, String)
        sub = select(
            jobs.c.id, jobs.c.priority, jobs.c.run_at, key.label("key"), limited_key.label("ckey"), rank.label("rn")
        ).where(*conditions)
        ranked = sub.subquery()
        best = (
            select(ranked.c.id, ranked.c.key, ranked.c.ckey)
            .order_by(ranked.c.priority.desc(), ranked.c.run_at, ranked.c.id)
            .limit(KEYED_RATE_LOOKAHEAD)
        )
        rows = conn.execute(best if key_limit is not None else best.where(ranked.c.rn <= min(rate.limit, want))).all()
        if not rows:
            return [], {}
        kind = KEYED_RING
        names = sorted({ring_name(handler, row.key) for row in rows})
        present: dict[str, set[int]] = {}
        for name, n in conn.execute(
            select(rings.c.name, rings.c.n).where(rings.c.kind == kind, rings.c.name.in_(names))
        ):
            present.setdefault(name, set()).add(int(n))
        missing = [
            {"kind": kind, "name": name, "n": n, "used_at": None}
            for name in names
            for n in range(rate.limit)
            if n not in present.get(name, ())
        ]
        if missing:
            conn.execute(
                self._db.driver.upsert(rings).on_conflict_do_nothing(index_elements=["kind", "name", "n"]), missing
            )
        free: dict[str, list[int]] = {}
        for name, n in conn.execute(
            select(rings.c.name, rings.c.n)
            .where(
                rings.c.kind == kind,
                rings.c.name.in_(names),
                or_(rings.c.used_at.is_(None), rings.c.used_at <= now - timedelta(seconds=rate.per)),
            )
            .order_by(rings.c.name, rings.c.n)
            .with_for_update(skip_locked=True)
        ):
            free.setdefault(name, []).append(int(n))
        chosen: list[int] = []
        stamp: dict[str, list[int]] = {}
        spent: set[str] = set()
        per_key: dict[str | None, int] = {}
        for row in rows:
            if len(chosen) >= want:
                break
            if key_limit is not None and not key_limit.has_room(row.ckey, per_key):
                continue
            name = ring_name(handler, row.key)
            left = free.get(name, [])
            if len(stamp.get(name, ())) < len(left):
                per_key[row.ckey] = per_key.get(row.ckey, 0) + 1
                stamp.setdefault(name, []).append(left[len(stamp.get(name, ()))])
                chosen.append(int(row.id))
            else:
                spent.add(name)
        if spent:  # jobs wait for their key's window: when the first of those rings frees a row
            oldest = conn.execute(
                select(func.min(rings.c.used_at)).where(rings.c.kind == KEYED_RING, rings.c.name.in_(sorted(spent)))
            ).scalar()
            if oldest is not None and rates is not None:
                at = oldest + timedelta(seconds=rate.per)
                rates.room = at if rates.room is None else min(rates.room, at)
        if not chosen:
            return [], {}
        locked = set(
            conn.execute(
                select(jobs.c.id)
                .where(jobs.c.id.in_(chosen), _status_in(jobs.c.status, CLAIMABLE_STATUSES))
                .with_for_update(skip_locked=True, of=jobs)
            ).scalars()
        )
        if locked != set(chosen):  # another claimer holds some: start only the ones locked
            kept: dict[str, list[int]] = {}
            by_id = {int(row.id): ring_name(handler, row.key) for row in rows}
            for job_id in chosen:
                if job_id in locked:
                    kept.setdefault(by_id[job_id], []).append(0)
            stamp = {name: stamp[name][: len(kept[name])] for name in kept}
        if key_limit is not None:
            key_limit.offered.update((int(row.id), row.ckey) for row in rows if row.id in locked)
        return [i for i in chosen if i in locked], stamp

    def _stamp_keys(self, conn: Connection, handler: str, stamp: dict[str, list[int]], now: datetime) -> None:
        """The rows of each key's ring its starts took carry this start's time."""
        rings = self._db.tables.rate_slots
        for name, numbers in stamp.items():
            if numbers:
                conn.execute(
                    update(rings)
                    .where(rings.c.kind == KEYED_RING, rings.c.name == name, rings.c.n.in_(numbers))
                    .values(used_at=now)
                )

    def _rate_rings(self, conn: Connection, rated: list[str], now: datetime, limit: int) -> Rates:
        """For each rated handler, the rows of each of its rates that are free now, locked (SKIP LOCKED).

        A row is free when its last start is at least the rate's period ago;
        a locking read sees it as it is now, so a row another claimer just
        stamped is not taken twice. At most ``limit`` rows per rate: no claim
        takes more jobs than that.
        """
        if not rated:
            return Rates({})
        h, shared, rows_of = self._db.tables.handlers, self._db.tables.rate_limits, self._db.tables.rate_slots
        settings = conn.execute(
            select(h.c.name, h.c.rate_limit, h.c.rate_period, h.c.rate_limit_by, h.c.rate_limits).where(
                h.c.name.in_(rated)
            )
        ).all()
        periods: dict[tuple[str, str], float] = {}
        names = sorted({name for row in settings for name in row.rate_limits or ()})
        if names:
            periods.update(
                (("shared", name), float(per))
                for name, per in conn.execute(
                    select(shared.c.name, shared.c.rate_period).where(shared.c.name.in_(names))
                )
            )
        for row in settings:
            if row.rate_limit is not None and row.rate_limit_by is None:
                periods[("handler", row.name)] = float(row.rate_period)
        rings: dict[tuple[str, str], RateRing] = {}
        for (kind, name), per in sorted(periods.items()):  # one lock order for everyone
            free = conn.execute(
                select(rows_of.c.n)
                .where(
                    rows_of.c.kind == kind,
                    rows_of.c.name == name,
                    or_(rows_of.c.used_at.is_(None), rows_of.c.used_at <= now - timedelta(seconds=per)),
                )
                .order_by(rows_of.c.n)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
            rings[(kind, name)] = RateRing(kind, name, per, [int(n) for n in free])
        found: dict[str, list[RateRing]] = {}
        keyed: dict[str, KeyedRate] = {}
        for row in settings:
            mine = [("handler", row.name)] + [("shared", name) for name in row.rate_limits or ()]
            if any(key in rings for key in mine):
                found[row.name] = [rings[key] for key in mine if key in rings]
            if row.rate_limit is not None and row.rate_limit_by is not None:
                keyed[row.name] = KeyedRate(
                    TENANT if row.rate_limit_by == TENANT else "rate_key", int(row.rate_limit), float(row.rate_period)
                )
        return Rates(found, keyed)

    def _stamp(self, conn: Connection, rates: Rates, now: datetime) -> None:
        """Each rate's rows its starts took now carry this start's time."""
        table = self._db.tables.rate_slots
        for ring in rates.rings():
            if ring.used:
                conn.execute(
                    update(table)
                    .where(table.c.kind == ring.kind, table.c.name == ring.name, table.c.n.in_(ring.free[: ring.used]))
                    .values(used_at=now)
                )

    def _fair_columns(self, conn: Connection, fair: list[str]) -> dict[str, str]:
        """The column each of these handlers shares its starts by (``fair_by``)."""
        if not fair:
            return {}
        h = self._db.tables.handlers
        return {
            name: TENANT if by == TENANT else "fair_key"
            for name, by in conn.execute(
                select(h.c.name, h.c.fair_by).where(h.c.name.in_(fair), h.c.fair_by.is_not(None))
            )
        }

    def _fair_ids(
        self,
        conn: Connection,
        shape: tuple[bool, bool],
        params: dict[str, Any],
        want: int,
        handler: str,
        column: str,
        sequence: JobSequence | None,
        key_limit: KeyLimit | None = None,
    ) -> list[tuple[int, str]]:
        """Up to ``want`` ready jobs of a fair handler, round robin between keys (locked, with their turn keys).

        Each key's jobs are ranked (best first); the first of every key come
        before the second of any, and among keys of one rank, the key served
        least recently first (``fair_turns``; never served: first of all). So
        a burst of one key's jobs deferred first does not hold the others back.
        With a limit per key (``key_limit``, under its handler's lock), a job
        whose key of that limit is full is passed over for the next in turn.
        """
        if want <= 0:
            return []
        jobs, turns = self._db.tables.jobs, self._db.tables.fair_turns
        key = jobs.c[column]
        one_queue, skip_queues = shape
        conditions: list[ColumnElement[bool]] = [
            _status_in(jobs.c.status, CLAIMABLE_STATUSES),
            jobs.c.run_at <= params["now"],
            jobs.c.handler == handler,
        ]
        if one_queue:
            conditions.append(jobs.c.queue == params["in_queue"])
        elif skip_queues:
            conditions.append(jobs.c.queue.not_in(params["paused"]))
        if sequence is not None:
            conditions.append(self._first_of_its_key(sequence))
        rank = func.row_number().over(partition_by=key, order_by=(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id))
        ranked = (
            select(
                jobs.c.id,
                jobs.c.priority,
                jobs.c.run_at,
                func.coalesce(key, literal(NO_KEY, String)).label("turn"),
                (jobs.c[key_limit.column] if key_limit is not None else literal(None, String)).label("ckey"),
                rank.label("rn"),
            )
            .where(*conditions)
            .subquery()
        )
        looked_at = want if key_limit is None else KEYED_RATE_LOOKAHEAD
        rows = conn.execute(
            select(ranked.c.id, ranked.c.turn, ranked.c.ckey)
            .select_from(ranked.outerjoin(turns, and_(turns.c.handler == handler, turns.c.key == ranked.c.turn)))
            .where(ranked.c.rn <= looked_at)
            .order_by(
                ranked.c.rn,
                turns.c.turn.is_not(None),
                turns.c.turn,
                ranked.c.priority.desc(),
                ranked.c.run_at,
                ranked.c.id,
            )
            .limit(looked_at)
        ).all()
        if key_limit is not None:
            per_key: dict[str | None, int] = {}
            fitting: list[Any] = []
            for row in rows:
                if len(fitting) < want and key_limit.has_room(row.ckey, per_key):
                    per_key[row.ckey] = per_key.get(row.ckey, 0) + 1
                    fitting.append(row)
            rows = fitting
        if not rows:
            return []
        locked = set(
            conn.execute(
                select(jobs.c.id)
                .where(jobs.c.id.in_([r.id for r in rows]), _status_in(jobs.c.status, CLAIMABLE_STATUSES))
                .with_for_update(skip_locked=True, of=jobs)
            ).scalars()
        )
        if key_limit is not None:
            key_limit.offered.update((int(r.id), r.ckey) for r in rows if r.id in locked)
        return [(int(r.id), str(r.turn)) for r in rows if r.id in locked]

    def _served(self, conn: Connection, handler: str, keys: list[str]) -> None:
        """These keys were served, in this order: each takes the handler's next turn.

        A count rather than a time: two claims in one clock tick still go round.
        Two claimers counting at once may give two keys one turn; the next
        claim breaks the tie by job order, which fairness can afford.
        """
        if not keys:
            return
        turns = self._db.tables.fair_turns
        last = conn.execute(select(func.max(turns.c.turn)).where(turns.c.handler == handler)).scalar() or 0
        order = list(dict.fromkeys(reversed(keys)))[::-1]  # by each key's last start
        stmt = self._db.driver.upsert(turns)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["handler", "key"], set_={"turn": stmt.excluded.turn}),
            [{"handler": handler, "key": k, "turn": int(last) + 1 + i} for i, k in enumerate(order)],
        )

    def _sequences(self, conn: Connection, sequenced: list[str]) -> dict[str, JobSequence]:
        """The sequence of each of these handlers (``sequence_by``, ``sequence_on_failure``)."""
        if not sequenced:
            return {}
        h = self._db.tables.handlers
        return {
            name: JobSequence(TENANT if by == TENANT else "sequence_key", on_failure != "continue")
            for name, by, on_failure in conn.execute(
                select(h.c.name, h.c.sequence_by, h.c.sequence_on_failure).where(
                    h.c.name.in_(sequenced), h.c.sequence_by.is_not(None)
                )
            )
        }

    def _first_of_its_key(self, sequence: JobSequence) -> ColumnElement[bool]:
        """No earlier job of the same key holds it: unfinished (waiting, retrying, running), or,
        unless ``sequence_on_failure="continue"``, failed or dead. A job without a key is in no sequence.

        Read in the claim's snapshot: an earlier job is unfinished until its
        end commits, so whatever the snapshot sees of it, nothing after it starts first.
        The jobs it lets through must come from that snapshot too (``_ready_ids``).
        """
        jobs = self._db.tables.jobs
        earlier = jobs.alias("earlier")
        column = sequence.column
        holding = list(LIVE_STATUSES)  # a blocked step waits for its workflow, not its sequence
        if sequence.hold:
            holding += [JobStatus.FAILED, JobStatus.DEAD]
        return ~exists().where(
            earlier.c.handler == jobs.c.handler,
            earlier.c[column] == jobs.c[column],
            earlier.c.id < jobs.c.id,
            _status_in(earlier.c.status, holding),
        )

    def _free_slots(self) -> Select[Any]:
        """(n, token) of the slots whose claim no longer runs (or never did), as of this statement.

        Each slot's job is looked up through the primary key, one slot at a time
        (a correlated subquery, which the planner cannot turn into a join): as a
        join the planner walked the running jobs' partial index once per slot
        (with 100 slots the claim took 100-400 ms), or, once the tables had
        statistics, read the whole jobs table into a hash (1.5 ms at 20,000
        rows, growing with the table).
        """
        slots, jobs = self._db.tables.slots, self._db.tables.jobs
        held_by = (
            select(jobs.c.status)
            .where(jobs.c.id == slots.c.job_id, jobs.c.attempts == slots.c.attempt)
            .correlate(slots)
            .scalar_subquery()
        )
        return select(slots.c.n, slots.c.token).where(
            or_(slots.c.job_id.is_(None), func.coalesce(held_by, "") != JobStatus.RUNNING.value)
        )

    def _slotted(self, shape: tuple[bool, bool]) -> Select[Any]:
        """``_take_slotted`` as one statement, where the database writes through CTEs (PostgreSQL).

        ``free`` (slots whose claim has ended, as of the statement's snapshot),
        ``locked`` (those of them still unchanged, locked SKIP LOCKED: a slot
        another claimer took meanwhile has a new token, and the recheck of the
        locked row against ``free`` drops it), ``picked`` (as many ready jobs,
        SKIP LOCKED), then the jobs claimed and each slot naming its job.
        """
        stmt = self._statements.get(("slotted", shape))
        if stmt is None:
            claimed, held = self._slotted_ctes(shape)
            # ``held`` must be named in the statement to be written at all.
            stmt = self._statements[("slotted", shape)] = select(*claimed.c).where(
                select(func.count()).select_from(held).scalar_subquery() >= 0
            )
        return stmt

    def _slotted_alone(self, shape: tuple[bool, bool], in_claim: bool) -> Select[Any]:
        """``WITH blocked AS (pauses, limits), ...`` the slotted claim, taking no slot while anything
        but the handler's own slots is in its way: one row per claimed job, each with what blocks
        claims (one row with no job if none was claimed), as ``_alone``.

        For a claimer of one handler with a global limit only (``_only_slotted``): its claim is
        one round trip instead of four (BEGIN, the read, the claim, COMMIT), and the claim a
        completion makes in its own transaction (a hand-off) one instead of two. With one
        queue, only that queue's pause stands in the way; with all of them, any queue's.
        """
        stmt = self._statements.get(("slotted-alone", shape, in_claim))
        if stmt is None:
            blocked = self._blocked_select(with_bound=in_claim, unflushed=not in_claim).cte("blocked")
            scope, name = blocked.c[0], blocked.c[1]
            queue_paused: ColumnElement[bool] = scope == "queue"
            if shape[0]:
                queue_paused = and_(queue_paused, name == bindparam("in_queue"))
            in_way = exists().where(
                or_(
                    scope == "all",
                    and_(
                        scope.in_(("handler", "limit", "rate", "sequence", "fair")),
                        name == bindparam("slot_handler"),
                    ),
                    queue_paused,
                )
            )
            claimed, held = self._slotted_ctes(shape, ~in_way)
            head = select(
                select(func.array_agg(scope)).scalar_subquery().label("scopes"),
                select(func.array_agg(name)).scalar_subquery().label("names"),
            ).subquery("head")
            stmt = self._statements[("slotted-alone", shape, in_claim)] = (
                select(head.c.scopes, head.c.names, *claimed.c)
                .select_from(head.outerjoin(claimed, true()))
                .where(select(func.count()).select_from(held).scalar_subquery() >= 0)
            )
        return stmt

    def _slotted_ctes(self, shape: tuple[bool, bool], *guard: ColumnElement[bool]) -> tuple[Any, Any]:
        """The CTEs of the one-statement slotted claim: ``claimed`` (the jobs) and ``held`` (their slots).

        ``guard``: conditions on taking any slot at all (``_slotted_alone``'s "nothing in the way").
        """
        slots, jobs = self._db.tables.slots, self._db.tables.jobs
        # Materialized: read once, not again for each slot the lock below looks at.
        free = (
            self._free_slots()
            .where(slots.c.handler == bindparam("slot_handler"))
            .cte("free")
            .prefix_with("MATERIALIZED")
        )
        mine = slots.alias("mine")

        def key(table: Any) -> ColumnElement[int]:
            """A slot and its token as one number: the lock below matches both through one array."""
            number: ColumnElement[int] = cast(table.c.n, BigInteger) * (1 << 32) + table.c.token
            return number

        locked = (
            select(mine.c.n)
            .where(
                mine.c.handler == bindparam("slot_handler"),
                # Its token as read (a slot taken meanwhile has a new one: the recheck of the locked
                # row drops it); through one array, not a join the planner nested over the slots.
                self._db.driver.id_in(key(mine), select(key(free))),
                *guard,
            )
            .order_by(mine.c.n)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True, of=mine)
            .cte("locked")
        )
        picked = self._candidates(shape).limit(select(func.count()).select_from(locked).scalar_subquery()).cte("picked")
        # Through the primary key (``Driver.id_in``): as ``IN (picked)`` the planner's generic
        # plan hash-joined the picked ids against a scan of the whole table.
        claimed = self._build_update(shape, which=self._db.driver.id_in(jobs.c.id, select(picked.c.id))).cte("claimed")
        # The n-th claimed job (by id) takes the n-th locked slot (by number): each slot is found
        # through the primary key, one per job, not by joining numbered lists (quadratic as planned).
        paired = (
            select(claimed.c.id, claimed.c.attempts, func.row_number().over(order_by=claimed.c.id).label("rn"))
            .cte("paired")
            .prefix_with("MATERIALIZED")
        )
        ordered = select(locked.c.n).order_by(locked.c.n).scalar_subquery()
        numbers = type_coerce(Grouping(func.array(ordered)), ARRAY(Integer))  # (ARRAY(...))[rn]
        held = (
            update(slots)
            .where(slots.c.handler == bindparam("slot_handler"), slots.c.n == numbers[paired.c.rn])
            .values(job_id=paired.c.id, attempt=paired.c.attempts, token=slots.c.token + 1)
            .returning(slots.c.n)
            .cte("held")
        )
        return claimed, held

    def _pick(
        self,
        conn: Connection,
        now: datetime,
        queue: str | None,
        free: list[str],
        room: dict[str, int],
        key_limits: KeyLimits,
        wanted: int,
        paused_queues: Collection[str],
    ) -> Pick | None:
        """Which jobs to claim from one queue (best first), or None for none.

        With no limited handler open this is a subquery, so the claim stays a
        single statement; otherwise candidates are locked and chosen here.
        """
        limited_open = {name: n for name, n in room.items() if n > 0}
        shape = (queue is not None, queue is None and bool(paused_queues))

        def params(handlers: list[str], limit: int) -> dict[str, Any]:
            given: dict[str, Any] = {"now": now, "handlers": handlers, "limit": limit}
            if queue is not None:
                given["in_queue"] = queue
            elif paused_queues:
                given["paused"] = list(paused_queues)
            return given

        if not limited_open:
            return (shape, params(free, wanted)) if free else None
        found: list[Any] = []
        for name, n in limited_open.items():
            if name in key_limits:
                found += self._per_key(conn, shape, params([name], min(n, wanted)), key_limits[name])
            else:
                found += conn.execute(self._candidates(shape), params([name], min(n, wanted))).all()
        if free:
            found += conn.execute(self._candidates(shape), params(free, wanted)).all()
        found.sort(key=lambda r: (-r.priority, r.run_at, r.id))
        return [r.id for r in found[:wanted]] or None

    def _ready_ids(
        self, conn: Connection, shape: tuple[bool, bool], sequence: JobSequence | None, params: dict[str, Any]
    ) -> list[int]:
        """The ready jobs ``_candidates`` picks, locked: in one locking read, except for a sequence
        where the driver's locking reads see rows committed after the statement began.

        There (MySQL, MariaDB) the locking read takes a job committed while the
        statement runs, but the subquery that looks for an earlier job of its
        key reads the statement's snapshot, which lacks it: two jobs of one key
        deferred together, committed while a claim ran, were both taken and ran
        at once. So the jobs are chosen from the snapshot alone, then locked by
        id (SKIP LOCKED) if they are still ready, as the limits per key do.
        """
        if sequence is None or not self._db.driver.locking_reads_see_later_commits:
            return [int(row.id) for row in conn.execute(self._candidates(shape, sequence), params)]
        chosen = [int(row.id) for row in conn.execute(self._candidates(shape, sequence, locked=False), params)]
        if not chosen:
            return []
        jobs = self._db.tables.jobs
        locked = set(
            conn.execute(
                select(jobs.c.id)
                .where(
                    jobs.c.id.in_(chosen),
                    _status_in(jobs.c.status, CLAIMABLE_STATUSES),
                    jobs.c.run_at <= params["now"],
                )
                .with_for_update(skip_locked=True, of=jobs)
            ).scalars()
        )
        return [job_id for job_id in chosen if job_id in locked]

    def _candidates(
        self, shape: tuple[bool, bool], sequence: JobSequence | None = None, *, locked: bool = True
    ) -> Select[Any]:
        """Ready jobs of some handlers, best first, locked (SKIP LOCKED) unless not ``locked``;
        parameters bound at execution.

        With a ``sequence``, only the jobs nothing earlier of their key holds back.
        """
        stmt = self._statements.get(("candidates", shape, sequence, locked))
        if stmt is None:
            jobs = self._db.tables.jobs
            one_queue, skip_queues = shape
            conditions: list[ColumnElement[bool]] = [
                _status_in(jobs.c.status, CLAIMABLE_STATUSES),
                jobs.c.run_at <= bindparam("now", type_=jobs.c.run_at.type),
                self._db.driver.in_bound_list(jobs.c.handler, "handlers"),
            ]
            if one_queue:
                conditions.append(jobs.c.queue == bindparam("in_queue"))
            elif skip_queues:
                conditions.append(jobs.c.queue.not_in(bindparam("paused", expanding=True)))
            if sequence is not None:
                conditions.append(self._first_of_its_key(sequence))
            stmt = (
                select(jobs.c.id, jobs.c.priority, jobs.c.run_at)
                .where(*conditions)
                .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
                .limit(bindparam("limit", type_=Integer))
            )
            if locked:
                stmt = stmt.with_for_update(skip_locked=True, of=jobs)
            self._statements[("candidates", shape, sequence, locked)] = stmt
        return stmt

    def _update(self, shape: tuple[bool, bool] | None) -> Update:
        """The claim itself: the jobs a candidates subquery of ``shape`` picks, or bound ``ids``."""
        stmt = self._statements.get(("update", shape))
        if stmt is None:
            stmt = self._statements[("update", shape)] = self._build_update(shape)
        return stmt

    def _build_update(
        self, shape: tuple[bool, bool] | None, *also: ColumnElement[bool], which: ColumnElement[bool] | None = None
    ) -> Update:
        jobs = self._db.tables.jobs
        c = jobs.c
        if which is not None:
            pass
        elif shape is None:
            which = c.id.in_(bindparam("ids", expanding=True))
        else:
            # The driver says how: PostgreSQL matches id = ANY(ARRAY(...)), through the primary key.
            which = self._db.driver.id_in(c.id, self._candidates(shape).with_only_columns(c.id))
        return (
            update(jobs)
            .where(which, *also)
            .values(
                status=JobStatus.RUNNING.value,
                attempts=c.attempts + 1,
                lease_owner=bindparam("owner"),
                lease_expires_at=bindparam("expires", type_=c.lease_expires_at.type),
                started_at=bindparam("started", type_=c.started_at.type),
                cancel_requested=False,
            )
            .returning(
                c.id,
                c.handler,
                c.queue,
                c.priority,
                c.args,
                *self._db.driver.aware_times(c.run_at, c.created_at),
                c.attempts,
                c.max_attempts,
                c.retry,
                c.timeout,
                c.tenant,
                c.metadata,
                c.checkpoint,
                c.batch_id,
                c.workflow_id,
                c.step,
            )
        )

    def _take(
        self,
        conn: Connection,
        now: datetime,
        which: Pick,
        worker_id: str,
        lease_seconds: float,
    ) -> list[ClaimedJob]:
        lease = {"owner": worker_id, "expires": now + timedelta(seconds=lease_seconds), "started": now}
        if isinstance(which, list):
            rows = self._db.driver.execute_update(conn, self._update(None), {**lease, "ids": which}).all()
        else:
            shape, params = which
            rows = self._db.driver.execute_update(conn, self._update(shape), {**lease, **params}).all()
        return self._jobs(rows)

    @staticmethod
    def _jobs(rows: Iterable[Sequence[Any]]) -> list[ClaimedJob]:
        return [
            ClaimedJob(
                job_id,
                handler,
                queue,
                priority,
                args or {},
                run_at,
                created_at,
                attempts,
                max_attempts,
                RetryPolicy.from_json(retry) if retry else None,
                timeout,
                tenant,
                metadata,
                checkpoint,
                batch_id,
                workflow_id,
                step,
            )
            for (
                job_id,
                handler,
                queue,
                priority,
                args,
                run_at,
                created_at,
                attempts,
                max_attempts,
                retry,
                timeout,
                tenant,
                metadata,
                checkpoint,
                batch_id,
                workflow_id,
                step,
            ) in rows
        ]
