"""The agreement dashboard over HTTP: two labelers rank the same items, a third ranks one of their own,
an admin marks gold items; the page, its JSON and ``instructrl label export``'s agreement.json give the
hand-computed numbers, and nobody but the project's admins reaches them."""

from __future__ import annotations

import json

import krippendorff
import numpy as np
import pytest
from sqlalchemy import select

from instructrl.cli import main
from instructrl.web.models import Assignment, Project, Task, User

from .conftest import samples_for, unique


def _work(workbench, username: str) -> dict[str, tuple[int, list[int]]]:
    """prompt id -> (assignment id, display order) of one labeler."""
    with workbench.db.read() as session:
        rows = session.execute(
            select(Task.external_id, Assignment.id, Assignment.order)
            .join(Assignment, Assignment.task_id == Task.id)
            .join(User, User.id == Assignment.user_id)
            .where(User.username == username)
        ).all()
    return {pid: (aid, order) for pid, aid, order in rows}


def _submit(
    client, token: str, assignment: tuple[int, list[int]], likert: list[int], ranks: list[int], flagged=()
) -> None:
    """Send a rate-and-rank form with values given in the imported order (the page shows them shuffled);
    ``flagged``: the outputs marked as hallucinations."""
    aid, order = assignment
    form: dict = {"csrf_token": token}
    for position, index in enumerate(order):
        form[f"likert_{position}"] = str(likert[index])
        form[f"rank_{position}"] = str(ranks[index])
        if index in flagged:
            form[f"flags_{position}"] = ["hallucination"]
    assert client.post(f"/tasks/{aid}/submit", data=form).status_code == 303


