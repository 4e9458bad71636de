"""Crons: the crons table, and the (cron, fire time) key on jobs that makes fires exactly-once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Written out by hand, like 0001, so it keeps meaning the same thing after
``store/tables.py`` moves on.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.store.types import MYSQL_TABLE_OPTIONS, Double, JSONType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CRON_FIRE = "cron_name IS NOT NULL"


def upgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    # Nullable columns without defaults: a metadata-only change on both backends,
    # however many jobs the table holds.
    op.add_column(f"{p}jobs", sa.Column("cron_name", sa.String(200)), schema=schema)
    op.add_column(f"{p}jobs", sa.Column("cron_fire_at", UTCDateTime), schema=schema)
    op.create_index(
        f"{p}jobs_cron_fire",
        f"{p}jobs",
        ["cron_name", "cron_fire_at"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text(CRON_FIRE),
        sqlite_where=sa.text(CRON_FIRE),
    )

    op.create_table(
        f"{p}crons",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("args", JSONType, nullable=False),
        sa.Column("queue", sa.String(200)),
        sa.Column("priority", sa.Integer),
        sa.Column("tenant", sa.String(200)),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("starting_deadline", Double),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("handled_until", UTCDateTime, nullable=False),
        sa.Column("last_fire_at", UTCDateTime),
        sa.Column("last_job_id", id_type),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(f"{p}crons_handler", f"{p}crons", ["handler"], schema=schema)


def downgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    op.drop_table(f"{p}crons", schema=schema)
    op.drop_index(f"{p}jobs_cron_fire", table_name=f"{p}jobs", schema=schema)
    op.drop_column(f"{p}jobs", "cron_fire_at", schema=schema)
    op.drop_column(f"{p}jobs", "cron_name", schema=schema)
