"""What the jobs list shows beyond its columns: an argument preview, the error's message, timings.

Read for the one page of ids the list already found (primary-key look-ups),
so the list's own query stays the keyset scan it was. The pickers' names
come from the handlers table and the tenant index.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from ..store import Store

#: Characters of an argument preview; the job's page shows them all.
PREVIEW = 90
#: Tenants offered in the jobs list's picker (a typed ?tenant= still filters on any other).
TENANT_CHOICES = 200
#: Seconds the tenant picker's names are reused for.
TENANT_MAX_AGE = 30.0


@dataclass(frozen=True)
class RowDetail:
    args_preview: str
    error_message: str | None
    started_at: datetime | None


def preview(args: dict[str, Any] | None, limit: int = PREVIEW) -> str:
    """``order=7, to="ada@example.com"``: a job's arguments on one line, cut at ``limit`` characters."""
    if not args:
        return ""
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in args.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def row_details(store: Store, ids: Sequence[int]) -> dict[int, RowDetail]:
    if not ids:
        return {}
    jobs = store.tables.jobs
    stmt = select(
        jobs.c.id, jobs.c.args, jobs.c.error["message"].as_string().label("message"), jobs.c.started_at
    ).where(jobs.c.id.in_(list(ids)))
    with store.db.engine.connect() as conn:
        return {
            int(r.id): RowDetail(args_preview=preview(r.args), error_message=r.message, started_at=r.started_at)
            for r in conn.execute(stmt)
        }


def known_tenants(store: Store) -> list[str]:
    """Tenant names for the picker, the first ``TENANT_CHOICES`` in order.

    A ``DISTINCT`` would walk the whole tenant index (every job of every
    tenant); this skips from one name to the next, one index probe per
    tenant (a recursive query, which both backends run).
    """
    jobs = store.tables.jobs
    first = select(func.min(jobs.c.tenant).label("tenant")).where(jobs.c.tenant.is_not(None))
    names = first.cte("tenant_names", recursive=True)
    following = select(func.min(jobs.c.tenant)).where(jobs.c.tenant > names.c.tenant).scalar_subquery()
    names = names.union_all(select(following.label("tenant")).where(names.c.tenant.is_not(None)))
    stmt = select(names.c.tenant).where(names.c.tenant.is_not(None)).limit(TENANT_CHOICES)
    with store.db.engine.connect() as conn:
        return [str(t) for t in conn.execute(stmt).scalars()]


class TenantNames:
    """``known_tenants``, read at most once a ``max_age``: a walk of the tenant index costs
    tens of milliseconds on a table of millions, and the names change rarely."""

    def __init__(self, store: Store, *, max_age: float = TENANT_MAX_AGE) -> None:
        self._store = store
        self._max_age = max_age
        self._lock = threading.Lock()
        self._value: tuple[float, list[str]] | None = None

    def get(self) -> list[str]:
        with self._lock:
            if self._value is None or time.monotonic() - self._value[0] >= self._max_age:
                self._value = (time.monotonic(), known_tenants(self._store))
            return self._value[1]
