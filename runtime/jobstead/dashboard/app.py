"""The ASGI application: routes, the guard every request passes, and the pages' rendering.

Every request is authenticated first (401 without credentials). Every POST is
then checked, in order: the Origin (or ``Sec-Fetch-Site``) must be this site,
the user and the dashboard must not be read-only, and the form's CSRF token
must be the user's; any failure is a 403 and changes nothing. Pages are plain
HTML: forms act without JavaScript, which only makes pages live.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import App
from ..cron.schedule import CronSchedule, InvalidSchedule
from ..errors import BatchNotFound, JobNotFound, WorkflowNotFound
from ..status import JobStatus
from ..store import Store
from ..store.records import BATCH_STATUSES, WORKFLOW_STATUSES
from . import filters, graph, listing, render, running, schedules, web
from .actions import BULK_VERBS, PAUSE_SCOPES, ActionRefused, Actions
from .auth import SESSION_COOKIE, SESSION_SECONDS, AuthCallable, Authenticator, Credentials, Signer, User
from .cluster import Cluster, operator_page
from .depth import queue_depth
from .filters import BadInput
from .live import MIN_INTERVAL, ChangeFeed, Shared, store_listener
from .queries import CANCELLABLE, RETRYABLE, SEARCH_WINDOW, DashboardQueries, Overview

logger = logging.getLogger("jobstead.dashboard")

NOTICE_COOKIE = "jobstead_notice"
#: Workflows a page of the list shows.
WORKFLOWS_PAGE = 50
#: A workflow page's counts, in the order a step lives through them.
STEP_COUNTS = ("blocked", "scheduled", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")
#: The step table starts open up to this many steps (the graph is the view of larger ones).
STEP_TABLE_OPEN = 50
#: Rows of the step table at most: every step is also a box (a link with its name and status) in the
#: graph, and ten thousand rows would double the page's weight and time for no reader.
STEP_TABLE_ROWS = 1000
LIVE_HEADER = "x-jobstead-live"


class Refused(Exception):
    """A request turned away before anything ran: its status code and the reason shown."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Settings:
    read_only: bool
    title: str
    database: str


Endpoint = Callable[[Request], Awaitable[Response]]


