"""``jobstead crons ...``, ``jobstead scheduler`` and ``jobstead run`` as a user runs them: real processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jobstead import App, JobStatus
from jobstead.store import CronDefinition, JobFilter, JobRecord, Store
from tests.conftest import Target
from tests.support.processes import run_cli, spawn_cli, stop

CRON_APP = "tests.apps.crons:app"


@pytest.fixture
def published(target: Target) -> Iterator[App]:
    """An app whose handlers and one code cron are in the test's database, as its workers would leave them."""
    app = App(target.url, schema=target.schema)

    @app.cron("@hourly", name="hourly_digest")
    def digest() -> None: ...

    @app.handler
    def send_report(to: str, fmt: str = "pdf") -> None: ...

    _ = app.store  # migrates, publishes handlers and crons
    yield app
    app.close()


def cli(target: Target, *args: str) -> Any:
    return run_cli(list(args), target.env())


def listed(target: Target) -> dict[str, dict[str, Any]]:
    done = cli(target, "crons", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {c["name"]: c for c in json.loads(done.stdout)}


def test_add_list_disable_enable_remove(published: App, target: Target) -> None:
    done = cli(
        target,
        "crons",
        "add",
        "nightly",
        "--schedule",
        "30 3 * * *",
        "--handler",
        "send_report",
        "--args",
        '{"to": "ops@example.com"}',
        "--timezone",
        "Europe/Tallinn",
    )
    assert done.returncode == 0, done.stderr
    assert "cron nightly added" in done.stdout and "next fire" in done.stdout

    crons = listed(target)
    assert sorted(crons) == ["hourly_digest", "nightly"]
    nightly = crons["nightly"]
    assert {k: nightly[k] for k in ("name", "schedule", "timezone", "handler", "args", "enabled", "source")} == {
        "name": "nightly",
        "schedule": "30 3 * * *",
        "timezone": "Europe/Tallinn",
        "handler": "send_report",
        "args": {"to": "ops@example.com"},
        "enabled": True,
        "source": "database",
    }
    assert nightly["last_fire_at"] is None and nightly["last_job_id"] is None
    assert datetime.fromisoformat(nightly["next_fire_at"]).astimezone().minute in (0, 30)  # 03:30 local
    assert crons["hourly_digest"]["source"] == "code"

    table = cli(target, "crons", "list")
    assert table.returncode == 0 and "NEXT_FIRE_AT" in table.stdout and "nightly" in table.stdout

    done = cli(target, "crons", "disable", "nightly")
    assert done.returncode == 0 and "disabled" in done.stdout, done.stderr
    disabled = listed(target)["nightly"]
    assert disabled["enabled"] is False and disabled["next_fire_at"] is None
    done = cli(target, "crons", "enable", "nightly")
    assert done.returncode == 0 and "enabled" in done.stdout, done.stderr
    cron = published.store.crons.get("nightly")
    assert cron is not None and cron.enabled

    done = cli(target, "crons", "remove", "nightly")
    assert done.returncode == 0 and "removed" in done.stdout, done.stderr
    assert published.store.crons.get("nightly") is None


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("report", {"--schedule": "61 * * * *"}, "invalid cron schedule '61 * * * *': out of range"),
        ("report", {"--schedule": "* * *"}, "expected 5 fields"),
        ("report", {"--schedule": "@fortnightly"}, "unknown cron preset"),
        ("report", {"--timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ("report", {"--handler": "nope"}, "unknown handler 'nope'"),
        ("report", {"--args": "{oops"}, "--args is not valid JSON"),
        ("report", {"--args": '{"fmt": "csv"}'}, "missing required argument(s): to"),
        ("report", {"--args": '{"to": "a", "cc": "b"}'}, "unexpected argument(s): cc"),
        ("report", {"--overlap": "never"}, "invalid choice: 'never'"),
        ("report", {"--starting-deadline": "0"}, "must be a positive number of seconds"),
        ("hourly_digest", {}, "a cron named 'hourly_digest' already exists (source: code)"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    published: App, target: Target, name: str, changes: dict[str, str], message: str
) -> None:
    options = {"--schedule": "0 * * * *", "--handler": "send_report", "--args": '{"to": "a"}', **changes}
    before = published.store.crons.list_crons()
    done = cli(target, "crons", "add", name, *[part for item in options.items() for part in item])
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, no traceback
    assert published.store.crons.list_crons() == before


def test_remove_only_removes_what_the_cli_added(published: App, target: Target) -> None:
    published.store.crons.put(
        CronDefinition(name="from_cluster", schedule="@daily", handler="send_report", args={"to": "a"}, source="crd")
    )
    code = cli(target, "crons", "remove", "hourly_digest")
    assert code.returncode == 1 and "defined in code" in code.stderr and "crons disable" in code.stderr
    crd = cli(target, "crons", "remove", "from_cluster")
    assert crd.returncode == 1 and "CronSchedule resource" in crd.stderr
    unknown = cli(target, "crons", "remove", "no_such_cron")
    assert unknown.returncode == 2 and "no cron named 'no_such_cron'" in unknown.stderr
    assert [c.name for c in published.store.crons.list_crons()] == ["from_cluster", "hourly_digest"]

    done = cli(target, "crons", "disable", "from_cluster")
    assert done.returncode == 0 and "spec.suspend" in done.stderr  # it says who will set it back


def test_a_code_cron_disabled_from_the_cli_stays_disabled_when_the_app_starts_again(
    published: App, target: Target
) -> None:
    assert cli(target, "crons", "disable", "hourly_digest").returncode == 0
    restarted = App(target.url, schema=target.schema)

    @restarted.cron("*/30 * * * *", name="hourly_digest")  # and the code changed meanwhile
    def digest() -> None: ...

    restarted.publish_crons()
    cron = restarted.store.crons.get("hourly_digest")
    restarted.close()
    assert cron is not None and not cron.enabled and cron.schedule == "*/30 * * * *"


# -- processes -------------------------------------------------------------------


def _cron_jobs(store: Store) -> list[tuple[datetime, JobRecord]]:
    jobs = store.queries.list_jobs(JobFilter(handler="beat", limit=10_000))
    return sorted(((datetime.fromisoformat(j.metadata["cron_fire_at"]), j) for j in jobs if j.metadata), key=_first)


def _first(pair: tuple[datetime, JobRecord]) -> datetime:
    return pair[0]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_run_runs_the_worker_and_the_scheduler_in_one_process(target: Target, tmp_path: Path) -> None:
    store = Store.connect(target.url, schema=target.schema)
    store.migrate()
    process = spawn_cli(["run", "--app", CRON_APP, "--poll-interval", "0.1"], target.env(), tmp_path / "run.log")
    try:
        _wait_for(
            lambda: sum(j.status is JobStatus.SUCCEEDED for _, j in _cron_jobs(store)) >= 2,
            60,
            "two cron jobs run by `jobstead run`",
        )
    finally:
        code = stop(process)
    log = (tmp_path / "run.log").read_text()
    assert code == 0, log
    assert "scheduler started" in log and "scheduler stopped" in log, log
    for fire, job in _cron_jobs(store):
        if job.status is JobStatus.SUCCEEDED:
            assert job.result == fire.isoformat()  # the handler saw its own fire time
    store.close()


def test_scheduler_processes_side_by_side_defer_each_fire_once(target: Target, tmp_path: Path) -> None:
    store = Store.connect(target.url, schema=target.schema)
    store.migrate()
    processes = [
        spawn_cli(["scheduler", "--app", CRON_APP], target.env(), tmp_path / f"scheduler{i}.log") for i in range(2)
    ]
    try:
        _wait_for(lambda: len(_cron_jobs(store)) >= 1, 60, "the first fire")
        first = _cron_jobs(store)[0][0]
        time.sleep(3.5)  # both are surely up by now: every fire from here on is contested
    finally:
        codes = [stop(p) for p in processes]
    assert codes == [0, 0], [(tmp_path / f"scheduler{i}.log").read_text() for i in range(2)]
    fires = [fire for fire, _ in _cron_jobs(store)]
    assert fires[0] == first and len(fires) >= 3, fires
    assert fires == sorted(set(fires)), fires  # none twice
    # None missing either, unless both processes stalled for a whole second (a loaded CI machine).
    assert len(fires) >= (fires[-1] - first).total_seconds(), fires
    assert all(job.status is JobStatus.QUEUED for _, job in _cron_jobs(store))  # no worker: deferred only
    cron = {c["name"]: c for c in json.loads(cli(target, "crons", "list", "--json").stdout)}["heartbeat"]
    assert cron["last_job_id"] == _cron_jobs(store)[-1][1].id
    assert cron["last_fire_at"] == fires[-1].isoformat()
    store.close()


def test_a_quartz_ordered_schedule_is_one_plain_line_at_add_and_quiet_afterwards(
    published: App, target: Target
) -> None:
    """First-hour point 3: the warning was Python's (a file path and a source line) on every later command."""
    added = cli(
        target, "crons", "add", "q", "--schedule", "*/15 * * * * *", "--handler", "send_report", "--args", '{"to": "a"}'
    )
    assert added.returncode == 0, added.stderr
    lines = added.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobstead: warning: cron schedule '*/15 * * * * *'"), lines
    assert "'* * * * * */15'" in lines[0] and ".py" not in lines[0]
    for later in (("crons", "list"), ("crons", "disable", "q"), ("crons", "enable", "q"), ("crons", "remove", "q")):
        done = cli(target, *later)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", (later, done.stderr)
