"""The database password never shows: every error path reached with a password-bearing URL, all output grepped.

Each URL carries a password of its own, so a leak is found whichever path
printed it: a server that is not there, a wrong password, a missing database,
a malformed URL, and the paths that work. Short commands run to their end;
long-running ones (worker, scheduler, run) are stopped after a few seconds.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.conftest import APP_PASSWORD, APP_USER, new_database, password_url
from tests.support.postgres_server import PostgresServer, free_port
from tests.support.processes import run_cli, spawn_cli, stop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SHORT_COMMANDS = [
    ["migrate"],
    ["defer", "work", "--app", "tests.apps.faults:app", "--args", '{"ms": 1}'],
    ["jobs", "list"],
    ["jobs", "show", "1"],
    ["jobs", "cancel", "1"],
    ["stats"],
    ["crons", "list"],
    ["pause", "--all"],
]
LONG_COMMANDS = [
    ["worker", "--app", "tests.apps.faults:app"],
    ["scheduler", "--app", "tests.apps.faults:app"],
    ["run", "--app", "tests.apps.faults:app"],
]


def _url(server: PostgresServer, scenario: str) -> tuple[str, str]:
    """The URL of a scenario, and the password in it."""
    if scenario == "no-server":
        return f"postgresql+psycopg://{APP_USER}:Pw-noserver-1@127.0.0.1:{free_port()}/x", "Pw-noserver-1"
    if scenario == "wrong-password":
        return password_url(server, new_database(server), "Pw-wrong-2"), "Pw-wrong-2"
    if scenario == "missing-database":
        return password_url(server, "no_such_db"), APP_PASSWORD
    return password_url(server, new_database(server)), APP_PASSWORD


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", ["no-server", "wrong-password", "missing-database", "working"])
def test_no_error_path_of_the_cli_or_the_processes_prints_the_password(
    own_server: PostgresServer, tmp_path: Path, scenario: str
) -> None:
    url, password = _url(own_server, scenario)
    env = {"JOBSTEAD_DATABASE_URL": url}
    runs = [(argv, env) for argv in SHORT_COMMANDS]
    runs.append((["jobs", "list", "--database-url", url], {}))  # the flag as well as the variable
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda run: run_cli(run[0], run[1], timeout=120), runs))
    printed = [(" ".join(argv), d.stdout + d.stderr) for (argv, _), d in zip(runs, done, strict=True)]
    processes = [(argv, tmp_path / f"{argv[0]}.log") for argv in LONG_COMMANDS]
    started = [(argv, log, spawn_cli(argv, env, log)) for argv, log in processes]
    time.sleep(5)
    for argv, log, process in started:
        stop(process)
        printed.append((" ".join(argv), log.read_text()))
    leaks = [(command, text[-500:]) for command, text in printed if password in text]
    assert not leaks, leaks


def test_a_malformed_url_is_refused_without_its_password() -> None:
    url = f"postgresql+psycopg://{APP_USER}:Pw-badport-3@127.0.0.1:notaport/x"
    done = run_cli(["jobs", "list"], {"JOBSTEAD_DATABASE_URL": url})
    assert done.returncode != 0
    assert "Pw-badport-3" not in done.stdout + done.stderr, done.stderr
