"""The workflow pages over HTTP: the list and its filters, the graph, cancel and retry with their guards."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
from typing import Any

import pytest
from sqlalchemy import func, select

from jobstead import App, JobStatus
from jobstead.dashboard.auth import Credentials
from tests.conftest import worker_thread
from tests.dashboard.conftest import Shop, TestClient, csrf_of, wait_for

MakeClient = Callable[..., TestClient]
ORIGIN = {"Origin": "http://testserver"}
TOKEN = "workflow-token-0123456789abcdef"


@dataclass
class Flows:
    app: App
    failed: int  # onboard, a diamond whose charge step died: ship cancelled
    active: int  # album: its first step waits for a worker, the rest are blocked


def defer_flows(shop: Shop) -> Flows:
    app = shop.app
    email, charge = app.handlers["send_email"], app.handlers["charge_card"]
    onboard = app.workflow("onboard", tenant="acme", metadata={"order": 42})
    onboard.add("fetch", email.job(to="fetch@example.com"))
    onboard.add("charge", charge.job(order=42), after=["fetch"])
    onboard.add("reserve", email.job(to="reserve@example.com"), after=["fetch"])
    onboard.add("ship", email.job(to="ship@example.com"), after=["charge", "reserve"])
    failed = onboard.defer()
    with worker_thread(app):
        wait_for(lambda: failed.refresh().status == "failed", what="the onboard workflow to fail")
    album = app.workflow("album", tenant="globex")
    album.add("fetch", email.job(to="album@example.com"))
    album.add("thumb", email.job(to="thumb@example.com"), after=["fetch"])
    album.add("build", email.job(to="build@example.com"), after=["thumb"])
    active = album.defer()
    return Flows(app, failed.id, active.id)


@pytest.fixture
def flows(shop: Shop) -> Flows:
    """On every backend the dashboard's tests run on."""
    return defer_flows(shop)


def audit_actions(app: App) -> list[str]:
    audit = app.store.tables.audit
    with app.store.db.engine.connect() as conn:
        return [str(a) for a in conn.execute(select(audit.c.action).order_by(audit.c.id)).scalars()]


def step_statuses(app: App, workflow_id: int) -> dict[str, str]:
    return {name: str(step.status) for name, step in app.get_workflow(workflow_id).steps.items()}


def boxes(html: str) -> dict[str, tuple[str, str]]:
    """Each drawn step: (its class, where it links)."""
    found = re.findall(r'<a class="step ([^"]+)" data-step="([^"]+)" href="([^"]+)">', html)
    return {name: (cls, href) for cls, name, href in found}


# -- pages -----------------------------------------------------------------------------


def test_the_list_shows_each_workflow_with_its_counts_and_filters_them(flows: Flows, make_client: MakeClient) -> None:
    client = make_client(flows.app)
    page = client.get("/workflows")
    assert page.status_code == 200
    assert f'data-id="{flows.failed}" data-status="failed"' in page.text
    assert f'data-id="{flows.active}" data-status="active"' in page.text
    assert f'href="/workflows/{flows.failed}"' in page.text
    assert 'aria-current="page">Workflows</a>' in page.text
    for query, shown, hidden in [
        ("name=album", flows.active, flows.failed),
        ("tenant=acme", flows.failed, flows.active),
        ("status=failed", flows.failed, flows.active),
        ("status=active", flows.active, flows.failed),
    ]:
        text = client.get(f"/workflows?{query}").text
        assert f'data-id="{shown}"' in text and f'data-id="{hidden}"' not in text, query
    assert 'id="no-workflows"' in client.get("/workflows?name=nothing-by-this-name").text
    for bad, reason in [
        ("status=blocked", "no workflow status"),
        ("colour=red", "unknown filter"),
        ("offset=-1", "offset must be"),
    ]:
        response = client.get(f"/workflows?{bad}")
        assert response.status_code == 404 and reason in response.text, bad


