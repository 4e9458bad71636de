"""What the redesigned pages say, over HTTP: charts with scales, one button per thing, plain words."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from html import unescape
from typing import Any

from jobstead import JobStatus
from jobstead.dashboard.depth import queue_depth
from tests.conftest import worker_thread
from tests.dashboard.conftest import Shop, TestClient, wait_for

MakeClient = Callable[..., TestClient]
ORIGIN = {"Origin": "http://testserver"}


def buttons(html: str, action: str) -> list[str]:
    """The ``name`` field of every form whose button is ``data-action=action``."""
    forms = re.findall(r"<form method=\"post\".*?</form>", html, flags=re.S)
    return [
        re.search(r'name="name" value="([^"]*)"', form).group(1)  # type: ignore[union-attr]
        for form in forms
        if f'data-action="{action}"' in form
    ]


def test_the_overview_has_labelled_charts_and_one_button_per_handler_and_queue(
    shop: Shop, make_client: MakeClient
) -> None:
    shop.app.handlers["send_email"].configure(queue="bulk").defer(to="x@example.com")
    shop.app.handlers["send_email"].defer(to="y@example.com")
    html = make_client(shop.app).get("/").text
    # two charts, each with its scale and its times written as text
    for chart in ("chart-finished", "chart-depth"):
        section = html.split(f'id="{chart}"')[1].split("</figure>")[0]
        ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', section)
        assert "0" in ticks and "now" in ticks and any(re.fullmatch(r"\d\d:\d0", t) for t in ticks), ticks
    assert "The charts' numbers, minute by minute" in html
    # "Pause queue" once per queue, "Pause" once per handler, though send_email has rows in two queues
    for queue in ("bulk", "mail"):
        assert f'data-handler="send_email" data-queue="{queue}"' in html
    assert sorted(buttons(html, "pause queue")) == ["bulk", "default", "mail", "reports"]
    assert sorted(buttons(html, "pause")) == ["charge_card", "rebuild_report", "send_email"]
    assert "No sign-in (local access)" in html and "authentication off" in html
    assert "Failed, dead and cancelled jobs count per handler" not in html
    assert "jobs table holds" in html


def test_queue_depth_counts_waiting_jobs_minute_by_minute(shop: Shop) -> None:
    store = shop.app.store
    now = store.clock()
    start = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    before = queue_depth(store, start, now)
    shop.app.handlers["send_email"].defer_many([{"to": f"u{i}@example.com"} for i in range(5)])
    after = queue_depth(store, start, store.clock())
    assert len(after) == 60
    assert after[-1] == before[-1] + 5
    # the seeded jobs that already ran waited less than a minute, and the scheduled one is not due
    assert after[-1] == 6  # the five above and the seed's waiting welcome mail


def flaky_success(shop: Shop) -> int:
    """A job whose first attempt fails with a ConnectionError and whose second succeeds."""
    app = shop.app
    calls: list[int] = []

    @app.handler(max_attempts=4, retry=0)
    def sync_inventory(sku: str) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("inventory service unreachable")
        return "synced"

    job = sync_inventory.defer(sku="A-1")
    with worker_thread(app):
        wait_for(lambda: job.refresh().status is JobStatus.SUCCEEDED, what="the flaky job to succeed")
    return job.id


def test_the_jobs_list_previews_arguments_and_says_errors_of_failures_only(shop: Shop, make_client: MakeClient) -> None:
    succeeded = flaky_success(shop)
    html = make_client(shop.app).get("/jobs").text
    found = re.finditer(r'<tr data-job-id="(\d+)".*?</tr>', html, flags=re.S)
    rows = {int(m.group(1)): unescape(m.group(0)) for m in found}
    dead = rows[shop.ids["dead"]]
    assert 'class="is-bad"' in dead
    assert "order=7" in dead and "ValueError" in dead and "card declined for order 7" in dead
    assert 'to="ada@example.com"' in rows[shop.ids["succeeded"]]
    assert "ConnectionError" not in rows[succeeded] and "is-bad" not in rows[succeeded]
    assert 'sku="A-1"' in rows[succeeded]
    assert " ago" in rows[succeeded] and re.search(r"\d+ ms|\d\.\d s", rows[succeeded])
    assert re.search(r'<td class="nowrap" title="[^"]+">in (59|60) min</td>', rows[shop.ids["scheduled"]])
    # pickers of the known names, not free text
    for name, known in (("handler", "charge_card"), ("queue", "mail"), ("tenant", "acme")):
        picker = html.split(f'<select name="{name}">')[1].split("</select>")[0]
        assert f'<option value="{known}">' in picker, name
    assert 'placeholder="job id, key or argument text"' in html


def test_a_succeeded_job_shows_its_failed_attempt_not_an_error(shop: Shop, make_client: MakeClient) -> None:
    job_id = flaky_success(shop)
    client = make_client(shop.app)
    html = unescape(client.get(f"/jobs/{job_id}", headers={"Referer": "http://testserver/jobs?status=succeeded"}).text)
    assert 'id="job-error"' not in html and 'id="traceback"' not in html and "<h2>Error" not in html
    assert "attempt 2 of 4" in html
    attempts = html.split('id="attempts"')[1]
    assert "Attempt 1 of 4: failed" in attempts and "Attempt 2 of 4: succeeded" in attempts
    assert "ConnectionError" in attempts and "inventory service unreachable" in attempts
    assert re.search(r"took \d+ ms|took \d+\.\d s", attempts)
    # the handler's frame shown, Jobstead's worker frames folded below
    shown = attempts.split('<pre class="traceback">')[1].split("</pre>")[0]
    assert "sync_inventory" in shown and "jobstead/worker" not in shown
    assert "frames of Jobstead" in attempts or "frame of Jobstead" in attempts
    assert 'href="/jobs?status=succeeded" id="back-to-list"' in html


def test_a_dead_job_shows_its_error_with_the_handlers_frames_first(shop: Shop, make_client: MakeClient) -> None:
    html = unescape(make_client(shop.app).get(f"/jobs/{shop.ids['dead']}").text)
    assert 'id="job-error"' in html and "card declined for order 7" in html
    shown = html.split('<pre class="traceback" id="traceback">')[1].split("</pre>")[0]
    assert shown.startswith("Traceback (most recent call last):")
    assert "charge_card" in shown and shown.rstrip().endswith("ValueError: card declined for order 7")
    assert "/jobstead/" not in shown and "asyncio" not in shown
    assert 'href="/jobs" id="back-to-list"' in html
    assert "attempt 1 of 1" in html


def test_delete_and_pause_everything_ask_first(shop: Shop, make_client: MakeClient) -> None:
    client = make_client(shop.app)
    origin = {"Origin": "http://testserver"}
    page = client.get(f"/jobs/{shop.ids['succeeded']}").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    asked = client.post(f"/jobs/{shop.ids['succeeded']}/delete", data={"csrf": csrf, "next": "/jobs"}, headers=origin)
    assert asked.status_code == 200 and "cannot be undone" in asked.text
    assert shop.app.store.queries.get_job(shop.ids["succeeded"]) is not None
    assert 'name="confirmed" value="yes"' in asked.text
    done = client.post(
        f"/jobs/{shop.ids['succeeded']}/delete",
        data={"csrf": csrf, "next": "/jobs", "confirmed": "yes"},
        headers=origin,
    )
    assert done.status_code == 303 and done.headers["location"] == "/jobs"
    assert shop.app.store.queries.get_job(shop.ids["succeeded"]) is None
    asked = client.post("/pause", data={"csrf": csrf, "scope": "all"}, headers=origin)
    assert asked.status_code == 200 and "Pause everything?" in asked.text
    assert shop.app.store.control.paused() == []
    client.post("/pause", data={"csrf": csrf, "scope": "all", "confirmed": "yes"}, headers=origin)
    assert shop.app.store.control.paused() == [("all", "")]


def test_the_running_page_and_the_workers_page_say_what_runs_where(shop: Shop, make_client: MakeClient) -> None:
    app = shop.app
    release = threading.Event()

    @app.handler
    def slow_export(report: str) -> str:
        release.wait(20)
        return "done"

    client = make_client(app)
    assert "Nothing is running right now." in client.get("/running").text
    job = slow_export.defer(report="q4")
    try:
        with worker_thread(app):
            wait_for(lambda: job.refresh().status is JobStatus.RUNNING, what="the export to start")
            record = app.store.queries.get_job(job.id)
            worker = record.lease_owner if record else None
            assert worker
            time.sleep(1.1)
            html = unescape(client.get("/running").text)
            row = html.split(f'<tr data-job-id="{job.id}">')[1].split("</tr>")[0]
            assert "slow_export" in row and 'report="q4"' in row and worker in row
            assert re.search(r"<td class=\"num nowrap\" data-elapsed data-offset=\"[\d.]+\">\d\.\d s</td>", row), row
            assert 'data-action="cancel"' in row
            workers = client.get("/workers").text
            mine = workers.split(f'<tr data-worker="{worker}">')[1].split("</tr>")[0]
            assert f'href="/jobs/{job.id}"' in mine and "slow_export" in mine
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
            asked = client.post(f"/jobs/{job.id}/cancel", data={"csrf": csrf, "next": "/running"}, headers=ORIGIN)
            assert asked.status_code == 303 and asked.headers["location"] == "/running"
            assert getattr(app.store.queries.get_job(job.id), "cancel_requested", False)
            assert "stop requested" in client.get("/running").text
            release.set()
    finally:
        release.set()


def test_a_batch_has_its_own_page_with_a_status_badge(shop: Shop, make_client: MakeClient) -> None:
    batch = shop.app.defer_batch([shop.app.handlers["send_email"].job(to="z@example.com")], tenant="acme")
    client = make_client(shop.app)
    page = client.get(f"/batches/{batch.id}")
    assert page.status_code == 200
    assert '<span class="badge b-active" id="batch-status">active</span>' in page.text
    assert f'href="/jobs?batch={batch.id}&amp;status=queued"><span class="n">1</span>' in page.text
    assert f'href="/batches/{batch.id}"' in client.get("/batches").text
    missing = client.get("/batches/99999")
    assert missing.status_code == 404 and "no batch with id 99999" in missing.text
    assert client.get("/batches/abc").status_code == 404


def test_crons_say_their_schedule_in_words_and_run_now_defers_an_ordinary_job(
    shop: Shop, make_client: MakeClient
) -> None:
    app = shop.app
    client = make_client(app)
    html = unescape(client.get("/crons").text)
    row = html.split('<tr data-cron="nightly">')[1].split("</tr>")[0]
    assert "every day at 03:00" in row and "0 3 * * *" in row
    fires = re.findall(r">(\d{4}-\d\d-\d\d 03:00:00) UTC <span", row)
    assert len(fires) == 3 and len(set(fires)) == 3, row
    before = {j.id for j in app.store.queries.list_jobs()}
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
    done = client.post("/crons/nightly/run", data={"csrf": csrf, "next": "/crons"}, headers=ORIGIN)
    assert done.status_code == 303
    (new,) = [j for j in app.store.queries.list_jobs() if j.id not in before]
    assert (new.handler, new.queue, new.args, new.status) == ("rebuild_report", "reports", {}, JobStatus.QUEUED)
    assert f"cron nightly run now as job {new.id}" in client.get("/activity").text
    cron = app.store.crons.get("nightly")
    assert cron is not None and cron.last_job_id is None, "a run now is not a fire"


def test_a_cron_in_another_zone_shows_its_fires_on_its_own_clock(shop: Shop, make_client: MakeClient) -> None:
    app = shop.app

    @app.cron("30 9 * * 1-5", name="standup", timezone="Europe/Tallinn")
    @app.handler
    def remind() -> None:
        return None

    app.publish_crons()
    html = unescape(make_client(app).get("/crons").text)
    row = html.split('<tr data-cron="standup">')[1].split("</tr>")[0]
    assert "every Monday to Friday at 09:30" in row and "in Europe/Tallinn" in row
    assert len(re.findall(r">\d{4}-\d\d-\d\d 09:30:00 Europe/Tallinn <span", row)) == 3, row


def test_a_job_starting_changes_the_live_signature(shop: Shop) -> None:
    """The Running page refreshes when a job starts, though nothing else a page shows changed."""
    from jobstead.dashboard.queries import DashboardQueries

    app = shop.app
    release = threading.Event()

    @app.handler
    def hold() -> None:
        release.wait(20)

    queries = DashboardQueries(app.store)
    job = hold.configure(delay=2).defer()
    try:
        with worker_thread(app):
            wait_for(lambda: _finished(app, shop.ids["queued"]), what="the seed's waiting job to run")
            before = queries.signature()  # the worker registered, nothing else to run, the job not yet due
            assert job.refresh().status is JobStatus.SCHEDULED
            wait_for(lambda: job.refresh().status is JobStatus.RUNNING, what="the job to start")
            assert queries.signature() != before
            release.set()
    finally:
        release.set()


def _finished(app: Any, job_id: int) -> bool:
    record = app.store.queries.get_job(job_id)
    return record is not None and record.status.is_final


def test_every_page_renders_on_an_empty_database(tmp_path: Any, make_client: MakeClient) -> None:
    from jobstead import App

    app = App(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        client = make_client(app)
        for path in [
            "/",
            "/jobs",
            "/running",
            "/failures",
            "/crons",
            "/workers",
            "/batches",
            "/workflows",
            "/activity",
            "/operator",
        ]:
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        assert "No handler and no job yet" in client.get("/").text
        assert "No job matches." in client.get("/jobs").text
    finally:
        app.close()


def test_the_tenant_picker_lists_each_tenant_once_in_order(shop: Shop) -> None:
    from jobstead.dashboard.listing import known_tenants

    email = shop.app.handlers["send_email"]
    for tenant in ["globex", "acme", "initech", "globex", "acme"]:
        email.configure(tenant=tenant).defer(to="t@example.com")
    assert known_tenants(shop.app.store) == ["acme", "globex", "initech"]
