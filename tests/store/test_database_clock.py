"""The offset to the database's clock, measured on a busy host.

Regression: the offset was the server's reading minus the midpoint of our
two readings. On the database's own host, under load, the reply came back tens
of milliseconds after the server read its clock, so every time a worker wrote
(a step's ``finished_at``) was that much off its own clock, and a dependent
step that started 11 ms after its parent ended was recorded as starting first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Connection, text

from jobstead.store import Store
from jobstead.store.database_clock import DatabaseClock, nearest_to_zero
from tests.conftest import Target

pytestmark = pytest.mark.postgres

LOPSIDED_SECONDS = 0.08


def test_a_reply_held_back_after_the_server_read_its_clock_moves_no_time(
    postgres_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.connect(postgres_target.url, schema=postgres_target.schema)
    try:
        driver = store.db.driver

        def lopsided(conn: Connection) -> datetime:
            # The server reads its clock, then sleeps before it answers: a lopsided round trip.
            value = conn.execute(text(f"SELECT clock_timestamp(), pg_sleep({LOPSIDED_SECONDS})")).first()
            assert value is not None and isinstance(value[0], datetime)
            return value[0]

        monkeypatch.setattr(driver, "server_now", lopsided)
        clock = DatabaseClock(store.db)
        clock.resync()
        # Same host, same clock: nothing to correct. The midpoint said about -40 ms.
        assert clock.offset == timedelta(0)
    finally:
        store.close()


def test_a_host_clock_off_by_more_than_a_round_trip_is_corrected_by_what_the_readings_require() -> None:
    ms = timedelta(milliseconds=1)
    assert nearest_to_zero((-3 * ms, 2 * ms)) == timedelta(0)
    assert nearest_to_zero((60_000 * ms, 60_002 * ms)) == 60_000 * ms  # this host is 60 s behind
    assert nearest_to_zero((-60_002 * ms, -60_000 * ms)) == -60_000 * ms  # ahead
