"""Condition reasons: their values, which heal by themselves, and the one check a tick makes with that."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import kopf

from jobstead_operator.binding import still_attached
from jobstead_operator.conditions import set_condition
from jobstead_operator.databases import Databases
from jobstead_operator.kube import Kube
from jobstead_operator.reasons import Notice, Reason
from jobstead_operator.resources import Resource
from jobstead_operator.secretrefs import DatabaseSecrets
from jobstead_operator.state import OperatorState
from jobstead_operator.targets import parse_target

#: Every reason, as users, the CRDs and the README see it, and whether it heals without an edit.
EXPECTED = {
    "Reconciled": False,
    "InvalidSpec": False,
    "InvalidRetry": False,
    "InvalidSchedule": False,
    "InvalidTimeZone": False,
    "NameTaken": False,
    "SecretNotFound": True,
    "SecretUnreadable": True,
    "InvalidDatabaseURL": True,
    "DatabaseUnknown": True,
    "DatabaseUnavailable": True,
    "SchemaMissing": True,
    "HandlerUnknown": True,
    "UnknownParameter": True,
}


def test_every_reason_keeps_its_value_and_says_whether_it_heals_by_itself() -> None:
    assert {reason.value: reason.recoverable for reason in Reason} == EXPECTED
    assert [notice.value for notice in Notice] == ["DatabaseChanged", "Scaled"]


def test_a_stored_reason_is_read_back_and_an_unknown_one_is_none() -> None:
    assert Reason.known("DatabaseUnavailable") is Reason.DATABASE_UNAVAILABLE
    assert Reason.known("SomethingAnOlderOperatorWrote") is None
    assert Reason.known(None) is None


def resource(conditions: list[dict[str, Any]] | None) -> Resource:
    return Resource(
        kind="JobHandler",
        namespace="shop",
        name="mailer",
        spec={},
        status={"conditions": conditions} if conditions is not None else {},
        meta={"generation": 1},
        body={},
        patch=kopf.Patch(),
    )


def test_a_tick_reconciles_again_only_after_a_failure_that_heals_by_itself(tmp_path: Path) -> None:
    async def scenario() -> dict[str, bool]:
        pool = Databases(republish_every=3600)
        state = OperatorState(kube=cast(Kube, None), databases=pool, secrets=cast(DatabaseSecrets, None))
        target = parse_target(f"sqlite:///{tmp_path / 'a.db'}", schema=None, table_prefix=None, where="x")
        try:
            database, _ = await pool.use(resource(None).user, target)
            await pool.ready(database)
            reconciles = {}
            for stored, ok in [*((reason.value, reason is Reason.RECONCILED) for reason in Reason), ("Gone", False)]:
                condition = set_condition(None, type="Ready", ok=ok, reason=stored, message="m", generation=1)
                reconciles[stored] = still_attached(state, resource(condition), target) is None
            reconciles["no condition yet"] = still_attached(state, resource(None), target) is None
            return reconciles
        finally:
            await pool.close_all()

    reconciles = asyncio.run(scenario())
    assert reconciles == {**EXPECTED, "Gone": False, "no condition yet": False}
