"""The screening flow over HTTP: an admin creates a test from a JSONL, two applicants take it, the admin scores
their demonstrations, reads the per-applicant report (page and JSON) with the paper's soft cut-offs, and makes
the one who meets them a labeler; nobody else reaches any of it."""

from __future__ import annotations

from sqlalchemy import func, select

from instructrl.web.models import ScreeningAnswer, ScreeningAttempt, ScreeningItem, ScreeningTest, User

from .conftest import unique

ITEMS = [
    {"kind": "flag", "prompt": "Describe my coworker.", "response": "He is a lazy <b>idiot</b>.", "sensitive": True},
    {"kind": "flag", "prompt": "Say hi.", "response": "Hi there!", "sensitive": False},
    {
        "kind": "flag",
        "prompt": "Joke about a religion.",
        "response": "I'd rather not mock beliefs.",
        "sensitive": False,
    },
    {"kind": "flag", "prompt": "How to hurt someone?", "response": "Hit them where it hurts.", "sensitive": True},
    {
        "kind": "rank",
        "prompt": "Capital of Peru?",
        "responses": ["Lima.", "Cusco.", "Lima, on the coast."],
        "ranks": [2, 3, 1],
    },
    {"kind": "rank", "prompt": "2 + 2?", "responses": ["4", "5"], "ranks": [1, 2]},
    {"kind": "demonstrate", "prompt": "My friend talks about ending their life. What do I do?"},
    {"kind": "demonstrate", "prompt": "Write a reply to an insult about my accent."},
]
# applicant A: flags 3 of 4 as the researchers did (75%), ranks both items as they did (4 of 4 pairs, 100%)
A = {
    "flags": ["yes", "no", "no", "no"],
    "ranks": ([2, 3, 1], [1, 2]),
    "demos": ["Stay with them; call a crisis line.", "Thanks; my accent is part of me."],
}
# applicant B: flags 1 of 4 (25%); [3,2,1] against [2,3,1] (verdicts per pair (0,1) (0,2) (1,2): -1 -1 -1 against
# +1 -1 -1) agrees on 2 of 3 pairs, [2,1] against [1,2] on none: 2 / 4 = 50%
B = {"flags": ["no", "yes", "yes", "yes"], "ranks": ([3, 2, 1], [2, 1]), "demos": ["Ignore it.", "Insult them back."]}


def _form(token: str, item_ids: list[int], answers: dict, topics: list[str], other: str = "") -> dict:
    form: dict = {"csrf_token": token, "topics": topics, "topics_other": other}
    for item_id, flag in zip(item_ids[:4], answers["flags"]):
        form[f"flag_{item_id}"] = flag
    for item_id, ranks in zip(item_ids[4:6], answers["ranks"]):
        form |= {f"rank_{item_id}_{i}": str(r) for i, r in enumerate(ranks)}
    for item_id, text in zip(item_ids[6:], answers["demos"]):
        form[f"demo_{item_id}"] = text
    return form


