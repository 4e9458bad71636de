"""The Alembic migrations build exactly the schema the code uses, under any prefix or schema."""

from __future__ import annotations

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, text
from sqlalchemy.schema import CreateIndex

from jobstead.store import Store
from jobstead.store.tables import MYSQL_LIVE_KEY
from tests.conftest import Target


def _diff(store: Store) -> list[object]:
    """What the migrated database lacks or has beyond the models (index predicates: see below)."""
    _assert_index_predicates_match(store)
    with warnings.catch_warnings():
        # SQLite's expression index is not reflected (SQLAlchemy and Alembic warn and skip it):
        # _assert_index_predicates_match compares it instead.
        warnings.filterwarnings("ignore", message=".*expression-based index .*jobs_live_key")
        return _compare(store)


def _our_indexes(store: Store) -> list[Index]:
    return [index for table in store.tables.metadata.sorted_tables for index in sorted(table.indexes, key=str)]


def _assert_index_predicates_match(store: Store) -> None:
    """Each partial index as the database keeps it against the models' own statement of it.

    Alembic compares an index's columns but not its ``WHERE``, nor SQLite's expression
    indexes at all: a migration that left an old predicate in place would pass unseen.
    SQLite keeps each index's statement (``sqlite_master``); PostgreSQL normalises a
    predicate, so the models' index is built beside it under another name, in a
    transaction rolled back, and the two normalised predicates are compared.
    """
    dialect = store.db.engine.dialect
    if dialect.name not in ("sqlite", "postgresql"):
        return  # MySQL and MariaDB: no partial indexes (the live key: _without_mysql_live_key)
    with store.db.engine.connect() as conn:
        for index in _our_indexes(store):
            predicate = index.dialect_options[dialect.name]["where"]
            modelled = str(CreateIndex(index).compile(dialect=dialect))
            if dialect.name == "sqlite":
                stored = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"), {"name": index.name}
                ).scalar()
                assert _normal(stored) == _normal(modelled), f"{index.name}: {stored!r}, the models say {modelled!r}"
            elif predicate is not None:
                twin = f"{index.name}_twin"
                where_is = text(
                    "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = :name"
                    " AND n.nspname = coalesce(:schema, current_schema())"
                )
                with conn.begin() as building:
                    conn.execute(text(modelled.replace(f" {index.name} ", f" {twin} ", 1)))
                    found = {
                        name: conn.execute(where_is, {"name": name, "schema": store.tables.schema}).scalar()
                        for name in (index.name, twin)
                    }
                    building.rollback()
                assert found[index.name] == found[twin], (
                    f"{index.name}: WHERE {found[index.name]}, the models say {found[twin]}"
                )


def _normal(sql: str | None) -> str:
    """SQL without case, quotes or white space: as each database keeps it, and as the models say it."""
    return "".join((sql or "").lower().replace("`", "").replace('"', "").split())


def _compare(store: Store) -> list[object]:
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


def _without_mysql_live_key(store: Store, diff: list[object]) -> list[object]:
    """On MySQL and MariaDB the live-key index is on generated columns the models leave out
    (``tables.MYSQL_LIVE_KEY``): check those against the models' statement of them, and take
    them out of the comparison."""
    if not any(entry[0] == "remove_column" and entry[-1].name in MYSQL_LIVE_KEY for entry in diff):  # type: ignore[index]
        return diff  # a database with partial indexes
    table = store.tables.jobs.name
    with store.db.engine.connect() as conn:
        generated = dict(
            conn.execute(
                text(
                    "SELECT column_name, generation_expression FROM information_schema.columns "
                    "WHERE table_schema = :schema AND table_name = :table AND generation_expression IS NOT NULL"
                ),
                {"schema": store.tables.schema, "table": table},
            ).all()
        )
        indexed = [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT column_name FROM information_schema.statistics WHERE table_schema = :schema "
                    "AND table_name = :table AND index_name = :index ORDER BY seq_in_index"
                ),
                {"schema": store.tables.schema, "table": table, "index": f"{store.tables.prefix}jobs_live_key"},
            ).all()
        ]

    assert {name: _normal(sql) for name, sql in generated.items()} == {
        name: _normal(sql) for name, sql in MYSQL_LIVE_KEY.items()
    }
    assert indexed == ["handler", "live_key_tenant", "live_key"]
    live_key = f"{store.tables.prefix}jobs_live_key"
    rest = []
    for entry in diff:
        kind, obj = entry[0], entry[-1]  # type: ignore[index]
        if kind in ("add_index", "remove_index") and getattr(obj, "name", None) == live_key:
            continue
        if kind == "remove_column" and getattr(obj, "name", None) in MYSQL_LIVE_KEY:
            continue
        rest.append(entry)
    return rest


def test_migrations_match_the_models(target: Target) -> None:
    store = Store.connect(target.url, schema=target.schema)
    store.migrate()
    assert _without_mysql_live_key(store, _diff(store)) == []
    assert store.schema_is_current()
    store.migrate()  # idempotent
    store.close()


def test_custom_prefix_lives_beside_the_default(target: Target) -> None:
    a = Store.connect(target.url, schema=target.schema)
    b = Store.connect(target.url, schema=target.schema, table_prefix="other_")
    a.migrate()
    assert not b.schema_is_current()
    b.migrate()
    assert _without_mysql_live_key(b, _diff(b)) == [] and b.schema_is_current() and a.schema_is_current()
    a.close()
    b.close()


def _revisions() -> list[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from jobstead.migrations import SCRIPT_LOCATION

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return [r.revision for r in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


def test_an_installation_at_every_earlier_revision_upgrades_to_the_models(target: Target) -> None:
    """What ``jobstead migrate`` meets in the field: a database left at any revision, then upgraded."""
    from jobstead.migrations import upgrade

    for revision in _revisions()[:-1]:
        store = Store.connect(target.url, schema=target.schema, table_prefix=f"r{revision}_")
        upgrade(store.db, revision)
        assert not store.schema_is_current()
        store.migrate()
        assert _without_mysql_live_key(store, _diff(store)) == [], f"from {revision}"
        store.close()
