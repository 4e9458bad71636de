"""Structured logs: --log-format json gives one JSON object per line, job lines carrying their job's ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobstead import App
from tests.conftest import Target
from tests.support.processes import REPO, run_cli, spawn_cli, stop


def test_json_log_lines_parse_and_carry_job_ids(target: Target, tmp_path: Path) -> None:
    from tests.apps import metered

    app = App(target.url, schema=target.schema)
    h = metered.app.get_handler("ok")
    app.handler(name="ok", queue=h.queue)(h.func)
    job = app.get_handler("ok").defer(n=7)
    log = tmp_path / "worker.log"
    worker = spawn_cli(
        ["worker", "--app", "tests.apps.metered:app", "--poll-interval", "0.1", "--log-format", "json"],
        target.env(),
        log,
    )
    try:
        assert job.wait(30) == 7
        time.sleep(0.2)
    finally:
        assert stop(worker) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    finished = [line for line in lines if line.get("job_id") == job.id]
    assert finished, lines
    assert finished[0]["handler"] == "ok" and finished[0]["attempt"] == 1 and finished[0]["outcome"] == "succeeded"
    assert finished[0]["worker_id"]
    app.close()


def test_text_stays_the_default_and_a_bad_format_is_one_line(target: Target) -> None:
    done = run_cli(["stats", "--log-format", "yaml"], target.env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    bad_env = run_cli(["stats"], {**target.env(), "JOBSTEAD_LOG_FORMAT": "yaml"})
    assert bad_env.returncode == 2 and "JOBSTEAD_LOG_FORMAT" in bad_env.stderr and "Traceback" not in bad_env.stderr


#: A pooled connection the server drops while it is checked out, then handed back: the pool's
#: rollback on return fails, as it did for a worker riding out a MariaDB restart.
_DROPPED_THEN_RETURNED = """
import sys
from sqlalchemy import create_engine, text
from jobstead.logs import configure_logging
from jobstead.store.drivers.pool import WaitingQueuePool

configure_logging("info", sys.argv[2])
engine = create_engine(sys.argv[1], poolclass=WaitingQueuePool)
victim = engine.raw_connection()
cursor = victim.cursor()
cursor.execute("SELECT pg_backend_pid()")
pid = cursor.fetchone()[0]
with engine.connect() as other:
    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
victim.close()
with engine.connect() as again:
    print(again.execute(text("SELECT 1")).scalar())
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_pooled_connection_the_server_dropped_is_discarded_in_one_line(
    pg_url: str, log_format: str, tmp_path: Path
) -> None:
    """SQLAlchemy logged 30 lines of traceback at ERROR for a connection it discards itself."""
    script = tmp_path / "dropped.py"
    script.write_text(_DROPPED_THEN_RETURNED)
    done = subprocess.run(
        [sys.executable, str(script), pg_url, log_format],
        cwd=REPO,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "discarded a pooled database connection the server had dropped (AdminShutdown: terminating" in lines[0]
    assert ("WARNING" in lines[0]) if log_format == "text" else (json.loads(lines[0])["level"] == "warning")
