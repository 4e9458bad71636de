"""What a first user tripped over (issue 18, bugs 4-12), each reproduced as they hit it."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from jobstead import (
    App,
    ConfigurationError,
    Inject,
    InvalidArguments,
    JobFailed,
    JobNotFound,
    JobStatus,
    PermanentError,
)
from tests.conftest import Target
from tests.support.processes import REPO, run_cli


def cli(target: Target, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), target.env())


def cli_in(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI run from another directory, with no database configured unless ``env`` says so."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSTEAD_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
    return subprocess.run(
        [sys.executable, "-m", "jobstead", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture
def cli_app(target: Target) -> App:
    app = App(target.url, schema=target.schema)

    @app.handler(queue="mail")
    def send_email(to: str, subject: str = "hello") -> str:
        return to

    @app.handler(max_attempts=1)
    def always_fails() -> None:
        raise RuntimeError("boom")

    @app.handler
    def gives_up() -> None:
        raise PermanentError("no")

    app.migrate()
    _ = app.store  # publishes the handlers
    return app


# -- 4. every option is validated before anything touches the database --------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"priority": 1.7}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": "3"}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": 2**40}, "priority"),
        ({"delay": "5"}, "delay"),
        ({"delay": -1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"run_at": "2030-01-01"}, "run_at"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"queue": ""}, "queue"),
        ({"queue": 5}, "queue"),
        ({"key": ""}, "key"),
        ({"key": "k" * 201}, "key"),
        ({"tenant": ""}, "tenant"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"metadata": {"when": dt.datetime(2030, 1, 1)}}, "metadata"),
    ],
)
def test_every_option_is_checked_before_the_database(cli_app: App, options: dict[str, Any], option: str) -> None:
    send = cli_app.get_handler("send_email")
    with pytest.raises(InvalidArguments, match=option):
        send.configure(**options).defer(to="a@example.com")
    assert cli_app.store.queries.list_jobs() == []


def test_a_bad_option_leaves_the_callers_transaction_usable(cli_app: App, target: Target) -> None:
    engine = create_engine(target.url)
    send = cli_app.get_handler("send_email")
    jobs_table = cli_app.store.tables.jobs
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        with pytest.raises(InvalidArguments, match="priority"):
            send.configure(session=session, priority="high").defer(to="a@example.com")
        job = send.configure(session=session, priority=2).defer(to="b@example.com")
        session.commit()
    assert cli_app.get_job(job.id).record.priority == 2
    assert jobs_table is not None
    engine.dispose()


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--queue", ""], "--queue"),
        (["--key", ""], "--key"),
        (["--tenant", ""], "--tenant"),
        (["--priority", "99999999999"], "--priority"),
        (["--max-attempts", "0"], "--max-attempts"),
        (["--metadata", "[1]"], "--metadata"),
        (["--run-at", "tomorrow"], "--run-at"),
        (["--delay", "soon"], "--delay"),
    ],
)
def test_cli_defer_options_are_checked_like_the_api(
    cli_app: App, target: Target, extra: list[str], option: str
) -> None:
    done = cli(target, "defer", "send_email", "--args", '{"to": "a"}', *extra)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert option in one_line(done)
    assert cli_app.store.queries.list_jobs() == []


# -- 5. connection errors: one line naming the database, password masked, exit 2 --


def test_unreachable_postgres_is_one_line_exit_2() -> None:
    done = run_cli(
        ["jobs", "list", "--database-url", "postgresql://postgres:s3cret@127.0.0.1:1/shop"],
        {},
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_line(done)
    assert "127.0.0.1:1" in line and "shop" in line, line
    assert "s3cret" not in done.stderr


@pytest.mark.postgres
def test_missing_postgres_database_is_one_line_exit_2(pg_url: str) -> None:
    url = make_url(pg_url).set(database="no_such_db")
    done = run_cli(["stats", "--database-url", url.render_as_string(hide_password=False)], {})
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_line(done)
    assert "no_such_db" in line and "does not exist" in line, line


def test_unopenable_sqlite_file_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file, not a directory")
    path = tmp_path / "not-a-dir" / "jobs.db"
    done = run_cli(["migrate", "--database-url", f"sqlite:///{path}"], {})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert str(path) in one_line(done)


# -- 6. read-only commands create nothing ----------------------------------


@pytest.mark.parametrize(
    "command",
    [["jobs", "list"], ["stats"], ["crons", "list"], ["jobs", "show", "1"], ["pause", "list"]],
)
def test_read_only_commands_do_not_create_a_database(tmp_path: Path, command: list[str]) -> None:
    done = cli_in(tmp_path, *command)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_line(done)
    assert "jobstead.db" in line and "does not exist" in line, line
    assert list(tmp_path.iterdir()) == []


def test_read_only_commands_refuse_a_database_without_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE unrelated (x INTEGER)").connection.commit()
    done = cli_in(tmp_path, "jobs", "list", env={"JOBSTEAD_DATABASE_URL": f"sqlite:///{path}"})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "no Jobstead schema" in one_line(done)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"unrelated"}


@pytest.mark.postgres
def test_read_only_commands_do_not_create_a_postgres_schema(postgres_target: Target) -> None:
    done = cli(postgres_target, "stats")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "no Jobstead schema" in one_line(done)
    engine = create_engine(postgres_target.url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM information_schema.schemata WHERE schema_name = :s"),
            {"s": postgres_target.schema},
        ).scalar()
    engine.dispose()
    assert found == 0


# -- 7. pausing a name nobody published is refused unless --force -------------


@pytest.mark.parametrize("scope", ["--handler", "--queue"])
def test_pausing_an_unknown_name_is_refused(cli_app: App, target: Target, scope: str) -> None:
    done = cli(target, "pause", scope, "no_such_thing")
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_line(done)
    assert "no_such_thing" in line and "--force" in line, line
    assert ("send_email" if scope == "--handler" else "mail") in line
    assert cli_app.store.control.paused() == []
    forced = cli(target, "pause", scope, "no_such_thing", "--force")
    assert forced.returncode == 0, forced.stderr
    assert cli_app.store.control.paused() == [(scope.removeprefix("--"), "no_such_thing")]


def test_pausing_a_known_handler_and_queue_works(cli_app: App, target: Target) -> None:
    assert cli(target, "pause", "--handler", "send_email").returncode == 0
    assert cli(target, "pause", "--queue", "mail").returncode == 0
    assert sorted(cli_app.store.control.paused()) == [("handler", "send_email"), ("queue", "mail")]
    assert cli(target, "resume", "--queue", "mail").returncode == 0
    refused = cli(target, "resume", "--queue", "mial")
    assert refused.returncode == 2 and "mail" in one_line(refused)


# -- 8. an undeclared resource is caught before any job runs -------------------


class Mailer:
    """Module level: annotations are strings here, resolved against the module's globals."""


