"""The worker's collector sizing: raised while a blocking worker runs, given back after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from jobstead.worker.collector import YOUNG_THRESHOLD, sized_for_jobs


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_raises_the_young_threshold_only_while_running_and_restores_it_after_an_error() -> None:
    with pytest.raises(RuntimeError), sized_for_jobs():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
        raise RuntimeError("the worker failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_never_lowers_a_threshold_the_application_raised_nor_enables_a_disabled_collector() -> None:
    gc.set_threshold(50_000, 20, 10)
    with sized_for_jobs():
        assert gc.get_threshold() == (50_000, 20, 10)
    gc.set_threshold(0, 10, 10)
    with sized_for_jobs():
        assert gc.get_threshold()[0] == 0


def test_overlapping_workers_give_the_thresholds_back_after_the_last_one() -> None:
    first, second = sized_for_jobs(), sized_for_jobs()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)  # the second still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)
