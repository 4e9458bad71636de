"""Column types and table options that behave the same on PostgreSQL, SQLite, MySQL and MariaDB."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from ..clock import as_utc

_MYSQL = ("mysql", "mariadb")


class _MySQLUTCDateTime(mysql.DATETIME):
    """MySQL's ``DATETIME(6)``: microseconds, and no zone, so UTC wall-clock fields are sent.

    A zone-aware value would be sent with its offset, which MariaDB refuses
    (or, in a lax SQL mode, truncates); ``TIMESTAMP`` would be converted through
    the session zone and ends in 2038.
    """

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: datetime | None) -> datetime | None:
            return None if value is None else as_utc(value).replace(tzinfo=None)

        return process


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps.

    SQLite has no time zone support: SQLAlchemy stores naive text there, which
    sorts correctly only if every value is in the same zone. Normalising to UTC
    on the way in and re-attaching it on the way out keeps comparisons and
    ``ORDER BY run_at`` right on every backend. MySQL and MariaDB keep naive
    UTC with microseconds (``DATETIME(6)``; a bare ``DATETIME`` drops them).
    """

    impl = DateTime(timezone=True).with_variant(_MySQLUTCDateTime(fsp=6), *_MYSQL)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # Aware UTC for every backend: PostgreSQL keeps the instant; SQLite's
        # DATETIME type writes the wall-clock fields only, which in UTC sort right.
        return as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


#: JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: A double-precision float everywhere (MySQL's FLOAT is single precision: 0.1 s timeouts drift).
Double = Float().with_variant(mysql.DOUBLE(asdecimal=False), *_MYSQL)

#: Options of every table on MySQL and MariaDB: InnoDB (row locks, SKIP LOCKED) and a binary
#: collation, so that names, keys and tenants compare case- and accent-sensitively as on
#: PostgreSQL (the servers' default ``_ci`` collations make ``Order-42`` and ``order-42`` one
#: deduplication key). Both prefixes: the MariaDB dialect reads only its own.
MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in _MYSQL
    for option, value in (("engine", "InnoDB"), ("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}
