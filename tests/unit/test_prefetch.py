"""How many jobs a worker claims ahead of its free slots (pure, no database)."""

from __future__ import annotations

from jobstead.worker.prefetch import ClaimPace


def test_nothing_ahead_before_anything_ran() -> None:
    assert ClaimPace(100).ahead == 0


def test_ahead_covers_two_claim_round_trips_of_starts() -> None:
    pace = ClaimPace(100)
    for _ in range(30):  # steady: 10,000 starts/s, claims of 2 ms
        pace.observe(started=100, seconds=0.01, claim_seconds=0.002)
    assert 38 <= pace.ahead <= 40  # 2 x 10,000/s x 2 ms


def test_long_jobs_or_a_quiet_queue_hold_nothing_back() -> None:
    pace = ClaimPace(100)
    for _ in range(30):  # one start per second, claims of 2 ms: 0.004 jobs per two round trips
        pace.observe(started=1, seconds=1.0, claim_seconds=0.002)
    assert pace.ahead == 0


def test_never_more_than_the_concurrency() -> None:
    pace = ClaimPace(10)
    for _ in range(30):
        pace.observe(started=1000, seconds=0.01, claim_seconds=0.05)
    assert pace.ahead == 10
