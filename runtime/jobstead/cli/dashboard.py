"""``jobstead dashboard``: serve the web dashboard, on 127.0.0.1 unless told otherwise.

Secure by default: on any address that is not loopback it refuses to start
without authentication (``--auth-token-file``, ``$JOBSTEAD_DASHBOARD_TOKEN``
or ``--basic-auth-file``), so a typo in ``--host`` cannot publish every job's
arguments to the network.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys
from argparse import Namespace
from typing import Any

from .errors import UsageError
from .loading import store_from_args

DEFAULT_PORT = 8780


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``dashboard`` command to the ``jobstead`` parser."""
    text = "serve the web dashboard (needs jobstead[dashboard])"
    p = commands.add_parser("dashboard", help=text, description=text, parents=[common])
    p.set_defaults(func=dashboard)
    p.add_argument("--app", default=None, help="the app, as module:attribute (or give --database-url)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    p.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    p.add_argument("--base-path", default="", help="serve under this path, e.g. /jobs behind a shared ingress")
    p.add_argument("--auth-token-file", help="file holding the token (also $JOBSTEAD_DASHBOARD_TOKEN)")
    p.add_argument("--basic-auth-file", help="file of user:password[:read-only] lines, one user each")
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="read the cluster's JobHandlers for the Operator page (in a pod: its service account, without this)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="the Operator page reads this namespace's JobHandlers (repeatable; default: every namespace)",
    )


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"ports are 0 to 65535, got {value}")
    return value


def _base_path(raw: str) -> str:
    path = raw.strip().rstrip("/")
    if path and (not path.startswith("/") or "//" in path or any(c in path for c in "?#\\ ")):
        raise UsageError(f"--base-path must be a path like /jobs, not {raw!r}")
    return path


def _kubeconfig(raw: str | None) -> str | None:
    """The kubeconfig to read, checked now: a typo is one line at start, not an error on the Operator page."""
    if not raw:
        return None
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"--kubeconfig {raw}: cannot read it ({exc.strerror})") from None
    if importlib.util.find_spec("kubernetes") is None:
        raise UsageError("--kubeconfig needs the Kubernetes client: pip install 'jobstead[operator]'")
    return raw


def _address(host: str, port: int) -> tuple[Any, ...]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})") from None


def _is_loopback(address: tuple[Any, ...]) -> bool:
    return ipaddress.ip_address(address[4][0]).is_loopback


def _listening_socket(address: tuple[Any, ...], host: str, port: int) -> socket.socket:
    family, kind, proto, _, where = address
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(where)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def dashboard(args: Namespace) -> int:
    try:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import RedirectResponse
        from starlette.routing import Mount, Route

        from ..dashboard import CredentialsError, create_dashboard, credentials_from
        from ..dashboard.serving import StreamClosingServer
    except ImportError as exc:
        hint = f"pip install 'jobstead[dashboard]' ({exc.name} is missing)"
        raise UsageError(f"the dashboard needs its extra: {hint}") from None

    base = _base_path(args.base_path)
    try:
        credentials = credentials_from(args.auth_token_file, args.basic_auth_file)
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None
    kubeconfig = _kubeconfig(args.kubeconfig)
    address = _address(args.host, args.port)
    if not _is_loopback(address) and not credentials.configured:
        raise UsageError(
            f"refusing to serve the dashboard on {args.host}, which is not a loopback address, without "
            "authentication: give --auth-token-file FILE (or $JOBSTEAD_DASHBOARD_TOKEN, or --basic-auth-file)"
        )
    store = store_from_args(args)
    sock = _listening_socket(address, args.host, args.port)
    dashboard_app = create_dashboard(
        store,
        auth=credentials if credentials.configured else None,
        read_only=args.read_only,
        kubeconfig=kubeconfig,
        namespaces=tuple(args.namespace),
    )
    app: Any = dashboard_app
    if base:

        async def to_base(_request: Any) -> RedirectResponse:
            return RedirectResponse(base + "/", status_code=307)

        app = Starlette(routes=[Route(base, to_base), Route("/", to_base), Mount(base, app=app)])
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    mode = " (read-only)" if args.read_only else ""
    print(f"Jobstead dashboard{mode}: http://{shown}:{port}{base}/", flush=True)
    server = StreamClosingServer(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5),
        dashboard_app,
    )
    try:
        server.run(sockets=[sock])
    finally:
        store.close()
    sys.stdout.flush()
    return 0
