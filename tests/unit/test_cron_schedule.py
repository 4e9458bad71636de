"""Cron schedule semantics: syntax, validation, and fire times across DST changes.

The DST rules pinned here are the ones ``jobstead.cron.schedule`` documents:
a wall-clock time that does not exist fires at the first instant after the
gap; an ambiguous one fires once, at its first occurrence. Above all, the set
of fire instants must not depend on where a search starts: that is what lets
any number of schedulers agree on the one job per fire time.
"""

from __future__ import annotations

import bisect
import random
import warnings
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobstead import ConfigurationError
from jobstead.cron import PRESETS, CronSchedule, InvalidSchedule

TALLINN = "Europe/Tallinn"
NEW_YORK = "America/New_York"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *parts: int, fold: int = 0) -> datetime:
    """A wall-clock time in ``zone``, as a UTC instant (fold=1: the second pass of a repeated hour)."""
    return datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)  # type: ignore[misc]


def fires(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    return list(CronSchedule.parse(expression, zone).fires_after(after, until=until))


def wall(instants: list[datetime], zone: str) -> list[str]:
    """Instants as the zone's clock shows them, with the offset: what a reader checks."""
    return [i.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M:%S%z") for i in instants]


# -- syntax ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", utc(2025, 1, 1, 10, 7), utc(2025, 1, 1, 10, 15)),
        ("0 9 * * mon-fri", utc(2025, 1, 3, 10), utc(2025, 1, 6, 9)),  # Friday after 9 -> Monday
        ("*/15 * * * * 30", utc(2025, 1, 1, 10, 0, 31), utc(2025, 1, 1, 10, 15, 30)),  # seconds last
        ("* * * * * */20", utc(2025, 1, 1, 10, 0, 5), utc(2025, 1, 1, 10, 0, 20)),
        ("@hourly", utc(2025, 1, 1, 10, 0), utc(2025, 1, 1, 11, 0)),
        ("@daily", utc(2025, 1, 1, 10, 0), utc(2025, 1, 2)),
        ("@midnight", utc(2025, 1, 1, 10, 0), utc(2025, 1, 2)),
        ("@weekly", utc(2025, 1, 1), utc(2025, 1, 5)),  # Sunday
        ("@monthly", utc(2025, 1, 1), utc(2025, 2, 1)),
        ("@yearly", utc(2025, 1, 1), utc(2026, 1, 1)),
        ("@annually", utc(2025, 1, 1), utc(2026, 1, 1)),
        ("@DAILY", utc(2025, 1, 1, 10, 0), utc(2025, 1, 2)),
        ("0 0 29 2 *", utc(2025, 1, 1), utc(2028, 2, 29)),
    ],
)
def test_next_fire_time(expression: str, after: datetime, expected: datetime) -> None:
    assert CronSchedule.parse(expression).next_after(after) == expected


def test_every_documented_preset_parses() -> None:
    for preset in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly"):
        assert preset in PRESETS
        CronSchedule.parse(preset, TALLINN)


def test_whitespace_is_normalised_so_equal_schedules_compare_equal() -> None:
    assert CronSchedule.parse("  */5   *\t* * * ").expression == "*/5 * * * *"
    assert CronSchedule.parse("*/5 * * * *") == CronSchedule.parse(" */5 * * * *")


def test_next_is_strictly_after_and_latest_is_at_or_before() -> None:
    s = CronSchedule.parse("0 * * * *")
    assert s.next_after(utc(2025, 1, 1, 10)) == utc(2025, 1, 1, 11)
    assert s.latest_at_or_before(utc(2025, 1, 1, 10)) == utc(2025, 1, 1, 10)
    assert s.latest_at_or_before(utc(2025, 1, 1, 10, 59, 59, 999999)) == utc(2025, 1, 1, 10)
    assert s.count_between(utc(2025, 1, 1, 10), utc(2025, 1, 1, 13)) == 3
    assert s.count_between(utc(2025, 1, 1), utc(2025, 2, 1), limit=5) == 5


