"""Passwords, sessions, CSRF and sign-in rate limiting.

* Passwords are Argon2id hashes (argon2-cffi's defaults); an unknown user name costs the same
  verification as a known one, so timing does not tell which names exist.
* A session is a random token in an HttpOnly, SameSite=Lax cookie; the table keeps only its SHA-256,
  so a leaked database holds no usable session. Each session has its own CSRF token, which every
  POST must carry (form field ``csrf_token`` or header ``X-CSRF-Token``). Before sign-in, the login
  form is guarded the same way by a token in a cookie of its own (double submit).
* Failed sign-ins are counted per user name and per address over a window; past the limit, sign-in
  is refused with 429 before the password is even checked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, func, select

from instructrl.web.db import Database, utcnow
from instructrl.web.models import LoginAttempt, Organization, User, WebSession
from instructrl.web.pages import render
from instructrl.web.settings import WebSettings

SESSION_COOKIE = "instructrl_session"
LOGIN_COOKIE = "instructrl_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so that such a sign-in takes as long as a real one."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request, detached from the database session it was read in."""

    id: int
    username: str
    display_name: str
    role: str
    org_id: int
    org_name: str
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def name(self) -> str:
        return self.display_name or self.username


class LoginRequired(Exception):
    """Raised by :func:`current_viewer` without a valid session; the app redirects to the sign-in page."""


def start_session(db: Database, user_id: int, hours: float) -> str:
    """A new session for ``user_id``; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as session:
        session.add(
            WebSession(
                user_id=user_id,
                token_hash=token_digest(token),
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
        # expired sessions of this user go now, so the table does not grow with every sign-in
        session.execute(delete(WebSession).where(WebSession.user_id == user_id, WebSession.expires_at < now))
    return token


def lookup_session(db: Database, token: str | None) -> Viewer | None:
    """The viewer of a session token, or None when it is unknown, expired or its user is deactivated."""
    if not token:
        return None
    with db.read() as session:
        row = session.execute(
            select(WebSession, User, Organization)
            .join(User, User.id == WebSession.user_id)
            .join(Organization, Organization.id == User.org_id)
            .where(WebSession.token_hash == token_digest(token))
        ).first()
    if row is None:
        return None
    web_session, user, org = row
    if web_session.expires_at <= utcnow() or not user.active:
        return None
    return Viewer(user.id, user.username, user.display_name, user.role, org.id, org.name, web_session.csrf_token)


def end_session(db: Database, token: str | None) -> None:
    if token:
        with db.write() as session:
            session.execute(delete(WebSession).where(WebSession.token_hash == token_digest(token)))


def failures_since(db: Database, column: Any, value: str, window_s: int) -> int:
    """Failed sign-ins whose ``column`` (LoginAttempt.username or .ip) is ``value``, in the last ``window_s`` s."""
    since = utcnow() - timedelta(seconds=window_s)
    with db.read() as session:
        return session.scalar(
            select(func.count())
            .select_from(LoginAttempt)
            .where(column == value, LoginAttempt.success.is_(False), LoginAttempt.at >= since)
        )


def authenticate(db: Database, username: str, password: str, ip: str, settings: WebSettings) -> int | None:
    """The id of the user that ``username``/``password`` name, or None; records the attempt. Raises 429 when
    the name or the address has failed too often within the window (whatever the password)."""
    username = username.strip().lower()[:64]
    window = settings.login_window_s
    if (
        failures_since(db, LoginAttempt.username, username, window) >= settings.login_max_failures
        or failures_since(db, LoginAttempt.ip, ip, window) >= settings.login_max_failures_per_ip
    ):
        raise HTTPException(
            429, f"Too many failed sign-ins. Try again in {max(1, window // 60)} minutes, or ask an admin."
        )
    with db.read() as session:
        user = session.scalar(select(User).where(User.username == username))
    ok = verify_password(user.password_hash if user else _dummy_hash(), password) and bool(user and user.active)
    with db.write() as session:
        session.add(LoginAttempt(username=username, ip=ip[:64], success=ok, at=utcnow()))
    return user.id if ok and user else None


# ------------------------------------------------------------------------------------ request helpers


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_viewer(request: Request) -> Viewer:
    """The signed-in user (a FastAPI dependency); without one, :class:`LoginRequired`."""
    if not hasattr(request.state, "viewer"):
        request.state.viewer = lookup_session(request.app.state.db, request.cookies.get(SESSION_COOKIE))
    if request.state.viewer is None:
        raise LoginRequired()
    return request.state.viewer


def optional_viewer(request: Request) -> Viewer | None:
    try:
        return current_viewer(request)
    except LoginRequired:
        return None


def require_admin(viewer: Viewer = Depends(current_viewer)) -> Viewer:
    if not viewer.is_admin:
        raise HTTPException(403, "This page is for admins.")
    return viewer


async def csrf_guard(request: Request) -> None:
    """Every request that changes something carries the CSRF token of its session (or, on the sign-in
    form, of its login cookie); anything else is refused with 403 before the route runs."""
    if request.method in SAFE_METHODS:
        return
    if request.url.path.startswith(getattr(request.app.state, "csrf_exempt", ())):
        return  # an API authenticated by a header a cross-site form cannot send
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    viewer = optional_viewer(request)
    expected = viewer.csrf_token if viewer else request.cookies.get(LOGIN_COOKIE)
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, "The form's security token is missing or out of date. Reload the page and try again.")


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path on this site (never another site: no scheme, no //host)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


# ------------------------------------------------------------------------------------ routes

router = APIRouter()


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    viewer = optional_viewer(request)
    if viewer is not None:
        return RedirectResponse(safe_next(next) or request.app.state.home(viewer), status_code=303)
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", login_token=token, next=safe_next(next) or "")
    _set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form(""),
) -> Response:
    settings = request.app.state.settings
    db = request.app.state.db
    user_id = authenticate(db, username, password, client_ip(request), settings)
    if user_id is None:
        token = request.cookies.get(LOGIN_COOKIE, "")
        return render(
            request,
            "login.html",
            status_code=401,
            login_token=token,
            next=safe_next(next) or "",
            username=username,
            error="Wrong user name or password.",
        )
    token = start_session(db, user_id, settings.session_hours)
    viewer = lookup_session(db, token)
    response = RedirectResponse(safe_next(next) or request.app.state.home(viewer), status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, token, max_age=int(settings.session_hours * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    end_session(request.app.state.db, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.secure_cookies,
    )
