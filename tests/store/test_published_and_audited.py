"""Store operations added with the first-hour fixes and the dashboard's audit part, on every driver."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from jobstead.migrations import head_revision
from jobstead.store import Store
from jobstead.store.presence import schema_revision
from tests.store.conftest import handler


def test_the_schema_revision_is_read_without_changing_anything(store: Store) -> None:
    assert schema_revision(store.db) == head_revision()


def test_published_parameter_types_round_trip(store: Store) -> None:
    spec = {"any_of": [{"list": "int"}, "null"]}
    definition = replace(
        handler("resize"),
        params=(("n", True), ("sizes", False), ("label", False)),
        param_types=(("n", "int"), ("sizes", spec)),
    )
    store.registry.publish_handlers([definition])
    read = store.registry.handler("resize")
    assert read is not None
    assert read.params == definition.params
    assert read.param_types == (("n", "int"), ("sizes", spec))  # "label" has no checked type


def test_an_audit_row_is_written_by_the_store(store: Store) -> None:
    store.audit.record(actor="ops", action="delete", target="job 7", outcome="deleted")
    audit = store.db.tables.audit
    with store.db.engine.connect() as conn:
        rows = conn.execute(select(audit.c.actor, audit.c.action, audit.c.target, audit.c.outcome)).all()
    assert [tuple(r) for r in rows] == [("ops", "delete", "job 7", "deleted")]
