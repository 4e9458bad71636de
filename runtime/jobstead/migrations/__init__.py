"""Schema migrations, run from code (``jobstead migrate``, or on first use of an app).

Alembic is driven programmatically so that no ``alembic.ini`` has to ship with
user apps, and so that the table prefix and PostgreSQL schema chosen at run
time reach the migration scripts (through ``Config.attributes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from ..store.database import Database

SCRIPT_LOCATION = "jobstead:migrations"


@dataclass(frozen=True)
class Names:
    """What the migration scripts need to know to name things."""

    prefix: str
    schema: str | None


def _config(db: Database, connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    cfg.attributes["names"] = Names(db.tables.prefix, db.tables.schema)
    return cfg


def version_table(db: Database) -> str:
    return f"{db.tables.prefix}alembic_version"


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(db: Database, connection: Connection) -> str | None:
    ctx = MigrationContext.configure(
        connection,
        opts={"version_table": version_table(db), "version_table_schema": db.tables.schema},
    )
    return ctx.get_current_revision()


def is_current(db: Database) -> bool:
    with db.engine.connect() as conn:
        return current_revision(db, conn) == head_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe when many processes start at once.

    The driver serialises concurrent migrators (``Driver.lock_schema``: a
    transaction-scoped advisory lock on PostgreSQL, which also works behind
    PgBouncer in transaction mode; SQLite's ``BEGIN IMMEDIATE`` does it alone).
    """
    with db.engine.begin() as conn:
        db.driver.lock_schema(conn, schema=db.tables.schema, prefix=db.tables.prefix)
        command.upgrade(_config(db, conn), revision)


def downgrade(db: Database, revision: str) -> None:
    with db.engine.begin() as conn:
        command.downgrade(_config(db, conn), revision)
