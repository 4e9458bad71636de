"""The graph checks a workflow passes before anything is written (pure: no database)."""

from __future__ import annotations

import pytest

from jobstead.errors import InvalidArguments
from jobstead.store import NewJob, NewStep
from jobstead.store.workflows import check_steps, find_cycle


def step(name: str, *after: str, key: str | None = None) -> NewStep:
    return NewStep(name, NewJob("h", {}, "default", key=key), tuple(after))


def test_a_cycle_is_named_step_by_step() -> None:
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) == ["a", "c", "b", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_a_deep_chain_is_checked_without_recursion() -> None:
    chain = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(20_000)}
    assert find_cycle(chain) is None
    chain["s0"] = ["s19999"]
    cycle = find_cycle(chain)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 20_001


def test_steps_that_must_wait_for_every_new_step_close_a_cycle_through_them() -> None:
    existing = {"end": ["fetch"], "fetch": []}
    assert find_cycle({**existing, "x": ["end"]}, extra=["end"], new=["x"]) == ["end", "x", "end"]
    assert find_cycle({**existing, "x": ["fetch"]}, extra=["end"], new=["x"]) is None


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([step("a"), step("a")], "'a': a step of that name is already"),
        ([step("a", "b")], "after='b' names no step"),
        ([step("")], "step name must be a non-empty string"),
        ([step("x" * 201)], "at most 200 characters"),
        ([step("a", key="k")], "give it no key"),
        ([step("a", "b"), step("b", "a")], "cycle: a -> b -> a"),
    ],
)
def test_a_graph_that_cannot_run_is_refused_naming_the_problem(steps: list[NewStep], message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        check_steps(steps)


def test_new_steps_may_wait_for_existing_ones_but_not_reuse_their_names() -> None:
    check_steps([step("thumb", "fetch")], existing=["fetch"])
    with pytest.raises(InvalidArguments, match="already"):
        check_steps([step("fetch")], existing=["fetch"])
