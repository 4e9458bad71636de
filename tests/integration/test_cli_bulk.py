"""The CLI's rough edges, smoothed (issue 18): bulk operations, listing options, stats, pause list,
durations, --version; and the Python API that matches them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from jobstead import App, InvalidArguments, InvalidState, JobFailed, JobStatus
from tests.conftest import Target
from tests.support.processes import run_cli


@pytest.fixture
def shop(target: Target) -> App:
    app = App(target.url, schema=target.schema)

    @app.handler(queue="mail")
    def send_email(to: str) -> str:
        return to

    @app.handler(max_attempts=1, queue="reports")
    def report(n: int) -> None:
        raise RuntimeError(f"report {n} failed")

    app.migrate()
    _ = app.store
    return app


def cli(target: Target, *args: str) -> Any:
    return run_cli(list(args), target.env())


def dead_reports(shop: App, running_worker: Callable[..., Any], count: int, tenant: str | None = None) -> list[int]:
    jobs = shop.get_handler("report").configure(tenant=tenant).defer_many([{"n": i} for i in range(count)])
    with running_worker(shop, handlers=["report"]):
        for job in jobs:
            with pytest.raises(JobFailed):
                job.wait(20)
    return [j.id for j in jobs]


def test_bulk_retry_cancel_and_purge_print_how_many(
    shop: App, target: Target, running_worker: Callable[..., Any]
) -> None:
    dead = dead_reports(shop, running_worker, 3, tenant="acme")
    dead_reports(shop, running_worker, 1, tenant="other")
    waiting = shop.get_handler("send_email").configure(delay=3600).defer_many([{"to": "a"}, {"to": "b"}])

    refused = cli(target, "jobs", "retry", "--handler", "report")
    assert refused.returncode == 2 and "--status" in refused.stderr
    # A status the command never acts on is refused whole, not "retried 0 job(s)": nothing is touched.
    wrong = cli(target, "jobs", "retry", "--status", "dead,queued")
    assert wrong.returncode == 2, wrong.stdout
    assert wrong.stderr.strip().endswith("--status: only dead, failed or cancelled jobs can be retried, not queued")
    wrong = cli(target, "jobs", "cancel", "--status", "scheduled,succeeded,dead")
    assert wrong.returncode == 2 and "can be cancelled, not succeeded, dead" in wrong.stderr, wrong.stderr

    done = cli(target, "jobs", "retry", "--status", "dead", "--tenant", "acme", "--since", "1h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "retried 3 job(s)"
    assert {j.id for j in shop.jobs(status="queued", handler="report")} == set(dead)

    done = cli(target, "jobs", "cancel", "--status", "queued,scheduled", "--queue", "reports")
    assert done.stdout.strip() == "cancelled 3 job(s); asked 0 running job(s) to stop", done.stderr
    assert all(j.status is JobStatus.SCHEDULED for j in (w.refresh() for w in waiting))

    live = cli(target, "jobs", "purge", "--status", "queued")
    assert live.returncode == 2 and "only finished jobs" in live.stderr
    done = cli(target, "jobs", "purge", "--status", "cancelled,dead", "--handler", "report")
    assert done.stdout.strip() == "purged 4 job(s)", done.stderr
    assert shop.jobs(handler="report") == []
    assert len(shop.jobs()) == 2


def test_jobs_list_statuses_offset_sort_and_columns(
    shop: App, target: Target, running_worker: Callable[..., Any]
) -> None:
    dead = dead_reports(shop, running_worker, 2)
    send = shop.get_handler("send_email")
    low = send.configure(priority=1).defer(to="low")
    high = send.configure(priority=9).defer(to="high")

    listed = json.loads(cli(target, "jobs", "list", "--status", "dead,queued", "--json").stdout)
    assert [j["id"] for j in listed] == sorted([*dead, low.id, high.id], reverse=True)
    page = json.loads(cli(target, "jobs", "list", "--limit", "2", "--offset", "2", "--json").stdout)
    assert [j["id"] for j in page] == sorted(dead, reverse=True)
    by_priority = json.loads(cli(target, "jobs", "list", "--sort", "priority", "--status", "queued", "--json").stdout)
    assert [j["id"] for j in by_priority] == [high.id, low.id]
    oldest = json.loads(cli(target, "jobs", "list", "--asc", "--limit", "1", "--json").stdout)
    assert [j["id"] for j in oldest] == [min(dead)]

    text = cli(target, "jobs", "list", "--status", "dead").stdout.splitlines()
    assert text[0].split() == [
        "ID", "HANDLER", "STATUS", "QUEUE", "PRIORITY", "ATTEMPTS", "CREATED", "RUN_AT", "FINISHED", "DURATION",
        "KEY", "TENANT",
    ]  # fmt: skip
    assert all(line.split()[9].endswith("s") for line in text[1:])  # a duration for finished jobs

    bad = cli(target, "jobs", "list", "--status", "dead,zombie")
    assert bad.returncode == 2 and "unknown status 'zombie'" in bad.stderr


def test_stats_text_shows_queues_tenants_workers_and_pauses(shop: App, target: Target) -> None:
    shop.get_handler("send_email").configure(tenant="acme").defer(to="a")
    shop.pause(queue="mail")
    out = cli(target, "stats").stdout
    assert "HANDLER" in out and "QUEUE" in out and "TENANT" in out and "acme" in out
    assert "workers: 0" in out
    assert "paused: queue mail" in out


def test_pause_list(shop: App, target: Target) -> None:
    assert cli(target, "pause", "list").stdout.strip() == "nothing is paused"
    shop.pause(handler="send_email")
    shop.pause()
    listed = json.loads(cli(target, "pause", "list", "--json").stdout)
    assert listed == [{"scope": "all", "name": None}, {"scope": "handler", "name": "send_email"}]
    text = cli(target, "pause", "list").stdout
    assert "handler" in text and "send_email" in text


def test_durations_everywhere(shop: App, target: Target) -> None:
    done = cli(target, "defer", "send_email", "--args", '{"to": "a"}', "--delay", "2h")
    job = shop.get_job(int(done.stdout))
    assert job.status is JobStatus.SCHEDULED
    delay = (job.record.run_at - job.record.created_at).total_seconds()
    assert 7190 < delay < 7210
    bad = cli(target, "jobs", "purge", "--older-than", "a week")
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "7d" in bad.stderr


def test_defer_run_at_metadata_and_max_attempts(shop: App, target: Target) -> None:
    done = cli(
        target,
        "defer",
        "send_email",
        "--args",
        '{"to": "a"}',
        "--run-at",
        "2031-01-02T03:04:05+02:00",
        "--metadata",
        '{"source": "cli"}',
        "--max-attempts",
        "2",
    )
    assert done.returncode == 0, done.stderr
    record = shop.get_job(int(done.stdout)).record
    assert record.run_at.isoformat() == "2031-01-02T01:04:05+00:00"
    assert record.metadata == {"source": "cli"} and record.max_attempts == 2


def test_version() -> None:
    done = run_cli(["--version"], {})
    assert done.returncode == 0 and done.stdout.startswith("jobstead 0.")


def test_python_api_jobs_stats_and_retry(shop: App, running_worker: Callable[..., Any]) -> None:
    [dead_id] = dead_reports(shop, running_worker, 1)
    shop.get_handler("send_email").defer(to="x")
    assert [j.id for j in shop.jobs(status=["dead"])] == [dead_id]
    assert [j.id for j in shop.jobs(status=JobStatus.DEAD, handler="report", limit=1)] == [dead_id]
    assert len(shop.jobs(status="dead,queued")) == 2
    with pytest.raises(InvalidArguments, match="unknown status 'gone'"):
        shop.jobs(status="gone")
    stats = shop.stats()
    assert stats.by_status["dead"] == 1 and stats.by_queue["mail"] == {"queued": 1}

    job = shop.get_job(dead_id).retry()
    assert job.status is JobStatus.QUEUED and job.record.max_attempts == 2
    with pytest.raises(InvalidState, match="only dead, failed or cancelled"):
        job.retry()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--priority", "99999999999"], "--priority must be between"),
        (["--queue", ""], "--queue must be a non-empty string"),
        (["--tenant", ""], "--tenant must be a non-empty string"),
    ],
)
def test_crons_add_checks_job_options_like_defer(shop: App, target: Target, extra: list[str], message: str) -> None:
    done = cli(target, "crons", "add", "nightly", "--schedule", "0 3 * * *", "--handler", "send_email", *extra)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert shop.store.crons.get("nightly") is None
