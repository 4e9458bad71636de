"""The dashboard's audit log: one row per action someone took in it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Written out by hand, like 0001, so it keeps meaning the same thing after
``store/tables.py`` moves on. Rows are only ever appended and read newest
first, by primary key: no other index.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.store.types import MYSQL_TABLE_OPTIONS, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        f"{p}audit",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(1000), nullable=False),
        sa.Column("outcome", sa.String(1000), nullable=False),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )


def downgrade() -> None:
    names = context.config.attributes["names"]
    op.drop_table(f"{names.prefix}audit", schema=names.schema)
