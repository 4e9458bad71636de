"""Rough edges of a first hour with Jobstead, each reproduced as a new user met it.

The numbers in the test names are the points of the second first-hour trial.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from jobstead import App, Context, JobFailed, RetryPolicy
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
