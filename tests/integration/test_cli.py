"""The jobstead command as a user runs it: real subprocesses, real database."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from jobstead import App, JobStatus
from tests.conftest import Target
from tests.support.processes import run_cli


@pytest.fixture
def cli_app(target: Target) -> App:
    """The probes app's handlers, published to the test's database."""
    app = App(target.url, schema=target.schema)

    @app.handler(queue="mail")
    def send_email(to: str, subject: str = "hello") -> str:
        return to

    @app.handler(max_attempts=1)
    def always_fails() -> None:
        raise RuntimeError("boom")

    app.migrate()
    _ = app.store  # publishes the handlers
    return app


def cli(target: Target, *args: str) -> Any:
    return run_cli(list(args), target.env())


def test_migrate_says_what_it_did_and_is_idempotent(target: Target) -> None:
    """First-hour point 5: a new database said "schema is current", as if nothing had been done."""
    from jobstead.migrations import head_revision

    head = head_revision()
    created = cli(target, "migrate")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"created the Jobstead schema at revision {head} ("), created.stdout
    for _ in range(2):
        done = cli(target, "migrate")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"schema is current at revision {head}: nothing to do"), done.stdout


def test_migrate_names_the_revision_it_upgraded_from(target: Target) -> None:
    from jobstead.migrations import downgrade, head_revision
    from jobstead.store import Store

    store = Store.connect(target.url, schema=target.schema)
    store.migrate()
    downgrade(store.db, "0007")
    store.close()
    done = cli(target, "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"upgraded the schema from revision 0007 to {head_revision()} ("), done.stdout


def test_defer_prints_the_id_and_writes_one_job(cli_app: App, target: Target) -> None:
    done = cli(
        target,
        "defer",
        "send_email",
        "--args",
        '{"to": "a@example.com"}',
        "--priority",
        "3",
        "--key",
        "k1",
        "--delay",
        "60",
    )
    assert done.returncode == 0, done.stderr
    job = cli_app.get_job(int(done.stdout.strip()))
    assert job.record.args == {"to": "a@example.com"}
    assert job.record.queue == "mail" and job.record.priority == 3 and job.record.key == "k1"
    assert job.status is JobStatus.SCHEDULED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["defer", "nope", "--args", "{}"], "unknown handler 'nope'"),
        (["defer", "send_email", "--args", "{not json"], "not valid JSON"),
        (["defer", "send_email", "--args", "[1, 2]"], "JSON object"),
        (["defer", "send_email", "--args", '{"subject": "x"}'], "missing required argument(s): to"),
        (["defer", "send_email", "--args", '{"to": "a", "cc": "b"}'], "unexpected argument(s): cc"),
        (
            ["defer", "send_email", "--args", '{"to": "a"}', "--delay", "-1"],
            "argument --delay: cannot be negative",
        ),
        (
            ["defer", "send_email", "--args", '{"to": "a"}', "--priority", "high"],
            "invalid int value",
        ),
        (["jobs", "show", "abc"], "job ids are whole numbers"),
        (["jobs", "show", "999999"], "no job with id 999999"),
        (["jobs", "retry", "999999"], "no job with id 999999"),
        (["jobs", "cancel", "999999"], "no job with id 999999"),
        (["jobs", "list", "--status", "weird"], "unknown status 'weird'"),
        (["worker", "--app", "tests.apps.nothing_here:app"], "cannot import"),
        (["worker", "--app", "tests.apps.probes:missing"], "expected a jobstead.App"),
        (["worker", "--app", "tests.apps.probes:app", "--concurrency", "0"], "must be at least 1"),
        (
            ["worker", "--app", "tests.apps.probes:app", "--handler", "ghost"],
            "no handler named 'ghost'",
        ),
        (["pause"], "exactly one of"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    cli_app: App, target: Target, args: list[str], message: str
) -> None:
    done = cli(target, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert cli_app.store.queries.list_jobs() == []


def test_jobs_list_and_show_json(cli_app: App, target: Target, running_worker: Callable[..., Any]) -> None:
    ok = cli_app.get_handler("send_email").configure(tenant="acme").defer(to="x@example.com")
    bad = cli_app.get_handler("always_fails").defer()
    with running_worker(cli_app):
        ok.wait(10)
        with pytest.raises(Exception, match="boom"):
            bad.wait(10)
    done = cli(target, "jobs", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {j["id"] for j in listed} == {ok.id, bad.id}
    for item in listed:
        assert {
            "id",
            "handler",
            "status",
            "queue",
            "priority",
            "attempts",
            "run_at",
            "created_at",
            "key",
            "tenant",
        } <= set(item)
    filtered = json.loads(cli(target, "jobs", "list", "--status", "dead", "--json").stdout)
    assert [j["id"] for j in filtered] == [bad.id]
    by_handler = json.loads(cli(target, "jobs", "list", "--handler", "send_email", "--json").stdout)
    assert [(j["id"], j["tenant"], j["queue"]) for j in by_handler] == [(ok.id, "acme", "mail")]

    shown = json.loads(cli(target, "jobs", "show", str(bad.id), "--json").stdout)
    assert shown["status"] == "dead" and shown["args"] == {} and shown["result"] is None
    assert shown["error"]["type"] == "RuntimeError" and shown["error"]["message"] == "boom"
    assert "Traceback" in shown["error"]["traceback"]
    assert [a["outcome"] for a in shown["attempts_log"]] == ["failed"]
    assert shown["max_attempts"] == 1, "the handler's limit, as the text's 'attempts: 1 of 1' says, not null"
    assert json.loads(cli(target, "jobs", "show", str(ok.id), "--json").stdout)["result"] == "x@example.com"

    human = cli(target, "jobs", "show", str(bad.id))
    assert human.returncode == 0 and "RuntimeError: boom" in human.stdout


def test_retry_and_cancel(cli_app: App, target: Target, running_worker: Callable[..., Any]) -> None:
    bad = cli_app.get_handler("always_fails").defer()
    with running_worker(cli_app):
        with pytest.raises(Exception, match="boom"):
            bad.wait(10)
        done = cli(target, "jobs", "retry", str(bad.id))
        assert done.returncode == 0, done.stderr
        assert "queued again (attempt 2 of " in done.stdout and "None" not in done.stdout, done.stdout
        with pytest.raises(Exception, match="boom"):
            bad.wait(10)
    assert bad.refresh().attempts == 2
    waiting = cli_app.get_handler("send_email").configure(delay=3600).defer(to="later")
    done = cli(target, "jobs", "cancel", str(waiting.id))
    assert done.returncode == 0 and "cancelled" in done.stdout
    assert waiting.refresh().status is JobStatus.CANCELLED
    again = cli(target, "jobs", "cancel", str(bad.id))  # dead: nothing to cancel
    assert again.returncode == 1 and f"job {bad.id} already dead" in again.stderr
    succeeded_retry = cli(target, "jobs", "retry", str(waiting.id))
    assert succeeded_retry.returncode == 0


def test_stats_json(cli_app: App, target: Target) -> None:
    cli_app.get_handler("send_email").defer(to="a")
    cli_app.get_handler("send_email").configure(delay=600).defer(to="b")
    stats = json.loads(cli(target, "stats", "--json").stdout)
    assert stats["by_status"]["queued"] == 1 and stats["by_status"]["scheduled"] == 1
    assert stats["by_handler"]["send_email"] == {"queued": 1, "scheduled": 1}
    assert stats["by_queue"]["mail"] == {"queued": 1, "scheduled": 1}


def test_stats_show_each_limit_and_its_use(target: Target) -> None:
    app = App(target.url, schema=target.schema)

    @app.handler(concurrency=3, rate_limit="10/min")
    def limited(n: int) -> None: ...

    app.migrate()
    app.store.registry.publish_handlers([limited.definition()])
    limited.defer_many([{"n": i} for i in range(5)])
    app.store.claims.claim(worker_id="w", handlers=["limited"], queues=None, limit=2, lease_seconds=30)
    stats = json.loads(cli(target, "stats", "--json").stdout)
    assert {"handler": "limited", "limit": "concurrency", "in_use": 2, "of": 3, "per": None} in stats["limits"]
    assert {"handler": "limited", "limit": "rate_limit", "in_use": 2, "of": 10, "per": 60.0} in stats["limits"]
    shown = cli(target, "stats").stdout
    assert "rate_limit (per 60 s)" in shown and "concurrency" in shown
    app.close()


def test_jobs_show_says_which_job_holds_a_sequence(target: Target) -> None:
    app = App(target.url, schema=target.schema)

    @app.handler(sequence_by="account")
    def ordered(account: str, n: int) -> None: ...

    app.migrate()
    app.store.registry.publish_handlers([ordered.definition()])
    first, second = ordered.defer_many([{"account": "a", "n": 1}, {"account": "a", "n": 2}])
    shown = json.loads(cli(target, "jobs", "show", str(second.id), "--json").stdout)
    assert shown["held_by"] == first.id
    assert json.loads(cli(target, "jobs", "show", str(first.id), "--json").stdout)["held_by"] is None
    assert f"held by job {first.id}" in cli(target, "jobs", "show", str(second.id)).stdout
    app.close()
