"""Structured logs: --log-format json gives one JSON object per line, job lines carrying their job's ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

from jobstead import App
from tests.conftest import Target
from tests.support.processes import run_cli, spawn_cli, stop


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
