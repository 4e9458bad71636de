"""Where a resource's database is, how it is shown, and what a CronSchedule's spec is: no cluster needed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jobstead_operator.databases import Databases
from jobstead_operator.deployment import SECRET_VERSION, build_deployment
from jobstead_operator.spec import CronScheduleSpec, JobHandlerSpec, SecretRef, SpecError
from jobstead_operator.targets import DatabaseTarget, TargetError, parse_target, target_from_secret

PASSWORD = "s3cr3t-Pa55"


def test_a_target_is_shown_with_its_password_masked() -> None:
    target = target_from_secret(
        {"url": f"postgresql://shop:{PASSWORD}@db.internal/shop", "schema": "jobs"}, "url", secret="shop-db"
    )
    assert target.url.drivername == "postgresql+psycopg"
    assert target.schema == "jobs" and target.table_prefix == "jobstead_"
    assert target.masked == "postgresql+psycopg://shop:***@db.internal/shop (schema jobs)"
    assert target.scrub(f"FATAL: password {PASSWORD} rejected") == "FATAL: password *** rejected"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://shop:{PASSWORD}@pg-a:5432,pg-b:5433/shop?target_session_attrs=read-write",
        f"postgresql://shop:{PASSWORD}@/shop?host=pg-a,pg-b&port=5432,5433&target_session_attrs=read-write",
    ],
)
def test_a_multi_host_target_shows_its_hosts_readably(url: str) -> None:
    """Both libpq forms of a multi-host URL: the hosts where a host goes, not ``pg-a%2Cpg-b`` in the query."""
    target = target_from_secret({"url": url, "schema": "jobs"}, "url", secret="shop-db")
    assert target.masked == (
        "postgresql+psycopg://shop:***@pg-a:5432,pg-b:5433/shop?target_session_attrs=read-write (schema jobs)"
    )


def test_a_secret_may_hold_a_mysql_or_mariadb_url() -> None:
    for scheme in ("mysql", "mariadb"):
        target = target_from_secret({"url": f"{scheme}://shop:{PASSWORD}@db/shop"}, "url", secret="shop-db")
        assert target.url.drivername == f"{scheme}+mysqldb"  # the mysql extra's sync client
        assert PASSWORD not in target.masked and target.masked.startswith(f"{scheme}+mysqldb://shop:***@db/shop")


@pytest.mark.parametrize(
    ("data", "reason", "expected"),
    [
        ({}, "SecretNotFound", "has no key 'url'"),
        ({"url": f"oracle://u:{PASSWORD}@h/db"}, "InvalidDatabaseURL", "unsupported database 'oracle'"),
        ({"url": f"::not a url:{PASSWORD}@"}, "InvalidDatabaseURL", "is not a database URL"),
        ({"url": f"postgresql://u:{PASSWORD}@h/db", "schema": "no-dashes"}, "InvalidDatabaseURL", "schema name"),
    ],
)
def test_a_bad_secret_is_refused_without_echoing_its_password(data: dict[str, str], reason: str, expected: str) -> None:
    with pytest.raises(TargetError) as caught:
        target_from_secret(data, "url", secret="shop-db")
    assert caught.value.reason == reason
    assert expected in caught.value.message and "shop-db" in caught.value.message
    assert PASSWORD not in caught.value.message


def test_targets_differ_by_url_schema_and_prefix() -> None:
    url = "postgresql://u@h/db"
    same = parse_target(url, schema="a", table_prefix=None, where="x")
    assert same == parse_target(url, schema="a", table_prefix=None, where="x")
    assert same != parse_target(url, schema="b", table_prefix=None, where="x")
    assert same != parse_target(url, schema="a", table_prefix="other_", where="x")


def cron(**changes: Any) -> dict[str, Any]:
    return {"schedule": "*/5 * * * *", "handler": "report", **changes}


def test_cron_spec_parsed_once_into_its_row_and_database() -> None:
    parsed = CronScheduleSpec.parse(
        "nightly",
        cron(
            timeZone="Europe/Tallinn",
            concurrencyPolicy="Forbid",
            startingDeadlineSeconds=30,
            suspend=True,
            database={"secretRef": {"name": "shop-db"}},
        ),
    )
    assert parsed.database == SecretRef("shop-db", "url")
    row = parsed.cron
    assert (row.name, row.handler, row.timezone, row.overlap, row.enabled, row.source) == (
        "nightly",
        "report",
        "Europe/Tallinn",
        "skip",
        False,
        "crd",
    )
    assert row.starting_deadline == 30.0
    assert CronScheduleSpec.parse("x", cron()).database is None


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "spec.schedule"),
        ({"schedule": "* * 31 2 *"}, "InvalidSchedule", "spec.schedule"),
        # a zone error is the zone's, even with a bad schedule beside it
        ({"timeZone": "Mars/Olympus_Mons", "schedule": "61 * * * *"}, "InvalidTimeZone", "spec.timeZone"),
        ({"concurrencyPolicy": "Sometimes"}, "InvalidSpec", "spec.concurrencyPolicy"),
        ({"startingDeadlineSeconds": 0}, "InvalidSpec", "spec:"),
        ({"args": {"when": {1, 2}}}, "InvalidSpec", "spec:"),
    ],
)
def test_cron_spec_reasons_come_from_the_parse(changes: dict[str, Any], reason: str, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        CronScheduleSpec.parse("bad", cron(**changes))
    assert caught.value.reason == reason
    assert caught.value.message.startswith(field), caught.value.message


def test_worker_pods_take_the_whole_location_from_the_secret() -> None:
    spec = JobHandlerSpec.parse(
        {
            "handler": "send_email",
            "app": "shop.jobs:app",
            "image": "shop:1",
            "database": {"secretRef": {"name": "shop-db", "key": "DATABASE_URL"}},
            "concurrency": 2,
            "podTemplate": {"env": [{"name": "JOBSTEAD_SCHEMA", "value": "elsewhere"}, {"name": "A", "value": "1"}]},
        }
    )
    d = build_deployment("mailer", "shop", spec, replicas=1, secret_version="42")
    env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JOBSTEAD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "shop-db", "key": "DATABASE_URL"}
    assert env["JOBSTEAD_SCHEMA"]["valueFrom"]["secretKeyRef"] == {"name": "shop-db", "key": "schema", "optional": True}
    assert env["JOBSTEAD_TABLE_PREFIX"]["valueFrom"]["secretKeyRef"]["key"] == "tablePrefix"
    assert "value" not in env["JOBSTEAD_SCHEMA"], "a podTemplate value would point workers at other tables"
    assert env["A"]["value"] == "1"
    assert d["spec"]["template"]["metadata"]["annotations"] == {SECRET_VERSION: "42"}


def test_the_pool_keeps_one_store_per_database_and_closes_it_with_its_last_user(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = Databases(republish_every=3600)
        first = DatabaseTarget(
            parse_target(f"sqlite:///{tmp_path / 'a.db'}", schema=None, table_prefix=None, where="x").url
        )
        second = DatabaseTarget(
            parse_target(f"sqlite:///{tmp_path / 'b.db'}", schema=None, table_prefix=None, where="x").url
        )
        db, before = await pool.use(("JobHandler", "ns", "a"), first)
        same, _ = await pool.use(("CronSchedule", "ns", "c"), first)
        assert same is db and before is None and pool.open_targets() == [first]
        await pool.ready(db)  # migrates, starts the scheduler
        assert await db.call(db.store.schema_is_current)
        moved, previous = await pool.use(("JobHandler", "ns", "a"), second)
        assert previous == first and moved is not db
        assert pool.open_targets() == [first, second], "the cron still uses the first"
        await pool.release(("CronSchedule", "ns", "c"))
        assert pool.open_targets() == [second], "closed with its last user"
        assert db.scheduler is not None and db.scheduler.stopped.is_set(), "its scheduler stopped with it"
        await pool.close_all()
        assert pool.open_targets() == []

    asyncio.run(scenario())
