"""One duration syntax for every CLI option that takes time."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from jobstead.cli.durations import duration, parse_seconds, positive_seconds, seconds


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90", 90),
        ("1.5", 1.5),
        ("30s", 30),
        ("5m", 300),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        (" 7D ", 604800),
    ],
)
def test_units(raw: str, expected: float) -> None:
    assert parse_seconds(raw) == expected


@pytest.mark.parametrize("raw", ["", "soon", "5x", "nan", "inf", "d", "1e400"])
def test_not_durations(raw: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90, 30s, 5m, 12h or 7d"):
        parse_seconds(raw)


def test_signs() -> None:
    assert seconds("0") == 0 and duration("7d") == timedelta(days=7)
    with pytest.raises(argparse.ArgumentTypeError, match="cannot be negative"):
        seconds("-1")
    with pytest.raises(argparse.ArgumentTypeError, match="must be a positive number of seconds"):
        positive_seconds("0s")