def test_the_list_pages_like_the_other_lists(sqlite_shop: Shop, make_client: MakeClient) -> None:
    app = sqlite_shop.app
    for i in range(55):
        wf = app.workflow("many")
        wf.add("only", app.handlers["send_email"].job(to=f"{i}@example.com"))
        wf.defer()
    client = make_client(app)
    first = client.get("/workflows?name=many").text
    assert first.count('class="workflow') == 50 and "data-live" in first
    older = re.search(r'<a href="([^"]+)" rel="next">older', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert second.count('class="workflow') == 5 and 'rel="next"' not in second
    assert '<a href="/workflows?name=many">newest</a>' in second


def test_the_workflow_page_draws_each_step_coloured_by_status_and_linked_to_its_job(
    flows: Flows, make_client: MakeClient
) -> None:
    client = make_client(flows.app)
    record = flows.app.get_workflow(flows.failed)
    page = client.get(f"/workflows/{flows.failed}")
    assert page.status_code == 200
    drawn = boxes(page.text)
    assert drawn == {name: (f"st-{step.status}", f"/jobs/{step.job_id}") for name, step in record.steps.items()}
    assert drawn["fetch"][0] == "st-succeeded" and drawn["charge"][0] == "st-dead"
    assert drawn["ship"][0] == "st-cancelled"
    assert page.text.count("<path d=") == 4  # fetch->charge, fetch->reserve, charge->ship, reserve->ship
    assert '<span class="badge b-failed" id="workflow-status">failed</span>' in page.text
    reason = record.steps["ship"].reason or ""
    assert "charge" in reason and reason in unescape(page.text)
    assert "<script" not in page.text.split("</head>", 1)[1]  # no script fetched or inlined beyond the page's own
    assert 'data-action="retry"' in page.text and 'data-action="cancel"' not in page.text
    assert '"order": 42' in unescape(page.text)  # the metadata
    job_page = client.get(f"/jobs/{record.steps['charge'].job_id}").text  # and back from a step's job
    assert (
        f'<a href="/workflows/{flows.failed}">workflow {flows.failed}</a>, step <span class="mono">charge</span>'
        in (job_page)
    )


def test_an_active_workflow_shows_blocked_steps_and_offers_cancel(flows: Flows, make_client: MakeClient) -> None:
    client = make_client(flows.app)
    page = client.get(f"/workflows/{flows.active}").text
    drawn = boxes(page)
    assert drawn["fetch"][0] == "st-queued"
    assert drawn["thumb"][0] == drawn["build"][0] == "st-blocked"
    assert 'data-count="blocked"><span class="n">2</span>' in page
    assert 'data-action="cancel"' in page and 'data-action="retry"' not in page
    assert '<section id="workflow" data-live>' in page
    # the list of its steps' jobs, all of them or by status
    steps = {step.job_id for step in flows.app.get_workflow(flows.active).steps.values()}
    assert f'href="/jobs?workflow={flows.active}"' in page
    listed = client.get(f"/jobs?workflow={flows.active}").text
    assert {int(i) for i in re.findall(r'data-job-id="(\d+)"', listed)} == steps
    blocked = client.get(f"/jobs?workflow={flows.active}&status=blocked").text
    assert len(re.findall(r'data-job-id="(\d+)"', blocked)) == 2
    assert client.get("/jobs?workflow=x").status_code == 404


def test_an_unknown_or_malformed_workflow_id_is_a_404_page(flows: Flows, make_client: MakeClient) -> None:
    client = make_client(flows.app)
    missing = client.get("/workflows/99999")
    assert missing.status_code == 404 and "no workflow with id 99999" in missing.text
    for bad in ("abc", "0", "-3", "1" * 30):
        assert client.get(f"/workflows/{bad}").status_code == 404, bad
    response = client.get(f"/workflows/{flows.failed}?x=1")
    assert response.status_code == 404


def test_blocked_is_a_status_wherever_statuses_are_listed(flows: Flows, make_client: MakeClient) -> None:
    client = make_client(flows.app)
    overview = client.get("/").text
    assert 'data-count="blocked"' in overview
    blocked = re.search(r'data-count="blocked">\s*<span class="n">([\d,]+)</span>', overview)
    assert blocked is not None and blocked.group(1) == "2"
    link = '<a href="/jobs?handler=send_email&amp;queue=mail&amp;status=blocked">2</a>'
    assert f'<td class="num" data-status="blocked">{link}' in overview
    jobs = client.get("/jobs?status=blocked").text
    assert '<option value="blocked" selected>' in jobs
    assert jobs.count('data-status="blocked"') == 2


# -- actions ---------------------------------------------------------------------------


def test_cancel_asks_first_then_cancels_the_workflow_and_leaves_an_audit_row(
    flows: Flows, make_client: MakeClient
) -> None:
    client = make_client(flows.app)
    csrf = csrf_of(client.get(f"/workflows/{flows.active}").text)
    path = f"/workflows/{flows.active}/cancel"
    ask = client.post(path, data={"csrf": csrf, "next": f"/workflows/{flows.active}"}, headers=ORIGIN)
    assert ask.status_code == 200 and f"Cancel workflow {flows.active}?" in ask.text
    assert flows.app.get_workflow(flows.active).status == "active" and audit_actions(flows.app) == []
    done = client.post(
        path, data={"csrf": csrf, "confirmed": "yes", "next": f"/workflows/{flows.active}"}, headers=ORIGIN
    )
    assert done.status_code == 303 and done.headers["location"] == f"/workflows/{flows.active}"
    assert flows.app.get_workflow(flows.active).status == "cancelled"
    assert set(step_statuses(flows.app, flows.active).values()) == {"cancelled"}
    assert audit_actions(flows.app) == ["workflow-cancel"]
    page = client.get(f"/workflows/{flows.active}").text
    assert f"workflow {flows.active} cancelled" in page  # the notice
    assert 'data-action="retry"' in page


def test_retry_runs_the_failed_steps_again_and_leaves_an_audit_row(flows: Flows, make_client: MakeClient) -> None:
    client = make_client(flows.app)
    csrf = csrf_of(client.get(f"/workflows/{flows.failed}").text)
    done = client.post(f"/workflows/{flows.failed}/retry", data={"csrf": csrf}, headers=ORIGIN)
    assert done.status_code == 303
    steps = step_statuses(flows.app, flows.failed)
    assert steps["fetch"] == steps["reserve"] == "succeeded"
    assert steps["charge"] in ("queued", "scheduled") and steps["ship"] == "blocked"
    assert flows.app.get_workflow(flows.failed).status == "active"
    assert audit_actions(flows.app) == ["workflow-retry"]


def test_an_unknown_verb_or_workflow_changes_nothing(flows: Flows, make_client: MakeClient) -> None:
    client = make_client(flows.app)
    csrf = csrf_of(client.get(f"/workflows/{flows.active}").text)
    assert client.post(f"/workflows/{flows.active}/explode", data={"csrf": csrf}, headers=ORIGIN).status_code == 404
    missing = client.post("/workflows/99999/retry", data={"csrf": csrf}, headers=ORIGIN)
    assert missing.status_code == 404 and "no workflow with id 99999" in missing.text
    assert audit_actions(flows.app) == []


def _state(flows: Flows) -> tuple[Any, ...]:
    return (
        step_statuses(flows.app, flows.failed),
        step_statuses(flows.app, flows.active),
        len(audit_actions(flows.app)),
    )


ACTIONS = [("cancel", {"confirmed": "yes"}), ("retry", {})]


@pytest.mark.parametrize(("verb", "form"), ACTIONS, ids=[v for v, _ in ACTIONS])
def test_each_workflow_action_is_refused_without_credentials_csrf_same_origin_or_write_access(
    flows: Flows, make_client: MakeClient, verb: str, form: dict[str, str]
) -> None:
    target = flows.active if verb == "cancel" else flows.failed
    path = f"/workflows/{target}/{verb}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    client = make_client(flows.app, auth=Credentials(token=TOKEN))
    good = csrf_of(client.get(f"/workflows/{target}", headers=bearer).text)
    before = _state(flows)
    for data, headers, status in [
        ({**form, "csrf": good}, ORIGIN, 401),
        ({**form, "csrf": good}, {**ORIGIN, "Authorization": "Basic " + base64.b64encode(b"x:no").decode()}, 401),
        (form, {**ORIGIN, **bearer}, 403),
        ({**form, "csrf": "0" * 64}, {**ORIGIN, **bearer}, 403),
        ({**form, "csrf": good}, {"Origin": "http://evil.example", **bearer}, 403),
        ({**form, "csrf": good}, {"Sec-Fetch-Site": "cross-site", **bearer}, 403),
    ]:
        response = client.post(path, data=data, headers=headers)
        assert response.status_code == status, (headers, response.text[:300])
    read_only = make_client(flows.app, auth=Credentials(token=TOKEN), read_only=True)
    page = read_only.get(f"/workflows/{target}", headers=bearer).text
    assert f'data-action="{verb}"' not in page
    response = read_only.post(path, data={**form, "csrf": csrf_of(page)}, headers={**ORIGIN, **bearer})
    assert response.status_code == 403 and "read-only" in response.text
    assert _state(flows) == before
    response = client.post(path, data={**form, "csrf": good}, headers={**ORIGIN, **bearer})
    assert response.status_code == 303
    assert _state(flows) != before


def test_a_step_of_a_workflow_counts_in_the_overview_as_blocked_not_succeeded(
    flows: Flows, make_client: MakeClient
) -> None:
    jobs = flows.app.store.tables.jobs
    with flows.app.store.db.engine.connect() as conn:
        succeeded = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.SUCCEEDED.value)
        ).scalar_one()
    overview = make_client(flows.app).get("/").text
    shown = re.search(r'data-count="succeeded">\s*<span class="n">([\d,]+)</span>', overview)
    assert shown is not None and int(shown.group(1).replace(",", "")) == succeeded
