"""Rough edges of a first hour with Jobstead, each reproduced as a new user met it.

The numbers in the test names are the points of the second first-hour trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobstead import (
    App,
    Context,
    InvalidArguments,
    InvalidOption,
    JobFailed,
    PermanentError,
    RetryPolicy,
    UnknownHandler,
)
from tests.conftest import Target, worker_thread
from tests.support.postgres_server import free_port
from tests.support.processes import REPO, run_cli, spawn_cli, stop


def _sqlite_env(tmp_path: Path) -> dict[str, str]:
    return {"JOBSTEAD_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}


def test_6_worker_help_lists_the_poll_interval_the_readme_documents() -> None:
    for command in ("worker", "run"):
        done = run_cli([command, "--help"], {})
        assert done.returncode == 0, done.stderr
        assert "--poll-interval" in done.stdout, done.stdout


def _listening_address(port: int) -> str:
    """The local address of the socket listening on ``port``, read from the kernel's table."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                return address
    raise AssertionError(f"nothing listens on {port}")


def test_15_metrics_listens_on_loopback_by_default_and_says_its_address_once(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    assert run_cli(["migrate"], env).returncode == 0
    port = free_port()
    log = tmp_path / "metrics.log"
    exporter = spawn_cli(["metrics", "--port", str(port)], env, log)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    assert b"jobstead_database_up" in response.read()
                break
            except OSError:
                assert time.time() < deadline, log.read_text()
                time.sleep(0.2)
        assert _listening_address(port) == "0100007F"  # 127.0.0.1, not 0.0.0.0
    finally:
        stop(exporter)
    output = log.read_text()
    assert output.count(f":{port}") == 1, output


def test_13_empty_lists_say_so_instead_of_a_lone_header(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    assert run_cli(["migrate"], env).returncode == 0
    for args, said in (
        (["jobs", "list"], "no jobs match: the table holds none"),
        (["jobs", "list", "--status", "dead,failed"], "no jobs match --status dead,failed"),
        (["crons", "list"], "no crons: add one with @app.cron in code, a CronSchedule resource, or jobstead crons add"),
        (["pause", "list"], "nothing is paused"),
    ):
        done = run_cli(args, env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == said, (args, done.stdout)


def test_13_make_run_sets_the_dashboard_address_apart_before_the_first_log_line(tmp_path: Path) -> None:
    """The address was buried among worker logs, and the hint read like a shell pipeline."""
    env = {
        **os.environ,
        "JOBSTEAD_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "MAKEFLAGS": "",
    }
    with subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as make:
        lines: list[str] = []
        assert make.stdout is not None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = make.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if " jobstead.worker: " in line:
                break
        os.killpg(make.pid, signal.SIGINT)
        make.communicate(timeout=60)
    output = "\n".join(lines)
    first_log = next(i for i, line in enumerate(lines) if " INFO " in line)
    banner = lines[:first_log]
    assert "  Dashboard: http://127.0.0.1:8780/" in banner or any("did not start" in b for b in banner), output
    assert "    .venv/bin/jobstead jobs list --status dead,failed" in banner, output
    assert not any("|" in line for line in banner), output
    assert "Editable installation" not in output and "****" not in output, output


def _fields(output: str) -> dict[str, str]:
    """``jobs show``'s ``      name: value`` lines."""
    found = {}
    for line in output.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.startswith(" ") and name.strip().isidentifier():
            found.setdefault(name.strip(), value)
    return found


def test_4_jobs_show_says_effective_values_and_never_none(sqlite_target: Target) -> None:
    """``max_attempts: None``, ``worker: None`` on a dead job, ``key: None``: Python's Nones, printed as they were."""
    app = App(sqlite_target.url)

    @app.handler(max_attempts=2, retry=RetryPolicy.fixed(0))
    def flaky() -> None:
        raise ValueError("down")

    job = flaky.defer()
    with worker_thread(app), contextlib.suppress(JobFailed):
        job.wait(timeout=30)
    shown = run_cli(["jobs", "show", str(job.id)], sqlite_target.env())
    assert shown.returncode == 0, shown.stderr
    fields = _fields(shown.stdout)
    assert fields["status"] == "dead"
    assert fields["attempts"] == "2 of 2"  # the handler's default, not None
    assert fields["worker"].endswith(" (last attempt)"), fields
    assert fields["key"] == "-" and fields["tenant"] == "-" and fields["metadata"] == "-"
    assert "max_attempts" not in fields and "None" not in shown.stdout, shown.stdout
    assert "  attempt 2: failed on " in shown.stdout
    app.close()


def test_12_jobs_show_lists_a_run_handed_back_on_shutdown_as_not_counted(sqlite_target: Target) -> None:
    """``attempts: 0`` above ``attempt 1: released``: the count and the list disagreed."""
    app = App(sqlite_target.url)
    started = threading.Event()

    @app.handler(max_attempts=3)
    def slow(ctx: Context) -> None:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.05)

    job = slow.defer()
    with worker_thread(app, shutdown_grace=0):
        assert started.wait(30)
    shown = run_cli(["jobs", "show", str(job.id)], sqlite_target.env())
    assert shown.returncode == 0, shown.stderr
    assert _fields(shown.stdout)["attempts"] == "0 of 3 (+1 run(s) handed back on shutdown, not counted)"
    assert "  run handed back on shutdown (not counted): released on " in shown.stdout, shown.stdout
    assert "attempt 1: released" not in shown.stdout
    app.close()


@contextlib.contextmanager
def _read_only(*paths: Path) -> Iterator[None]:
    """Files and directories nobody can write, root included (the tests run as root): chattr +i."""
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
        pytest.skip(f"cannot make files immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def test_9_read_only_commands_work_on_a_read_only_file_in_a_read_only_directory(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    env = {"JOBSTEAD_DATABASE_URL": f"sqlite:///{shipped / 'jobs.db'}"}
    assert run_cli(["migrate"], env).returncode == 0
    app = App(env["JOBSTEAD_DATABASE_URL"])

    @app.handler
    def report(n: int) -> None: ...

    job = report.defer(n=1)
    app.close()
    with _read_only(shipped / "jobs.db", shipped):
        for args in (["jobs", "list"], ["stats"], ["jobs", "show", str(job.id)], ["crons", "list"], ["pause", "list"]):
            done = run_cli(args, env)
            assert done.returncode == 0, (args, done.stderr)
            assert "readonly" not in done.stderr
        listed = json.loads(run_cli(["jobs", "list", "--json"], env).stdout)
        assert [(j["id"], j["handler"]) for j in listed] == [(job.id, "report")]
        refused = run_cli(["pause"], env)  # a write still fails, in one line
        assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        assert not list(shipped.glob("jobs.db-*"))  # no -wal or -shm left behind


def test_9_migrate_names_the_directory_it_cannot_create_the_database_in(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with _read_only(locked):
        done = run_cli(["migrate"], {"JOBSTEAD_DATABASE_URL": f"sqlite:///{locked / 'jobs.db'}"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"jobstead: error: cannot create the SQLite file {locked / 'jobs.db'}: its directory {locked} is not writable"
    )
    missing = tmp_path / "nowhere" / "jobs.db"
    done = run_cli(["migrate"], {"JOBSTEAD_DATABASE_URL": f"sqlite:///{missing}"})
    assert done.stderr.strip().endswith(f"its directory {missing.parent} does not exist"), done.stderr


def test_10_the_api_refuses_what_the_cli_refuses(sqlite_target: Target) -> None:
    """``configure(session="db")`` raised AttributeError, ``jobs(limit=-1)`` returned everything, a typo paused."""
    app = App(sqlite_target.url)

    @app.handler
    def work() -> None: ...

    with pytest.raises(InvalidOption, match=r"^session must be a SQLAlchemy Session or Connection .* not str$"):
        work.configure(session="db")  # type: ignore[arg-type]
    work.defer()
    with pytest.raises(InvalidOption, match=r"^limit must be between 1 and"):
        app.jobs(limit=-1)
    with pytest.raises(InvalidOption, match=r"^offset must be between 0 and"):
        app.jobs(offset=-5)
    assert len(app.jobs(limit=1)) == 1
    with pytest.raises(UnknownHandler, match=r"no handler named 'wrok' is known .* \(known: work\); force=True"):
        app.pause(handler="wrok")
    with pytest.raises(InvalidArguments, match=r"no queue named 'mial' is known"):
        app.pause(queue="mial")
    assert app.store.control.paused() == []  # nothing was paused by the refused calls
    assert app.pause(handler="work") is True
    assert app.pause(handler="coming_soon", force=True) is True
    app.close()


@pytest.mark.parametrize("command", ["worker", "run"])
def test_1_ctrl_c_while_the_database_is_unreachable_stops_in_one_line(command: str, tmp_path: Path) -> None:
    """A double traceback (CancelledError during KeyboardInterrupt), and death by the signal."""
    log = tmp_path / "out.log"
    env = {"JOBSTEAD_DATABASE_URL": f"postgresql+psycopg://app@127.0.0.1:{free_port()}/nothing"}
    process = spawn_cli([command, "--app", "tests.apps.metered:app"], env, log)
    deadline = time.time() + 60
    while "database unreachable" not in log.read_text():
        assert process.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0, log.read_text()
    after = log.read_text().split("retrying with backoff", 1)[1].strip().splitlines()
    assert len(after) == 1 and after[0].endswith("stopped before it started"), after
    assert "Traceback" not in log.read_text()


def test_12_a_second_ctrl_c_says_it_cut_the_grace_period_short(tmp_path: Path) -> None:
    """The log said "still running after the grace period" one second into a 30 s grace period."""
    env = _sqlite_env(tmp_path)
    assert run_cli(["migrate"], env).returncode == 0
    assert (
        run_cli(["defer", "long_task", "--app", "tests.apps.probes:app", "--args", '{"seconds": 60}'], env).returncode
        == 0
    )
    log = tmp_path / "worker.log"
    worker = spawn_cli(["worker", "--app", "tests.apps.probes:app", "--shutdown-grace", "30"], env, log)
    try:
        deadline = time.time() + 60
        while '"status": "running"' not in run_cli(["jobs", "list", "--json"], env).stdout:
            assert worker.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        worker.send_signal(signal.SIGINT)
        while "waiting up to 30.0 s" not in log.read_text():
            assert time.time() < deadline, log.read_text()
            time.sleep(0.1)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(30) == 0, log.read_text()
    finally:
        stop(worker)
    text = log.read_text()
    assert "job 1 still running: stopped early by a second Ctrl-C (SIGINT); cancelling and releasing it" in text, text
    assert "after the grace period" not in text


def test_11_jobsteads_own_error_types_go_by_their_public_name(sqlite_target: Target) -> None:
    """``jobstead.errors.PermanentError`` in the log, in ``JobFailed.type`` and on the dashboard."""
    from jobstead.errors import ArgumentsDoNotFit, JobError

    assert JobError.from_exception(PermanentError("x")).type == "jobstead.PermanentError"
    assert JobError.from_exception(ArgumentsDoNotFit("x")).type == "jobstead.InvalidArguments"  # not exported
    assert JobError.from_exception(ValueError("x")).type == "ValueError"
    assert JobError.from_exception(json.JSONDecodeError("x", "", 0)).type == "json.decoder.JSONDecodeError"

    app = App(sqlite_target.url)

    @app.handler
    def refuse() -> None:
        raise PermanentError("no such customer")

    job = refuse.defer()
    with worker_thread(app), pytest.raises(JobFailed) as failed:
        job.wait(timeout=30)
    assert failed.value.type == "jobstead.PermanentError"
    assert app.get_job(job.id).error.type == "jobstead.PermanentError"  # type: ignore[union-attr]
    app.close()


def test_a_succeeded_job_has_no_error_though_an_attempt_failed(sqlite_target: Target) -> None:
    """``app.get_job(id).error`` returned the failed first attempt's error for a job that then succeeded."""
    app = App(sqlite_target.url)
    tries: list[int] = []

    @app.handler(max_attempts=3, retry=RetryPolicy.fixed(0))
    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("first try fails")
        return "ok"

    job = flaky.defer()
    with worker_thread(app):
        assert job.wait(timeout=30) == "ok"
    assert app.get_job(job.id).error is None
    attempts = app.store.queries.attempts(job.id)
    assert [a.error.type if a.error else None for a in attempts] == ["ConnectionError", None]
    shown = run_cli(["jobs", "show", str(job.id), "--json"], sqlite_target.env())
    assert json.loads(shown.stdout)["error"] is None
    app.close()


def test_2_the_cli_checks_argument_types_against_the_published_signature(sqlite_target: Target) -> None:
    """Without ``--app``, ``defer`` and ``crons add`` took ``{"n": "3"}`` for ``n: int``; with it they refused."""
    app = App(sqlite_target.url)

    @app.handler
    def resize(n: int, sizes: list[int] | None = None, label: str = "x") -> None: ...

    _ = app.store  # publishes the handler, as its workers would
    env = sqlite_target.env()
    for args, said in (
        ('{"n": "3"}', "resize(): argument 'n' must be int, not str ('3')"),
        ('{"n": 3, "sizes": [1, "2"]}', "resize(): argument 'sizes' must be list[int] | None, not list ([1, '2'])"),
    ):
        refused = run_cli(["defer", "resize", "--args", args], env)
        assert refused.returncode == 2, refused.stdout
        assert refused.stderr.strip() == f"jobstead: error: {said}", refused.stderr
        cron = run_cli(["crons", "add", "c", "--schedule", "@hourly", "--handler", "resize", "--args", args], env)
        assert cron.returncode == 2 and said in cron.stderr, cron.stderr
    assert app.jobs() == [] and app.store.crons.list_crons() == []
    accepted = run_cli(["defer", "resize", "--args", '{"n": 3, "sizes": [1, 2], "label": "y"}'], env)
    assert accepted.returncode == 0, accepted.stderr
    assert [j.record.args for j in app.jobs()] == [{"n": 3, "sizes": [1, 2], "label": "y"}]
    app.close()
