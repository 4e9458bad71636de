"""Names in SQL: table prefix and schema are validated identifiers, everything else is a bound parameter.

A table prefix or schema name cannot be a parameter, so it is spliced into the
statements: a hostile or merely odd ``$JOBSTEAD_TABLE_PREFIX`` / ``$JOBSTEAD_SCHEMA``
must be refused up front, with one line naming the variable and the rule, and
nothing written. Handler, queue and tenant names come from code and from users
(the CLI, the operator): they must survive any text, as data (issue 13).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from jobstead import App, ConfigurationError
from tests.conftest import Target
from tests.support.processes import run_cli

HOSTILE_IDENTIFIERS = [
    'x"; DROP TABLE jobstead_jobs; --',
    "x'; DROP TABLE jobstead_jobs; --",
    "x y",
    "x-y",
    "x\n",
    "",
    "1abc",
    "_x",
    "é_",  # a letter to str.isalpha, not to SQL's plain identifiers
    "\uff58_",  # fullwidth x: PostgreSQL keeps it, NFKC would make it 'x_'
    "x²",  # a digit to str.isalnum
]
TOO_LONG = {"JOBSTEAD_TABLE_PREFIX": "a" * 41, "JOBSTEAD_SCHEMA": "a" * 64}

HOSTILE_NAMES = [
    "x'; DROP TABLE jobstead_jobs; --",
    'x"; DROP TABLE jobstead_jobs; --',
    "x\\'; SELECT pg_sleep(10); --",
    "%(id)s %s :name ?",
    "\u043d\u0430\u0437\u0432\u0430\u043d\u0438e \u540d\u524d \U0001f680",  # Cyrillic, CJK, an emoji
]


@pytest.mark.parametrize("value", [*HOSTILE_IDENTIFIERS, "too long"])
@pytest.mark.parametrize("variable", ["JOBSTEAD_TABLE_PREFIX", "JOBSTEAD_SCHEMA"])
def test_a_hostile_prefix_or_schema_in_the_environment_is_refused_in_one_line_before_any_write(
    postgres_target: Target, variable: str, value: str
) -> None:
    if variable == "JOBSTEAD_SCHEMA" and value == "":
        pytest.skip("an empty schema means none (the search path), by design")
    value = TOO_LONG[variable] if value == "too long" else value
    env = {"JOBSTEAD_DATABASE_URL": postgres_target.url, variable: value}
    if variable == "JOBSTEAD_TABLE_PREFIX":
        env["JOBSTEAD_SCHEMA"] = postgres_target.schema or ""
    before = _tables(postgres_target.url)
    done = run_cli(["migrate"], env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"${variable}" in lines[0] and "ASCII letter" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert _tables(postgres_target.url) == before, "something was written"


@pytest.mark.parametrize("value", [v for v in HOSTILE_IDENTIFIERS if v])
def test_the_app_refuses_a_hostile_prefix_or_schema_argument(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"table prefix .* not a valid name"):
        App("sqlite://", table_prefix=value).store  # noqa: B018
    with pytest.raises(ConfigurationError, match=r"schema name .* not a valid name"):
        App("sqlite://", schema=value).store  # noqa: B018
    with pytest.raises(ConfigurationError, match="at most 40 characters"):
        App("sqlite://", table_prefix=TOO_LONG["JOBSTEAD_TABLE_PREFIX"]).store  # noqa: B018


def test_pg_schema_names_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="pg_ names are PostgreSQL's"):
        App("sqlite://", schema="pg_catalog").store  # noqa: B018


@pytest.mark.postgres
def test_mixed_case_and_long_valid_names_work_end_to_end(pg_url: str, running_worker: Callable[..., Any]) -> None:
    """What the rule accepts must work: quoting keeps the case, and the longest prefix fits every name."""
    schema = f"Mixed_{uuid.uuid4().hex[:8]}"
    app = App(pg_url, schema=schema, table_prefix="P" + "x" * 38 + "_")

    @app.handler
    def echo(v: int) -> int:
        return v

    try:
        job = echo.defer(v=3)
        with running_worker(app):
            assert job.wait(30) == 3
        names = inspect(app.store.db.engine).get_table_names(schema=schema)
        assert {"P" + "x" * 38 + "_jobs", "P" + "x" * 38 + "_crons"} <= set(names)
    finally:
        app.close()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_handler_queue_and_tenant_names_are_data(
    target: Target, make_app: Callable[..., App], running_worker: Callable[..., Any], name: str
) -> None:
    app = make_app()

    @app.handler(name=name, queue=name)
    def hostile(v: str) -> str:
        return v

    job = hostile.configure(tenant=name, key=name).defer(v=name)
    with running_worker(app, queues=[name]):
        assert job.wait(30) == name
    record = job.refresh().record
    assert (record.handler, record.queue, record.tenant, record.key) == (name, name, name, name)
    assert app.pause(queue=name) and app.resume(queue=name)
    listed = run_cli(
        ["jobs", "list", "--json", "--handler", name, "--queue", name, "--tenant", name], target.env(), timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [job.id]
    assert "jobstead_jobs" in set(inspect(app.store.db.engine).get_table_names(schema=target.schema))


def _tables(url: str) -> set[tuple[str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).all()
        return {(r[0], r[1]) for r in rows}
    finally:
        engine.dispose()
