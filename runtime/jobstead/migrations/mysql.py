"""What the revisions do differently on MySQL and MariaDB, which have no partial index.

A partial unique index (a job's live key) becomes a unique index on generated
columns that are NULL unless the predicate holds: NULLs never collide, so a
finished job frees its key as the partial index lets it. Used only when the
migration runs on MySQL or MariaDB (``on_mysql``).
"""

from __future__ import annotations

from alembic import op


def on_mysql() -> bool:
    return op.get_context().dialect.name in ("mysql", "mariadb")


def _table(prefix: str, schema: str | None, name: str) -> str:
    return f"`{schema}`.`{prefix}{name}`" if schema else f"`{prefix}{name}`"


def add_generated(prefix: str, schema: str | None, table: str, column: str, type_: str, expression: str) -> None:
    """A virtual column computed from the row (nothing stored; its index keeps the values)."""
    op.execute(
        f"ALTER TABLE {_table(prefix, schema, table)} ADD COLUMN `{column}` {type_} "
        f"GENERATED ALWAYS AS ({expression}) VIRTUAL"
    )


def drop_column(prefix: str, schema: str | None, table: str, column: str) -> None:
    op.execute(f"ALTER TABLE {_table(prefix, schema, table)} DROP COLUMN `{column}`")
