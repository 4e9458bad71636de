"""Cron schedules in words: the common shapes said plainly, anything else shown as written."""

from __future__ import annotations

import pytest

from jobstead.dashboard.schedules import describe


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("* * * * * */20", "every 20 seconds"),
        ("* * * * * *", "every second"),
        ("* * * * * */1", "every second"),
        ("* * * * * 30", "every minute at second 30"),
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("*/1 * * * *", "every minute"),
        ("5 * * * *", "every hour at minute 5"),
        ("0 */6 * * *", "every 6 hours at minute 0"),
        ("0 3 * * *", "every day at 03:00"),
        ("30 14 * * * 0", "every day at 14:30"),
        ("0 9 * * 1-5", "every Monday to Friday at 09:00"),
        ("0 9 * * mon-fri", "every Monday to Friday at 09:00"),
        ("0 9 * * 1,3,5", "every Monday, Wednesday and Friday at 09:00"),
        ("0 0 * * 7", "every Sunday at 00:00"),
        ("15 2 1 * *", "on the 1st of every month at 02:15"),
        ("15 2 22 * *", "on the 22nd of every month at 02:15"),
        ("@hourly", "every hour, on the hour"),
        ("@daily", "every day at 00:00"),
        ("@weekly", "every Sunday at 00:00"),
    ],
)
def test_common_shapes_are_said_in_words(expression: str, words: str) -> None:
    assert describe(expression) == words


@pytest.mark.parametrize(
    "expression",
    ["0 3 * 6 *", "0,30 9-17 * * 1-5", "*/15 * * * * 30", "0 9 1 * 1", "5-10 * * * *", "0 3 L * *", "0 3 * * 1-9"],
)
def test_other_shapes_are_shown_as_written(expression: str) -> None:
    assert describe(expression) == expression
