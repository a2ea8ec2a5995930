"""Probes that must fail, against a real server: wrong passwords (rate limited), posts without a CSRF token,
a labeler reaching another's work, an admin page or another organization's project, stored XSS, SQL
injection."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from instructrl.label.workbench.export import iter_export
from instructrl.web.models import Assignment, Label, Organization, Project, Task, User, WebSession

from .conftest import MAX_FAILURES, PASSWORD, csrf_of, samples_for, unique


def _assignments(workbench, username: str) -> list[int]:
    with workbench.db.read() as session:
        return list(
            session.scalars(
                select(Assignment.id)
                .join(User, User.id == Assignment.user_id)
                .where(User.username == username)
                .order_by(Assignment.id)
            )
        )


def _label_count(workbench) -> int:
    with workbench.db.read() as session:
        return session.scalar(select(func.count()).select_from(Label))


def test_login_logout_and_redirects(workbench):
    org = workbench.org()
    name = workbench.user(org, display_name="Dana Q")
    client = workbench.client()
    assert client.get("/queue").status_code == 303
    assert client.get("/queue").headers["location"] == "/login?next=%2Fqueue"
    page = client.get("/login?next=%2Fqueue")
    assert page.status_code == 200
    assert "instructrl_login_csrf=" in page.headers["set-cookie"] and "HttpOnly" in page.headers["set-cookie"]
    token = csrf_of(page.text)
    wrong = client.post("/login", data={"csrf_token": token, "username": name, "password": "nope-nope"})
    assert wrong.status_code == 401
    assert "Wrong user name or password." in wrong.text
    ok = client.post(
        "/login", data={"csrf_token": token, "username": name.upper(), "password": PASSWORD, "next": "/queue"}
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == "/queue"
    set_cookie = ok.headers["set-cookie"]
    assert "instructrl_session=" in set_cookie
    assert "HttpOnly" in set_cookie
    assert "SameSite=lax" in set_cookie or "SameSite=Lax" in set_cookie
    queue = client.get("/queue")
    assert queue.status_code == 200
    assert "Dana Q" in queue.text
    # the stored session is the token's hash, never the token
    token_value = client.cookies.get("instructrl_session")
    with workbench.db.read() as session:
        stored = list(session.scalars(select(WebSession.token_hash)))
    assert token_value not in stored
    # a redirect after sign-in never leaves the site
    assert client.get("/login?next=//evil.example/x").headers["location"] == "/queue"
    out = client.post("/logout", data={"csrf_token": csrf_of(queue.text)})
    assert out.status_code == 303
    assert client.get("/queue").status_code == 303


def test_wrong_passwords_are_rate_limited(workbench):
    org = workbench.org()
    name = workbench.user(org)
    other = workbench.user(org)
    client = workbench.client()
    token = csrf_of(client.get("/login").text)
    codes = [
        client.post("/login", data={"csrf_token": token, "username": name, "password": f"guess-{i}"}).status_code
        for i in range(MAX_FAILURES)
    ]
    assert codes == [401] * MAX_FAILURES
    # past the limit, even the right password is refused, before it is checked
    blocked = client.post("/login", data={"csrf_token": token, "username": name, "password": PASSWORD})
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.text
    # another user from the same address still signs in (the per-address limit is higher)
    workbench.login(other)


def test_posts_without_csrf_token_are_refused(workbench):
    org = workbench.org()
    labeler = workbench.user(org)
    project = workbench.project(org)
    workbench.import_rank(project, samples_for("p1", "Say hi.", ["hi", "hello"]), [labeler])
    (assignment,) = _assignments(workbench, labeler)
    client, token = workbench.login(labeler)
    form = {"likert_0": "5", "likert_1": "4", "rank_0": "1", "rank_1": "2"}
    before = _label_count(workbench)
    assert client.post(f"/tasks/{assignment}/submit", data=form).status_code == 403
    assert client.post(f"/tasks/{assignment}/submit", data={**form, "csrf_token": "forged"}).status_code == 403
    assert client.post(f"/tasks/{assignment}/skip", data={"skip_reason": "x"}).status_code == 403
    assert client.post(f"/tasks/{assignment}/draft", json={"fields": {"likert_0": ["5"]}}).status_code == 403
    assert client.post("/logout").status_code == 403
    # the login form too: no token, or a token that is not the one in the browser's login cookie
    fresh = workbench.client()
    assert fresh.post("/login", data={"username": labeler, "password": PASSWORD}).status_code == 403
    fresh.get("/login")
    assert (
        fresh.post("/login", data={"csrf_token": token, "username": labeler, "password": PASSWORD}).status_code == 403
    )
    assert _label_count(workbench) == before
    # with the token it goes through
    done = client.post(f"/tasks/{assignment}/submit", data={**form, "csrf_token": token})
    assert done.status_code == 303
    assert _label_count(workbench) == before + 1


def test_nothing_of_another_labeler_project_or_organization(workbench):
    org, other_org = workbench.org(), workbench.org()
    alice, bob = workbench.user(org), workbench.user(org)
    admin, other_admin = workbench.user(org, "admin"), workbench.user(other_org, "admin")
    carol = workbench.user(other_org)
    ours = workbench.project(org, name=unique("ours"))
    theirs = workbench.project(other_org, name=unique("secret-project"))
    workbench.import_rank(ours, samples_for("o1", "Our prompt", ["a1", "a2"]), [alice])
    workbench.import_rank(ours, samples_for("o2", "Bob's prompt", ["b1", "b2"]), [bob])
    workbench.import_rank(theirs, samples_for("t1", "Their secret prompt", ["c1", "c2"]), [carol])
    (bobs,) = _assignments(workbench, bob)
    (carols,) = _assignments(workbench, carol)

    client, token = workbench.login(alice)
    for path in (f"/tasks/{bobs}", f"/tasks/{carols}", f"/tasks/{bobs + carols + 1000}"):
        assert client.get(path).status_code == 404, path
    form = {"csrf_token": token, "likert_0": "1", "likert_1": "1", "rank_0": "1", "rank_1": "1"}
    assert client.post(f"/tasks/{bobs}/submit", data=form).status_code == 404
    assert (
        client.post(f"/tasks/{carols}/skip", data={"csrf_token": token, "skip_reason": "mine now"}).status_code == 404
    )
    assert client.post(f"/tasks/{bobs}/draft", json={"fields": {}}, headers={"X-CSRF-Token": token}).status_code == 404
    for path in (
        "/admin",
        "/admin/projects",
        "/admin/users",
        f"/admin/projects/{ours}",
        f"/admin/projects/{ours}/export/rankings.jsonl",
        f"/admin/projects/{ours}/agreement",
        f"/admin/projects/{ours}/agreement.json",
        "/admin/screening",
    ):
        assert client.get(path).status_code == 403, path
    queue = client.get("/queue").text
    assert "Our prompt" in queue
    assert "Bob&#39;s prompt" not in queue and "Bob's prompt" not in queue
    assert "Their secret prompt" not in queue

    admin_client, _ = workbench.login(admin)
    projects = admin_client.get("/admin/projects").text
    assert "secret-project" not in projects
    for path in (
        f"/admin/projects/{theirs}",
        f"/admin/projects/{theirs}/export/rankings.jsonl",
        f"/admin/projects/{theirs}/agreement.json",
        f"/tasks/{carols}",
    ):
        assert admin_client.get(path).status_code == 404, path
    users = admin_client.get("/admin/users").text
    assert carol not in users and other_admin not in users and alice in users
    # an admin cannot switch off a user of another organization
    with workbench.db.read() as session:
        carol_id = session.scalar(select(User.id).where(User.username == carol))
    admin_token = csrf_of(users)
    assert (
        admin_client.post(
            f"/admin/users/{carol_id}/active", data={"csrf_token": admin_token, "active": "0"}
        ).status_code
        == 404
    )
    with workbench.db.read() as session:
        assert session.scalar(select(User.active).where(User.id == carol_id)) is True


XSS = '<script>alert("xss")</script><img src=x onerror="alert(1)">'


def test_stored_xss_is_rendered_escaped(workbench):
    org = workbench.org()
    labeler, admin = workbench.user(org, display_name=f"Eve {XSS}"), workbench.user(org, "admin")
    project = workbench.project(org, name=unique(f"p {XSS}"))
    workbench.import_rank(project, samples_for("x1", f"Prompt {XSS}", [f"Response {XSS}", "plain"]), [labeler])
    workbench.import_demonstrate(project, [{"prompt": f"Demo prompt {XSS}", "id": "d1"}], [labeler])
    workbench.import_demonstrate(project, [{"prompt": "Second demo prompt", "id": "d2"}], [labeler])
    rank_id, demo_id, other_demo = _assignments(workbench, labeler)
    client, token = workbench.login(labeler)

    pages = [client.get("/queue").text, client.get(f"/tasks/{rank_id}").text, client.get(f"/tasks/{demo_id}").text]
    # a draft (of a demonstration and a skip reason) comes back into the page as text
    saved = client.post(
        f"/tasks/{other_demo}/draft",
        json={"fields": {"response": [f"Draft {XSS}"], "skip_reason": [f"Why {XSS}"]}},
        headers={"X-CSRF-Token": token},
    )
    assert saved.status_code == 200
    pages.append(client.get(f"/tasks/{other_demo}").text)
    # a submitted demonstration and a skip reason show on the admin's project page
    assert (
        client.post(f"/tasks/{demo_id}/submit", data={"csrf_token": token, "response": f"Answer {XSS}"}).status_code
        == 303
    )
    assert (
        client.post(f"/tasks/{rank_id}/skip", data={"csrf_token": token, "skip_reason": f"Skip {XSS}"}).status_code
        == 303
    )
    admin_client, _ = workbench.login(admin)
    pages += [admin_client.get(f"/admin/projects/{project}").text, admin_client.get("/admin/projects").text]
    pages.append(admin_client.get("/admin/users").text)

    escaped = "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"
    for page in pages:
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert escaped in page
    admin_page = pages[4]
    assert f"Answer {escaped}" in admin_page and f"Skip {escaped}" in admin_page
    assert f"Draft {escaped}" in pages[3] and f"Why {escaped}" in pages[3]
    # and the only scripts a page loads are the site's own files (the CSP forbids inline ones)
    response = client.get(f"/tasks/{other_demo}")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert re.findall(r"<script[^>]*>", response.text) == ['<script src="/static/workbench/workbench.js" defer>']


INJECTIONS = [
    "'; DROP TABLE labels; --",
    '" OR "1"="1',
    "Robert'); DROP TABLE users;--",
    "1; DELETE FROM tasks WHERE 1=1",
    "' UNION SELECT password_hash FROM users --",
]


def test_sql_injection_strings_are_stored_as_text(workbench):
    org_name = unique("org")
    org = workbench.org(org_name)
    admin = workbench.user(org, "admin")
    labeler = workbench.user(org, display_name=INJECTIONS[0])
    admin_client, admin_token = workbench.login(admin)
    project_name = unique(INJECTIONS[1])
    created = admin_client.post(
        "/admin/projects",
        data={
            "csrf_token": admin_token,
            "name": project_name,
            "description": INJECTIONS[2],
            "priority": "helpfulness",
            "instructions": INJECTIONS[3],
        },
    )
    assert created.status_code == 303
    project = int(created.headers["location"].rsplit("/", 1)[1])
    # a user name that is an injection is refused by the name rules, and nothing happens
    refused = admin_client.post(
        "/admin/users",
        data={
            "csrf_token": admin_token,
            "username": INJECTIONS[2],
            "display_name": INJECTIONS[4],
            "role": "labeler",
            "password": "long enough",
        },
    )
    assert refused.status_code == 400
    workbench.import_rank(project, samples_for(INJECTIONS[4], INJECTIONS[0], [INJECTIONS[1], INJECTIONS[2]]), [labeler])
    workbench.import_rank(project, samples_for("second", INJECTIONS[3], ["x", "y"]), [labeler])
    workbench.import_demonstrate(project, [{"prompt": INJECTIONS[2], "id": INJECTIONS[3]}], [labeler])
    first, second, demo = _assignments(workbench, labeler)
    client, token = workbench.login(labeler)
    # injections in the sign-in form are only a wrong name
    probe = workbench.client()
    probe_token = csrf_of(probe.get("/login").text)
    assert (
        probe.post(
            "/login", data={"csrf_token": probe_token, "username": INJECTIONS[1], "password": INJECTIONS[0]}
        ).status_code
        == 401
    )
    # and in every field of the task forms
    draft = client.post(
        f"/tasks/{first}/draft", json={"fields": {"skip_reason": [INJECTIONS[4]]}}, headers={"X-CSRF-Token": token}
    )
    assert draft.status_code == 200
    bad = client.post(
        f"/tasks/{first}/submit",
        data={"csrf_token": token, "likert_0": INJECTIONS[0], "rank_0": INJECTIONS[1], "flags_0": INJECTIONS[2]},
    )
    assert bad.status_code == 400
    # the responses are shown shuffled: put the imported first response (INJECTIONS[1]) at rank 2, Likert 3
    with workbench.db.read() as session:
        order = session.scalar(select(Assignment.order).where(Assignment.id == first))
    shown_first = order.index(0)
    form = {"csrf_token": token, "instruction_version": INJECTIONS[3]}
    form |= {
        f"likert_{shown_first}": "3",
        f"rank_{shown_first}": "2",
        f"likert_{1 - shown_first}": "4",
        f"rank_{1 - shown_first}": "1",
    }
    done = client.post(f"/tasks/{first}/submit", data=form)
    assert done.status_code == 303
    assert (
        client.post(f"/tasks/{second}/skip", data={"csrf_token": token, "skip_reason": INJECTIONS[4]}).status_code
        == 303
    )
    assert (
        client.post(f"/tasks/{demo}/submit", data={"csrf_token": token, "response": INJECTIONS[1]}).status_code == 303
    )

    with workbench.db.read() as session:
        assert session.scalar(select(Project.name).where(Project.id == project)) == project_name
        assert session.scalar(select(Project.description).where(Project.id == project)) == INJECTIONS[2]
        assert session.scalar(select(User.display_name).where(User.username == labeler)) == INJECTIONS[0]
        assert session.scalar(select(func.count()).select_from(Organization).where(Organization.name == org_name)) == 1
        assert session.scalar(select(func.count()).select_from(Task).where(Task.project_id == project)) == 3
        # every table is still there and whole
        assert session.scalar(select(func.count()).select_from(User).where(User.org_id == org)) == 2
    rankings = list(iter_export(workbench.db, project, "rankings"))
    skips = list(iter_export(workbench.db, project, "skips"))
    demos = list(iter_export(workbench.db, project, "demonstrations"))
    assert [(r.prompt, r.responses, r.ranks, r.likert, r.meta["prompt_id"]) for r in rankings] == [
        (INJECTIONS[0], [INJECTIONS[1], INJECTIONS[2]], [2, 1], [3, 4], INJECTIONS[4])
    ]
    assert rankings[0].meta["instruction_version"] is None  # a version id that is not a number is ignored
    assert [(s["prompt"], s["reason"]) for s in skips] == [(INJECTIONS[3], INJECTIONS[4])]
    assert [(d.prompt, d.response, d.meta["prompt_id"]) for d in demos] == [
        (INJECTIONS[2], INJECTIONS[1], INJECTIONS[3])
    ]
