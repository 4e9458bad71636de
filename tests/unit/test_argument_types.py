"""Arguments are checked against plain JSON annotations at defer, not found wrong five attempts later."""

from __future__ import annotations

from typing import Any, Optional, TypedDict

import pytest

from jobstead import App, Context, InvalidArguments


class Address(TypedDict):
    street: str


app = App("sqlite://")


@app.handler
def typed(
    count: int,
    name: str,
    ratio: float,
    flag: bool,
    tags: list[str],
    scores: dict[str, int],
    ctx: Context,
    maybe: int | None = None,
    old_style: Optional[str] = None,  # noqa: UP045 - the old spelling is checked too
    anything: Any = None,
    address: Address | None = None,
) -> None: ...


GOOD = {"count": 1, "name": "n", "ratio": 1, "flag": False, "tags": ["a"], "scores": {"a": 1}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": "x"}, "argument 'count' must be int, not str"),
        ({"count": True}, "argument 'count' must be int, not bool"),
        ({"count": 1.5}, "argument 'count' must be int, not float"),
        ({"name": 3}, "argument 'name' must be str"),
        ({"ratio": "1.0"}, "argument 'ratio' must be float"),
        ({"flag": 1}, "argument 'flag' must be bool"),
        ({"tags": "a"}, "argument 'tags' must be list"),
        ({"tags": ["a", 1]}, "argument 'tags' must be list"),
        ({"scores": {"a": "1"}}, "argument 'scores' must be dict"),
        ({"maybe": "1"}, "argument 'maybe' must be int | None"),
        ({"old_style": 1}, "argument 'old_style' must be Optional"),
    ],
)
def test_wrong_json_types_are_refused_at_defer(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        typed.signature.bind((), {**GOOD, **change})


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"ratio": 2.5},
        {"maybe": None},
        {"maybe": 3},
        {"anything": object.__name__},
        {"address": {"street": "x"}},
        {"tags": ("a", "b")},
    ],
)
def test_values_of_the_annotated_types_pass(change: dict[str, Any]) -> None:
    assert typed.signature.bind((), {**GOOD, **change}) == {**GOOD, **change}


def test_positional_calls_are_checked_too() -> None:
    with pytest.raises(InvalidArguments, match="'count' must be int"):
        typed.signature.bind(("1", "n", 1.0, True, [], {}), {})
