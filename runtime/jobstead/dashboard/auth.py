"""Who is asking: tokens, named users, session cookies and CSRF tokens.

Every secret is compared in constant time. Session cookies and CSRF tokens are
HMACs keyed by a secret derived from the configured credentials, so every
replica behind one Service accepts the cookies of the others, and changing the
token signs everyone out. Without credentials (loopback only) the key is random
per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request

TOKEN_ENV = "JOBSTEAD_DASHBOARD_TOKEN"
SESSION_COOKIE = "jobstead_session"
SESSION_SECONDS = 12 * 3600
READ_ONLY_ROLE = "read-only"
ROLES = ("admin", READ_ONLY_ROLE)


class CredentialsError(ValueError):
    """A token or users file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class User:
    """Someone the dashboard let in; ``read_only`` users see everything and change nothing."""

    name: str
    read_only: bool = False


#: ``auth=`` of ``create_dashboard``: the host app's own check, sync or async; ``None`` refuses.
AuthCallable = Callable[[Request], "User | Awaitable[User | None] | None"]


@dataclass(frozen=True)
class _Account:
    password: str
    read_only: bool


@dataclass(frozen=True)
class Credentials:
    """A shared token and/or named users (``user:password[:read-only]``)."""

    token: str | None = None
    users: Mapping[str, _Account] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise CredentialsError("the dashboard token is empty")

    @property
    def configured(self) -> bool:
        return self.token is not None or bool(self.users)

    def check_token(self, token: str) -> User | None:
        if self.token is not None and hmac.compare_digest(token.encode(), self.token.encode()):
            return User("token")
        return None

    def check_password(self, name: str, password: str) -> User | None:
        """A named user's password, or (any user name) the shared token."""
        account = self.users.get(name)
        if account is not None and hmac.compare_digest(password.encode(), account.password.encode()):
            return User(name, read_only=account.read_only)
        if self.check_token(password) is not None:
            return User(name or "token")
        return None

    def signing_key(self) -> bytes:
        if not self.configured:
            return secrets.token_bytes(32)
        material = [self.token or ""] + [f"{n}:{a.password}:{a.read_only}" for n, a in sorted(self.users.items())]
        return hashlib.sha256(("jobstead-dashboard\0" + "\0".join(material)).encode()).digest()


def read_token_file(path: str | Path) -> str:
    """The file holds one token; whitespace around it is ignored."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CredentialsError(f"cannot read --auth-token-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"--auth-token-file {path} is not UTF-8 text") from None
    if not token:
        raise CredentialsError(f"--auth-token-file {path} is empty")
    if any(c.isspace() for c in token):
        raise CredentialsError(f"--auth-token-file {path} must hold one token (found whitespace inside it)")
    return token


def read_users_file(path: str | Path) -> dict[str, _Account]:
    """``user:password`` lines, ``user:password:read-only`` for a read-only user; ``#`` comments."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CredentialsError(f"cannot read --basic-auth-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"--basic-auth-file {path} is not UTF-8 text") from None
    users: dict[str, _Account] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        read_only = False
        for role in ROLES:
            if rest.endswith(":" + role):
                rest, read_only = rest[: -len(role) - 1], role == READ_ONLY_ROLE
                break
        if not sep or not name or not rest:
            raise CredentialsError(f"--basic-auth-file {path} line {number}: expected user:password[:read-only]")
        if name in users:
            raise CredentialsError(f"--basic-auth-file {path} line {number}: user {name!r} appears twice")
        users[name] = _Account(rest, read_only)
    if not users:
        raise CredentialsError(f"--basic-auth-file {path} names no user")
    return users


def credentials_from(
    token_file: str | None, users_file: str | None, env: Mapping[str, str] = os.environ
) -> Credentials:
    """``--auth-token-file`` first, else ``$JOBSTEAD_DASHBOARD_TOKEN``; plus ``--basic-auth-file`` users."""
    token = read_token_file(token_file) if token_file else (env.get(TOKEN_ENV, "").strip() or None)
    users = read_users_file(users_file) if users_file else {}
    return Credentials(token=token, users=users)


class Signer:
    """Session cookies and CSRF tokens: HMAC-SHA256 over what they say."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, user: User, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        body = f"{user.name}\0{int(user.read_only)}\0{expires}"
        encoded = base64.urlsafe_b64encode(body.encode()).decode()
        return f"{encoded}.{self._mac('session:' + body)}"

    def user_from_cookie(self, cookie: str, now: float | None = None) -> User | None:
        encoded, _, mac = cookie.partition(".")
        try:
            body = base64.urlsafe_b64decode(encoded.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac("session:" + body)):
            return None
        parts = body.split("\0")
        if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < (now or time.time()):
            return None
        name, read_only, _ = parts
        return User(name, read_only=read_only == "1")

    def csrf_token(self, user: User) -> str:
        """Bound to the user: a token taken from one user's page is worthless to another."""
        return self._mac(f"csrf:{user.name}:{int(user.read_only)}")

    def check_csrf(self, user: User, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf_token(user))


class Authenticator:
    """Finds the user of a request from a bearer token, basic auth, a session cookie or ``auth=``."""

    def __init__(self, credentials: Credentials | None, callback: AuthCallable | None, signer: Signer) -> None:
        self.credentials = credentials
        self.callback = callback
        self.signer = signer

    @property
    def open(self) -> bool:
        """No authentication at all: only the CLI on a loopback address allows this."""
        return self.callback is None and (self.credentials is None or not self.credentials.configured)

    @property
    def has_login_form(self) -> bool:
        return self.credentials is not None and self.credentials.configured

    async def user(self, request: Request) -> User | None:
        if self.open:
            return User("local")
        if self.callback is not None:
            found = self.callback(request)
            if inspect.isawaitable(found):
                found = await found
            return found if isinstance(found, User) else None
        assert self.credentials is not None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return self.credentials.check_token(value.strip())
        if scheme.lower() == "basic" and value.strip():
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            name, sep, password = decoded.partition(":")
            return self.credentials.check_password(name, password) if sep else None
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return self.signer.user_from_cookie(cookie)
        return None
