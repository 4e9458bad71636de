"""The Alembic migrations build exactly the schema the code uses, under any prefix or schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobstead.store import Store
from tests.conftest import Target


def _diff(store: Store) -> list[object]:
    with store.db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parent: type_ != "schema" or name == store.tables.schema,
                "include_object": lambda obj, name, type_, reflected, compare_to: _ours(store, obj, name, type_),
                "compare_type": False,
            },
        )
        return list(compare_metadata(ctx, store.tables.metadata))


def _ours(store: Store, obj: object, name: str | None, type_: str) -> bool:
    """Only this installation's tables (another prefix may share the database)."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return bool(table) and str(table).startswith(store.tables.prefix) and not str(table).endswith("alembic_version")


def test_migrations_match_the_models(target: Target) -> None:
    store = Store.connect(target.url, schema=target.schema)
    store.migrate()
    assert _diff(store) == []
    assert store.schema_is_current()
    store.migrate()  # idempotent
    store.close()


def test_custom_prefix_lives_beside_the_default(target: Target) -> None:
    a = Store.connect(target.url, schema=target.schema)
    b = Store.connect(target.url, schema=target.schema, table_prefix="other_")
    a.migrate()
    assert not b.schema_is_current()
    b.migrate()
    assert _diff(b) == [] and b.schema_is_current() and a.schema_is_current()
    a.close()
    b.close()