def test_times_are_in_the_schedules_zone() -> None:
    s = CronSchedule.parse("0 9 * * *", TALLINN)
    assert s.next_after(utc(2025, 1, 1)) == utc(2025, 1, 1, 7)  # 09:00 EET = 07:00 UTC
    assert s.next_after(utc(2025, 7, 1)) == utc(2025, 7, 1, 6)  # 09:00 EEST = 06:00 UTC
    india = CronSchedule.parse("@hourly", "Asia/Kolkata")  # +05:30: the hour falls on :30 UTC
    assert india.next_after(utc(2025, 1, 1, 0, 10)) == utc(2025, 1, 1, 0, 30)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        CronSchedule.parse("* * * * *").next_after(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("", "UTC", "empty cron schedule"),
        ("* * *", "UTC", "expected 5 fields .* got 3"),
        ("* * * * * * *", "UTC", "got 7"),
        ("61 * * * *", "UTC", "out of range"),
        ("* 24 * * *", "UTC", "out of range"),
        ("0 0 31 2 *", "UTC", r"can never occur"),
        ("@often", "UTC", "unknown cron preset '@often'"),
        ("H * * * *", "UTC", "hashed .* random"),
        ("R 2 * * *", "UTC", "hashed .* random"),
        ("* * * * *", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("* * * * *", "", "empty time zone"),
        ("* * * * *", "utc", "unknown time zone 'utc'"),
        ("* * * * *", "../../etc/passwd", "unknown time zone"),
        ("* * * * *", "localtime", "depends on the machine"),
    ],
)
def test_invalid_schedules_say_what_is_wrong(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message) as caught:
        CronSchedule.parse(expression, timezone)
    assert isinstance(caught.value, ConfigurationError)


def test_month_and_weekday_names_are_not_mistaken_for_hashed_fields() -> None:
    CronSchedule.parse("0 0 * mar,apr thu")
    CronSchedule.parse("0 0 * * thu-sat")


# -- DST: Europe/Tallinn (EET +02 / EEST +03, changes at 03:00/04:00 local) --------


def test_tallinn_spring_forward_missing_time_fires_once_when_the_clock_jumps() -> None:
    # 2025-03-30: 03:00 EET becomes 04:00 EEST; 03:30 never shows on the clock.
    got = fires("30 3 * * *", TALLINN, utc(2025, 3, 28), utc(2025, 4, 1))
    assert wall(got, TALLINN) == [
        "03-28 03:30:00+0200",
        "03-29 03:30:00+0200",
        "03-30 04:00:00+0300",  # once, at the first instant after the gap
        "03-31 03:30:00+0300",
    ]


def test_tallinn_spring_forward_interval_schedules_skip_nothing_but_the_gap() -> None:
    got = fires("*/15 * * * *", TALLINN, local(TALLINN, 2025, 3, 30, 2, 30), local(TALLINN, 2025, 3, 30, 4, 30))
    assert wall(got, TALLINN) == [
        "03-30 02:45:00+0200",
        "03-30 04:00:00+0300",  # 03:00-03:45 did not exist: they collapse into 04:00, which fires once
        "03-30 04:15:00+0300",
        "03-30 04:30:00+0300",
    ]
    hourly = fires("0 * * * *", TALLINN, local(TALLINN, 2025, 3, 30, 1, 30), local(TALLINN, 2025, 3, 30, 5, 30))
    assert wall(hourly, TALLINN) == ["03-30 02:00:00+0200", "03-30 04:00:00+0300", "03-30 05:00:00+0300"]


def test_tallinn_fall_back_ambiguous_time_fires_once_at_its_first_occurrence() -> None:
    # 2025-10-26: 04:00 EEST becomes 03:00 EET; 03:00-03:59 shows twice.
    got = fires("30 3 * * *", TALLINN, utc(2025, 10, 24), utc(2025, 10, 28))
    assert wall(got, TALLINN) == [
        "10-24 03:30:00+0300",
        "10-25 03:30:00+0300",
        "10-26 03:30:00+0300",  # the first 03:30 only
        "10-27 03:30:00+0200",
    ]


