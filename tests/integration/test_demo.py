"""The demo app (``make run``) shows more than single jobs: workflows, a rate limit, a sequence.

A new user's first look at Jobstead is the demo; the README says what it
defers, so that is checked here the way ``make run`` does it, through the CLI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.support.processes import run_cli, spawn_cli, stop

APP = ["--app", "jobstead.demo:app"]


def _workflow(workflow_id: int, env: dict[str, str]) -> dict[str, Any]:
    shown = run_cli(["workflows", "show", str(workflow_id), "--json", *APP], env)
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def _succeeded(ids: set[int], env: dict[str, str]) -> bool:
    listed = run_cli(["workflows", "list", "--json", *APP], env)
    assert listed.returncode == 0, listed.stderr
    return ids <= {w["id"] for w in json.loads(listed.stdout) if w["status"] == "succeeded"}


def test_the_demo_seed_defers_ship_order_workflows_that_a_worker_runs_to_success(tmp_path: Path) -> None:
    env = {"JOBSTEAD_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    assert run_cli(["migrate"], env).returncode == 0
    seeded = run_cli(["defer", "seed_demo_jobs", *APP], env)
    assert seeded.returncode == 0, seeded.stderr
    log = tmp_path / "run.log"
    worker = spawn_cli(["run", *APP], env, log)
    try:
        deadline = time.time() + 90
        # The seed job defers them as it runs: its two are the first two (the demo's cron may
        # defer more meanwhile).
        while not _succeeded({1, 2}, env):
            assert time.time() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        assert stop(worker) == 0, log.read_text()
    for workflow_id in (1, 2):
        workflow = _workflow(workflow_id, env)
        assert workflow["name"] == "ship-order"
        steps = {step["name"]: step for step in workflow["steps"]}
        assert list(steps) == ["fetch", "charge", "reserve", "ship"]
        assert steps["ship"]["after"] == ["charge", "reserve"]
        shipped = run_cli(["jobs", "show", str(steps["ship"]["job_id"]), "--json"], env)
        assert json.loads(shipped.stdout)["result"] == "shipped"
    stats = run_cli(["stats", *APP], env)
    assert stats.returncode == 0, stats.stderr
    limits = [line.split() for line in stats.stdout.splitlines()]
    assert ["rate_limit", "(per", "1", "s)", "charge_card", "0", "2"] in limits, stats.stdout
