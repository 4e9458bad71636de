"""Keys a JobHandler sets and the code does not: jobs deferred from code carry them (every driver).

The claim enforces the handler row's flow control, which the operator writes
from a JobHandler (``sequenceBy``, ``concurrencyBy``, ``rateLimit.by``,
``fairBy``); a job deferred from code must carry the keys that row names, or
the claim sees no key: no sequence, one group for every customer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, select

from jobstead import App
from jobstead.store import Store
from jobstead.store import registry as registry_module
from jobstead_operator.jobhandlers import definition
from jobstead_operator.spec import JobHandlerSpec
from tests.conftest import Target

SPEC: dict[str, Any] = {
    "handler": "charge",
    "app": "shop.jobs:app",
    "image": "shop:1",
    "database": {"secretRef": {"name": "shop-db"}},
    "concurrency": 50,
    "sequenceBy": "account_id",
    "concurrencyBy": "customer_id",
    "concurrencyPerKey": 2,
    "rateLimit": {"limit": 5, "periodSeconds": 1, "by": "customer_id"},
    "fairBy": "tenant",
}


def _keys(app: App, job_id: int) -> tuple[Any, ...]:
    jobs = app.store.tables.jobs
    with app.store.db.engine.connect() as conn:
        row = conn.execute(
            select(jobs.c.sequence_key, jobs.c.concurrency_key, jobs.c.rate_key, jobs.c.fair_key).where(
                jobs.c.id == job_id
            )
        ).one()
    return tuple(row)


def _members(app: App, batch_id: int) -> list[int]:
    jobs = app.store.tables.jobs
    with app.store.db.engine.connect() as conn:
        return list(conn.execute(select(jobs.c.id).where(jobs.c.batch_id == batch_id)).scalars())


def test_jobs_deferred_from_code_carry_the_keys_the_jobhandler_names(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "OPERATOR_FLOW_TTL", 0.3)
    app = App(target.url, schema=target.schema)

    @app.handler()
    def charge(account_id: str, customer_id: str, cents: int) -> None: ...

    before = charge.defer(account_id="acct-1", customer_id="c-9", cents=1)
    assert _keys(app, before.id) == (None, None, None, None), "the code names no key"

    operator = Store.connect(target.url, schema=target.schema)  # another process: the operator
    try:
        operator.registry.put_handler(definition(JobHandlerSpec.parse(SPEC)))
        time.sleep(0.4)  # what this process read of the operator's rows has aged out
        one = charge.defer(account_id="acct-1", customer_id="c-9", cents=2)
        many = charge.defer_many([{"account_id": f"acct-{i}", "customer_id": "c-7", "cents": i} for i in range(3)])
        batch = app.defer_batch([charge.job(account_id="acct-5", customer_id="c-5", cents=5)])
        assert _keys(app, one.id) == ("acct-1", "c-9", "c-9", None), "fairBy tenant: the tenant column"
        assert [_keys(app, j.id) for j in many] == [(f"acct-{i}", "c-7", "c-7", None) for i in range(3)]
        (member,) = _members(app, batch.id)
        assert _keys(app, member) == ("acct-5", "c-5", "c-5", None)

        # a defer reads nothing but its own INSERT while what it read is fresh
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        event.listen(app.store.db.engine, "before_cursor_execute", seen)
        try:
            charge.defer(account_id="acct-2", customer_id="c-2", cents=3)
        finally:
            event.remove(app.store.db.engine, "before_cursor_execute", seen)
        assert not [s for s in statements if "handlers" in s], statements

        operator.registry.remove_handler("charge", source="crd")  # the JobHandler is deleted
        time.sleep(0.4)
        after = charge.defer(account_id="acct-1", customer_id="c-9", cents=4)
        assert _keys(app, after.id) == (None, None, None, None), "back to the code's settings"
    finally:
        operator.close()
        app.close()


def test_an_async_defer_reads_the_rows_keys_off_its_event_loop(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read of the operator's rows is a blocking query: an async defer makes it on a thread."""
    monkeypatch.setattr(registry_module, "OPERATOR_FLOW_TTL", 0.3)
    app = App(target.url, schema=target.schema)

    @app.handler()
    def charge(account_id: str, customer_id: str, cents: int) -> None: ...

    charge.defer(account_id="acct-0", customer_id="c-0", cents=0)  # the app's tables exist
    operator = Store.connect(target.url, schema=target.schema)
    readers: list[int] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "handlers" in statement:
            readers.append(threading.get_ident())

    try:
        operator.registry.put_handler(definition(JobHandlerSpec.parse(SPEC)))
        time.sleep(0.4)

        async def both() -> tuple[int, list[Any]]:
            one = await charge.defer_async(account_id="acct-1", customer_id="c-9", cents=1)
            time.sleep(0.4)  # aged out again: the many form reads them too
            many = await charge.defer_many_async([{"account_id": "acct-2", "customer_id": "c-8", "cents": 2}])
            return threading.get_ident(), [one, *many]

        event.listen(app.store.db.engine, "before_cursor_execute", seen)
        try:
            loop_thread, deferred = asyncio.run(both())
        finally:
            event.remove(app.store.db.engine, "before_cursor_execute", seen)
        assert len(readers) == 2 and loop_thread not in readers, (loop_thread, readers)
        assert [_keys(app, d.id) for d in deferred] == [("acct-1", "c-9", "c-9", None), ("acct-2", "c-8", "c-8", None)]
    finally:
        operator.close()
        app.close()