class Dashboard:
    def __init__(
        self,
        store: Store,
        authenticator: Authenticator,
        settings: Settings,
        *,
        poll_interval: float,
        cluster: Cluster | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.auth = authenticator
        self.settings = settings
        self.queries = DashboardQueries(store)
        self.actions = Actions(store, self.queries)
        listen = store_listener(store) if store.supports_listen else None
        self.feed = ChangeFeed(self.queries, poll_interval=poll_interval, listen=listen)
        self.templates = render.environment()
        self.shared_overview = Shared(self._overview_data, max_age=MIN_INTERVAL)
        self.tenant_names = listing.TenantNames(store)

    def _overview_data(self) -> tuple[Overview, list[int], datetime]:
        """The counts and the two charts' series, computed once for every tab at one feed version."""
        now = self.store.clock()
        start = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
        return self.queries.overview(), queue_depth(self.store, start, now), start

    # -- responses ---------------------------------------------------------------

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        user: User | None,
        status: int = 200,
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        notice = request.cookies.get(NOTICE_COOKIE)
        full = {
            **context,
            "request": request,
            "base": base,
            "user": user,
            "can_act": user is not None and not (user.read_only or self.settings.read_only),
            "read_only": self.settings.read_only or (user is not None and user.read_only),
            "csrf": self.auth.signer.csrf_token(user) if user is not None else "",
            "settings": self.settings,
            "notice": unquote(notice) if notice else None,
            "open_auth": self.auth.open,
            "now": self.store.clock(),
        }
        body = self.templates.get_template(template).render(full)
        response = HTMLResponse(body, status_code=status)
        web.secure_headers(response)
        if notice and request.headers.get(LIVE_HEADER) is None:
            response.delete_cookie(NOTICE_COOKIE, path=base or "/")
        return response

    def refusal(self, request: Request, exc: Refused, user: User | None) -> HTMLResponse:
        if exc.status == 401:
            response = self.page(
                request,
                "login.html" if self.auth.has_login_form else "error.html",
                {"title": "Sign in", "message": exc.reason, "next": web.next_path(request), "status": 401},
                user=None,
                status=401,
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="jobstead"'
            return response
        return self.page(
            request,
            "error.html",
            {"title": _TITLES.get(exc.status, "Error"), "message": exc.reason, "status": exc.status},
            user=user,
            status=exc.status,
        )

    def redirect_back(self, request: Request, form: FormData, message: str) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        target = web.safe_next(str(form.get("next", "")), base) or (base + "/")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            NOTICE_COOKIE, quote(message), max_age=60, path=base or "/", httponly=True, samesite="strict"
        )
        return response

    # -- the guard ---------------------------------------------------------------

    async def user_or_refuse(self, request: Request) -> User:
        user = await self.auth.user(request)
        if user is None:
            reason = "wrong credentials" if web.sent_credentials(request) else "sign in to see the dashboard"
            raise Refused(401, reason)
        return user

    async def check_post(self, request: Request, user: User, form: FormData) -> None:
        if not web.same_origin(request):
            raise Refused(403, "refused: the request comes from another site")
        if self.settings.read_only:
            raise Refused(403, "refused: this dashboard is read-only")
        if user.read_only:
            raise Refused(403, f"refused: {user.name} has read-only access")
        if not self.auth.signer.check_csrf(user, str(form.get("csrf", ""))):
            raise Refused(403, "refused: the form's CSRF token is missing or wrong; reload the page and try again")

    def view(self, build: Callable[[Request, User], tuple[str, dict[str, Any]]]) -> Endpoint:
        """A GET page: authenticate, build its context on a thread (the store is synchronous), render."""

        async def endpoint(request: Request) -> Response:
            user: User | None = None
            try:
                user = await self.user_or_refuse(request)
                template, context = await run_in_threadpool(build, request, user)
                return self.page(request, template, context, user=user)
            except Refused as exc:
                return self.refusal(request, exc, user)
            except (BadInput, JobNotFound) as exc:
                return self.refusal(request, Refused(404, str(exc)), user)

        return endpoint

    def action(self, run: Callable[[Request, User, FormData], Response | str]) -> Endpoint:
        """A POST: authenticate, check origin, role and CSRF, then act on a thread and redirect back."""

        async def endpoint(request: Request) -> Response:
            user: User | None = None
            try:
                user = await self.user_or_refuse(request)
                async with request.form(max_files=0, max_fields=10_000) as form:
                    await self.check_post(request, user, form)
                    result = await run_in_threadpool(run, request, user, form)
                    if isinstance(result, Response):
                        return result
                    self.shared_overview.clear()
                    self.feed.bump()
                    return self.redirect_back(request, form, result)
            except Refused as exc:
                return self.refusal(request, exc, user)
            except (BadInput, JobNotFound) as exc:
                return self.refusal(request, Refused(404, str(exc)), user)
            except ActionRefused as exc:
                return self.refusal(request, Refused(409, str(exc)), user)

        return endpoint

    # -- pages -------------------------------------------------------------------

    def overview(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        overview, depth, start = self.shared_overview.get(self.feed.version)
        return "overview.html", {
            "title": "Overview",
            "overview": overview,
            "depth": depth,
            "chart_start": start,
            "live": True,
        }

    def jobs(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        params = dict(request.query_params)
        where = filters.job_filter(params)
        before = filters.optional_id(params, "before")
        page = self.queries.jobs(where, before=before)
        handlers, queues = self.queries.known_names()
        return "jobs.html", {
            "title": "Jobs",
            "page": page,
            "details": listing.row_details(self.store, [row.id for row in page.rows]),
            "where": where,
            "statuses": [s.value for s in JobStatus],
            "handlers": handlers,
            "queues": queues,
            "tenants": self.tenant_names.get(),
            "before": before,
            "next_url": web.with_params(request, before=page.next_before) if page.next_before else None,
            "live": before is None,
            "search_window": SEARCH_WINDOW,
        }

    def job(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        job_id = filters.job_id(request.path_params["job_id"])
        detail = self.queries.job(job_id)
        if detail is None:
            raise JobNotFound(f"no job with id {job_id} (it never existed, or was deleted or pruned)")
        definition = self.store.registry.handler(detail.job.handler)
        return "job.html", {
            "title": f"Job {job_id}",
            "detail": detail,
            "job": detail.job,
            "max_attempts": detail.job.max_attempts or (definition.max_attempts if definition else None),
            "back": web.list_referrer(request) or request.scope.get("root_path", "").rstrip("/") + "/jobs",
            "retryable": detail.job.status in RETRYABLE,
            "cancellable": detail.job.status in CANCELLABLE and not detail.job.cancel_requested,
            "live": True,
        }

    def failures(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        return "failures.html", {"title": "Failures", "groups": self.queries.failures(), "live": True}

    def crons(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        now = self.store.clock()
        crons = self.queries.crons()
        return "crons.html", {
            "title": "Crons",
            "crons": crons,
            "described": {c.name: schedules.describe(c.schedule) for c in crons},
            "upcoming": {c.name: _next_fires(c.schedule, c.timezone, now) if c.enabled else [] for c in crons},
            "live": True,
        }

    def workers(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        return "workers.html", {
            "title": "Workers",
            "workers": self.queries.workers(),
            "jobs_of": running.jobs_by_worker(self.store),
            "live": True,
        }

    def running_page(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        return "running.html", {
            "title": "Running",
            "jobs": running.running_jobs(self.store),
            "limit": running.RUNNING_LIMIT,
            "live": True,
        }

    def batch(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        batch_id = filters.job_id(request.path_params["batch_id"], "batch id")
        try:
            batch = self.store.batches.get(batch_id)
        except BatchNotFound:
            raise BadInput(f"no batch with id {batch_id}") from None
        return "batch.html", {"title": f"Batch {batch_id}", "b": batch, "live": True}

    def batches(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        params = dict(request.query_params)
        unknown = set(params) - {"tenant", "status"}
        if unknown:
            raise BadInput(f"unknown parameter {sorted(unknown)[0][:40]!r}")
        status = params.get("status") or None
        if status is not None and status not in BATCH_STATUSES:
            raise BadInput(f"status {status[:40]!r} is not a batch status")
        tenant = params.get("tenant") or None
        view = self.queries.batches(tenant=tenant, status=status)
        return "batches.html", {
            "title": "Batches",
            "batches": view,
            "tenant": tenant or "",
            "status": status or "",
            "statuses": BATCH_STATUSES,
            "live": True,
        }

    def workflows_page(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        params = dict(request.query_params)
        where = filters.workflow_filter(params)
        offset = filters.offset(params)
        found = self.store.workflows.list(
            name=where.name,
            tenant=where.tenant,
            status=where.status,
            limit=WORKFLOWS_PAGE + 1,
            offset=offset,
            steps=False,
        )
        older = len(found) > WORKFLOWS_PAGE
        return "workflows.html", {
            "title": "Workflows",
            "rows": found[:WORKFLOWS_PAGE],
            "name": where.name or "",
            "tenant": where.tenant or "",
            "status": where.status or "",
            "statuses": WORKFLOW_STATUSES,
            "offset": offset,
            "next_url": web.with_params(request, offset=offset + WORKFLOWS_PAGE) if older else None,
            "newest_url": web.without_param(request, "offset") if offset else None,
            "live": offset == 0,
        }

    def workflow(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        web.no_params(request)
        workflow_id = filters.job_id(request.path_params["workflow_id"], "workflow id")
        try:
            record = self.store.workflows.get(workflow_id)
        except WorkflowNotFound:
            raise BadInput(f"no workflow with id {workflow_id}") from None
        base = request.scope.get("root_path", "").rstrip("/")
        nodes = graph.nodes_of(record.steps.values())
        stats = record.stats
        return "workflow.html", {
            "title": f"Workflow {workflow_id}",
            "w": record,
            "steps": nodes[:STEP_TABLE_ROWS],
            "step_count": len(nodes),
            "drawing": graph.svg(nodes, base=base, label=f"The steps of workflow {workflow_id} ({record.name})"),
            "counted": STEP_COUNTS,
            "legend": [name for name in STEP_COUNTS if getattr(stats, name)],
            "open_table": STEP_TABLE_OPEN,
            "cancellable": record.status == "active",
            "retryable": stats.failed + stats.dead + stats.cancelled > 0,
            "live": True,
        }

    def activity(self, request: Request, user: User) -> tuple[str, dict[str, Any]]:
        params = dict(request.query_params)
        unknown = sorted(set(params) - {"before"})
        if unknown:
            raise BadInput(f"unknown parameter {unknown[0]!r}")
        before = filters.optional_id(params, "before")
        rows, next_before = self.queries.activity(before=before)
        return "activity.html", {
            "title": "Activity",
            "rows": rows,
            "next_url": web.with_params(request, before=next_before) if next_before else None,
            "live": before is None,
        }

    # -- actions -----------------------------------------------------------------

    def confirm(
        self,
        request: Request,
        user: User,
        form: FormData,
        *,
        question: str,
        action: str,
        label: str,
        back: str,
        fields: Mapping[str, str] | None = None,
    ) -> Response:
        """The page a destructive button leads to: the same form again, with ``confirmed=yes``."""
        base = request.scope.get("root_path", "").rstrip("/")
        return self.page(
            request,
            "confirm_action.html",
            {
                "title": "Confirm",
                "question": question,
                "action": action,
                "label": label,
                "fields": dict(fields or {}),
                "next": web.safe_next(str(form.get("next", "")), base) or base + back,
                "back": base + back,
            },
            user=user,
        )

    def job_action(self, request: Request, user: User, form: FormData) -> Response | str:
        job_id = filters.job_id(request.path_params["job_id"])
        verb = request.path_params["verb"]
        if verb == "retry":
            return self.actions.retry(user, job_id).message
        if verb == "cancel":
            return self.actions.cancel(user, job_id).message
        if verb == "delete":
            if form.get("confirmed") != "yes":
                return self.confirm(
                    request,
                    user,
                    form,
                    question=f"Delete job {job_id} and its attempts? This cannot be undone.",
                    action=f"/jobs/{job_id}/delete",
                    label=f"Yes, delete job {job_id}",
                    back=f"/jobs/{job_id}",
                )
            return self.actions.delete(user, job_id).message
        raise BadInput(f"no action {verb!r} on jobs; actions are retry, cancel, delete")

    def workflow_action(self, request: Request, user: User, form: FormData) -> Response | str:
        workflow_id = filters.job_id(request.path_params["workflow_id"], "workflow id")
        verb = request.path_params["verb"]
        if verb == "retry":
            return self.actions.retry_workflow(user, workflow_id).message
        if verb == "cancel":
            if form.get("confirmed") != "yes":
                return self.confirm(
                    request,
                    user,
                    form,
                    question=f"Cancel workflow {workflow_id}? Its blocked and waiting steps are cancelled at once, "
                    "and its running steps are told to stop.",
                    action=f"/workflows/{workflow_id}/cancel",
                    label=f"Yes, cancel workflow {workflow_id}",
                    back=f"/workflows/{workflow_id}",
                )
            return self.actions.cancel_workflow(user, workflow_id).message
        raise BadInput(f"no action {verb[:40]!r} on workflows; actions are retry, cancel")

    def bulk(self, request: Request, user: User, form: FormData) -> Response | str:
        verb = str(form.get("action", ""))
        if verb not in BULK_VERBS:
            raise BadInput(f"no bulk action {verb[:40]!r}; bulk actions are {', '.join(BULK_VERBS)}")
        if form.get("scope") == "matching":
            where = filters.filter_from_form({k: str(v) for k, v in form.multi_items()})
            if form.get("confirmed") != "yes":
                statuses = RETRYABLE if verb == "retry" else CANCELLABLE
                count = self.queries.count_matching(where, statuses)
                return self.page(
                    request,
                    "confirm.html",
                    {"title": "Confirm", "verb": verb, "where": where, "count": count, "next": form.get("next", "")},
                    user=user,
                )
            return self.actions.bulk_matching(user, verb, where).message
        ids = [filters.job_id(str(raw)) for raw in form.getlist("ids")]
        if not ids:
            raise ActionRefused("no job selected: tick the jobs first, or act on everything matching the filter")
        return self.actions.bulk(user, verb, ids).message

    def pause_action(self, request: Request, user: User, form: FormData) -> Response | str:
        verb = "pause" if request.url.path.endswith("/pause") else "resume"
        scope = str(form.get("scope", ""))
        name = str(form.get("name", "")).strip()
        if scope not in PAUSE_SCOPES:
            raise BadInput(f"no pause scope {scope[:40]!r}; scopes are {', '.join(PAUSE_SCOPES)}")
        if scope != "all" and not name:
            raise BadInput(f"pausing a {scope} needs its name")
        if verb == "pause":
            if scope == "all" and form.get("confirmed") != "yes":
                return self.confirm(
                    request,
                    user,
                    form,
                    question="Pause everything? Workers finish the jobs they are running and start no other job, "
                    "of any handler or queue, until you resume.",
                    action="/pause",
                    label="Yes, pause everything",
                    back="/",
                    fields={"scope": "all"},
                )
            return self.actions.pause(user, scope, name).message
        return self.actions.resume(user, scope, name).message

    def cron_action(self, request: Request, user: User, form: FormData) -> str:
        name = request.path_params["name"]
        verb = request.path_params["verb"]
        if verb == "run":
            return self.actions.run_cron_now(user, name).message
        if verb not in ("enable", "disable"):
            raise BadInput(f"no action {verb[:40]!r} on crons; actions are enable, disable, run")
        return self.actions.set_cron(user, name, verb == "enable").message

    # -- sign-in and live updates ------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not self.auth.has_login_form:
            return self.refusal(request, Refused(404, "this dashboard has no login form"), None)
        next_path = web.safe_next(request.query_params.get("next", ""), request.scope.get("root_path", ""))
        return self.page(
            request,
            "login.html",
            {"title": "Sign in", "next": next_path or "", "message": None, "status": 200},
            user=None,
        )

    async def login(self, request: Request) -> Response:
        if not self.auth.has_login_form:
            return self.refusal(request, Refused(404, "this dashboard has no login form"), None)
        if not web.same_origin(request):
            return self.refusal(request, Refused(403, "refused: the request comes from another site"), None)
        async with request.form(max_files=0, max_fields=10) as form:
            name = str(form.get("username", "")).strip()
            password = str(form.get("password", ""))
            next_raw = str(form.get("next", ""))
        assert self.auth.credentials is not None
        user = self.auth.credentials.check_password(name, password) if password else None
        if user is None:
            return self.refusal(request, Refused(401, "wrong user name or password"), None)
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(web.safe_next(next_raw, base) or base + "/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.signer.session_cookie(user),
            max_age=SESSION_SECONDS,
            path=base or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        user: User | None = None
        try:
            user = await self.user_or_refuse(request)
            async with request.form(max_files=0, max_fields=10) as form:
                if not web.same_origin(request) or not self.auth.signer.check_csrf(user, str(form.get("csrf", ""))):
                    raise Refused(403, "refused: the form's CSRF token is missing or wrong")
        except Refused as exc:
            return self.refusal(request, exc, user)
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(base + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base or "/")
        return response

    async def events(self, request: Request) -> Response:
        try:
            await self.user_or_refuse(request)
        except Refused as exc:
            return self.refusal(request, exc, None)

        async def stream() -> Any:
            yield "retry: 3000\n\n"
            async for version in self.feed.changes():
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n" if version < 0 else f"event: change\ndata: {version}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- assembly ----------------------------------------------------------------

    def asgi(self) -> Starlette:
        static = StaticFiles(packages=[("jobstead.dashboard", "static")])
        routes = [
            Route("/", self.view(self.overview), name="overview"),
            Route("/jobs", self.view(self.jobs), name="jobs"),
            Route("/jobs/bulk", self.action(self.bulk), methods=["POST"]),
            Route("/jobs/{job_id}", self.view(self.job), name="job"),
            Route("/jobs/{job_id}/{verb}", self.action(self.job_action), methods=["POST"]),
            Route("/failures", self.view(self.failures)),
            Route("/crons", self.view(self.crons)),
            Route("/crons/{name:path}/{verb}", self.action(self.cron_action), methods=["POST"]),
            Route("/workers", self.view(self.workers)),
            Route("/running", self.view(self.running_page)),
            Route("/batches", self.view(self.batches)),
            Route("/batches/{batch_id}", self.view(self.batch)),
            Route("/workflows", self.view(self.workflows_page)),
            Route("/workflows/{workflow_id}", self.view(self.workflow)),
            Route("/workflows/{workflow_id}/{verb}", self.action(self.workflow_action), methods=["POST"]),
            Route("/activity", self.view(self.activity)),
            Route("/operator", self.view(operator_page(self.cluster))),
            Route("/pause", self.action(self.pause_action), methods=["POST"]),
            Route("/resume", self.action(self.pause_action), methods=["POST"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/events", self.events),
            Route("/healthz", _healthz),
            Mount("/static", app=static, name="static"),
        ]

        async def not_found(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            if status == 405:
                return self.refusal(request, Refused(405, "that address does not take this method"), None)
            if status != 404:
                logger.error("dashboard error %s on %s", status, request.url.path)
                return self.refusal(request, Refused(500, "the dashboard failed to answer; see its log"), None)
            return self.refusal(request, Refused(404, f"no page at {request.url.path[:100]}"), None)

        async def crashed(request: Request, exc: Exception) -> Response:
            logger.exception("dashboard error on %s", request.url.path)
            return self.refusal(request, Refused(500, "the dashboard failed to answer; see its log"), None)

        app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: crashed})
        app.state.dashboard = self
        return app


def _next_fires(schedule: str, timezone: str, now: datetime, count: int = 3) -> list[datetime]:
    """The cron's next ``count`` fire times, or none if its schedule no longer parses."""
    try:
        return list(islice(CronSchedule.parse(schedule, timezone).fires_after(now), count))
    except InvalidSchedule:
        return []


async def _healthz(_request: Request) -> Response:
    """For probes: answers without credentials, and says nothing about any job."""
    return PlainTextResponse("ok")


_TITLES = {403: "Refused", 404: "Not found", 405: "Not allowed", 409: "Not possible", 500: "Error"}


def close_streams(asgi: Any) -> None:
    """End the dashboard's open event streams, so a server can stop without cutting them off."""
    dashboard = getattr(getattr(asgi, "state", None), "dashboard", None)
    if isinstance(dashboard, Dashboard):
        dashboard.feed.close()


def create_dashboard(
    jobstead_app: App | Store,
    *,
    auth: Credentials | AuthCallable | None,
    read_only: bool = False,
    title: str = "Jobstead",
    poll_interval: float | None = None,
    kubeconfig: str | None = None,
    namespaces: tuple[str, ...] = (),
) -> Starlette:
    """The dashboard as an ASGI app, to mount in your own: ``app.mount("/jobs", create_dashboard(...))``.

    ``auth`` is required, so that mounting it is a decision: a ``Credentials``
    (token and/or named users, with a login form), your own callable taking
    the Starlette ``Request`` and returning a ``User`` or ``None`` (sync or
    async), or ``None`` for no authentication at all (only behind something
    that authenticates, or on a loopback address).

    The operator page reads the JobHandlers of the cluster ``kubeconfig``
    names, or of the cluster the dashboard runs in (its service account), in
    ``namespaces`` or every namespace; without either it says how to give it one.
    """
    store = jobstead_app.store if isinstance(jobstead_app, App) else jobstead_app
    store.ensure_schema()
    credentials = auth if isinstance(auth, Credentials) else None
    callback = None if auth is None or isinstance(auth, Credentials) else auth
    key = credentials.signing_key() if credentials is not None else secrets.token_bytes(32)
    authenticator = Authenticator(credentials, callback, Signer(key))
    settings = Settings(
        read_only=read_only,
        title=title,
        database=store.db.engine.url.render_as_string(hide_password=True),
    )
    interval = poll_interval if poll_interval is not None else (2.0 if store.supports_listen else 1.0)
    cluster = Cluster.detect(kubeconfig, namespaces)
    return Dashboard(store, authenticator, settings, poll_interval=interval, cluster=cluster).asgi()