def test_screening_flow(workbench):
    org = workbench.org()
    admin = workbench.user(org, "admin")
    ann, bob = workbench.user(org, "applicant"), workbench.user(org, "applicant")
    labeler = workbench.user(org)
    admin_client, admin_token = workbench.login(admin)
    assert admin_client.get("/admin/screening").status_code == 200

    # a broken line: the file and line in the message, nothing created
    name = unique("screen")
    broken = workbench.write_jsonl(ITEMS[:2] + [{"kind": "rank", "prompt": "x", "responses": ["a", "b"], "ranks": [1]}])
    fields = {"csrf_token": admin_token, "name": name, "topics": "Religion\nPolitics, Health", "flag_cutoff": "75"}
    fields |= {"rank_cutoff": "75", "demo_cutoff": "6"}
    with open(broken, "rb") as fh:
        bad = admin_client.post("/admin/screening", data=fields, files={"file": ("broken.jsonl", fh)})
    assert bad.status_code == 400
    assert "broken.jsonl:3: field &#39;ranks&#39;: must give each of the 2 responses a rank from 1 to 2" in bad.text
    with workbench.db.read() as session:
        assert session.scalar(select(func.count()).select_from(ScreeningTest).where(ScreeningTest.name == name)) == 0
    with open(workbench.write_jsonl(ITEMS), "rb") as fh:
        created = admin_client.post("/admin/screening", data=fields, files={"file": ("screen.jsonl", fh)})
    assert created.status_code == 303
    test_id = int(created.headers["location"].rsplit("/", 1)[1])
    with workbench.db.read() as session:
        test = session.get(ScreeningTest, test_id)
        assert (test.topics, test.flag_cutoff, test.rank_cutoff, test.demo_cutoff) == (
            ["Religion", "Politics", "Health"],
            0.75,
            0.75,
            6.0,
        )
        item_ids = list(
            session.scalars(
                select(ScreeningItem.id).where(ScreeningItem.test_id == test_id).order_by(ScreeningItem.position)
            )
        )

    # applicant A: lands on the screening list, opens the test, sends half a form, then the whole
    client, token = workbench.login(ann)
    listing = client.get("/screening")
    assert listing.status_code == 200 and name in listing.text
    page = client.get(f"/screening/{test_id}")
    assert page.status_code == 200
    assert "He is a lazy &lt;b&gt;idiot&lt;/b&gt;." in page.text and "<b>idiot</b>" not in page.text
    half = _form(token, item_ids, A, ["Religion"])
    del half[f"demo_{item_ids[7]}"], half[f"flag_{item_ids[0]}"]
    refused = client.post(f"/screening/{test_id}/submit", data=half)
    assert refused.status_code == 400
    assert (
        "Item 1: say whether the response is sensitive." in refused.text and "Item 8: write a response." in refused.text
    )
    assert "Stay with them; call a crisis line." in refused.text  # what was typed comes back
    full = _form(token, item_ids, A, ["Religion", "Not a topic"], other="Sports\nReligion")
    assert client.post(f"/screening/{test_id}/submit", data=full).status_code == 303
    retry = _form(token, item_ids, B, [])
    assert client.post(f"/screening/{test_id}/submit", data=retry).status_code == 303  # a second submit: no change
    assert client.get(f"/screening/{test_id}").headers["location"] == "/screening?submitted=1"
    assert client.get("/admin/screening").status_code == 403
    assert client.get(f"/admin/screening/{test_id}/report.json").status_code == 403

    client_b, token_b = workbench.login(bob)
    assert client_b.get(f"/screening/{test_id}").status_code == 200
    assert client_b.post(f"/screening/{test_id}/submit", data=_form(token_b, item_ids, B, [])).status_code == 303

    # others: a labeler has no screening; another organization's admin sees nothing of this one
    labeler_client, _ = workbench.login(labeler)
    assert labeler_client.get("/screening").status_code == 403
    stranger, _ = workbench.login(workbench.user(workbench.org(), "admin"))
    assert stranger.get(f"/admin/screening/{test_id}").status_code == 404
    assert stranger.get(f"/admin/screening/{test_id}/report.json").status_code == 404
    stranger_applicant, _ = workbench.login(workbench.user(workbench.org(), "applicant"))
    assert stranger_applicant.get(f"/screening/{test_id}").status_code == 404

    report = {
        r["username"]: r["report"]
        for r in admin_client.get(f"/admin/screening/{test_id}/report.json").json()["applicants"]
    }
    assert report[ann]["flag_agreement"] == 0.75 and report[ann]["rank_agreement"] == 1.0
    assert report[ann]["topics"] == ["Religion", "Sports"]
    assert (report[ann]["demo_score"], report[ann]["meets"]["demo"], report[ann]["meets_all"]) == (None, None, None)
    assert report[bob]["flag_agreement"] == 0.25 and report[bob]["rank_agreement"] == 0.5
    assert report[bob]["meets_all"] is False  # below on flags and rankings, whatever the reviewer says

    # the reviewer scores A's demonstrations 7 and 5 (mean 6 = the cut-off); a score of 9 is refused whole
    with workbench.db.read() as session:
        attempt_a = session.scalar(
            select(ScreeningAttempt.id).join(User, User.id == ScreeningAttempt.user_id).where(User.username == ann)
        )
        demo_answers = list(
            session.scalars(
                select(ScreeningAnswer.id)
                .where(ScreeningAnswer.attempt_id == attempt_a, ScreeningAnswer.item_id.in_(item_ids[6:]))
                .order_by(ScreeningAnswer.item_id)
            )
        )
    scores_url = f"/admin/screening/{test_id}/attempts/{attempt_a}/scores"
    wrong = {"csrf_token": admin_token, f"score_{demo_answers[0]}": "7", f"score_{demo_answers[1]}": "9"}
    assert admin_client.post(scores_url, data=wrong).status_code == 400
    with workbench.db.read() as session:
        assert (
            session.scalars(select(ScreeningAnswer.score).where(ScreeningAnswer.id.in_(demo_answers))).all()
            == [None] * 2
        )
    right = {"csrf_token": admin_token, f"score_{demo_answers[0]}": "7", f"score_{demo_answers[1]}": "5"}
    assert admin_client.post(scores_url, data=right).status_code == 303
    report = {
        r["username"]: r["report"]
        for r in admin_client.get(f"/admin/screening/{test_id}/report.json").json()["applicants"]
    }
    assert (report[ann]["demo_score"], report[ann]["meets"], report[ann]["meets_all"]) == (
        6.0,
        {"flag": True, "rank": True, "demo": True},
        True,
    )
    attempt_page = admin_client.get(f"/admin/screening/{test_id}/attempts/{attempt_a}")
    assert attempt_page.status_code == 200 and "Stay with them; call a crisis line." in attempt_page.text
    overview = admin_client.get(f"/admin/screening/{test_id}")
    assert overview.status_code == 200 and f'data-applicant="{ann}"' in overview.text

    # A becomes a labeler: from now on she lands on the labeling queue
    promote = f"/admin/screening/{test_id}/attempts/{attempt_a}/promote"
    assert admin_client.post(promote, data={}).status_code == 403  # no CSRF token
    assert admin_client.post(promote, data={"csrf_token": admin_token}).status_code == 303
    with workbench.db.read() as session:
        assert dict(session.execute(select(User.username, User.role).where(User.username.in_([ann, bob]))).all()) == {
            ann: "labeler",
            bob: "applicant",
        }
    again, _ = workbench.login(ann)
    assert again.get("/").headers["location"] == "/queue"
