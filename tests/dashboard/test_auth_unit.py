"""Session cookies and CSRF tokens: what a forger or a stale browser gets back (nothing)."""

from __future__ import annotations

import base64
from pathlib import Path

from jobstead.dashboard.auth import SESSION_SECONDS, Credentials, Signer, User, read_users_file


def test_a_session_cookie_names_its_user_until_it_expires() -> None:
    signer = Signer(b"k" * 32)
    cookie = signer.session_cookie(User("ada", read_only=True), now=1000.0)
    assert signer.user_from_cookie(cookie, now=1000.0 + SESSION_SECONDS - 1) == User("ada", read_only=True)
    assert signer.user_from_cookie(cookie, now=1000.0 + SESSION_SECONDS + 1) is None


def test_a_forged_or_mangled_cookie_is_no_session() -> None:
    signer = Signer(b"k" * 32)
    cookie = signer.session_cookie(User("bob", read_only=True), now=1000.0)
    body, mac = cookie.split(".")
    promoted = base64.urlsafe_b64encode(base64.urlsafe_b64decode(body).replace(b"\x001\x00", b"\x000\x00")).decode()
    assert signer.user_from_cookie(f"{promoted}.{mac}", now=1000.0) is None  # read-only bit flipped
    assert Signer(b"other key" * 4).user_from_cookie(cookie, now=1000.0) is None
    for junk in ("", ".", "!!!.abc", "YQ.", base64.urlsafe_b64encode(b"a\x00b").decode() + ".x"):
        assert signer.user_from_cookie(junk, now=1000.0) is None


def test_csrf_tokens_belong_to_one_user_and_one_key() -> None:
    signer = Signer(b"k" * 32)
    ada = signer.csrf_token(User("ada"))
    assert signer.check_csrf(User("ada"), ada)
    assert not signer.check_csrf(User("bob"), ada)
    assert not signer.check_csrf(User("ada", read_only=True), ada)
    assert not Signer(b"x" * 32).check_csrf(User("ada"), ada)
    assert not signer.check_csrf(User("ada"), "")


def test_changing_the_credentials_signs_everyone_out() -> None:
    one = Credentials(token="first").signing_key()
    assert one == Credentials(token="first").signing_key()  # every replica agrees
    assert one != Credentials(token="second").signing_key()
    assert Credentials().signing_key() != Credentials().signing_key()  # no credentials: random per process


def test_a_password_may_hold_colons_and_a_role_suffix_is_explicit(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("ada:pa:ss:word\nbob:pw:read-only\ncid:pw:admin\n")
    users = read_users_file(path)
    assert users["ada"].password == "pa:ss:word" and not users["ada"].read_only
    assert users["bob"].password == "pw" and users["bob"].read_only
    assert users["cid"].password == "pw" and not users["cid"].read_only
