"""Who is woken for the workflow steps a write releases, on every driver.

A NOTIFY for each released step woke a claim in every worker process, and all
but one of them found nothing (release latency at 200 workflows/s went from
tens to over a hundred ms with four processes). So a completion whose write
claims in its own transaction (``HandOff``) takes the steps it released
itself and wakes no one for them; every step it did not take (another queue,
another handler, no room) still wakes its queue's workers, as does every
release made without a hand-off (a write without one, a rescue, a step
cancelled by hand). The NOTIFYs are read where the driver sends them: on
PostgreSQL they are delivered at commit; elsewhere ``notify`` does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from sqlalchemy import Connection

from jobstead.status import JobStatus
from jobstead.store import HandOff, NewStep, Store
from tests.store.conftest import ManualClock, handler
from tests.store.test_contract import claim, done, new
from tests.store.test_workflows import statuses, step


@pytest.fixture
def woken(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The queues of every NOTIFY the store's driver sends, as they go through to it."""
    seen: list[str] = []
    driver = store.db.driver
    notify = driver.notify

    def recorded(conn: Connection, channel: str, queues: Iterable[str]) -> None:
        queues = list(queues)
        seen.extend(queues)
        notify(conn, channel, queues)

    monkeypatch.setattr(driver, "notify", recorded)
    yield seen


def _hand_off(handlers: list[str], queues: list[str] | None = None, *, if_released: bool = True) -> HandOff:
    return HandOff("w1", handlers, queues, limit=5, lease_seconds=30, if_released=if_released)


def test_a_step_the_completing_worker_takes_wakes_no_one(store: Store, woken: list[str]) -> None:
    workflow_id = store.workflows.create("taken", [step("parent"), step("child", "parent")]).id
    (parent,) = claim(store)
    woken.clear()  # the defers' own
    hand_off = _hand_off(["work"])
    assert store.leases.complete([done(parent, store)], hand_off) == set()
    child = store.workflows.get(workflow_id).steps["child"]
    assert hand_off.made and [job.id for job in hand_off.claimed] == [child.job_id]
    assert child.status is JobStatus.RUNNING
    assert woken == []


def test_a_step_for_a_queue_or_handler_the_worker_does_not_serve_still_wakes_its_queue(
    store: Store, woken: list[str]
) -> None:
    store.registry.put_handler(handler("elsewhere"))
    steps = [
        step("parent"),
        step("other-queue", "parent", queue="other"),
        NewStep("other-handler", new("elsewhere"), ("parent",)),
        step("served", "parent"),
    ]
    workflow_id = store.workflows.create("mixed", steps).id
    (parent,) = claim(store, queues=["default"])
    woken.clear()  # the defers' own
    hand_off = _hand_off(["work"], ["default"])
    store.leases.complete([done(parent, store)], hand_off)
    record = store.workflows.get(workflow_id)
    assert [job.id for job in hand_off.claimed] == [record.steps["served"].job_id]
    assert statuses(store, workflow_id)["other-queue"] is JobStatus.QUEUED
    assert statuses(store, workflow_id)["other-handler"] is JobStatus.QUEUED
    assert sorted(woken) == ["default", "other"]  # "other-handler" is on the default queue


def test_a_step_the_hand_off_has_no_room_for_still_wakes_its_queue(store: Store, woken: list[str]) -> None:
    workflow_id = store.workflows.create("wide", [step("parent"), step("b", "parent"), step("c", "parent")]).id
    (parent,) = claim(store)
    woken.clear()  # the defers' own
    hand_off = HandOff("w1", ["work"], None, limit=1, lease_seconds=30, if_released=True)
    store.leases.complete([done(parent, store)], hand_off)
    assert len(hand_off.claimed) == 1
    assert sorted(s.value for s in statuses(store, workflow_id).values()) == ["queued", "running", "succeeded"]
    assert woken == ["default"]


def test_a_release_without_a_hand_off_wakes_its_queue(store: Store, woken: list[str]) -> None:
    workflow_id = store.workflows.create("plain", [step("parent"), step("child", "parent", queue="q2")]).id
    (parent,) = claim(store)
    woken.clear()  # the defers' own
    store.leases.complete([done(parent, store)])
    assert statuses(store, workflow_id)["child"] is JobStatus.QUEUED
    assert woken == ["q2"]


def test_a_hand_off_asked_for_releases_alone_claims_nothing_where_none_were_released(
    store: Store, woken: list[str]
) -> None:
    """The step ended waits for a sibling: nothing released, so no claim is made, and the plain
    job queued meanwhile stays for whoever claims it next (a claim woken by its own NOTIFY)."""
    workflow_id = store.workflows.create("fan-in", [step("a"), step("b"), step("c", "a", "b")]).id
    a, b = claim(store, limit=2)
    store.enqueue.insert([new()])
    woken.clear()  # the defers' own
    hand_off = _hand_off(["work"])
    store.leases.complete([done(a, store)], hand_off)
    assert not hand_off.made and hand_off.claimed == []
    assert statuses(store, workflow_id)["c"] is JobStatus.BLOCKED
    assert woken == []
    # The last parent releases c: asked for releases alone, the claim is made and takes it.
    hand_off = _hand_off(["work"])
    store.leases.complete([done(b, store)], hand_off)
    assert hand_off.made and statuses(store, workflow_id)["c"] is JobStatus.RUNNING


def test_a_rescue_that_releases_a_run_anyway_step_wakes_its_queue(
    store: Store, clock: ManualClock, woken: list[str]
) -> None:
    store.registry.put_handler(handler("work", max_attempts=1))
    workflow_id = store.workflows.create("rescued", [step("lost"), step("after", "lost", run=True, queue="q3")]).id
    claim(store)
    woken.clear()  # the defers' own
    clock.advance(31)
    assert len(store.leases.rescue_expired()) == 1
    assert statuses(store, workflow_id)["after"] is JobStatus.QUEUED
    assert woken == ["q3"]


def test_a_step_cancelled_by_hand_wakes_the_queue_of_the_step_it_releases(store: Store, woken: list[str]) -> None:
    workflow_id = store.workflows.create("by-hand", [step("a"), step("b", "a", run=True, queue="q4")]).id
    woken.clear()  # the defer's own
    store.control.cancel(store.workflows.get(workflow_id).steps["a"].job_id)
    assert statuses(store, workflow_id)["b"] is JobStatus.QUEUED
    assert woken == ["q4"]