def test_agreement_dashboard_gold_and_export(workbench, tmp_path):
    org_name = unique("org")
    org = workbench.org(org_name)
    ann, ben, cat = workbench.user(org), workbench.user(org), workbench.user(org)
    admin = workbench.user(org, "admin")
    project = workbench.project(org, unique("agree"))
    with workbench.db.read() as session:
        project_name = session.get(Project, project).name
    both = samples_for("q1", "Pick one.", ["x", "y", "z"]) + samples_for("q2", "And now?", ["u", "v"])
    workbench.import_rank(project, both, [ann, ben], overlap=1.0, per_item=2)
    workbench.import_rank(project, samples_for("q3", "Alone?", ["s", "t"]), [cat])

    # q1: ann [1,2,3], ben [1,3,2] agree on 2 of the 3 pairs; q2: ann [1,2], ben [1,1] a tie against an order: 1/2
    likert = {"q1": ([7, 4, 1], [7, 1, 4]), "q2": ([5, 3], [5, 5])}
    ranks = {"q1": ([1, 2, 3], [1, 3, 2]), "q2": ([1, 2], [1, 1])}
    flagged = {"q1": ([0], [0]), "q2": ([], [1])}  # hallucinations: both on q1's first output, ben alone on q2's second
    for who, name in enumerate((ann, ben)):
        client, token = workbench.login(name)
        work = _work(workbench, name)
        for pid in ("q1", "q2"):
            _submit(client, token, work[pid], likert[pid][who], ranks[pid][who], flagged[pid][who])
    client, token = workbench.login(cat)
    cat_work = _work(workbench, cat)["q3"]
    assert client.get(f"/tasks/{cat_work[0]}").status_code == 200  # the page opened: the clock starts
    _submit(client, token, cat_work, [3, 6], [2, 1])

    admin_client, admin_token = workbench.login(admin)
    with workbench.db.read() as session:
        tasks = dict(session.execute(select(Task.external_id, Task.id).where(Task.project_id == project)).all())
    item_url = f"/admin/projects/{project}/items"

    # gold for q3 typed in; for q1 taken from ben's label
    page = admin_client.get(f"{item_url}/{tasks['q3']}")
    assert page.status_code == 200 and "Alone?" in page.text
    bad = admin_client.post(f"{item_url}/{tasks['q3']}/gold", data={"csrf_token": admin_token, "gold_0": "1"})
    assert bad.status_code == 400 and "every one of the 2 outputs a rank from 1 to 2" in bad.text
    ok = admin_client.post(
        f"{item_url}/{tasks['q3']}/gold", data={"csrf_token": admin_token, "gold_0": "1", "gold_1": "2"}
    )
    assert ok.status_code == 303
    item_page = admin_client.get(f"{item_url}/{tasks['q1']}").text
    # the labels are listed in submit order: ann's "Use as gold" button first, then ben's
    labels_on_page = [int(c.split('value="')[1].split('"')[0]) for c in item_page.split('name="from_label"')[1:]]
    assert len(labels_on_page) == 2
    ben_label = labels_on_page[1]
    assert (
        admin_client.post(
            f"{item_url}/{tasks['q1']}/gold", data={"csrf_token": admin_token, "from_label": str(ben_label)}
        ).status_code
        == 303
    )
    # gold on q2 set and cleared again
    admin_client.post(f"{item_url}/{tasks['q2']}/gold", data={"csrf_token": admin_token, "gold_0": "2", "gold_1": "1"})
    admin_client.post(f"{item_url}/{tasks['q2']}/gold", data={"csrf_token": admin_token, "clear": "1"})
    with workbench.db.read() as session:
        gold = dict(session.execute(select(Task.external_id, Task.gold).where(Task.project_id == project)).all())
    assert gold == {"q1": [1, 3, 2], "q2": None, "q3": [1, 2]}

    data = admin_client.get(f"/admin/projects/{project}/agreement.json").json()
    pw = data["pairwise"]
    assert pw["rate"] == pytest.approx(2.5 / 4)
    assert (pw["comparisons"], pw["items"], pw["labeler_pairs"], pw["ties"]) == (4, 2, 2, "half")
    assert pw["strict_rate"] == pytest.approx(2 / 3) and pw["strict_comparisons"] == 3
    # two items: resamples give 4/6 (q1 twice), 5/8 or 1/2 (q2 twice)
    assert pw["low"] == pytest.approx(0.5) and pw["high"] == pytest.approx(2 / 3)
    rows = {row["labeler"]: row for row in data["labelers"]}
    assert set(rows) == {ann, ben, cat}
    assert rows[ann]["consensus"] == pytest.approx(2.5 / 4) and rows[ann]["consensus_comparisons"] == 4
    assert (rows[ann]["gold"], rows[ann]["gold_comparisons"]) == (pytest.approx(2 / 3), 3)
    assert (rows[ben]["gold"], rows[ben]["gold_comparisons"]) == (1.0, 3)
    assert (rows[cat]["gold"], rows[cat]["consensus"], rows[cat]["labels"]) == (0.0, None, 1)
    assert [rows[n]["labels"] for n in (ann, ben)] == [2, 2]
    # cat opened her page before submitting; ann and ben posted without opening theirs (no draft, no clock)
    assert 0 <= rows[cat]["median_seconds"] < 60 and rows[cat]["labels_per_hour"] > 0
    assert rows[ann]["median_seconds"] is None and rows[ann]["labels_per_hour"] > 0
    assert (data["overlapping_items"], data["gold_items"]) == (2, 2)
    # alpha as the package computes it straight from the scores (raters x units (q1 x3, q2 x2))
    expected = krippendorff.alpha(
        reliability_data=np.array([[7, 4, 1, 5, 3], [7, 1, 4, 5, 5]], dtype=float), level_of_measurement="interval"
    )
    assert data["likert_alpha"]["alpha"] == pytest.approx(expected) and data["likert_alpha"]["units"] == 5
    expected = krippendorff.alpha(reliability_data=[[1, 0, 0, 0, 0], [1, 0, 0, 0, 1]], level_of_measurement="nominal")
    assert data["flag_alpha"]["hallucination"]["alpha"] == pytest.approx(expected)
    assert data["flag_alpha"]["violent_content"]["alpha"] is None  # nobody set it: no chance disagreement
    assert [row["item"] for row in data["items"]] == [tasks["q2"], tasks["q1"]]

    page = admin_client.get(f"/admin/projects/{project}/agreement")
    assert page.status_code == 200
    assert "62.5%" in page.text and "ties count half" in page.text and "Krippendorff" in page.text
    assert f'data-labeler="{ann}"' in page.text and "And now?" in page.text

    out = tmp_path / "export"
    args = ["label", "export", f"project={project_name}", f"org={org_name}", f"out_dir={out}"]
    assert main([*args, f"db_url={workbench.db_url}"]) == 0
    written = json.loads((out / "agreement.json").read_text(encoding="utf-8"))
    assert written["project"] == project_name
    assert written == data  # the same seeded bootstrap, the same numbers


def test_dashboard_is_for_the_project_admins_only(workbench):
    org = workbench.org()
    labeler = workbench.user(org)
    project = workbench.project(org)
    workbench.import_rank(project, samples_for("p1", "Hm?", ["a", "b"]), [labeler])
    with workbench.db.read() as session:
        task = session.scalar(select(Task.id).where(Task.project_id == project))
    pages = [
        f"/admin/projects/{project}/agreement",
        f"/admin/projects/{project}/agreement.json",
        f"/admin/projects/{project}/items/{task}",
    ]
    client, token = workbench.login(labeler)
    for url in pages:
        assert client.get(url).status_code == 403
    assert client.post(f"{pages[2]}/gold", data={"csrf_token": token, "clear": "1"}).status_code == 403

    stranger, stranger_token = workbench.login(workbench.user(workbench.org(), "admin"))
    for url in pages:
        assert stranger.get(url).status_code == 404
    assert stranger.post(f"{pages[2]}/gold", data={"csrf_token": stranger_token, "clear": "1"}).status_code == 404

    admin, _ = workbench.login(workbench.user(org, "admin"))
    assert admin.post(f"{pages[2]}/gold", data={"gold_0": "1", "gold_1": "2"}).status_code == 403  # no CSRF token
    empty = admin.get(pages[1]).json()
    assert empty["pairwise"]["rate"] is None and empty["labelers"] == []
    assert "No item has been ranked by two labelers yet" in admin.get(pages[0]).text
