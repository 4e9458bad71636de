"""The database schema, built per table prefix and PostgreSQL schema name.

Tables are built by a function rather than declared at import time because one
process may talk to several Jobstead installations (tests do, and so does an
operator watching several namespaces), each with its own prefix or schema.
The Alembic migrations in ``jobstead/migrations`` must produce exactly this
schema; ``tests/integration/test_migrations.py`` compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..status import CLAIMABLE_STATUSES, FINAL_STATUSES, LIVE_STATUSES, JobStatus
from .types import MYSQL_TABLE_OPTIONS, Double, JSONType, UTCDateTime

Id = BigInteger().with_variant(Integer(), "sqlite")
#: JSON whose Python None is SQL NULL (``JSONType`` writes JSON ``null``).
NULLABLE_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
NAME = 200


def _in(statuses: tuple[JobStatus, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s.value}'" for s in statuses) + ")"


#: Partial-index predicates, as SQL both backends accept.
READY_PREDICATE = _in(CLAIMABLE_STATUSES)
#: ``key`` quoted: a reserved word on MySQL (whose sessions Jobstead runs with ANSI_QUOTES).
LIVE_KEY_PREDICATE = '"key" IS NOT NULL AND ' + _in(LIVE_STATUSES)
CRON_FIRE_PREDICATE = "cron_name IS NOT NULL"
FINISHED_PREDICATE = _in(tuple(sorted(FINAL_STATUSES)))
NOT_SUCCEEDED_PREDICATE = f"status <> '{JobStatus.SUCCEEDED.value}'"
HAS_TENANT_PREDICATE = "tenant IS NOT NULL"
#: Jobs that may hold their sequence (``Claims._first_of_its_key``): unfinished, failed or dead;
#: not the succeeded and cancelled ones, which pile up under every long-lived key.
SEQUENCE_HOLDER_PREDICATE = "sequence_key IS NOT NULL AND " + _in((*LIVE_STATUSES, JobStatus.FAILED, JobStatus.DEAD))
#: Jobs of a batch (its members), not its continuations.
BATCH_MEMBER_PREDICATE = "batch_id IS NOT NULL AND batch_event IS NULL"
#: Jobs of a workflow: its steps and its continuations (whose ``step`` is NULL).
WORKFLOW_JOB_PREDICATE = "workflow_id IS NOT NULL"

#: The live-key uniqueness on MySQL and MariaDB, which have no partial index (and MariaDB no
#: expression index): a unique index on (handler, these generated columns), which are NULL
#: unless the job is live with a key; NULLs never collide, so finished jobs free their key.
#: The migrations add them (0001, 0007); they are not in the models, which would give them to
#: every backend. ``tests/integration/test_migrations.py`` checks them.
MYSQL_LIVE_KEY: dict[str, str] = {
    "live_key_tenant": f"CASE WHEN `key` IS NOT NULL AND {_in(LIVE_STATUSES)} THEN COALESCE(tenant, '') END",
    "live_key": f"CASE WHEN `key` IS NOT NULL AND {_in(LIVE_STATUSES)} THEN `key` END",
}


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    prefix: str
    schema: str | None
    jobs: Table
    attempts: Table
    handlers: Table
    pauses: Table
    workers: Table
    crons: Table
    maintenance: Table
    batches: Table
    batch_events: Table
    audit: Table
    workflows: Table
    workflow_edges: Table
    workflow_events: Table
    rate_limits: Table
    slots: Table
    rate_slots: Table
    fair_turns: Table

    def qualified(self, table: Table) -> str:
        """The table's name as it appears in raw SQL (quoted when it needs to be)."""
        return f'"{self.schema}"."{table.name}"' if self.schema else f'"{table.name}"'

    @property
    def notify_channel(self) -> str:
        """LISTEN/NOTIFY channel: distinct per installation sharing a database."""
        return f"{self.schema + '.' if self.schema else ''}{self.prefix}jobs"