def test_undeclared_resource_is_caught_at_worker_start(app: App) -> None:
    @app.handler
    def notify(to: str, mailer: Annotated[Mailer, Inject("mailer")]) -> None: ...

    with pytest.raises(ConfigurationError, match="'mailer'"):
        app.worker()
    app.resource("mailer", factory=Mailer)
    app.worker()  # declared after the handler: fine


def test_undeclared_resource_stops_the_cli_worker(target: Target) -> None:
    done = cli(target, "worker", "--app", "tests.apps.undeclared:app")
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_line(done)
    assert "'mailer'" in line and "notify" in line, line


# -- 9. a closed pipe is not a traceback ------------------------------------


def test_stats_into_a_closed_pipe(cli_app: App, target: Target) -> None:
    send = cli_app.get_handler("send_email")
    send.defer_many([{"to": f"u{i}@example.com"} for i in range(5)])
    reader, writer = os.pipe()
    os.close(reader)  # `| head` that has already exited
    done = subprocess.run(
        [sys.executable, "-m", "jobstead", "jobs", "list"],
        cwd=REPO,
        env={**os.environ, **target.env()},
        stdout=writer,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(writer)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr == ""


# -- 10. cancelling a finished job says so, for every final state ------------


def test_cancel_of_a_finished_job_says_already(
    cli_app: App, target: Target, running_worker: Callable[..., Any]
) -> None:
    ok = cli_app.get_handler("send_email").defer(to="a@example.com")
    dead = cli_app.get_handler("always_fails").defer()
    failed = cli_app.get_handler("gives_up").defer()
    cancelled = cli_app.get_handler("send_email").configure(delay=3600).defer(to="b@example.com")
    assert cancelled.cancel()
    with running_worker(cli_app):
        for job in (ok, dead, failed):
            with contextlib.suppress(JobFailed):
                job.wait(20)
    for job, status in ((ok, "succeeded"), (dead, "dead"), (failed, "failed"), (cancelled, "cancelled")):
        done = cli(target, "jobs", "cancel", str(job.id))
        assert done.returncode == 1, (status, done.stdout, done.stderr)
        assert one_line(done) == f"jobstead: error: job {job.id} already {status}"
    helped = cli(target, "jobs", "cancel", "--help")
    assert "already" in helped.stdout and "exit" in helped.stdout


def test_cancel_of_a_waiting_job_still_works(cli_app: App, target: Target) -> None:
    job = cli_app.get_handler("send_email").configure(delay=3600).defer(to="a@example.com")
    done = cli(target, "jobs", "cancel", str(job.id))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"job {job.id} cancelled"


# -- 11. errors name the option the user gave --------------------------------


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--shutdown-grace", "-1"], "--shutdown-grace"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--lease-seconds", "-5"], "--lease-seconds"),
    ],
)
def test_worker_option_errors_name_the_option(target: Target, extra: list[str], option: str) -> None:
    done = cli(target, "worker", "--app", "tests.apps.probes:app", *extra)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = one_line(done)
    assert option in line and "lease_seconds and" not in line, line


# -- 12. waiting on a job that never existed --------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_wait_on_a_rolled_back_job_raises_job_not_found(cli_app: App, target: Target, timeout: float | None) -> None:
    engine = create_engine(target.url)
    send = cli_app.get_handler("send_email")
    with Session(engine) as session:
        ghost = send.configure(session=session).defer(to="nobody@example.com")
        session.rollback()
    engine.dispose()
    with pytest.raises(JobNotFound, match=str(ghost.id)):
        ghost.wait(timeout)


def test_bug3_a_rolled_back_handle_never_shows_another_job(make_app: Callable[..., App]) -> None:
    """Regression: SQLite gave the rolled-back job's id to the next job, and ``ghost.refresh()``
    returned that job's arguments. Now every read checks the row is the handle's own job."""
    app = make_app()

    @app.handler
    def send(to: str) -> None: ...

    with Session(app.store.db.engine) as session:
        ghost = send.configure(session=session).defer(to="ghost@example.com")
        session.rollback()
    real = send.defer(to="real@example.com")
    for read in (ghost.refresh, ghost.wait, ghost.attempts_log, ghost.cancel, ghost.retry):
        with pytest.raises(JobNotFound):
            read()
    assert real.refresh().record.args == {"to": "real@example.com"}
    assert app.get_job(real.id).record.args == {"to": "real@example.com"}
    assert real.cancel() and real.refresh().status is JobStatus.CANCELLED
