"""Initial schema: jobs, attempts, handlers, pauses, workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written out by hand (not generated from ``store/tables.py`` at run time) so this
revision keeps meaning the same thing after the models move on.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.migrations.mysql import add_generated, on_mysql
from jobstead.store.types import MYSQL_TABLE_OPTIONS, Double, JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

READY = "status IN ('scheduled', 'queued', 'retrying')"
LIVE_KEY = "key IS NOT NULL AND status IN ('scheduled', 'queued', 'retrying', 'running')"
RUNNING = "status = 'running'"
MYSQL_LIVE_KEY = (
    "CASE WHEN `key` IS NOT NULL AND status IN ('scheduled', 'queued', 'retrying', 'running') THEN `key` END"
)


def upgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    op.create_table(
        f"{p}jobs",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("args", JSONType, nullable=False),
        sa.Column("run_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer),
        sa.Column("retry", JSONType),
        sa.Column("timeout", Double),
        sa.Column("key", sa.String(200)),
        sa.Column("tenant", sa.String(200)),
        sa.Column("metadata", JSONType),
        sa.Column("batch_id", id_type),
        sa.Column("result", JSONType),
        sa.Column("error", JSONType),
        sa.Column("checkpoint", JSONType),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.text("false")),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(
        f"{p}jobs_ready",
        f"{p}jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text(READY),
        sqlite_where=sa.text(READY),
    )
    op.create_index(
        f"{p}jobs_ready_any_queue",
        f"{p}jobs",
        [sa.text("priority DESC"), "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text(READY),
        sqlite_where=sa.text(READY),
    )
    op.create_index(
        f"{p}jobs_running",
        f"{p}jobs",
        ["handler", "lease_expires_at"],
        schema=schema,
        postgresql_where=sa.text(RUNNING),
        sqlite_where=sa.text(RUNNING),
    )
    if on_mysql():  # no partial index: a generated column that is NULL unless the key is live
        add_generated(p, schema, "jobs", "live_key", "VARCHAR(200)", MYSQL_LIVE_KEY)
        op.create_index(f"{p}jobs_live_key", f"{p}jobs", ["handler", "live_key"], unique=True, schema=schema)
    else:
        op.create_index(
            f"{p}jobs_live_key",
            f"{p}jobs",
            ["handler", "key"],
            unique=True,
            schema=schema,
            postgresql_where=sa.text(LIVE_KEY),
            sqlite_where=sa.text(LIVE_KEY),
        )
    op.create_index(f"{p}jobs_handler_status", f"{p}jobs", ["handler", "status"], schema=schema)
    op.create_index(f"{p}jobs_tenant_status", f"{p}jobs", ["tenant", "status"], schema=schema)

    op.create_table(
        f"{p}attempts",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("job_id", id_type, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", JSONType),
        sa.ForeignKeyConstraint(
            ["job_id"],
            [f"{schema + '.' if schema else ''}{p}jobs.id"],
            ondelete="CASCADE",
            name=f"{p}attempts_job_fk",
        ),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(f"{p}attempts_job", f"{p}attempts", ["job_id", "attempt"], schema=schema)

    op.create_table(
        f"{p}handlers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("concurrency", sa.Integer),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("retry", JSONType, nullable=False),
        sa.Column("timeout", Double),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )

    op.create_table(
        f"{p}pauses",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("scope", "name", name=f"{p}pauses_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )

    op.create_table(
        f"{p}workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", JSONType),
        sa.Column("handlers", JSONType, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("running", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )


def downgrade() -> None:
    names = context.config.attributes["names"]
    for table in ("workers", "pauses", "handlers", "attempts", "jobs"):
        op.drop_table(f"{names.prefix}{table}", schema=names.schema)
