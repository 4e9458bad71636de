"""``defer`` arguments and CLI arguments, fuzzed, on SQLite.

Every input either works (the job's arguments read back as given) or is refused
with one line that names the problem; never a traceback, and a refused defer
writes no row at all.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from jobstead import App, InvalidArguments
from jobstead.cli.main import main as cli_main

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
NOT_JSON = st.one_of(
    st.binary(max_size=4),
    st.sets(st.integers(), max_size=3),
    st.builds(object),
    st.complex_numbers(allow_nan=False),
    st.just(math.nan),
    st.just(math.inf),
    st.integers(min_value=2**64),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
)
VALUE = st.one_of(JSON, NOT_JSON)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLI_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Found by these tests and kept as explicit regression tests below (strict
# xfails): the strategies leave them out so the fuzzing goes on finding new ones.
HUGE_SECONDS = 8.6e13  # past timedelta's 999,999,999 days
MAX_ID = 2**63 - 1


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _not_huge(text: str) -> bool:
    """Durations and delays up to ~30 years; longer ones overflow (the regression tests below)."""
    raw = text.strip().lower()
    unit = UNITS.get(raw[-1:], 1)
    try:
        number = float(raw[:-1] if raw[-1:] in UNITS else raw)
    except ValueError:
        return True
    return not abs(number * unit) >= 1e9


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[App, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        app = App(f"sqlite:///{Path(folder) / 'fuzz.db'}")

        @app.handler
        def take(a: Any, b: Any = None) -> None:
            pass

        yield app, take
        app.close()


def _rows(app: App) -> int:
    with app.store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(app.store.tables.jobs)).scalar_one())


def _round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@SETTINGS
@given(a=VALUE, b=VALUE)
def test_defer_stores_what_it_was_given_or_refuses_in_one_line_writing_nothing(
    database: tuple[App, Any], a: Any, b: Any
) -> None:
    app, take = database
    before = _rows(app)
    try:
        job = take.defer(a=a, b=b)
    except InvalidArguments as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        assert _rows(app) == before, "a refused defer wrote a row"
        return
    assert _rows(app) == before + 1
    assert job.refresh().record.args == {"a": _round_trip(a), "b": _round_trip(b)}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exit:
            code = int(exit.code or 0) if not isinstance(exit.code, str) else 2
    return code, out.getvalue(), err.getvalue()


def _check(code: int, err: str) -> None:
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], err
    assert "Traceback" not in err


def _no_line_breaks(text: str) -> bool:
    """Argument names with line breaks are echoed raw by ``defer``'s CLI error (a regression test below)."""
    names = [text]
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        names += list(parsed)
    return all("".join(name.splitlines()) == name for name in names)


ARGS_TEXT = st.one_of(
    st.text(max_size=40), JSON.map(json.dumps), st.sampled_from(["[]", "null", '{"a": NaN}', "{"])
).filter(_no_line_breaks)


@CLI_SETTINGS
@given(
    args=ARGS_TEXT,
    delay=st.one_of(st.none(), st.text(max_size=8), st.floats().map(str)).filter(lambda d: d is None or _not_huge(d)),
)
def test_cli_defer_takes_args_and_delay_or_refuses_in_one_line(
    database: tuple[App, Any], args: str, delay: str | None
) -> None:
    app, _ = database
    url = str(app.database_url)
    before = _rows(app)
    argv = ["defer", "take", "--database-url", url, "--args", args]
    if delay is not None:
        argv += [f"--delay={delay}"]
    code, _, err = run_cli(argv)
    _check(code, err)
    assert _rows(app) == before + (1 if code == 0 else 0)


@CLI_SETTINGS
@given(
    command=st.sampled_from(["show", "retry", "cancel"]),
    job_id=st.one_of(st.text(max_size=12), st.integers(-MAX_ID, MAX_ID).map(str)).filter(
        lambda t: not t.strip().lstrip("+-").isdecimal() or abs(int(t)) <= MAX_ID
    ),
)
def test_cli_job_ids_are_whole_numbers_or_refused_in_one_line(
    database: tuple[App, Any], command: str, job_id: str
) -> None:
    app, _ = database
    code, _, err = run_cli(["jobs", command, f"--database-url={app.database_url}", "--", job_id])
    _check(code, err)


@CLI_SETTINGS
@given(
    duration=st.one_of(st.text(max_size=10), st.from_regex(r"-?[0-9.e+]{1,12}[smhdw]?", fullmatch=True)).filter(
        _not_huge
    )
)
def test_cli_durations_parse_or_are_refused_in_one_line(database: tuple[App, Any], duration: str) -> None:
    app, _ = database
    code, _, err = run_cli(["jobs", "purge", f"--database-url={app.database_url}", f"--older-than={duration}"])
    _check(code, err)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ["defer", "take", "--args", "{}", "--delay", "86400000000000.0"],
            id="huge-delay",
        ),
        pytest.param(
            ["defer", "take", "--args", '{"\\r0": null}'],
            id="argument-name-with-a-line-break",
        ),
        pytest.param(
            ["jobs", "show", "9223372036854775808"],
            id="id-past-int64",
        ),
        pytest.param(
            ["jobs", "purge", "--older-than", "1e10d"],
            id="huge-duration",
        ),
        pytest.param(
            ["jobs", "purge", "--older-than", "1000000d"],
            id="duration-before-year-1",
        ),
    ],
)
def test_found_by_fuzzing_numbers_out_of_range_are_refused_in_one_line(
    database: tuple[App, Any], argv: list[str]
) -> None:
    app, _ = database
    code, _, err = run_cli([*argv, f"--database-url={app.database_url}"])
    assert code != 0
    _check(code, err)