def test_tallinn_fall_back_repeated_hour_fires_on_its_first_pass_only() -> None:
    got = fires("*/15 * * * *", TALLINN, local(TALLINN, 2025, 10, 26, 2, 50), local(TALLINN, 2025, 10, 26, 4, 20))
    assert wall(got, TALLINN) == [
        "10-26 03:00:00+0300",
        "10-26 03:15:00+0300",
        "10-26 03:30:00+0300",
        "10-26 03:45:00+0300",
        "10-26 04:00:00+0200",  # the second pass (03:00-03:45 EET) fires nothing
        "10-26 04:15:00+0200",
    ]


def test_tallinn_searches_from_inside_the_second_pass_agree_with_the_first() -> None:
    s = CronSchedule.parse("*/15 * * * *", TALLINN)
    inside = local(TALLINN, 2025, 10, 26, 3, 10, fold=1)  # 03:10 EET, the repeated hour
    assert inside == utc(2025, 10, 26, 1, 10)
    assert s.next_after(inside) == local(TALLINN, 2025, 10, 26, 4, 0)
    assert s.latest_at_or_before(inside) == local(TALLINN, 2025, 10, 26, 3, 45)  # EEST, 25 minutes earlier


# -- DST: America/New_York (EST -05 / EDT -04, changes at 02:00 local) ------------


def test_new_york_spring_forward() -> None:
    # 2025-03-09: 02:00 EST becomes 03:00 EDT.
    got = fires("30 2 * * *", NEW_YORK, utc(2025, 3, 7), utc(2025, 3, 11))
    assert wall(got, NEW_YORK) == [
        "03-07 02:30:00-0500",
        "03-08 02:30:00-0500",
        "03-09 03:00:00-0400",
        "03-10 02:30:00-0400",
    ]
    # 02:00 does not exist and 03:00 does: one fire, not two.
    both = fires("0 2,3 * * *", NEW_YORK, utc(2025, 3, 9), utc(2025, 3, 10))
    assert wall(both, NEW_YORK) == ["03-09 03:00:00-0400"]
    half_hourly = fires("*/30 * * * *", NEW_YORK, local(NEW_YORK, 2025, 3, 9, 1, 0), local(NEW_YORK, 2025, 3, 9, 4, 0))
    assert wall(half_hourly, NEW_YORK) == [
        "03-09 01:30:00-0500",
        "03-09 03:00:00-0400",
        "03-09 03:30:00-0400",
        "03-09 04:00:00-0400",
    ]


def test_new_york_fall_back() -> None:
    # 2025-11-02: 02:00 EDT becomes 01:00 EST; 01:00-01:59 shows twice.
    got = fires("30 1 * * *", NEW_YORK, utc(2025, 10, 31), utc(2025, 11, 4))
    assert wall(got, NEW_YORK) == [
        "10-31 01:30:00-0400",
        "11-01 01:30:00-0400",
        "11-02 01:30:00-0400",
        "11-03 01:30:00-0500",
    ]
    hourly = fires("0 * * * *", NEW_YORK, local(NEW_YORK, 2025, 11, 1, 23, 30), local(NEW_YORK, 2025, 11, 2, 3, 30))
    assert wall(hourly, NEW_YORK) == [
        "11-02 00:00:00-0400",
        "11-02 01:00:00-0400",
        "11-02 02:00:00-0500",  # 01:00 EST, the repeat, does not fire
        "11-02 03:00:00-0500",
    ]