def build_tables(prefix: str = "jobstead_", schema: str | None = None) -> Tables:
    md = MetaData(schema=schema)

    jobs = Table(
        f"{prefix}jobs",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("handler", String(NAME), nullable=False),
        Column("queue", String(NAME), nullable=False),
        Column("priority", Integer, nullable=False, server_default=text("0")),
        Column("status", String(16), nullable=False),
        Column("args", JSONType, nullable=False),
        Column("run_at", UTCDateTime, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime),
        Column("finished_at", UTCDateTime),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        # NULL means "the handler's setting", read when the job runs, so a change
        # to the handler (in code or in its JobHandler resource) reaches queued jobs.
        Column("max_attempts", Integer),
        Column("retry", JSONType),
        Column("timeout", Double),
        Column("key", String(NAME)),
        Column("tenant", String(NAME)),
        Column("metadata", JSONType),
        # The batch a job belongs to; for a continuation, the batch it continues
        # (batch_event names which: a continuation is not a member of the batch).
        Column("batch_id", Id),
        Column("batch_event", String(16)),
        Column("result", JSONType),
        Column("error", JSONType),
        Column("checkpoint", JSONType),
        # The lease: (lease_owner, attempts) identifies one claim; every state
        # change a worker makes is conditional on it (compare-and-set).
        Column("lease_owner", String(64)),
        Column("lease_expires_at", UTCDateTime),
        Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
        # Set on jobs a cron deferred: which cron, for which fire time. The unique
        # index below is what makes a fire happen once, however many schedulers run.
        Column("cron_name", String(NAME)),
        Column("cron_fire_at", UTCDateTime),
        # A workflow's step: its workflow, its name there, and how many of the steps it
        # depends on have not ended yet (it is ``blocked`` until none). A continuation of
        # the workflow has the workflow and no step name. See store/workflows.py.
        Column("workflow_id", Id),
        Column("step", String(NAME)),
        Column("waiting", Integer),
        # A step deferred with a ``delay``: its seconds, counted from its release (not from
        # ``.job()``) when its last dependency ends; NULL for an absolute ``run_at``.
        Column("release_delay", Double),
        # Flow control keys (``jobstead.flow``), read from the job's arguments when it is
        # deferred, so claims never parse arguments; NULL when the handler's ``*_by``
        # names no argument of it (or names ``tenant``: the claim reads ``tenant`` then).
        Column("rate_key", String(NAME)),
        Column("concurrency_key", String(NAME)),
        Column("sequence_key", String(NAME)),
        Column("fair_key", String(NAME)),
        **MYSQL_TABLE_OPTIONS,
    )
    Index(
        f"{prefix}jobs_ready",
        jobs.c.queue,
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        postgresql_where=text(READY_PREDICATE),
        sqlite_where=text(READY_PREDICATE),
    )
    Index(
        f"{prefix}jobs_ready_any_queue",
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        postgresql_where=text(READY_PREDICATE),
        sqlite_where=text(READY_PREDICATE),
    )
    # A key is scoped to its tenant (no tenant is a tenant of its own: '' never names one).
    # MySQL and MariaDB have neither partial nor expression indexes: see MYSQL_LIVE_KEY.
    Index(
        f"{prefix}jobs_live_key",
        jobs.c.handler,
        func.coalesce(jobs.c.tenant, literal_column("''")),
        jobs.c.key,
        unique=True,
        postgresql_where=text(LIVE_KEY_PREDICATE),
        sqlite_where=text(LIVE_KEY_PREDICATE),
    ).ddl_if(dialect=("postgresql", "sqlite"))  # type: ignore[arg-type]  # a tuple is documented and works
    Index(
        f"{prefix}jobs_cron_fire",
        jobs.c.cron_name,
        jobs.c.cron_fire_at,
        unique=True,
        postgresql_where=text(CRON_FIRE_PREDICATE),
        sqlite_where=text(CRON_FIRE_PREDICATE),
    )
    # Every job that is not a success, by status then handler: running jobs (leases,
    # the global limit, rescue) and the autoscaler's per-handler counts. Succeeded
    # jobs, the bulk of any table, take no entry, and neither does a lease renewal
    # (lease_expires_at is in no index, so a renewal can be a HOT update). See 0005.
    Index(
        f"{prefix}jobs_active",
        jobs.c.status,
        jobs.c.handler,
        postgresql_where=text(NOT_SUCCEEDED_PREDICATE),
        sqlite_where=text(NOT_SUCCEEDED_PREDICATE),
    )
    # Tenant queries always name a tenant.
    Index(
        f"{prefix}jobs_tenant_status",
        jobs.c.tenant,
        jobs.c.status,
        postgresql_where=text(HAS_TENANT_PREDICATE),
        sqlite_where=text(HAS_TENANT_PREDICATE),
    )
    # A batch's statistics are a count of its members by status.
    Index(
        f"{prefix}jobs_batch",
        jobs.c.batch_id,
        jobs.c.status,
        postgresql_where=text(BATCH_MEMBER_PREDICATE),
        sqlite_where=text(BATCH_MEMBER_PREDICATE),
    )
    # A workflow's steps by name (unique within it), and its continuations. Jobs outside a
    # workflow take no entry (no cost on their insert); MySQL and MariaDB have no partial
    # index and keep a full one, where NULLs never collide.
    Index(
        f"{prefix}jobs_workflow",
        jobs.c.workflow_id,
        jobs.c.step,
        unique=True,
        postgresql_where=text(WORKFLOW_JOB_PREDICATE),
        sqlite_where=text(WORKFLOW_JOB_PREDICATE),
    )
    # Sequences: whether an earlier job of a key holds it (claims of handlers with sequence_by),
    # so only the jobs that can: a claim's test of each candidate reads the few earlier ones still
    # holding, not every job its key ever finished (all of them, before 0011).
    Index(
        f"{prefix}jobs_sequence",
        jobs.c.handler,
        jobs.c.sequence_key,
        jobs.c.id,
        postgresql_where=text(SEQUENCE_HOLDER_PREDICATE),
        sqlite_where=text(SEQUENCE_HOLDER_PREDICATE),
    )
    # Retention: pruning walks finished jobs oldest first, never the live ones.
    Index(
        f"{prefix}jobs_finished",
        jobs.c.finished_at,
        postgresql_where=text(FINISHED_PREDICATE),
        sqlite_where=text(FINISHED_PREDICATE),
    )

    attempts = Table(
        f"{prefix}attempts",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column(
            "job_id",
            Id,
            ForeignKey(jobs.c.id, ondelete="CASCADE", name=f"{prefix}attempts_job_fk"),
            nullable=False,
        ),
        Column("attempt", Integer, nullable=False),
        Column("worker_id", String(64)),
        Column("started_at", UTCDateTime),
        Column("finished_at", UTCDateTime, nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("error", JSONType),
        **MYSQL_TABLE_OPTIONS,
    )
    Index(f"{prefix}attempts_job", attempts.c.job_id, attempts.c.attempt)

    handlers = Table(
        f"{prefix}handlers",
        md,
        Column("name", String(NAME), primary_key=True),
        Column("queue", String(NAME), nullable=False),
        Column("priority", Integer, nullable=False, server_default=text("0")),
        # The GLOBAL limit of running jobs; claims lock this row to enforce it.
        Column("concurrency", Integer),
        # The same, per tenant: at most this many of one tenant's jobs run at once.
        Column("tenant_concurrency", Integer),
        Column("max_attempts", Integer, nullable=False),
        Column("retry", JSONType, nullable=False),
        Column("timeout", Double),
        # Parameter names the handler accepts, so the CLI can check arguments
        # without importing the app: [{"name": ..., "required": bool}, ...].
        Column("params", JSONType, nullable=False),
        # "code" rows follow the code that registered them; "crd" rows belong to
        # the operator, and code only refreshes their parameter list.
        Column("source", String(16), nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        # Flow control (``jobstead.flow.FlowControl``): all NULL (and "hold") for none.
        # At most rate_limit starts in any rate_period seconds, per rate_limit_by key if set.
        Column("rate_limit", Integer),
        Column("rate_period", Double),
        Column("rate_limit_by", String(NAME)),
        # Names of shared limits (the rate_limits table) its starts count against: a JSON
        # list, SQL NULL for none (so a claim can tell which handlers have some).
        Column("rate_limits", NULLABLE_JSON),
        Column("concurrency_by", String(NAME)),
        Column("concurrency_per_key", Integer),
        Column("sequence_by", String(NAME)),
        Column("sequence_on_failure", String(16), nullable=False, server_default=text("'hold'")),
        Column("fair_by", String(NAME)),
        **MYSQL_TABLE_OPTIONS,
    )

    # Shared rate limits (``app.rate_limit``): several handlers' starts count against one.
    rate_limits = Table(
        f"{prefix}rate_limits",
        md,
        Column("name", String(NAME), primary_key=True),
        Column("rate_limit", Integer, nullable=False),
        Column("rate_period", Double, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )

    # The global limit's slots: ``concurrency`` rows per limited handler (``Registry`` keeps
    # them). A claim takes free ones (SKIP LOCKED) instead of locking the handler's row, so
    # claimers of one limited handler do not wait on each other. A slot names the claim that
    # holds it (job_id, attempt); it is free again once that claim no longer runs, which the
    # next claim sees (it compares ``token``, bumped at every take, so it never frees a slot
    # taken meanwhile). Completions never touch it.
    slots = Table(
        f"{prefix}slots",
        md,
        Column("handler", String(NAME), nullable=False),
        Column("n", Integer, nullable=False),
        Column("job_id", Id),
        Column("attempt", Integer),
        Column("token", Integer, nullable=False, server_default=text("0")),
        PrimaryKeyConstraint("handler", "n", name=f"{prefix}slots_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )

    # Rate limits as a ring of starts: ``limit`` rows per rate (kind "handler": a handler's
    # own rate_limit; "shared": a limit of the rate_limits table). A start takes a row last
    # used at least a period ago and stamps it: N rows never give N + 1 starts in a period.
    rate_slots = Table(
        f"{prefix}rate_slots",
        md,
        Column("kind", String(16), nullable=False),
        Column("name", String(NAME), nullable=False),
        Column("n", Integer, nullable=False),
        Column("used_at", UTCDateTime),
        PrimaryKeyConstraint("kind", "name", "n", name=f"{prefix}rate_slots_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )

    # Fair sharing (fair_by): the turn at which each key of a handler last had a job started
    # (a count per handler), so the next claim serves the keys served least recently first.
    fair_turns = Table(
        f"{prefix}fair_turns",
        md,
        Column("handler", String(NAME), nullable=False),
        Column("key", String(NAME), nullable=False),
        Column("turn", BigInteger, nullable=False),
        PrimaryKeyConstraint("handler", "key", name=f"{prefix}fair_turns_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )

    pauses = Table(
        f"{prefix}pauses",
        md,
        # scope is "all", "queue" or "handler"; name is "" for "all".
        Column("scope", String(16), nullable=False),
        Column("name", String(NAME), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("scope", "name", name=f"{prefix}pauses_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )

    workers = Table(
        f"{prefix}workers",
        md,
        # Unique per process start, never reused: a restarted pod is a new worker.
        Column("id", String(64), primary_key=True),
        Column("hostname", String(NAME), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("queues", JSONType),
        Column("handlers", JSONType, nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("running", Integer, nullable=False, server_default=text("0")),
        Column("started_at", UTCDateTime, nullable=False),
        Column("heartbeat_at", UTCDateTime, nullable=False),
        # The code crons this worker's app defines: what the operator re-creates
        # when someone deletes one (see Registry.published_crons).
        Column("crons", JSONType),
        **MYSQL_TABLE_OPTIONS,
    )

    crons = Table(
        f"{prefix}crons",
        md,
        Column("name", String(NAME), primary_key=True),
        Column("schedule", String(NAME), nullable=False),
        Column("timezone", String(64), nullable=False),
        Column("handler", String(NAME), nullable=False),
        Column("args", JSONType, nullable=False),
        # NULL: the handler's queue / priority, read at each fire.
        Column("queue", String(NAME)),
        Column("priority", Integer),
        Column("tenant", String(NAME)),
        Column("enabled", Boolean, nullable=False, server_default=text("true")),
        Column("overlap", String(16), nullable=False),
        Column("starting_deadline", Double),
        # "code", "database" or "crd": only the source that wrote a row deletes it.
        Column("source", String(16), nullable=False),
        # Every fire time at or before this instant is dealt with (fired or
        # skipped). Schedulers advance it with a compare-and-set, in the same
        # transaction as the job they insert.
        Column("handled_until", UTCDateTime, nullable=False),
        Column("last_fire_at", UTCDateTime),
        # No foreign key: finished jobs are pruned, the cron stays.
        Column("last_job_id", Id),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )
    Index(f"{prefix}crons_handler", crons.c.handler)

    maintenance = Table(
        f"{prefix}maintenance",
        md,
        # One row per maintenance duty (rescue, retention, worker registry): whoever
        # moves next_run_at forward (compare-and-set) does this round, the others skip it.
        Column("name", String(NAME), primary_key=True),
        Column("next_run_at", UTCDateTime, nullable=False),
        Column("taken_by", String(64)),
        **MYSQL_TABLE_OPTIONS,
    )

    batches = Table(
        f"{prefix}batches",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("tenant", String(NAME)),
        Column("metadata", JSONType),
        # active until every member is final; then succeeded, failed or cancelled.
        Column("status", String(16), nullable=False),
        # The continuations to defer, as given to defer_batch: {event: job spec}.
        Column("continuations", JSONType, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("cancelled_at", UTCDateTime),
        Column("finished_at", UTCDateTime),
        **MYSQL_TABLE_OPTIONS,
    )
    Index(f"{prefix}batches_tenant", batches.c.tenant, batches.c.id)

    batch_events = Table(
        f"{prefix}batch_events",
        md,
        # One row per (batch, event) ever fired: what makes a continuation happen once,
        # written in the same transaction as the completion that fired it.
        Column(
            "batch_id",
            Id,
            ForeignKey(batches.c.id, ondelete="CASCADE", name=f"{prefix}batch_events_batch_fk"),
            nullable=False,
        ),
        Column("event", String(16), nullable=False),
        Column("job_id", Id, nullable=False),
        Column("fired_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("batch_id", "event", name=f"{prefix}batch_events_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )

    # What people did from the dashboard (who, what, when): written by
    # jobstead.dashboard with every action, shown on its activity page.
    audit = Table(
        f"{prefix}audit",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        Column("actor", String(NAME), nullable=False),
        Column("action", String(64), nullable=False),
        Column("target", String(1000), nullable=False),
        Column("outcome", String(1000), nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )

    workflows = Table(
        f"{prefix}workflows",
        md,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("name", String(NAME), nullable=False),
        Column("tenant", String(NAME)),
        Column("metadata", JSONType),
        # active until nothing else can run; then succeeded, failed or cancelled.
        Column("status", String(16), nullable=False),
        # The continuations to defer: {event: job spec}, as for batches.
        Column("continuations", JSONType, nullable=False),
        # Steps not final yet: kept under this row's lock by every change that ends or
        # revives a step, so that "nothing else can run" is known without a recount.
        Column("unfinished", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime),
        Column("cancelled_at", UTCDateTime),
        **MYSQL_TABLE_OPTIONS,
    )
    Index(f"{prefix}workflows_name", workflows.c.name, workflows.c.id)
    Index(f"{prefix}workflows_tenant", workflows.c.tenant, workflows.c.id)

    workflow_edges = Table(
        f"{prefix}workflow_edges",
        md,
        # parent -> child: the child waits for the parent. Keyed by the parent, so that a
        # completion finds the steps it may release in one lookup.
        Column(
            "workflow_id",
            Id,
            ForeignKey(workflows.c.id, ondelete="CASCADE", name=f"{prefix}wf_edges_wf_fk"),
            nullable=False,
        ),
        Column("parent_id", Id, nullable=False),
        Column("child_id", Id, nullable=False),
        # The child's rule when the parent does not succeed (``transitions.UpstreamRule``).
        Column("on_failure", String(16), nullable=False),
        PrimaryKeyConstraint("parent_id", "child_id", name=f"{prefix}workflow_edges_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )
    # A step's dependencies (``ctx.upstream``), and a workflow's whole graph.
    Index(f"{prefix}workflow_edges_child", workflow_edges.c.child_id, workflow_edges.c.parent_id)
    Index(f"{prefix}workflow_edges_workflow", workflow_edges.c.workflow_id)

    workflow_events = Table(
        f"{prefix}workflow_events",
        md,
        # One row per (workflow, event) ever fired: a continuation happens once (as batch_events).
        Column(
            "workflow_id",
            Id,
            ForeignKey(workflows.c.id, ondelete="CASCADE", name=f"{prefix}wf_events_wf_fk"),
            nullable=False,
        ),
        Column("event", String(16), nullable=False),
        Column("job_id", Id, nullable=False),
        Column("fired_at", UTCDateTime, nullable=False),
        PrimaryKeyConstraint("workflow_id", "event", name=f"{prefix}workflow_events_pkey"),
        **MYSQL_TABLE_OPTIONS,
    )

    return Tables(
        metadata=md,
        prefix=prefix,
        schema=schema,
        jobs=jobs,
        attempts=attempts,
        handlers=handlers,
        pauses=pauses,
        workers=workers,
        crons=crons,
        maintenance=maintenance,
        batches=batches,
        batch_events=batch_events,
        audit=audit,
        workflows=workflows,
        workflow_edges=workflow_edges,
        workflow_events=workflow_events,
        rate_limits=rate_limits,
        slots=slots,
        rate_slots=rate_slots,
        fair_turns=fair_turns,
    )
