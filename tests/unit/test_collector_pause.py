"""The collector pause of a bulk defer: only for large calls, and always given back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from jobstead.collector_pause import PAUSE_MIN_JOBS, collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_pauses_a_large_call_and_turns_the_collector_back_on_after_an_error() -> None:
    with pytest.raises(RuntimeError), collector_paused(PAUSE_MIN_JOBS):
        assert not gc.isenabled()
        raise RuntimeError("the insert failed")
    assert gc.isenabled()


def test_leaves_a_small_call_alone() -> None:
    with collector_paused(PAUSE_MIN_JOBS - 1):
        assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    with collector_paused(PAUSE_MIN_JOBS):
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_calls_never_leave_the_collector_off() -> None:
    first, second = collector_paused(PAUSE_MIN_JOBS), collector_paused(PAUSE_MIN_JOBS)
    first.__enter__()
    second.__enter__()  # finds it off: not its pause
    first.__exit__(None, None, None)
    assert gc.isenabled()  # the second still runs, with the collector on: never off for good
    second.__exit__(None, None, None)
    assert gc.isenabled()
