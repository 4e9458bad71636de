"""Workflows: jobs that depend on jobs, released exactly once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

* ``jobs.workflow_id``, ``jobs.step``, ``jobs.waiting``: a step is an ordinary
  job of a workflow, with a name unique in it and the number of its
  dependencies that have not ended (``blocked`` until none);
  ``jobs.release_delay``: a step's ``delay`` in seconds, counted from its
  release. The index on
  (workflow, step) is partial where the database has partial indexes, so jobs
  outside a workflow take no entry; MySQL and MariaDB keep a full one (NULLs
  never collide).
* ``workflows``: one row per workflow, locked by every change that ends a step.
* ``workflow_edges``: parent -> child, keyed by the parent (what a completion
  releases), with the child's rule when the parent fails.
* ``workflow_events``: a continuation fires once per (workflow, event).

Written out by hand, like 0001, so it keeps meaning the same thing after
``store/tables.py`` moves on.
"""

import sqlalchemy as sa
from alembic import context, op

from jobstead.store.types import MYSQL_TABLE_OPTIONS, Double, JSONType, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

WORKFLOW_JOB = "workflow_id IS NOT NULL"


def upgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    workflows_id = f"{schema + '.' if schema else ''}{p}workflows.id"
    op.add_column(f"{p}jobs", sa.Column("workflow_id", id_type), schema=schema)
    op.add_column(f"{p}jobs", sa.Column("step", sa.String(200)), schema=schema)
    op.add_column(f"{p}jobs", sa.Column("waiting", sa.Integer), schema=schema)
    op.add_column(f"{p}jobs", sa.Column("release_delay", Double), schema=schema)
    op.create_index(
        f"{p}jobs_workflow",
        f"{p}jobs",
        ["workflow_id", "step"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text(WORKFLOW_JOB),
        sqlite_where=sa.text(WORKFLOW_JOB),
    )
    op.create_table(
        f"{p}workflows",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200)),
        sa.Column("metadata", JSONType),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("continuations", JSONType, nullable=False),
        sa.Column("unfinished", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("cancelled_at", UTCDateTime),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(f"{p}workflows_name", f"{p}workflows", ["name", "id"], schema=schema)
    op.create_index(f"{p}workflows_tenant", f"{p}workflows", ["tenant", "id"], schema=schema)
    op.create_table(
        f"{p}workflow_edges",
        sa.Column(
            "workflow_id",
            id_type,
            sa.ForeignKey(workflows_id, ondelete="CASCADE", name=f"{p}wf_edges_wf_fk"),
            nullable=False,
        ),
        sa.Column("parent_id", id_type, nullable=False),
        sa.Column("child_id", id_type, nullable=False),
        sa.Column("on_failure", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name=f"{p}workflow_edges_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index(f"{p}workflow_edges_child", f"{p}workflow_edges", ["child_id", "parent_id"], schema=schema)
    op.create_index(f"{p}workflow_edges_workflow", f"{p}workflow_edges", ["workflow_id"], schema=schema)
    op.create_table(
        f"{p}workflow_events",
        sa.Column(
            "workflow_id",
            id_type,
            sa.ForeignKey(workflows_id, ondelete="CASCADE", name=f"{p}wf_events_wf_fk"),
            nullable=False,
        ),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("job_id", id_type, nullable=False),
        sa.Column("fired_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "event", name=f"{p}workflow_events_pkey"),
        schema=schema,
        **MYSQL_TABLE_OPTIONS,
    )


def downgrade() -> None:
    names = context.config.attributes["names"]
    p, schema = names.prefix, names.schema
    op.drop_table(f"{p}workflow_events", schema=schema)
    op.drop_table(f"{p}workflow_edges", schema=schema)
    op.drop_table(f"{p}workflows", schema=schema)
    op.drop_index(f"{p}jobs_workflow", f"{p}jobs", schema=schema)
    op.drop_column(f"{p}jobs", "release_delay", schema=schema)
    op.drop_column(f"{p}jobs", "waiting", schema=schema)
    op.drop_column(f"{p}jobs", "step", schema=schema)
    op.drop_column(f"{p}jobs", "workflow_id", schema=schema)
