"""Batches with exactly-once continuations; deduplication keys scoped to their tenant; per-tenant limits.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

* ``batches`` and ``batch_events``: a continuation is fired once because its
  (batch, event) row is inserted, under its primary key, in the same
  transaction as the completion that finishes the batch.
* ``jobs.batch_event``: set on continuation jobs (which name the batch they
  continue in ``batch_id`` but are not its members); ``jobs_batch`` counts members.
* The live-key index becomes (handler, tenant, key): the same key under two
  tenants gives two jobs (it returned the other tenant's job before).
* ``handlers.tenant_concurrency``: the per-tenant limit.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.migrations.mysql import add_generated, drop_column, on_mysql
from jobstead.store.types import MYSQL_TABLE_OPTIONS, JSONType, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LIVE_KEY = "key IS NOT NULL AND status IN ('scheduled', 'queued', 'retrying', 'running')"
BATCH_MEMBER = "batch_id IS NOT NULL AND batch_event IS NULL"
MYSQL_LIVE_KEY_TENANT = (
    "CASE WHEN `key` IS NOT NULL AND status IN ('scheduled', 'queued', 'retrying', 'running') "
    "THEN COALESCE(tenant, '') END"
)


def upgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        f"{p}batches",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(200)),
        sa.Column("metadata", JSONType),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("continuations", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("cancelled_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(f"{p}batches_tenant", f"{p}batches", ["tenant", "id"], schema=schema)
    op.create_table(
        f"{p}batch_events",
        sa.Column(
            "batch_id",
            id_type,
            sa.ForeignKey(
                f"{schema + '.' if schema else ''}{p}batches.id", ondelete="CASCADE", name=f"{p}batch_events_batch_fk"
            ),
            nullable=False,
        ),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("job_id", id_type, nullable=False),
        sa.Column("fired_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "event", name=f"{p}batch_events_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.add_column(f"{p}jobs", sa.Column("batch_event", sa.String(16)), schema=schema)
    op.add_column(f"{p}handlers", sa.Column("tenant_concurrency", sa.Integer), schema=schema)
    op.create_index(
        f"{p}jobs_batch",
        f"{p}jobs",
        ["batch_id", "status"],
        schema=schema,
        postgresql_where=sa.text(BATCH_MEMBER),
        sqlite_where=sa.text(BATCH_MEMBER),
    )
    op.drop_index(f"{p}jobs_live_key", f"{p}jobs", schema=schema)
    if on_mysql():  # no expression index either: the tenant scope is a generated column too
        add_generated(p, schema, "jobs", "live_key_tenant", "VARCHAR(200)", MYSQL_LIVE_KEY_TENANT)
        op.create_index(
            f"{p}jobs_live_key", f"{p}jobs", ["handler", "live_key_tenant", "live_key"], unique=True, schema=schema
        )
    else:
        op.create_index(
            f"{p}jobs_live_key",
            f"{p}jobs",
            ["handler", sa.text("coalesce(tenant, '')"), "key"],
            unique=True,
            schema=schema,
            postgresql_where=sa.text(LIVE_KEY),
            sqlite_where=sa.text(LIVE_KEY),
        )


def downgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    op.drop_index(f"{p}jobs_live_key", f"{p}jobs", schema=schema)
    if on_mysql():
        drop_column(p, schema, "jobs", "live_key_tenant")
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
    op.drop_index(f"{p}jobs_batch", f"{p}jobs", schema=schema)
    op.drop_column(f"{p}handlers", "tenant_concurrency", schema=schema)
    op.drop_column(f"{p}jobs", "batch_event", schema=schema)
    op.drop_table(f"{p}batch_events", schema=schema)
    op.drop_table(f"{p}batches", schema=schema)
