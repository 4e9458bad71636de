"""The handlers and workers the database knows about.

Handler rows let processes that do not import the app (the CLI, the operator)
check a handler name and its arguments, and carry the settings that must be the
same for every worker: above all the global concurrency limit. Worker rows make
running processes visible (``jobstead stats``, the operator's scale-down).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from ..clock import Clock
from ..flow import FlowControl, RateLimit
from .database import Database
from .drivers.base import READ_ONLY
from .limits import limit_use
from .records import CronDefinition, HandlerDefinition, LimitUse
from .rows import flow_control, flow_values, handler_definition

#: Set by the operator's worker Deployments (downward API): the pod this worker runs in.
POD_NAME_ENV = "JOBSTEAD_POD_NAME"


def host_name() -> str:
    """The pod's name in Kubernetes (where it is also the hostname, unless overridden), else the hostname."""
    return os.environ.get(POD_NAME_ENV) or socket.gethostname()


#: How long a process keeps what it read of the operator's handler rows (``Registry.keys_of``): a
#: JobHandler's new ``*By`` reaches the jobs deferred from code within this many seconds.
OPERATOR_FLOW_TTL = 10.0


class Registry:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        #: (monotonic time read, handler -> flow control) of the rows the operator wrote.
        self._operator_flows: tuple[float, dict[str, FlowControl]] | None = None

    def keys_stale(self) -> bool:
        """Whether the next ``keys_of`` reads the operator's rows (an async defer reads them on a thread)."""
        cached = self._operator_flows
        return cached is None or time.monotonic() - cached[0] > OPERATOR_FLOW_TTL

    def keys_of(self, name: str, code: FlowControl) -> FlowControl:
        """The flow control whose keys a job deferred from code carries: the handler row's where the
        operator wrote it (a JobHandler's ``sequenceBy``, ``concurrencyBy``, ``rateLimit.by``, ``fairBy``:
        what the claim enforces), else the code's own (what publishing wrote).

        The operator's rows are read once per ``OPERATOR_FLOW_TTL`` per process, all at once (a few
        rows: code publishes the others), so a defer runs no query of its own in between.
        """
        cached = self._operator_flows
        now = time.monotonic()
        if cached is None or now - cached[0] > OPERATOR_FLOW_TTL:
            handlers = self._db.tables.handlers
            # Read only: a defer inside the app's own transaction (SQLite's write lock held) must not wait.
            with self._db.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
                rows = conn.execute(select(handlers).where(handlers.c.source != "code")).mappings()
                cached = self._operator_flows = (now, {row["name"]: flow_control(row) for row in rows})
        return cached[1].get(name, code)

    def publish_handlers(self, definitions: Iterable[HandlerDefinition]) -> None:
        """Upsert code-defined handlers.

        A row written by the operator (``source = 'crd'``) keeps its settings:
        only its parameter list follows the code, since only code knows it.
        """
        handlers = self._db.tables.handlers
        now = self._clock()
        rows = [_values(d, now) for d in sorted(definitions, key=lambda d: d.name)]
        if not rows:
            return
        # One statement each, executed for every row: building and compiling two statements
        # per handler made an app of 1,000 handlers take seconds to start per process, and
        # processes starting together waited on each other's row locks meanwhile.
        stmt = self._db.driver.upsert(handlers)
        upsert = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={k: stmt.excluded[k] for k in rows[0] if k != "name"},
            where=handlers.c.source == "code",
        )
        keep_settings = (
            update(handlers)
            .where(handlers.c.name == bindparam("b_name"), handlers.c.source != "code")
            .values(params=bindparam("b_params", type_=handlers.c.params.type), updated_at=now)
        )
        with self._db.begin_bounded() as conn:
            conn.execute(upsert, rows)
            conn.execute(keep_settings, [{"b_name": r["name"], "b_params": r["params"]} for r in rows])
            self._sync_slots(conn, [r["name"] for r in rows])
        self._operator_flows = None

    def put_handler(self, definition: HandlerDefinition) -> None:
        """Write a handler row as given, whatever its source (the operator's way in)."""
        handlers = self._db.tables.handlers
        dialect_insert = self._db.driver.upsert
        values = _values(definition, self._clock())
        with self._db.begin_bounded() as conn:
            current = conn.execute(select(handlers.c.params).where(handlers.c.name == definition.name)).first()
            if current is not None and not definition.params:
                values["params"] = current.params  # keep what the code published
            stmt = dialect_insert(handlers).values(values)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["name"], set_={k: stmt.excluded[k] for k in values})
            )
            self._sync_slots(conn, [definition.name])
        self._operator_flows = None

    def _sync_slots(self, conn: Connection, names: Sequence[str]) -> None:
        """Give each of these handlers as many slots as its row's global limit says (none: none).

        Read from the rows as they are now, after the write: a code publish
        leaves an operator's row (and its limit) alone. Slots past a lowered
        limit go, held or not: their jobs run on, and no new one starts until
        the running ones are below the new limit.
        """
        handlers, slots = self._db.tables.handlers, self._db.tables.slots
        caps = {
            name: int(cap or 0)
            for name, cap in conn.execute(
                select(handlers.c.name, handlers.c.concurrency).where(handlers.c.name.in_(list(names)))
            )
        }
        have: dict[str, set[int]] = {}
        for name, n in conn.execute(select(slots.c.handler, slots.c.n).where(slots.c.handler.in_(list(names)))):
            have.setdefault(name, set()).add(int(n))
        missing = [
            {"handler": name, "n": n, "token": 0}
            for name, cap in caps.items()
            for n in range(cap)
            if n not in have.get(name, ())
        ]
        if missing:
            conn.execute(insert(slots), missing)
        for name, numbers in have.items():
            if any(n >= caps.get(name, 0) for n in numbers):
                conn.execute(delete(slots).where(slots.c.handler == name, slots.c.n >= caps.get(name, 0)))
        own_rates = {
            name: int(limit or 0) if by is None else 0
            for name, limit, by in conn.execute(
                select(handlers.c.name, handlers.c.rate_limit, handlers.c.rate_limit_by).where(
                    handlers.c.name.in_(list(names))
                )
            )
        }
        self._sync_rate_slots(conn, "handler", {name: own_rates.get(name, 0) for name in names})

    def _sync_rate_slots(self, conn: Connection, kind: str, limits: Mapping[str, int]) -> None:
        """``limit`` rows per rate (none for 0), keeping the rows that stay: their last start still counts."""
        table = self._db.tables.rate_slots
        have: dict[str, set[int]] = {}
        for name, n in conn.execute(
            select(table.c.name, table.c.n).where(table.c.kind == kind, table.c.name.in_(list(limits)))
        ):
            have.setdefault(name, set()).add(int(n))
        missing = [
            {"kind": kind, "name": name, "n": n, "used_at": None}
            for name, limit in limits.items()
            for n in range(limit)
            if n not in have.get(name, ())
        ]
        if missing:
            conn.execute(insert(table), missing)
        for name, numbers in have.items():
            if any(n >= limits.get(name, 0) for n in numbers):
                conn.execute(
                    delete(table).where(table.c.kind == kind, table.c.name == name, table.c.n >= limits.get(name, 0))
                )

    def publish_rate_limits(self, limits: Mapping[str, RateLimit]) -> None:
        """Upsert shared rate limits (``app.rate_limit``): the code that declares one sets its rate."""
        if not limits:
            return
        table = self._db.tables.rate_limits
        now = self._clock()
        rows = [
            {"name": name, "rate_limit": rate.limit, "rate_period": rate.per, "updated_at": now}
            for name, rate in sorted(limits.items())
        ]
        stmt = self._db.driver.upsert(table)
        upsert = stmt.on_conflict_do_update(
            index_elements=["name"], set_={k: stmt.excluded[k] for k in rows[0] if k != "name"}
        )
        with self._db.begin_bounded() as conn:
            conn.execute(upsert, rows)
            self._sync_rate_slots(conn, "shared", {name: rate.limit for name, rate in limits.items()})

    def rate_limits(self) -> dict[str, RateLimit]:
        """Every shared rate limit by name."""
        table = self._db.tables.rate_limits
        with self._db.engine.connect() as conn:
            return {
                row.name: RateLimit(int(row.rate_limit), per=float(row.rate_period))
                for row in conn.execute(select(table.c.name, table.c.rate_limit, table.c.rate_period))
            }

    def limit_use(self) -> list[LimitUse]:
        """Each limit of every handler (and each shared rate) with how much of it is in use now (``limits.py``)."""
        with self._db.engine.connect() as conn:
            return limit_use(conn, self._db.tables, self._clock())

    def remove_handler(self, name: str, *, source: str) -> bool:
        handlers = self._db.tables.handlers
        with self._db.begin_bounded() as conn:
            removed = bool(
                conn.execute(delete(handlers).where(handlers.c.name == name, handlers.c.source == source)).rowcount
            )
            if removed:
                self._sync_slots(conn, [name])
        self._operator_flows = None
        return removed

    def handlers(self, names: Sequence[str] | None = None) -> dict[str, HandlerDefinition]:
        handlers = self._db.tables.handlers
        stmt = select(handlers)
        if names is not None:
            stmt = stmt.where(handlers.c.name.in_(list(names)))
        with self._db.engine.connect() as conn:
            return {row["name"]: handler_definition(row) for row in conn.execute(stmt).mappings()}

    def handler(self, name: str) -> HandlerDefinition | None:
        return self.handlers([name]).get(name)

    # -- workers -------------------------------------------------------------

    def register_worker(
        self,
        worker_id: str,
        *,
        handlers: Sequence[str],
        queues: Sequence[str] | None,
        concurrency: int,
        crons: Sequence[CronDefinition] = (),
    ) -> None:
        now = self._clock()
        with self._db.begin_bounded() as conn:
            conn.execute(
                self._db.tables.workers.insert().values(
                    id=worker_id,
                    hostname=host_name(),
                    pid=os.getpid(),
                    queues=list(queues) if queues else None,
                    handlers=list(handlers),
                    concurrency=concurrency,
                    running=0,
                    started_at=now,
                    heartbeat_at=now,
                    crons=[asdict(c) for c in crons] or None,
                )
            )

    def published_crons(self, alive_within: timedelta) -> list[CronDefinition]:
        """Code crons defined by the apps of workers that heartbeat recently (one per name)."""
        workers = self._db.tables.workers
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(workers.c.crons)
                .where(workers.c.heartbeat_at >= self._clock() - alive_within, workers.c.crons.is_not(None))
                .order_by(workers.c.started_at.desc())  # the newest deploy's definition wins
            ).all()
        found: dict[str, CronDefinition] = {}
        for (crons,) in rows:
            for data in crons or []:
                found.setdefault(data["name"], CronDefinition(**data))
        return list(found.values())

    def worker_heartbeat(self, worker_id: str, running: int) -> None:
        workers = self._db.tables.workers
        with self._db.driver.alone(self._db.engine) as conn:  # its row is never left locked by a frozen worker
            conn.execute(
                update(workers).where(workers.c.id == worker_id).values(heartbeat_at=self._clock(), running=running)
            )

    def unregister_worker(self, worker_id: str) -> None:
        workers = self._db.tables.workers
        with self._db.begin_bounded() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def prune_workers(self, silent_for: timedelta) -> int:
        """Forget workers that stopped heartbeating long ago (their jobs are rescued by lease)."""
        workers = self._db.tables.workers
        with self._db.begin_bounded() as conn:
            return int(
                conn.execute(delete(workers).where(workers.c.heartbeat_at < self._clock() - silent_for)).rowcount
            )

    def running_by_host(self) -> dict[str, int]:
        """Running jobs per host (pod), from the jobs' leases: exact now, not as of the last heartbeat."""
        jobs, workers = self._db.tables.jobs, self._db.tables.workers
        stmt = (
            select(workers.c.hostname, func.count(jobs.c.id))
            .select_from(workers.outerjoin(jobs, and_(jobs.c.lease_owner == workers.c.id, jobs.c.status == "running")))
            .group_by(workers.c.hostname)
        )
        with self._db.engine.connect() as conn:
            return {host: int(n) for host, n in conn.execute(stmt)}

    def workers(self) -> list[dict[str, Any]]:
        workers = self._db.tables.workers
        with self._db.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(workers).order_by(workers.c.started_at)).mappings()]


def _values(d: HandlerDefinition, now: Any) -> dict[str, Any]:
    return {
        "name": d.name,
        "queue": d.queue,
        "priority": d.priority,
        "concurrency": d.concurrency,
        "tenant_concurrency": d.tenant_concurrency,
        "max_attempts": d.max_attempts,
        "retry": d.retry.to_json(),
        "timeout": d.timeout,
        "params": _params(d),
        "source": d.source,
        "updated_at": now,
        **flow_values(d.flow),
    }


def _params(d: HandlerDefinition) -> list[dict[str, Any]]:
    """The parameter list as stored: name, required, and the type spec where the code's annotation gives one."""
    types = dict(d.param_types)
    return [{"name": n, "required": r, **({"type": types[n]} if n in types else {})} for n, r in d.params]
