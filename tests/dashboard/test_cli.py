"""``jobstead dashboard`` as a user starts it: a real process on a real port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobstead import App
from tests.conftest import Target
from tests.support.processes import REPO, _die_with_parent, run_cli, stop

URL_LINE = re.compile(r"Jobstead dashboard(?: \(read-only\))?: (http://\S+)")


@pytest.fixture
def published(sqlite_target: Target) -> Iterator[Target]:
    app = App(sqlite_target.url)

    @app.handler
    def ping() -> str:
        return "pong"

    ping.defer()
    yield sqlite_target
    app.close()


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobstead", "dashboard", *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = URL_LINE.search(line)
        if found:
            return process, found.group(1)
        if not line and process.poll() is not None:
            break
    stop(process)  # type: ignore[arg-type]
    raise AssertionError("the dashboard did not print its URL")


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_refuses_a_non_loopback_address_without_authentication(published: Target, host: str) -> None:
    env = {k: v for k, v in published.env().items()}
    result = run_cli(["dashboard", "--host", host, "--port", "0"], {**env, "JOBSTEAD_DASHBOARD_TOKEN": ""})
    assert result.returncode == 2
    assert "--auth-token-file" in result.stderr and "not a loopback address" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_bad_token_file_is_one_line_and_exit_2(published: Target, tmp_path: Path) -> None:
    result = run_cli(["dashboard", "--auth-token-file", str(tmp_path / "missing"), "--port", "0"], published.env())
    assert result.returncode == 2
    assert "cannot read --auth-token-file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli(["dashboard", "--base-path", "jobs", "--port", "0"], published.env())
    assert result.returncode == 2 and "--base-path must be a path like /jobs" in result.stderr


def test_serves_with_a_token_under_a_base_path(published: Target, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("cli-token\n")
    process, url = start(
        ["--database-url", published.url, "--port", "0", "--base-path", "/jobs", "--auth-token-file", str(token)],
        {"JOBSTEAD_DASHBOARD_TOKEN": ""},
    )
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/jobs/")
        assert httpx.get(url).status_code == 401
        page = httpx.get(url, headers={"Authorization": "Bearer cli-token"})
        assert page.status_code == 200 and 'data-handler="ping"' in page.text
        assert httpx.get(url + "jobs", headers={"Authorization": "Bearer cli-token"}).status_code == 200
        root = url.removesuffix("jobs/")
        assert httpx.get(root).status_code == 307  # the bare host points at the base path
    finally:
        stop(process)  # type: ignore[arg-type]


def test_the_token_can_come_from_the_environment_and_read_only_is_read_only(published: Target) -> None:
    process, url = start(["--port", "0", "--read-only"], {**published.env(), "JOBSTEAD_DASHBOARD_TOKEN": "env-token"})
    try:
        headers = {"Authorization": "Bearer env-token"}
        page = httpx.get(url, headers=headers)
        assert page.status_code == 200 and "read-only" in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        refused = httpx.post(
            url + "pause", data={"scope": "all", "confirmed": "yes", "csrf": csrf.group(1)}, headers=headers
        )
        assert refused.status_code == 403
    finally:
        stop(process)  # type: ignore[arg-type]


def test_stops_promptly_and_quietly_with_a_tab_open(published: Target) -> None:
    process, url = start(["--port", "0"], {**published.env(), "JOBSTEAD_DASHBOARD_TOKEN": ""})
    opened = threading.Event()

    def tab() -> None:
        with httpx.stream("GET", url + "events", timeout=30) as events:
            for _ in events.iter_lines():
                opened.set()

    reader = threading.Thread(target=tab, daemon=True)
    reader.start()
    assert opened.wait(10), "the event stream did not open"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert time.monotonic() - started < 4  # the stream was ended, not waited out
    assert "Traceback" not in output and "Exception" not in output, output
    reader.join(10)
