"""HTTP details every route shares: same-origin checks, safe redirects, security headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from .auth import SESSION_COOKIE
from .filters import BadInput


def no_params(request: Request) -> None:
    if request.query_params:
        raise BadInput(f"this page takes no parameter (got {next(iter(request.query_params))[:40]!r})")


def with_params(request: Request, **changes: Any) -> str:
    params = {**dict(request.query_params), **{k: str(v) for k, v in changes.items() if v is not None}}
    return str(request.url.path + "?" + urlencode(params))


def without_param(request: Request, name: str) -> str:
    params = {k: v for k, v in request.query_params.items() if k != name}
    return str(request.url.path + ("?" + urlencode(params) if params else ""))


def next_path(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(raw: str, base: str) -> str | None:
    """Only a path of this dashboard: never another host (``//evil``, ``https://...``)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return None
    base = base.rstrip("/")
    if base and not (raw == base or raw.startswith(base + "/") or raw.startswith(base + "?")):
        return None
    return raw


def list_referrer(request: Request) -> str | None:
    """The jobs list (with its filter) this page was opened from, for the job page's back link."""
    referer = request.headers.get("referer", "")
    parts = urlsplit(referer)
    base = request.scope.get("root_path", "").rstrip("/")
    if parts.netloc != request.headers.get("host", "") or parts.path != base + "/jobs":
        return None
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""), base)


def same_origin(request: Request) -> bool:
    """A POST from a page of this dashboard; a browser tells us with Origin and Sec-Fetch-Site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or a very old one: the CSRF token still has to match
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.netloc == host and parts.scheme in ("http", "https")


def sent_credentials(request: Request) -> bool:
    return "authorization" in request.headers or SESSION_COOKIE in request.cookies


def secure_headers(response: Response) -> None:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
