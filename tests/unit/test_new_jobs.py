"""``store.new_jobs``: the one builder of a new job, and the one meaning of "the same options"."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest

from jobstead.flow import FlowControl
from jobstead.retry import RetryPolicy
from jobstead.store import NewJob
from jobstead.store.new_jobs import OPTION_FIELDS, JobDefaults, new_jobs, option_key, same_options, share_options

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BASE = NewJob(handler="work", args={"n": 1}, queue="default")
#: A value different from BASE's for every field of a new job.
OTHER: dict[str, object] = {
    "handler": "other",
    "queue": "mail",
    "priority": 5,
    "run_at": NOW,
    "key": "k",
    "tenant": "acme",
    "metadata": {"a": 1},
    "max_attempts": 3,
    "retry": RetryPolicy.fixed(1),
    "timeout": 2.0,
    "cron_name": "nightly",
    "cron_fire_at": NOW,
    "batch_id": 7,
    "batch_event": "finish",
    "workflow_id": 3,
    "step": "fetch",
    "waiting": 2,
    "delay": 30.0,
}


def test_a_delay_is_kept_beside_the_run_time_it_gives_and_an_absolute_run_at_keeps_none() -> None:
    (delayed,) = new_jobs("work", [{}], JobDefaults(), clock=lambda: NOW, delay=timedelta(minutes=1))
    (at,) = new_jobs("work", [{}], JobDefaults(), clock=lambda: NOW, run_at=NOW)
    assert (delayed.run_at, delayed.delay) == (NOW + timedelta(minutes=1), 60.0)
    assert (at.run_at, at.delay) == (NOW, None)


def test_the_option_key_is_every_field_but_the_arguments_and_the_keys_read_from_them() -> None:
    per_job = {"args", "rate_key", "concurrency_key", "sequence_key", "fair_key"}
    assert set(OPTION_FIELDS) == {f.name for f in fields(NewJob)} - per_job == set(OTHER)


@pytest.mark.parametrize("field", ["rate_key", "concurrency_key", "sequence_key", "fair_key"])
def test_jobs_differing_in_a_flow_key_still_share_their_options(field: str) -> None:
    """A key is read from the arguments, so it is per job like them: one INSERT for a defer_many."""
    assert same_options(BASE, replace(BASE, args={"n": 2}, **{field: "acme"}))


@pytest.mark.parametrize("field", sorted(OTHER))
def test_jobs_differing_in_any_one_option_do_not_share_their_options(field: str) -> None:
    changed = replace(BASE, **{field: OTHER[field]})
    assert not same_options(BASE, changed) and option_key(BASE) != option_key(changed)


def test_jobs_differing_in_their_arguments_only_share_their_options() -> None:
    a = replace(BASE, metadata={"x": 1, "y": 2})
    b = replace(a, args={"n": 2}, metadata={"y": 2, "x": 1})
    assert same_options(a, b) and option_key(a) == option_key(b)
    assert hash(option_key(a)) == hash(option_key(b))


def test_the_callers_options_win_over_the_handlers_defaults() -> None:
    defaults = JobDefaults(queue="mail", priority=3)
    (plain,) = new_jobs("work", [{}], defaults, clock=lambda: NOW)
    assert (plain.queue, plain.priority, plain.run_at, plain.max_attempts) == ("mail", 3, None, None)
    (own,) = new_jobs("work", [{}], defaults, clock=lambda: NOW, queue="q", priority=0, max_attempts=2)
    assert (own.queue, own.priority, own.max_attempts) == ("q", 0, 2), "priority 0 is a choice, not a default"


def test_a_delay_counts_from_now_once_and_a_run_time_is_taken_as_utc() -> None:
    reads: list[datetime] = []

    def clock() -> datetime:
        reads.append(NOW)
        return NOW

    jobs = new_jobs("work", [{"n": i} for i in range(3)], JobDefaults(), clock=clock, delay=timedelta(minutes=5))
    assert [j.run_at for j in jobs] == [NOW + timedelta(minutes=5)] * 3 and len(reads) == 1
    assert [j.args for j in jobs] == [{"n": 0}, {"n": 1}, {"n": 2}]
    (naive,) = new_jobs("work", [{}], JobDefaults(), clock=clock, run_at=datetime(2030, 1, 1, 9))
    assert naive.run_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert new_jobs("work", [], JobDefaults(), clock=clock) == []


def test_new_jobs_may_copy_a_blank_job_since_a_new_job_checks_nothing_at_init() -> None:
    # new_jobs builds each job as a copy (``evolve``), which skips __init__: a check added
    # there would be skipped too, so it has to be added to new_jobs as well.
    assert not hasattr(NewJob, "__post_init__")


def test_jobs_share_their_options_when_each_differs_from_the_first_in_its_arguments_only() -> None:
    same = [BASE, replace(BASE, args={"n": 2}), replace(BASE, args={"n": 3}, rate_key="acme")]
    assert share_options(same) and share_options(same[:1]) and share_options([])
    assert not share_options([*same, replace(BASE, queue="other")])


def test_a_built_job_equals_one_made_field_by_field_and_reads_its_own_keys() -> None:
    plain = new_jobs("work", [{"n": 1}, {"n": 2}], JobDefaults(), clock=lambda: NOW)
    assert plain == [NewJob(handler="work", args={"n": 1}, queue="default"), replace(BASE, args={"n": 2})]
    keyed = new_jobs(
        "work",
        [{"n": 1}, {"n": 2}, {}],
        JobDefaults(flow=FlowControl(sequence_by="n", fair_by="tenant")),
        clock=lambda: NOW,
    )
    assert [(j.args, j.sequence_key, j.fair_key) for j in keyed] == [
        ({"n": 1}, "1", None),
        ({"n": 2}, "2", None),
        ({}, None, None),
    ]
