"""Upserts as each driver writes them: many rows in one statement, a condition on the row it meets.

MySQL's ``ON DUPLICATE KEY UPDATE`` has no ``WHERE``: the driver makes each
assignment conditional instead, and mysqlclient sends many rows as one
INSERT, which takes no parameters after its VALUES list.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from jobstead.store import Store
from tests.store.conftest import handler


def test_publishing_many_handlers_updates_code_rows_and_keeps_an_operator_rows_settings(store: Store) -> None:
    store.registry.publish_handlers([handler("a"), handler("b"), handler("c")])
    store.registry.put_handler(dataclasses.replace(handler("b", concurrency=7, queue="crd-queue"), source="crd"))

    store.registry.publish_handlers([handler("a", queue="new"), handler("b", queue="code-queue"), handler("c")])

    h = store.tables.handlers
    with store.db.engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(select(h.c.name, h.c.queue, h.c.concurrency, h.c.source))}
    assert (rows["a"].queue, rows["a"].source) == ("new", "code")
    assert (rows["b"].queue, rows["b"].concurrency, rows["b"].source) == ("crd-queue", 7, "crd")
    assert (rows["c"].queue, rows["c"].source) == ("default", "code")


def test_names_differing_only_in_case_are_two_handlers(store: Store) -> None:
    """Binary collations on MySQL: ``Mailer`` and ``mailer`` are two rows, as on PostgreSQL."""
    store.registry.publish_handlers([handler("mailer", queue="lower"), handler("Mailer", queue="upper")])
    h = store.tables.handlers
    with store.db.engine.connect() as conn:
        assert dict(conn.execute(select(h.c.name, h.c.queue)).all()) == {"mailer": "lower", "Mailer": "upper"}


def test_deduplication_keys_and_tenants_compare_case_sensitively(store: Store) -> None:
    from jobstead.store.records import NewJob

    store.registry.publish_handlers([handler("work")])

    def insert(key: str, tenant: str | None = None) -> int:
        return store.enqueue.insert([NewJob(handler="work", queue="default", args={}, key=key, tenant=tenant)])[0].id

    first = insert("Order-42")
    assert insert("Order-42") == first
    assert insert("order-42") != first, "a key differing in case is another key"
    in_acme = insert("Order-42", tenant="acme")
    assert insert("Order-42", tenant="ACME") != in_acme, "a tenant differing in case is another tenant"
