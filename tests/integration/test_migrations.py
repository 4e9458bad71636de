"""The Alembic migrations build exactly the schema the code uses, under any prefix or schema."""

from __future__ import annotations

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.schema import CreateIndex

from jobstead.store import Store
from jobstead.store.tables import MYSQL_LIVE_KEY
from tests.conftest import Target


def _diff(store: Store) -> list[object]:
    """What the migrated database lacks or has beyond the models (expression indexes: see below)."""
    if store.db.engine.dialect.name == "sqlite":
        _assert_sqlite_live_key_matches(store)
    with warnings.catch_warnings():
        # SQLite's expression index is not reflected (SQLAlchemy and Alembic warn and skip it):
        # _assert_sqlite_live_key_matches compares it instead.
        warnings.filterwarnings("ignore", message=".*expression-based index .*jobs_live_key")
        return _compare(store)


def _assert_sqlite_live_key_matches(store: Store) -> None:
    """The live-key index as SQLite keeps it (its statement) against the models' own statement."""
    name = f"{store.tables.prefix}jobs_live_key"
    [index] = [i for i in store.tables.jobs.indexes if i.name == name]
    with store.db.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"), {"name": name}
        ).scalar()
    modelled = str(CreateIndex(index).compile(dialect=store.db.engine.dialect))

    def normal(sql: str | None) -> str:
        return "".join((sql or "").lower().replace('"', "").split())

    assert normal(stored) == normal(modelled), f"{name}: {stored!r}, the models say {modelled!r}"


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

    def normal(sql: str) -> str:
        return "".join(sql.lower().replace("`", "").replace('"', "").split())

    assert {name: normal(sql) for name, sql in generated.items()} == {
        name: normal(sql) for name, sql in MYSQL_LIVE_KEY.items()
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
