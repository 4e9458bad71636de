"""Where the database is, resolved the same way by the app, the CLI and the operator."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

from .errors import ConfigurationError

DATABASE_URL_ENV = "JOBSTEAD_DATABASE_URL"
TABLE_PREFIX_ENV = "JOBSTEAD_TABLE_PREFIX"
SCHEMA_ENV = "JOBSTEAD_SCHEMA"
DEFAULT_DATABASE_URL = "sqlite:///jobstead.db"
DEFAULT_TABLE_PREFIX = "jobstead_"


def resolve_database_url(explicit: str | URL | None = None) -> URL:
    """Explicit argument, else ``$JOBSTEAD_DATABASE_URL``, else a SQLite file in the cwd.

    The database's driver (``store/drivers``) checks and completes it: bare
    ``postgresql://`` URLs get psycopg 3, the only PostgreSQL driver Jobstead
    depends on; an unsupported database is refused here, with the ones it runs on.
    """
    raw = explicit if explicit is not None else os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    try:
        url = make_url(raw)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise ConfigurationError(f"invalid database URL {str(raw)!r}: {exc}") from exc
    from .store.drivers import driver_for  # on use: the store imports this module

    return driver_for(url).normalize_url(url)


def resolve_table_prefix(explicit: str | None = None) -> str:
    prefix = explicit if explicit is not None else os.environ.get(TABLE_PREFIX_ENV, DEFAULT_TABLE_PREFIX)
    if not prefix.replace("_", "").isalnum() or not prefix[:1].isalpha():
        raise ConfigurationError(f"table prefix {prefix!r} must start with a letter and hold only letters, digits, _")
    return prefix


def resolve_schema(explicit: str | None = None) -> str | None:
    schema = explicit if explicit is not None else os.environ.get(SCHEMA_ENV) or None
    if schema is not None and (not schema.replace("_", "").isalnum() or not schema[:1].isalpha()):
        raise ConfigurationError(f"schema name {schema!r} must start with a letter and hold only letters, digits, _")
    return schema
