"""Cron expressions and time zones, fuzzed: each one parses and yields fire times, or is refused in one line."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobstead.cron import CronSchedule, InvalidSchedule

FIELD = st.one_of(
    st.sampled_from(["*", "*/5", "1-5", "0", "59", "60", "1,2,3", "L", "?", "MON", "jan", "5/0", "-1", "2-1", "*/0"]),
    st.integers(-5, 100).map(str),
    st.text(alphabet="0123456789*/,-LW#?", min_size=1, max_size=6),
)
EXPRESSION = st.one_of(
    st.lists(FIELD, min_size=1, max_size=7).map(" ".join),
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@reboot", "@every 5s", "@", ""]),
    st.text(max_size=30),
)
ZONE = st.one_of(
    st.sampled_from(
        ["UTC", "Europe/Tallinn", "America/New_York", "Asia/Kolkata", "Etc/GMT+14", "Factory", "utc", "Mars/Base"]
    ),
    st.sampled_from(["../etc/passwd", "/etc/localtime", "Europe/../UTC", "", " UTC", "UTC\x00", "Europe/"]),
    st.text(max_size=20),
)
START = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)  # the night Europe's clocks jump


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message and "Traceback" not in message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=EXPRESSION, zone=ZONE)
def test_a_schedule_parses_and_fires_or_is_refused_in_one_line(expression: str, zone: str) -> None:
    try:
        schedule = CronSchedule.parse(expression, zone)
    except InvalidSchedule as exc:
        assert one_line(str(exc)), repr(str(exc))
        return
    fire = schedule.next_after(START)
    assert fire > START
    schedule.latest_at_or_before(START)
    assert schedule.count_between(START, fire, limit=10) == 1  # (after, until]: the first fire only
