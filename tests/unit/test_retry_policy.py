"""Retry delay policies, exactly."""

from __future__ import annotations

import random

import pytest

from jobstead import ConfigurationError, RetryPolicy


def test_fixed() -> None:
    assert [RetryPolicy.fixed(5).delay_after(n) for n in (1, 2, 10)] == [5, 5, 5]


def test_explicit_repeats_its_last_delay() -> None:
    p = RetryPolicy.explicit([1, 10, 60])
    assert [p.delay_after(n) for n in (1, 2, 3, 4, 9)] == [1, 10, 60, 60, 60]


def test_exponential_doubles_up_to_the_cap() -> None:
    p = RetryPolicy.exponential(2, cap=30, jitter=0)
    assert [p.delay_after(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_exponential_jitter_stays_within_its_fraction_and_varies() -> None:
    p = RetryPolicy.exponential(10, cap=None, jitter=0.2)
    rng = random.Random(7)
    samples = [p.delay_after(1, rng=rng) for _ in range(200)]
    assert all(8 <= s <= 12 for s in samples)
    assert len({round(s, 3) for s in samples}) > 50


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy.exponential(1, cap=60, jitter=0).delay_after(10_000) == 60


@pytest.mark.parametrize("value", [5, 2.5, [1, 2], RetryPolicy.fixed(1), {"kind": "fixed", "delay": 3}])
def test_short_forms_coerce(value: object) -> None:
    assert isinstance(RetryPolicy.coerce(value), RetryPolicy)  # type: ignore[arg-type]


def test_round_trips_through_json() -> None:
    p = RetryPolicy.exponential(3, cap=120, jitter=0.25)
    assert RetryPolicy.from_json(p.to_json()) == p


@pytest.mark.parametrize(
    "build",
    [
        lambda: RetryPolicy(kind="sometimes"),  # type: ignore[arg-type]
        lambda: RetryPolicy.fixed(-1),
        lambda: RetryPolicy.explicit([]),
        lambda: RetryPolicy.exponential(1, jitter=2),
        lambda: RetryPolicy.coerce("often"),  # type: ignore[arg-type]
        lambda: RetryPolicy.coerce(True),
    ],
)
def test_invalid_policies_are_refused(build: object) -> None:
    with pytest.raises(ConfigurationError):
        build()  # type: ignore[operator]
