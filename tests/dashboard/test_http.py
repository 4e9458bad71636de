"""The dashboard over HTTP: every page, bad input, and who may do what (401, 403, CSRF, Origin)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from jobstead import App, JobStatus
from jobstead.dashboard import Credentials, User, credentials_from
from tests.conftest import Target
from tests.dashboard.conftest import Shop, TestClient, build_shop, csrf_of, seed

PAGES = [
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
]
TOKEN = "s3cret-token-for-tests"
ORIGIN = {"Origin": "http://testserver"}

MakeClient = Callable[..., TestClient]


def audit_rows(app: App) -> int:
    audit = app.store.tables.audit
    with app.store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit)).scalar_one())


def status_of(app: App, job_id: int) -> JobStatus:
    job = app.store.queries.get_job(job_id)
    assert job is not None
    return job.status


# -- pages ---------------------------------------------------------------------------


def test_every_page_renders_on_both_backends(shop: Shop, make_client: MakeClient) -> None:
    client = make_client(shop.app)
    for path in [*PAGES, f"/jobs/{shop.ids['dead']}", f"/jobs/{shop.ids['succeeded']}"]:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    overview = client.get("/").text
    assert 'data-handler="charge_card"' in overview and 'data-handler="send_email"' in overview
    dead = client.get(f"/jobs/{shop.ids['dead']}").text
    assert "ValueError" in dead and "card declined for order 7" in dead and "Traceback (most recent call last)" in dead
    crons = client.get("/crons").text
    assert 'data-cron="nightly"' in crons and "0 3 * * *" in crons
    assert "No batches" in client.get("/batches").text
    failures = client.get("/failures").text
    assert "ValueError" in failures and "charge_card" in failures


def test_the_batches_page_shows_stats_and_continuations(shop: Shop, make_client: MakeClient) -> None:
    client = make_client(shop.app)
    report = shop.app.get_handler("rebuild_report")
    batch = shop.app.defer_batch([], tenant="acme", on_finish=report.job(full=True))
    page = client.get("/batches").text
    assert f'data-id="{batch.id}"' in page and "succeeded" in page and "on_finish: " in page
    ((_, finish_job),) = batch.continuations
    assert f"/jobs/{finish_job}" in page
    assert f'data-id="{batch.id}"' in client.get("/batches?tenant=acme").text
    assert f'data-id="{batch.id}"' not in client.get("/batches?tenant=globex").text
    assert client.get("/batches?status=nope").status_code == 404
    assert client.get("/batches?bogus=1").status_code == 404


def test_the_jobs_list_filters_and_searches(shop: Shop, make_client: MakeClient) -> None:
    client = make_client(shop.app)

    def ids(query: str) -> set[int]:
        html = client.get("/jobs" + query).text
        return {int(i) for i in re.findall(r'data-job-id="(\d+)"', html)}

    assert ids("?status=dead") == {shop.ids["dead"]}
    assert ids("?status=scheduled") == {shop.ids["scheduled"]}
    assert ids("?status=queued&handler=send_email") == {shop.ids["queued"]}
    assert ids("?queue=mail") == {shop.ids["succeeded"], shop.ids["queued"]}
    assert ids("?tenant=acme") == {shop.ids["queued"]}
    assert ids("?q=welcome-42") == {shop.ids["queued"]}  # by key
    assert ids("?q=BOB@example") == {shop.ids["queued"]}  # argument text, any case
    assert ids(f"?q={shop.ids['dead']}") == {shop.ids["dead"]}  # by id
    assert ids("?error=ValueError") == {shop.ids["dead"]}
    assert ids("?q=100%25") == set()  # % is text, not a wildcard


def test_the_jobs_list_pages_by_keyset(sqlite_shop: Shop, make_client: MakeClient) -> None:
    handler = sqlite_shop.app.handlers["send_email"]
    handler.defer_many([{"to": f"u{i}@example.com"} for i in range(120)])
    client = make_client(sqlite_shop.app)
    seen: list[int] = []
    url: str | None = "/jobs?handler=send_email"
    pages = 0
    while url:
        html = client.get(url).text
        seen += [int(i) for i in re.findall(r'data-job-id="(\d+)"', html)]
        found = re.search(r'href="([^"]+)" rel="next"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert pages == 3
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 122


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/jobs/999999", "no job with id 999999"),
        ("/jobs/abc", "job id must be a positive whole number"),
        ("/jobs/0", "job id must be a positive whole number"),
        ("/jobs/99999999999999999999999", "job id must be a positive whole number"),
        ("/jobs?status=exploded", "no status 'exploded'"),
        ("/jobs?before=yesterday", "before must be a positive whole number"),
        ("/jobs?batch=-3", "batch must be a positive whole number"),
        ("/jobs?colour=red", "unknown filter 'colour'"),
        ("/jobs?q=" + "x" * 300, "q is longer than 200 characters"),
        ("/jobs?handler=%00", "handler contains control characters"),
        ("/activity?before=x", "before must be a positive whole number"),
        ("/failures?page=2", "this page takes no parameter"),
        ("/no/such/page", "no page at /no/such/page"),
    ],
)
def test_bad_input_is_a_404_page_not_a_traceback(
    sqlite_shop: Shop, make_client: MakeClient, path: str, message: str
) -> None:
    response = make_client(sqlite_shop.app).get(path)
    assert response.status_code == 404
    assert message in response.text.replace("&#39;", "'")
    assert "Traceback" not in response.text and "<h1>" in response.text


def test_post_to_a_page_is_405_not_a_traceback(sqlite_shop: Shop, make_client: MakeClient) -> None:
    response = make_client(sqlite_shop.app).post("/failures", headers=ORIGIN)
    assert response.status_code == 405 and "Traceback" not in response.text


def test_the_database_password_is_never_rendered(postgres_target: Target, make_client: MakeClient) -> None:
    # The test server trusts local connections, so a password in the URL is accepted and ignored.
    user_part, _, rest = postgres_target.url.partition("@")
    url = f"{user_part}:Hunter2-never-shown@{rest}"
    shop = seed(build_shop(Target("postgres", url, postgres_target.schema)))
    try:
        client = make_client(shop.app)
        for path in [*PAGES, f"/jobs/{shop.ids['dead']}", "/jobs?status=bogus", "/nope"]:
            body = client.get(path).text
            assert "Hunter2" not in body, path
        assert "***" in client.get("/").text  # the URL is shown, masked
    finally:
        shop.app.close()


# -- actions and who may take them ----------------------------------------------------

# (path, form) for every action; ids are filled in from the shop.
ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("/jobs/{dead}/retry", {}),
    ("/jobs/{queued}/cancel", {}),
    ("/jobs/{succeeded}/delete", {"confirmed": "yes"}),
    ("/jobs/bulk", {"action": "retry", "ids": ["{dead}"]}),
    ("/jobs/bulk", {"action": "cancel", "ids": ["{queued}"]}),
    ("/jobs/bulk", {"action": "retry", "scope": "matching", "filter.status": "dead", "confirmed": "yes"}),
    ("/jobs/bulk", {"action": "cancel", "scope": "matching", "filter.handler": "send_email", "confirmed": "yes"}),
    ("/pause", {"scope": "handler", "name": "charge_card"}),
    ("/pause", {"scope": "queue", "name": "mail"}),
    ("/pause", {"scope": "all", "confirmed": "yes"}),
    ("/resume", {"scope": "all"}),
    ("/crons/nightly/disable", {}),
    ("/crons/nightly/enable", {}),
    ("/crons/nightly/run", {}),
]
ACTION_IDS = [f"{path.split('/')[-1]}:{form.get('action', '')}{form.get('scope', '')}" for path, form in ACTIONS]


def _fill(shop: Shop, path: str, form: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    def sub(v: Any) -> Any:
        if isinstance(v, list):
            return [sub(x) for x in v]
        return str(v).format(**shop.ids)

    return path.format(**shop.ids), {k: sub(v) for k, v in form.items()}


def _state(shop: Shop) -> tuple[Any, ...]:
    store = shop.app.store
    cron = store.crons.get("nightly")
    return (
        len(store.queries.list_jobs()),
        tuple(status_of(shop.app, i) for i in shop.ids.values()),
        tuple(store.control.paused()),
        cron.enabled if cron else None,
        audit_rows(shop.app),
    )


@pytest.fixture
def token_client(sqlite_shop: Shop, make_client: MakeClient) -> TestClient:
    return make_client(sqlite_shop.app, auth=Credentials(token=TOKEN))


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("path", "form"), ACTIONS, ids=ACTION_IDS)
def test_each_action_refused_without_credentials(
    sqlite_shop: Shop, token_client: TestClient, path: str, form: dict[str, Any]
) -> None:
    path, form = _fill(sqlite_shop, path, form)
    before = _state(sqlite_shop)
    csrf = csrf_of(token_client.get("/", headers=bearer()).text)
    for headers in ({}, bearer("wrong-token"), {"Authorization": "Basic " + base64.b64encode(b"x:nope").decode()}):
        response = token_client.post(path, data={**form, "csrf": csrf}, headers={**ORIGIN, **headers})
        assert response.status_code == 401, response.text[:300]
        assert "Traceback" not in response.text
    assert _state(sqlite_shop) == before


@pytest.mark.parametrize(("path", "form"), ACTIONS, ids=ACTION_IDS)
def test_each_action_refused_in_read_only_mode(
    sqlite_shop: Shop, make_client: MakeClient, path: str, form: dict[str, Any]
) -> None:
    path, form = _fill(sqlite_shop, path, form)
    client = make_client(sqlite_shop.app, auth=Credentials(token=TOKEN), read_only=True)
    page = client.get("/", headers=bearer()).text
    assert "read-only" in page and "Pause everything" not in page  # no buttons offered either
    before = _state(sqlite_shop)
    csrf = client.get("/", headers=bearer()).text  # logout form still carries one
    response = client.post(path, data={**form, "csrf": csrf_of(csrf)}, headers={**ORIGIN, **bearer()})
    assert response.status_code == 403 and "read-only" in response.text
    assert _state(sqlite_shop) == before


@pytest.mark.parametrize(("path", "form"), ACTIONS, ids=ACTION_IDS)
def test_each_action_refused_without_the_right_csrf_token_or_from_another_site(
    sqlite_shop: Shop, token_client: TestClient, path: str, form: dict[str, Any]
) -> None:
    path, form = _fill(sqlite_shop, path, form)
    before = _state(sqlite_shop)
    good = csrf_of(token_client.get("/", headers=bearer()).text)
    attempts: list[tuple[dict[str, Any], dict[str, str]]] = [
        (form, {**ORIGIN, **bearer()}),  # no token
        ({**form, "csrf": "0" * 64}, {**ORIGIN, **bearer()}),  # a wrong one
        ({**form, "csrf": good}, {"Origin": "http://evil.example", **bearer()}),  # a foreign page
        ({**form, "csrf": good}, {"Sec-Fetch-Site": "cross-site", **bearer()}),
    ]
    for data, headers in attempts:
        response = token_client.post(path, data=data, headers=headers)
        assert response.status_code == 403, (headers, response.text[:300])
    assert _state(sqlite_shop) == before


@pytest.mark.parametrize(("path", "form"), ACTIONS, ids=ACTION_IDS)
def test_each_action_works_and_is_audited(
    sqlite_shop: Shop, token_client: TestClient, path: str, form: dict[str, Any]
) -> None:
    path, form = _fill(sqlite_shop, path, form)
    csrf = csrf_of(token_client.get("/", headers=bearer()).text)
    response = token_client.post(path, data={**form, "csrf": csrf, "next": "/jobs"}, headers={**ORIGIN, **bearer()})
    assert response.status_code == 303, response.text[:500]
    assert response.headers["location"] == "/jobs"
    assert audit_rows(sqlite_shop.app) == 1
    activity = token_client.get("/activity", headers=bearer()).text
    assert "token" in activity  # who


def test_actions_change_what_they_say(sqlite_shop: Shop, make_client: MakeClient) -> None:
    client = make_client(sqlite_shop.app)
    csrf = csrf_of(client.get("/").text)
    ids = sqlite_shop.ids

    def post(path: str, **form: Any) -> Any:
        response = client.post(path, data={**form, "csrf": csrf}, headers=ORIGIN)
        assert response.status_code in (200, 303), response.text[:500]
        return response

    post(f"/jobs/{ids['dead']}/retry")
    assert status_of(sqlite_shop.app, ids["dead"]) is JobStatus.QUEUED
    post(f"/jobs/{ids['queued']}/cancel")
    assert status_of(sqlite_shop.app, ids["queued"]) is JobStatus.CANCELLED
    post(f"/jobs/{ids['succeeded']}/delete", confirmed="yes")
    assert sqlite_shop.app.store.queries.get_job(ids["succeeded"]) is None
    post("/pause", scope="handler", name="charge_card")
    assert ("handler", "charge_card") in sqlite_shop.app.store.control.paused()
    post("/crons/nightly/disable")
    cron = sqlite_shop.app.store.crons.get("nightly")
    assert cron is not None and not cron.enabled
    # "everything matching" first shows how many, and does nothing until confirmed
    confirm = post("/jobs/bulk", action="cancel", scope="matching", **{"filter.handler": "rebuild_report"})
    assert confirm.status_code == 200 and 'data-count="1"' in confirm.text
    assert status_of(sqlite_shop.app, ids["scheduled"]) is JobStatus.SCHEDULED
    post("/jobs/bulk", action="cancel", scope="matching", confirmed="yes", **{"filter.handler": "rebuild_report"})
    assert status_of(sqlite_shop.app, ids["scheduled"]) is JobStatus.CANCELLED
    outcomes = client.get("/activity").text
    for text in (f"job {ids['dead']} queued again", "handler charge_card paused", "cron nightly disabled", "1 job"):
        assert text in outcomes


@pytest.mark.parametrize(
    ("path", "form", "status", "message"),
    [
        ("/jobs/{succeeded}/retry", {}, 409, "only dead, failed or cancelled jobs can be retried"),
        ("/jobs/{succeeded}/cancel", {}, 409, "only waiting or running jobs can be cancelled"),
        ("/jobs/424242/retry", {}, 404, "no job with id 424242"),
        ("/jobs/abc/retry", {}, 404, "job id must be a positive whole number"),
        ("/jobs/{dead}/explode", {}, 404, "no action 'explode' on jobs"),
        ("/jobs/bulk", {"action": "explode"}, 404, "no bulk action 'explode'"),
        ("/jobs/bulk", {"action": "retry"}, 409, "no job selected"),
        ("/jobs/bulk", {"action": "retry", "ids": ["x"]}, 404, "job id must be a positive whole number"),
        ("/jobs/bulk", {"action": "retry", "scope": "matching", "filter.status": "nope"}, 404, "no status 'nope'"),
        ("/pause", {"scope": "galaxy"}, 404, "no pause scope 'galaxy'"),
        ("/pause", {"scope": "handler"}, 404, "pausing a handler needs its name"),
        ("/crons/nope/disable", {}, 404, "no cron named 'nope'"),
        ("/crons/nightly/explode", {}, 404, "no action 'explode' on crons"),
    ],
)
def test_impossible_actions_say_why(
    sqlite_shop: Shop, make_client: MakeClient, path: str, form: dict[str, Any], status: int, message: str
) -> None:
    path, form = _fill(sqlite_shop, path, form)
    client = make_client(sqlite_shop.app)
    csrf = csrf_of(client.get("/").text)
    response = client.post(path, data={**form, "csrf": csrf}, headers=ORIGIN)
    assert response.status_code == status
    assert message in response.text.replace("&#39;", "'")
    assert "Traceback" not in response.text
    assert audit_rows(sqlite_shop.app) == 0


# -- authentication -------------------------------------------------------------------


def test_pages_need_credentials_and_accept_each_kind(
    sqlite_shop: Shop, tmp_path: Path, make_client: MakeClient
) -> None:
    users = tmp_path / "users"
    users.write_text("# team\nada:lovelace\nbob:builder:read-only\n")
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {TOKEN}  \n")
    client = make_client(sqlite_shop.app, auth=credentials_from(str(token_file), str(users)))
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 401 and 'name="password"' in response.text  # the login form
        assert "Bearer" in response.headers["www-authenticate"]
    assert client.get("/", headers=bearer()).status_code == 200
    assert client.get("/", headers=bearer("nope")).status_code == 401

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert client.get("/", headers=basic("anyone", TOKEN)).status_code == 200  # the token as a password
    assert client.get("/", headers=basic("ada", "lovelace")).status_code == 200
    assert client.get("/", headers=basic("ada", "wrong")).status_code == 401
    assert client.get("/", headers=basic("bob", "builder")).status_code == 200

    # bob is read-only: he sees, and is refused any action with a 403
    bob = basic("bob", "builder")
    page = client.get("/", headers=bob).text
    assert "read-only" in page
    response = client.post(
        "/pause", data={"scope": "all", "confirmed": "yes", "csrf": csrf_of(page)}, headers={**ORIGIN, **bob}
    )
    assert response.status_code == 403 and "read-only access" in response.text

    # a CSRF token is the user's own: ada's is worthless to the token user
    ada_csrf = csrf_of(client.get("/", headers=basic("ada", "lovelace")).text)
    response = client.post(
        "/pause", data={"scope": "all", "confirmed": "yes", "csrf": ada_csrf}, headers={**ORIGIN, **bearer()}
    )
    assert response.status_code == 403


def test_the_login_form_sets_a_session_cookie(sqlite_shop: Shop, make_client: MakeClient) -> None:
    client = make_client(sqlite_shop.app, auth=Credentials(token=TOKEN))
    wrong = client.post("/login", data={"username": "ops", "password": "guess"}, headers=ORIGIN)
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
    evil = client.post("/login", data={"username": "ops", "password": TOKEN}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    ok = client.post("/login", data={"username": "ops", "password": TOKEN, "next": "/crons"}, headers=ORIGIN)
    assert ok.status_code == 303 and ok.headers["location"] == "/crons"
    assert "httponly" in ok.headers["set-cookie"].lower() and "samesite=strict" in ok.headers["set-cookie"].lower()
    page = client.get("/")
    assert page.status_code == 200 and "ops" in page.text
    response = client.post(
        "/pause", data={"scope": "all", "confirmed": "yes", "csrf": csrf_of(page.text)}, headers=ORIGIN
    )
    assert response.status_code == 303
    assert "ops" in client.get("/activity").text
    # an open redirect through next= is refused
    bounce = client.post(
        "/login", data={"username": "ops", "password": TOKEN, "next": "//evil.example/"}, headers=ORIGIN
    )
    assert bounce.headers["location"] == "/"
    client.post("/logout", data={"csrf": csrf_of(page.text)}, headers=ORIGIN)
    client.cookies.clear()
    assert client.get("/").status_code == 401
    # a tampered cookie is no session
    client.cookies.set("jobstead_session", "b3Bz.deadbeef")
    assert client.get("/").status_code == 401


def test_an_auth_callable_decides_when_mounted(sqlite_shop: Shop, make_client: MakeClient) -> None:
    def auth(request: Any) -> User | None:
        role = request.headers.get("x-role")
        return User("sso-" + role, read_only=role == "viewer") if role else None

    client = make_client(sqlite_shop.app, auth=auth)
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"x-role": "viewer"}).status_code == 200
    page = client.get("/", headers={"x-role": "admin"}).text
    response = client.post(
        "/pause",
        data={"scope": "all", "confirmed": "yes", "csrf": csrf_of(page)},
        headers={**ORIGIN, "x-role": "admin"},
    )
    assert response.status_code == 303
    viewer_page = client.get("/", headers={"x-role": "viewer"}).text
    response = client.post(
        "/resume",
        data={"scope": "all", "confirmed": "yes", "csrf": csrf_of(viewer_page)},
        headers={**ORIGIN, "x-role": "viewer"},
    )
    assert response.status_code == 403


def test_it_mounts_under_a_path_in_the_users_own_app(sqlite_shop: Shop) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from jobstead.dashboard import create_dashboard

    async def home(_: Any) -> PlainTextResponse:
        return PlainTextResponse("the user's app")

    host = Starlette(routes=[Route("/", home), Mount("/jobs", create_dashboard(sqlite_shop.app, auth=None))])
    with TestClient(host, follow_redirects=False) as client:
        assert client.get("/").text == "the user's app"
        page = client.get("/jobs/")
        assert page.status_code == 200
        assert 'href="/jobs/jobs"' in page.text and 'href="/jobs/static/dashboard.css"' in page.text
        assert client.get("/jobs/static/dashboard.js").status_code == 200
        assert client.get(f"/jobs/jobs/{sqlite_shop.ids['dead']}").status_code == 200
        response = client.post(
            "/jobs/pause",
            data={"scope": "all", "confirmed": "yes", "csrf": csrf_of(page.text), "next": "/jobs/crons"},
            headers=ORIGIN,
        )
        assert response.status_code == 303 and response.headers["location"] == "/jobs/crons"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("two tokens", "must hold one token"),
    ],
)
def test_a_bad_token_file_is_refused_with_its_name(tmp_path: Path, content: str, message: str) -> None:
    from jobstead.dashboard import CredentialsError

    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(CredentialsError, match=message):
        credentials_from(str(path), None)
    with pytest.raises(CredentialsError, match="cannot read --auth-token-file"):
        credentials_from(str(tmp_path / "missing"), None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ada\n", "line 1: expected user:password"),
        ("ada:x\nada:y\n", "line 2: user 'ada' appears twice"),
        ("# nobody\n", "names no user"),
    ],
)
def test_a_bad_users_file_is_refused_with_its_line(tmp_path: Path, content: str, message: str) -> None:
    from jobstead.dashboard import CredentialsError

    path = tmp_path / "users"
    path.write_text(content)
    with pytest.raises(CredentialsError, match=message):
        credentials_from(None, str(path))


def test_the_event_stream_needs_credentials_and_announces_changes(sqlite_shop: Shop, make_client: MakeClient) -> None:
    client = make_client(sqlite_shop.app, auth=Credentials(token=TOKEN))
    assert client.get("/events").status_code == 401
    csrf = csrf_of(client.get("/", headers=bearer()).text)
    with client.stream("GET", "/events", headers=bearer()) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 3000"
        response = client.post(
            "/pause", data={"scope": "all", "confirmed": "yes", "csrf": csrf}, headers={**ORIGIN, **bearer()}
        )
        assert response.status_code == 303
        for line in lines:
            if line.startswith("event: "):
                assert line == "event: change"
                break


def test_a_cron_whose_name_has_a_slash_can_be_switched(sqlite_shop: Shop, make_client: MakeClient) -> None:
    from jobstead.store import CronDefinition

    sqlite_shop.app.store.crons.add(
        CronDefinition(name="reports/daily", schedule="@daily", handler="rebuild_report", source="database")
    )
    client = make_client(sqlite_shop.app)
    page = client.get("/crons").text
    assert 'action="/crons/reports/daily/disable"' in page
    response = client.post("/crons/reports/daily/disable", data={"csrf": csrf_of(page)}, headers=ORIGIN)
    assert response.status_code == 303
    cron = sqlite_shop.app.store.crons.get("reports/daily")
    assert cron is not None and not cron.enabled
