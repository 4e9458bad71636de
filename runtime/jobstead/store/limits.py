"""How much of each limit is in use now: the one read behind ``jobstead stats``, the metrics and the dashboard.

Every figure is counted from what the claim itself counts (running job rows,
the rate rings' stamps), never from a counter a crash could leave wrong. It
runs on a connection the caller holds, so the metrics snapshot reads it in
the same short transaction as its other gauges.

Per-key figures are aggregated, never one row per key (a key can be every
customer): the busiest key's use, and how many keys are at their limit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select

from .claims import KEYED_RING
from .records import LimitUse
from .tables import Tables

#: Kinds of ``rate_slots`` rings that are one per rate (not one per key).
_ONE_RING_KINDS = ("handler", "shared")


def ring_owner(name: str) -> str | None:
    """The handler a ring of a rate per key belongs to (``claims.ring_name``: ``handler`` + ``\\x1f`` + key),
    or None for a name too long to keep and stored as its digest."""
    handler, sep, _ = name.partition("\x1f")
    return handler if sep else None


def limit_use(conn: Connection, tables: Tables, now: datetime) -> list[LimitUse]:
    """Each limit of every handler (and each shared rate) with how much of it is in use at ``now``.

    ``concurrency``: jobs running; ``concurrency_per_key``: running jobs of
    the key that has most (and how many keys are at the limit);
    ``rate_limit`` and shared rates: starts within the last period, from the
    rate's rows (what the next claim counts); ``rate_limit_per_key``: the
    busiest key's starts within its period, and the keys whose window is full.
    """
    handlers, jobs, rates = tables.handlers, tables.jobs, tables.rate_slots
    shared = tables.rate_limits
    found: list[LimitUse] = []
    rows = conn.execute(
        select(handlers).where(
            or_(
                handlers.c.concurrency.is_not(None),
                handlers.c.concurrency_per_key.is_not(None),
                handlers.c.tenant_concurrency.is_not(None),
                handlers.c.rate_limit.is_not(None),
            )
        )
    ).mappings()
    limited = {row["name"]: row for row in rows}
    running = (
        {
            (handler, key, tenant): int(n)
            for handler, key, tenant, n in conn.execute(
                select(jobs.c.handler, jobs.c.concurrency_key, jobs.c.tenant, func.count())
                .where(jobs.c.status == "running", jobs.c.handler.in_(list(limited)))
                .group_by(jobs.c.handler, jobs.c.concurrency_key, jobs.c.tenant)
            )
        }
        if limited
        else {}
    )
    stamps: dict[tuple[str, str], list[Any]] = {}
    for kind, name, used_at in conn.execute(
        select(rates.c.kind, rates.c.name, rates.c.used_at).where(rates.c.kind.in_(_ONE_RING_KINDS))
    ):
        stamps.setdefault((kind, name), []).append(used_at)
    keyed_periods = {
        name: float(row["rate_period"])
        for name, row in limited.items()
        if row["rate_limit"] is not None and row["rate_limit_by"] is not None
    }
    # A rate per key: only the stamps within the longest of their periods, never every ring.
    keyed: dict[str, dict[str, int]] = {}
    if keyed_periods:
        since = now - timedelta(seconds=max(keyed_periods.values()))
        for name, used_at in conn.execute(
            select(rates.c.name, rates.c.used_at).where(rates.c.kind == KEYED_RING, rates.c.used_at > since)
        ):
            owner = ring_owner(name)
            if owner is not None and owner in keyed_periods and used_at > now - timedelta(seconds=keyed_periods[owner]):
                counts = keyed.setdefault(owner, {})
                counts[name] = counts.get(name, 0) + 1
    periods = {
        name: (int(cap), float(per))
        for name, cap, per in conn.execute(select(shared.c.name, shared.c.rate_limit, shared.c.rate_period))
    }

    def started(kind: str, name: str, per: float) -> int:
        since = now - timedelta(seconds=per)
        return sum(1 for at in stamps.get((kind, name), ()) if at is not None and at > since)

    for name, row in sorted(limited.items()):
        mine = {k: n for k, n in running.items() if k[0] == name}
        if row["concurrency"] is not None:
            found.append(LimitUse(name, "concurrency", sum(mine.values()), int(row["concurrency"])))
        if row["concurrency_per_key"] is not None or row["tenant_concurrency"] is not None:
            by_tenant = row["concurrency_per_key"] is None or row["concurrency_by"] == "tenant"
            per_key: dict[Any, int] = {}
            for (_, key, tenant), n in mine.items():
                per_key[tenant if by_tenant else key] = per_key.get(tenant if by_tenant else key, 0) + n
            cap = int(row["concurrency_per_key"] or row["tenant_concurrency"])
            found.append(
                LimitUse(
                    name,
                    "concurrency_per_key",
                    max(per_key.values(), default=0),
                    cap,
                    by=row["concurrency_by"] or "tenant",
                    at_limit=sum(1 for n in per_key.values() if n >= cap),
                )
            )
        if row["rate_limit"] is not None:
            per, cap = float(row["rate_period"]), int(row["rate_limit"])
            if row["rate_limit_by"] is None:
                found.append(LimitUse(name, "rate_limit", started("handler", name, per), cap, per))
            else:
                counts = keyed.get(name, {})
                found.append(
                    LimitUse(
                        name,
                        "rate_limit_per_key",
                        max(counts.values(), default=0),
                        cap,
                        per,
                        by=row["rate_limit_by"],
                        at_limit=sum(1 for n in counts.values() if n >= cap),
                    )
                )
    for name, (cap, per) in sorted(periods.items()):
        found.append(LimitUse(None, f"rate_limits:{name}", started("shared", name, per), cap, per))
    return found
