"""Where the database is, resolved the same way by the app, the CLI and the operator."""

from __future__ import annotations

import os
import re

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
        # Never echo the password: the URL did not parse, so mask what looks like one by hand.
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(raw))
        detail = str(exc).replace(str(raw), shown)
        raise ConfigurationError(f"invalid database URL {shown!r}: {detail}") from exc
    from .store.drivers import driver_for  # on use: the store imports this module

    return driver_for(url).normalize_url(url)


#: The longest name built from the prefix is ``<prefix>jobs_ready_any_queue`` (20 more
#: characters); PostgreSQL cuts identifiers at 63 bytes without an error, so a
#: longer prefix would make distinct index names collide.
MAX_PREFIX_LENGTH = 40
MAX_SCHEMA_LENGTH = 63
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _identifier(value: str, *, what: str, source: str, max_length: int) -> str:
    """``value`` if it is safe to put in SQL as a name, else a ConfigurationError naming the rule.

    Table and schema names cannot be bound parameters, so they are spliced into
    statements (quoted): only plain ASCII names are accepted, which leaves
    nothing to escape, nothing that case folding or Unicode normalisation could
    turn into another name, and nothing PostgreSQL would truncate.
    """
    if _IDENTIFIER.fullmatch(value) is None or len(value) > max_length:
        raise ConfigurationError(
            f"{what} {value!r} (from {source}) is not a valid name: it must start with an ASCII letter and hold "
            f"only ASCII letters, digits and _, at most {max_length} characters"
        )
    return value


def resolve_table_prefix(explicit: str | None = None) -> str:
    """Explicit argument, else ``$JOBSTEAD_TABLE_PREFIX``, else ``jobstead_``; validated either way."""
    if explicit is not None:
        return _identifier(explicit, what="table prefix", source="table_prefix", max_length=MAX_PREFIX_LENGTH)
    prefix = os.environ.get(TABLE_PREFIX_ENV, DEFAULT_TABLE_PREFIX)
    return _identifier(prefix, what="table prefix", source=f"${TABLE_PREFIX_ENV}", max_length=MAX_PREFIX_LENGTH)


def resolve_schema(explicit: str | None = None) -> str | None:
    """Explicit argument, else ``$JOBSTEAD_SCHEMA``, else none (the search path); validated either way.

    ``pg_`` names are PostgreSQL's own: it refuses to create schemas with them.
    """
    source = "schema" if explicit is not None else f"${SCHEMA_ENV}"
    schema = explicit if explicit is not None else os.environ.get(SCHEMA_ENV) or None
    if schema is None:
        return None
    _identifier(schema, what="schema name", source=source, max_length=MAX_SCHEMA_LENGTH)
    if schema.lower().startswith("pg_"):
        raise ConfigurationError(f"schema name {schema!r} (from {source}) is not allowed: pg_ names are PostgreSQL's")
    return schema
