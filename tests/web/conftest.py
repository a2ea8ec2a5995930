"""A real workbench server for the web tests: ``instructrl label serve`` in its own process on a free
port of 127.0.0.1, over a SQLite file in a temporary folder. Tests reach it with httpx (or a browser)
and set up their users and tasks straight in the same database, each under names of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

for module in ("fastapi", "sqlalchemy", "alembic", "argon2", "httpx", "uvicorn", "krippendorff"):
    pytest.importorskip(module, reason="the web extra is not installed: pip install -e '.[dev]'")

import httpx  # noqa: E402

from instructrl.label.workbench.imports import import_items, read_demonstration_items, read_rank_items  # noqa: E402
from instructrl.web.db import Database  # noqa: E402
from instructrl.web.migrate import upgrade  # noqa: E402
from instructrl.web.models import Project  # noqa: E402
from instructrl.web.users import create_user, organization  # noqa: E402

from .servers import free_port, launch, postgres_server  # noqa: E402, F401  (free_port: for the tests)

PASSWORD = "correct horse 1"
MAX_FAILURES = 3  # the server's login_max_failures
_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test uses (user names are unique across organizations)."""
    return f"{prefix}{next(_names)}"


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class Workbench:
    url: str
    db_url: str
    db: Database
    folder: Path

    def org(self, name: str | None = None) -> int:
        with self.db.write() as session:
            return organization(session, name or unique("org")).id

    def user(self, org_id: int, role: str = "labeler", name: str | None = None, display_name: str = "") -> str:
        username = name or unique(role)
        with self.db.write() as session:
            create_user(session, org_id, username, PASSWORD, role, display_name)
        return username

    def project(self, org_id: int, name: str | None = None, priority: str = "helpfulness") -> int:
        with self.db.write() as session:
            project = Project(org_id=org_id, name=name or unique("project"), description="", priority=priority)
            session.add(project)
            session.flush()
            return project.id

    def import_rank(self, project_id: int, samples: list[dict], labelers: list[str], **kw) -> None:
        path = self.write_jsonl(samples)
        with self.db.write() as session:
            import_items(session, project_id, "rank", read_rank_items(path), labelers=labelers, **kw)

    def import_demonstrate(self, project_id: int, prompts: list[dict], labelers: list[str]) -> None:
        path = self.write_jsonl(prompts)
        with self.db.write() as session:
            import_items(session, project_id, "demonstrate", read_demonstration_items(path), labelers=labelers)

    def write_jsonl(self, rows: list[dict], name: str | None = None) -> Path:
        path = self.folder / (name or f"{unique('input')}.jsonl")
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    def client(self) -> httpx.Client:
        """A browser-like client: keeps cookies, asks for HTML, does not follow redirects."""
        return httpx.Client(base_url=self.url, headers={"Accept": "text/html"}, timeout=30)

    def login(self, username: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
        """A signed-in client and its session's CSRF token."""
        client = self.client()
        page = client.get("/login")
        response = client.post(
            "/login", data={"csrf_token": csrf_of(page.text), "username": username, "password": password}
        )
        assert response.status_code == 303, response.text
        landing = client.get(response.headers["location"])
        assert landing.status_code == 200, landing.text
        return client, csrf_of(landing.text)


def samples_for(prompt_id: str, prompt: str, responses: list[str]) -> list[dict]:
    """Sample records of one prompt, as ``instructrl run``'s samples step writes them."""
    return [
        {
            "prompt": prompt,
            "response": r,
            "id": f"{prompt_id}-s{i}",
            "policy": f"policy-{i % 2}",
            "meta": {"prompt_id": prompt_id},
        }
        for i, r in enumerate(responses)
    ]


@contextlib.contextmanager
def serving(db_url: str, folder: Path, args: Sequence[str] = ()) -> Iterator[Workbench]:
    """``instructrl label serve`` over ``db_url`` (migrated first) on a free port, until the block ends."""
    db = Database(db_url)
    upgrade(db)
    server = launch(db_url, folder, [f"login_max_failures={MAX_FAILURES}", *args])
    try:
        yield Workbench(server.url, db_url, db, folder)
    finally:
        server.stop()
        db.dispose()


@pytest.fixture(scope="session")
def workbench(tmp_path_factory) -> Iterator[Workbench]:
    folder = tmp_path_factory.mktemp("workbench")
    with serving(f"sqlite:///{folder / 'workbench.db'}", folder) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server the tests start themselves, shared by every test of the session."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[web]'")
    try:
        with postgres_server() as url:
            yield url
    except FileNotFoundError as e:
        pytest.skip(f"{e} (.ci/run does it)")
