"""Organizations and users: creating them (the CLI's ``label admin create-user`` and the admin page
``/admin/users``). An admin sees and manages only the users of their own organization."""

from __future__ import annotations

import getpass
import os
import re
import sys
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from instructrl.config import option
from instructrl.web.auth import Viewer, hash_password, require_admin
from instructrl.web.db import Database, InputError
from instructrl.web.migrate import upgrade
from instructrl.web.models import ROLES, Organization, User
from instructrl.web.pages import render

USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MIN_PASSWORD = 8


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise InputError(
            f"user name {username!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def organization(session: Session, name: str) -> Organization:
    """The organization called ``name``, created if it does not exist."""
    name = name.strip()
    if not name:
        raise InputError("an organization needs a name")
    org = session.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        org = Organization(name=name[:100])
        session.add(org)
        session.flush()
    return org


def create_user(session: Session, org_id: int, username: str, password: str, role: str, display_name: str = "") -> User:
    """A new active user; raises InputError for a taken or malformed name, a short password or an unknown role."""
    name = check_username(username)
    if role not in ROLES:
        raise InputError(f"role {role!r} is not one of {', '.join(ROLES)}")
    check_password(password)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise InputError(f"the user name {name!r} is taken")
    user = User(
        org_id=org_id,
        username=name,
        display_name=display_name.strip()[:200],
        password_hash=hash_password(password),
        role=role,
        active=True,
    )
    session.add(user)
    session.flush()
    return user


# ------------------------------------------------------------------------------------ command line


@dataclass
class CreateUserConfig:
    """``instructrl label admin create-user``: a user (the first admin) in an organization."""

    username: str = option("", "User name to sign in with (lower-case letters, digits, '.', '_', '-').")
    role: Literal["admin", "labeler", "applicant"] = option(
        "admin", "admin (projects, users, exports), labeler (own queue) or applicant (screening tests only)."
    )
    org: str = option("default", "Organization the user belongs to (created if it does not exist).")
    display_name: str = option("", "Name shown in the pages (default: the user name).")
    password_env: str = option(
        "INSTRUCTRL_PASSWORD",
        "Environment variable holding the password; when unset, the password is asked for on the terminal "
        "(or read as the first line of standard input).",
    )
    db_url: str = option("sqlite:///runs/workbench/workbench.db", "SQLAlchemy URL of the database (as label serve).")

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("username is required: instructrl label admin create-user username=NAME")


def _read_password(env: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InputError("the two passwords differ")
        return first
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line.strip():
        raise InputError(f"no password: set the environment variable {env} or type it on the terminal")
    return line.rstrip("\n")


def create_user_cli(cfg: CreateUserConfig) -> str:
    password = check_password(_read_password(cfg.password_env))
    db = Database(cfg.db_url)
    try:
        upgrade(db)
        with db.write() as session:
            org = organization(session, cfg.org)
            user = create_user(session, org.id, cfg.username, password, cfg.role, cfg.display_name)
            return f"created {user.role} {user.username!r} in organization {org.name!r} ({db.url.render_as_string()})"
    finally:
        db.dispose()


# ------------------------------------------------------------------------------------ admin pages

router = APIRouter()


def _org_users(db: Database, org_id: int) -> list[User]:
    with db.read() as session:
        return list(session.scalars(select(User).where(User.org_id == org_id).order_by(User.role, User.username)))


@router.get("/admin/users")
def users_page(request: Request, viewer: Viewer = Depends(require_admin)) -> Response:
    return render(request, "admin_users.html", users=_org_users(request.app.state.db, viewer.org_id))


@router.post("/admin/users")
def add_user(
    request: Request,
    username: str = Form(""),
    display_name: str = Form(""),
    role: str = Form("labeler"),
    password: str = Form(""),
    viewer: Viewer = Depends(require_admin),
) -> Response:
    db = request.app.state.db
    try:
        with db.write() as session:
            create_user(session, viewer.org_id, username, password, role, display_name)
    except IntegrityError:  # the same name, added by someone else at the same moment
        users = _org_users(db, viewer.org_id)
        error = f"the user name {username.strip().lower()!r} is taken"
        return render(request, "admin_users.html", status_code=400, users=users, error=error, form=None)
    except InputError as e:
        users = _org_users(db, viewer.org_id)
        form = {"username": username, "display_name": display_name, "role": role}
        return render(request, "admin_users.html", status_code=400, users=users, error=str(e), form=form)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/active")
def set_active(
    request: Request, user_id: int, active: str = Form("0"), viewer: Viewer = Depends(require_admin)
) -> Response:
    if user_id == viewer.id:
        raise HTTPException(400, "You cannot deactivate yourself.")
    with request.app.state.db.write() as session:
        user = session.get(User, user_id)
        if user is None or user.org_id != viewer.org_id:
            raise HTTPException(404)
        user.active = active == "1"
    return RedirectResponse("/admin/users", status_code=303)
