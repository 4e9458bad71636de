"""Alembic environment: always online, on the connection ``jobstead.migrations`` hands over."""

from __future__ import annotations

from alembic import context

from jobstead.migrations import Names

names: Names = context.config.attributes["names"]
connection = context.config.attributes["connection"]

context.configure(
    connection=connection,
    version_table=f"{names.prefix}alembic_version",
    version_table_schema=names.schema,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
