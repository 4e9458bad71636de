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
        url = make_url(hosts_as_query(raw) if isinstance(raw, str) else raw)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        # Never echo the password: the URL did not parse, so mask what looks like one by hand.
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(raw))
        detail = str(exc).replace(str(raw), shown)
        raise ConfigurationError(f"invalid database URL {shown!r}: {detail}") from exc
    from .store.drivers import driver_for  # on use: the store imports this module

    return driver_for(url).normalize_url(url)


#: ``scheme://[userinfo@]hosts[/path][?query]``, where ``hosts`` has a comma: libpq's multi-host form.
_MULTI_HOST = re.compile(
    r"(?P<scheme>[^:/]+://)(?P<userinfo>[^@/]*@)?(?P<hosts>[^/?@]*,[^/?@]*)(?P<rest>[/?].*)?", re.S
)


def hosts_as_query(raw: str) -> str:
    """``...@pg-a:5432,pg-b:5433/db?x=y`` as ``...@/db?host=pg-a,pg-b&port=5432,5433&x=y``.

    libpq takes several hosts in the URL's authority, and with
    ``target_session_attrs=read-write`` connects to whichever is the primary
    (Patroni, or a list of RDS instances). SQLAlchemy's URL parser reads one
    host and one port, and failed on that form with ``invalid literal for
    int()``; its query form, the same hosts as libpq's comma lists, goes through
    to psycopg as they are. A host without a port gets the default (an empty
    entry in libpq's list); IPv6 addresses keep their brackets' meaning.
    """
    found = _MULTI_HOST.fullmatch(raw.strip())
    if found is None:
        return raw
    hosts: list[str] = []
    ports: list[str] = []
    for entry in found["hosts"].split(","):
        entry = entry.strip()
        if entry.startswith("[") and "]" in entry:  # [v6]:port
            host, _, after = entry[1:].partition("]")
            port = after.removeprefix(":")
        else:
            host, _, port = entry.partition(":")
        if not host:
            raise ConfigurationError(f"database URL host list {found['hosts']!r} has an empty host")
        if port and not port.isdigit():
            raise ConfigurationError(f"database URL host {host!r}: port {port!r} is not a number")
        hosts.append(host)
        ports.append(port)
    rest = found["rest"] or "/"
    path, _, query = rest.partition("?")
    added = f"host={','.join(hosts)}" + (f"&port={','.join(ports)}" if any(ports) else "")
    return f"{found['scheme']}{found['userinfo'] or ''}{path or '/'}?{added}" + (f"&{query}" if query else "")


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
