"""Bad input on MySQL/MariaDB: one line naming the host and the database, never the password.

``jobstead migrate`` on a database that does not exist reports it and does not
create it (as on PostgreSQL); a wrong password and a server that is not there
are one line each too.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.mariadb_server import PASSWORD, USER, MariaDBServer
from tests.support.postgres_server import free_port
from tests.support.processes import run_cli

pytestmark = pytest.mark.mariadb


def _one_line_error(done: subprocess.CompletedProcess[str], *, secret: str) -> str:
    assert done.returncode != 0
    assert secret not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_migrate_on_a_missing_database_says_so_and_creates_nothing(mariadb_server: MariaDBServer) -> None:
    url = f"mariadb://{USER}:{PASSWORD}@127.0.0.1:{mariadb_server.port}/no_such_db"
    line = _one_line_error(run_cli(["migrate"], {"JOBSTEAD_DATABASE_URL": url}), secret=PASSWORD)
    assert "'no_such_db'" in line and f"127.0.0.1:{mariadb_server.port}" in line
    assert "Unknown database" in line
    assert "no_such_db" not in mariadb_server.databases()
    assert "mysql" in mariadb_server.databases()  # (the listing works)


def test_a_wrong_password_is_one_line_without_it(mariadb_server: MariaDBServer, mariadb_url: str) -> None:
    url = f"mariadb://{USER}:Pw-wrong-7@127.0.0.1:{mariadb_server.port}/jobstead_tests"
    line = _one_line_error(run_cli(["jobs", "list"], {"JOBSTEAD_DATABASE_URL": url}), secret="Pw-wrong-7")
    assert "Access denied" in line and "'jobstead_tests'" in line


def test_a_server_that_is_not_there_is_one_line() -> None:
    url = f"mysql://{USER}:Pw-noserver-8@127.0.0.1:{free_port()}/app"
    line = _one_line_error(run_cli(["migrate"], {"JOBSTEAD_DATABASE_URL": url}), secret="Pw-noserver-8")
    assert "'app' on 127.0.0.1" in line
