"""Signature binding: what ``defer`` accepts, stores and refuses (pure, no database)."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from jobstead import Context, InvalidArguments
from jobstead.errors import ConfigurationError
from jobstead.signature import CONTEXT, HandlerSignature, Inject


def sig(func: Any) -> HandlerSignature:
    return HandlerSignature.of(func, func.__name__, {})


def test_keyword_and_positional_calls_store_the_same_object() -> None:
    def send(to: str, subject: str = "hi") -> None: ...

    s = sig(send)
    assert s.bind((), {"to": "a"}) == {"to": "a"}
    assert s.bind(("a", "b"), {}) == {"to": "a", "subject": "b"}
    assert s.params() == (("to", True), ("subject", False))


def test_missing_unknown_and_non_json_arguments_are_refused() -> None:
    def send(to: str) -> None: ...

    s = sig(send)
    for args, kwargs in (((), {}), ((), {"to": "a", "cc": "b"}), ((), {"to": object()}), ((), {"to": float("nan")})):
        with pytest.raises(InvalidArguments):
            s.bind(args, kwargs)


def test_injected_parameters_are_neither_accepted_nor_stored() -> None:
    def job(n: int, ctx: Context, mailer: Annotated[object, Inject("mailer")]) -> None: ...

    s = sig(job)
    assert s.injected == {"ctx": CONTEXT, "mailer": "mailer"}
    assert s.bind((), {"n": 1}) == {"n": 1}
    with pytest.raises(InvalidArguments, match="supplied by the worker"):
        s.bind((), {"n": 1, "mailer": "x"})


def test_kwargs_handlers_store_what_they_get() -> None:
    def anything(**values: Any) -> None: ...

    assert sig(anything).bind((), {"a": 1, "b": [2]}) == {"a": 1, "b": [2]}


def test_plain_json_annotations_are_checked_at_defer() -> None:
    def typed(a: int, b: list[str] | None = None) -> None: ...

    s = sig(typed)
    assert s.bind((), {"a": 1, "b": ["x"]}) == {"a": 1, "b": ["x"]}
    with pytest.raises(InvalidArguments, match="'a' must be int"):
        s.bind((), {"a": "x"})


def test_positional_only_parameters_cannot_be_stored() -> None:
    def bad(x: int, /) -> None: ...

    with pytest.raises(ConfigurationError, match="positional-only"):
        sig(bad)


def test_bind_each_checks_every_call_and_names_the_bad_argument() -> None:
    """``defer_many`` checks JSON once for all calls; a failure still names the call's argument."""

    def send(to: Any, n: int = 0) -> None: ...

    s = sig(send)
    calls: list[dict[str, Any]] = [{"to": "a"}, {"to": "b", "n": 2}]
    assert s.bind_each(calls, "send.defer_many()") == calls
    assert s.bind_each([], "send.defer_many()") == []
    with pytest.raises(InvalidArguments, match="argument 'to' is not JSON-serialisable"):
        s.bind_each([{"to": "a"}, {"to": object()}], "send.defer_many()")
    with pytest.raises(InvalidArguments, match="argument 'to' is not JSON-serialisable"):
        s.bind_each([{"to": "a"}, {"to": float("nan")}], "send.defer_many()")
    with pytest.raises(InvalidArguments, match="'n' must be int"):
        s.bind_each([{"to": "a"}, {"to": "b", "n": "x"}], "send.defer_many()")
    with pytest.raises(InvalidArguments, match="unexpected keyword argument 'cc'"):
        s.bind_each([{"to": "a"}, {"to": "b", "cc": "c"}], "send.defer_many()")
    with pytest.raises(InvalidArguments, match=r"send.defer_many\(\): each call is a mapping"):
        s.bind_each([{"to": "a"}, ("b",)], "send.defer_many()")  # type: ignore[list-item]


def test_bind_each_stores_copies_not_the_callers_mappings() -> None:
    def send(to: str) -> None: ...

    call = {"to": "a"}
    (stored,) = sig(send).bind_each([call], "send.defer_many()")
    call["to"] = "changed"
    assert stored == {"to": "a"}
