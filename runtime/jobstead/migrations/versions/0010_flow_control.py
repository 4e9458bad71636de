"""Flow control: rate limits, limits per key, sequences and fair sharing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Written out by hand, like 0001, so it keeps meaning the same thing after
``store/tables.py`` moves on.

* ``handlers``: a handler's flow control settings (``jobstead.flow.FlowControl``),
  all NULL for none, so rows written before read as no flow control.
* ``rate_limits``: shared rate limits by name (``app.rate_limit``).
* ``jobs``: the keys each control counts by, read from the arguments at defer.
* ``rate_slots``: rate limits as rings of starts (``limit`` rows per rate).
* ``fair_turns``: the turn at which each key of a fair_by handler was last served.
* ``slots``: the global limit's slots, ``concurrency`` rows per limited handler
  (written here for the handlers limited already).
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from jobstead.store.types import MYSQL_TABLE_OPTIONS, Double, UTCDateTime

#: JSON whose Python None is SQL NULL.
NULLABLE_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

HANDLER_COLUMNS = (
    "rate_limit",
    "rate_period",
    "rate_limit_by",
    "rate_limits",
    "concurrency_by",
    "concurrency_per_key",
    "sequence_by",
    "sequence_on_failure",
    "fair_by",
)
JOB_KEYS = ("rate_key", "concurrency_key", "sequence_key", "fair_key")
HAS_SEQUENCE = "sequence_key IS NOT NULL"


def upgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    for column in (
        sa.Column("rate_limit", sa.Integer),
        sa.Column("rate_period", Double),
        sa.Column("rate_limit_by", sa.String(200)),
        sa.Column("rate_limits", NULLABLE_JSON),
        sa.Column("concurrency_by", sa.String(200)),
        sa.Column("concurrency_per_key", sa.Integer),
        sa.Column("sequence_by", sa.String(200)),
        sa.Column("sequence_on_failure", sa.String(16), nullable=False, server_default=sa.text("'hold'")),
        sa.Column("fair_by", sa.String(200)),
    ):
        op.add_column(f"{p}handlers", column, schema=schema)
    for key in JOB_KEYS:
        op.add_column(f"{p}jobs", sa.Column(key, sa.String(200)), schema=schema)
    op.create_index(
        f"{p}jobs_sequence",
        f"{p}jobs",
        ["handler", "sequence_key", "id"],
        schema=schema,
        postgresql_where=sa.text(HAS_SEQUENCE),
        sqlite_where=sa.text(HAS_SEQUENCE),
    )
    op.create_table(
        f"{p}rate_limits",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("rate_limit", sa.Integer, nullable=False),
        sa.Column("rate_period", Double, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    slots = op.create_table(
        f"{p}slots",
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("attempt", sa.Integer),
        sa.Column("token", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("handler", "n", name=f"{p}slots_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        f"{p}rate_slots",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("used_at", UTCDateTime),
        sa.PrimaryKeyConstraint("kind", "name", "n", name=f"{p}rate_slots_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        f"{p}fair_turns",
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("turn", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("handler", "key", name=f"{p}fair_turns_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    # The slots of the handlers limited already (later ones: Registry writes them).
    handlers = sa.table(f"{p}handlers", sa.column("name"), sa.column("concurrency"), schema=schema)
    limited = op.get_bind().execute(
        sa.select(handlers.c.name, handlers.c.concurrency).where(handlers.c.concurrency > 0)
    )
    rows = [{"handler": name, "n": n, "token": 0} for name, cap in limited for n in range(int(cap))]
    if rows:
        op.bulk_insert(slots, rows)


def downgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    op.drop_table(f"{p}fair_turns", schema=schema)
    op.drop_table(f"{p}rate_slots", schema=schema)
    op.drop_table(f"{p}slots", schema=schema)
    op.drop_table(f"{p}rate_limits", schema=schema)
    op.drop_index(f"{p}jobs_sequence", f"{p}jobs", schema=schema)
    for key in reversed(JOB_KEYS):
        op.drop_column(f"{p}jobs", key, schema=schema)
    for column in reversed(HANDLER_COLUMNS):
        op.drop_column(f"{p}handlers", column, schema=schema)
