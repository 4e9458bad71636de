"""Where an app's jobs live: a database URL plus its table prefix and schema, never shown with a password.

A resource names its app's database through a Secret; the Secret holds the
URL (under ``secretRef.key``, ``url`` by default) and, when the app uses
them, ``schema`` and ``tablePrefix``. Worker pods read the same three keys,
so the operator and the workers can never disagree on where the tables are.

Everything the operator says about a database (logs, Events, status) goes
through ``DatabaseTarget.masked``, and every error text derived from one
through ``scrub``: the password is replaced by ``***`` before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import URL

from jobstead import ConfigurationError
from jobstead.config import DEFAULT_TABLE_PREFIX, resolve_database_url, resolve_schema, resolve_table_prefix
from jobstead.store.drivers import driver_for

from .reasons import Reason

#: Secret keys, beside the URL's own, that say where in the database the tables are.
SCHEMA_KEY = "schema"
TABLE_PREFIX_KEY = "tablePrefix"
MASK = "***"


class TargetError(Exception):
    """A resource's database cannot be determined; ``reason`` says why, for the Ready condition."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class DatabaseTarget:
    """One Jobstead installation: the key of the operator's store pool."""

    url: URL
    schema: str | None = None
    table_prefix: str = DEFAULT_TABLE_PREFIX

    @property
    def masked(self) -> str:
        """How the target is written anywhere a person or a log may read it.

        A multi-host URL names its hosts in the query (``?host=pg-a,pg-b``), which
        SQLAlchemy renders percent-encoded (``pg-a%2Cpg-b``): they are shown as
        ``pg-a:5432,pg-b:5432`` where a host goes, the rest of the query kept.
        """
        url = self.url
        if url.host is None and "host" in url.query:
            rest = url.difference_update_query(["host", "port"]).render_as_string(hide_password=True)
            scheme, _, after = rest.partition("://")
            who, slash, path = after.partition("/")  # ``user:***@`` or nothing, then ``/db?...``
            where = f"{scheme}://{who}{driver_for(url).server(url)}{slash}{path}"
        else:
            where = url.render_as_string(hide_password=True)
        if self.schema:
            where += f" (schema {self.schema})"
        if self.table_prefix != DEFAULT_TABLE_PREFIX:
            where += f" (tables {self.table_prefix}*)"
        return where

    def scrub(self, text: str) -> str:
        """``text`` with this target's password masked: for messages built from driver errors."""
        password = self.url.password
        return text.replace(str(password), MASK) if password else text


def parse_target(raw_url: str, *, schema: str | None, table_prefix: str | None, where: str) -> DatabaseTarget:
    """A target from the values of a Secret (or the operator's own settings), or ``TargetError``.

    ``where`` names the source in the message ("Secret 'shop-db' key 'url'").
    The runtime's own messages may repeat the raw URL, password included:
    those are replaced by one that does not.
    """
    raw = raw_url.strip()
    try:
        url = resolve_database_url(raw)
        prefix = resolve_table_prefix(table_prefix if table_prefix else DEFAULT_TABLE_PREFIX)
        # an absent or empty schema key means the default search path, never the operator's $JOBSTEAD_SCHEMA
        chosen = resolve_schema(schema) if schema else None
    except ConfigurationError as exc:
        message = str(exc)
        if raw and raw in message:
            message = "is not a database URL SQLAlchemy understands (such as postgresql+psycopg://user:pw@host/db)"
        raise TargetError(Reason.INVALID_DATABASE_URL, f"{where}: {_scrub_raw(message, raw)}") from None
    return DatabaseTarget(url=url, schema=chosen, table_prefix=prefix)


def target_from_secret(data: Mapping[str, str], key: str, *, secret: str) -> DatabaseTarget:
    """The target a Secret's decoded ``data`` describes; ``TargetError`` names what is missing."""
    if key not in data:
        raise TargetError(Reason.SECRET_NOT_FOUND, f"spec.database.secretRef: Secret {secret!r} has no key {key!r}")
    return parse_target(
        data[key],
        schema=data.get(SCHEMA_KEY) or None,
        table_prefix=data.get(TABLE_PREFIX_KEY) or None,
        where=f"Secret {secret!r} key {key!r}",
    )


def _scrub_raw(message: str, raw: str) -> str:
    password = _password_of(raw)
    return message.replace(password, MASK) if password else message


def _password_of(raw: str) -> str | None:
    """The password of a URL-looking string, even one SQLAlchemy refuses (so it can be masked)."""
    _, sep, rest = raw.partition("://")
    if not sep:
        return None
    userinfo, at, _ = rest.rpartition("@")
    if not at:
        return None
    _, colon, password = userinfo.partition(":")
    return password if colon and password else None