def test_a_seconds_schedule_across_the_gap() -> None:
    after, until = local(NEW_YORK, 2025, 3, 9, 1, 59, 30), local(NEW_YORK, 2025, 3, 9, 3, 0, 40)
    got = fires("* * * * * */20", NEW_YORK, after, until)
    assert wall(got, NEW_YORK) == [
        "03-09 01:59:40-0500",
        "03-09 03:00:00-0400",  # a whole hour of 20-second fires is one fire at the jump
        "03-09 03:00:20-0400",
        "03-09 03:00:40-0400",
    ]


# -- the property exactly-once rests on ------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "start"),
    [
        ("*/15 * * * *", TALLINN, utc(2025, 3, 29, 22)),
        ("*/15 * * * *", TALLINN, utc(2025, 10, 25, 22)),
        ("30 3 * * *", TALLINN, utc(2025, 10, 24)),
        ("0 * * * *", NEW_YORK, utc(2025, 11, 2, 2)),
        ("*/10 1,2 * * *", NEW_YORK, utc(2025, 3, 8, 20)),
        ("*/10 1,2 * * *", NEW_YORK, utc(2025, 11, 1, 20)),
        ("*/20 * * * *", "Australia/Lord_Howe", utc(2025, 4, 5, 12)),  # a 30-minute DST shift
        ("*/20 * * * *", "Australia/Lord_Howe", utc(2025, 10, 4, 12)),
        ("* * * * * */30", TALLINN, utc(2025, 10, 26, 0, 30)),
        ("* * * * * */30", NEW_YORK, utc(2025, 3, 9, 6, 30)),
    ],
)
def test_fire_times_do_not_depend_on_where_the_search_starts(expression: str, zone: str, start: datetime) -> None:
    s = CronSchedule.parse(expression, zone)
    end = start + timedelta(days=2)
    truth = list(s.fires_after(start - timedelta(days=1), until=end + timedelta(days=1)))
    assert truth == sorted(set(truth)), "fire times must be distinct and increasing"
    rng = random.Random(f"{expression}{zone}")
    span = int((end - start).total_seconds())
    for _ in range(150):
        t = start + timedelta(seconds=rng.randrange(span), microseconds=rng.choice([0, 1]))
        assert s.next_after(t) == truth[bisect.bisect_right(truth, t)], t
        assert s.latest_at_or_before(t) == truth[bisect.bisect_right(truth, t) - 1], t
    inner = range(1, len(truth) - 1)
    for i in rng.sample(inner, min(100, len(inner))):  # from exactly a fire time, too
        assert s.latest_at_or_before(truth[i]) == truth[i]
        assert s.next_after(truth[i]) == truth[i + 1]


def test_a_year_of_daily_fires_is_one_per_day_in_both_zones() -> None:
    for zone in (TALLINN, NEW_YORK):
        for expression in ("30 1 * * *", "30 2 * * *", "30 3 * * *"):
            got = fires(expression, zone, utc(2025, 1, 1), utc(2026, 1, 1))
            days = [g.astimezone(ZoneInfo(zone)).date() for g in got]
            assert len(days) == len(set(days)), (zone, expression)
            assert len(got) in (364, 365), (zone, expression, len(got))


def test_six_fields_firing_every_second_warn_that_seconds_go_last() -> None:
    from jobstead import App, SecondsFieldWarning

    advice = CronSchedule.parse("*/15 * * * * *", "UTC").seconds_field_advice()
    assert advice is not None and "seconds field goes LAST" in advice and "'* * * * * */15'" in advice
    for fine in ("* * * * * */15", "*/15 * * * *", "* * * * * *"):  # seconds last; five fields; every second
        assert CronSchedule.parse(fine, "UTC").seconds_field_advice() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CronSchedule.parse("*/15 * * * * *", "UTC")  # parsing is silent: every command that lists crons parses
    app = App("sqlite://")
    with pytest.warns(SecondsFieldWarning, match=r"seconds field goes LAST.*'\* \* \* \* \* \*/15'"):

        @app.cron("*/15 * * * * *")
        def quartz_ordered() -> None: ...
