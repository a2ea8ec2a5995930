"""What is entered is what is exported: ``instructrl label import`` -> labels over HTTP -> ``instructrl label
export``, with ties, skips, a draft, a double submit and a change of instructions between labels."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from instructrl.cli import main
from instructrl.label.workbench.schema import FLAG_NAMES
from instructrl.records import Demonstration, Ranking, read_jsonl
from instructrl.web.models import Assignment, Project, Task, User

from .conftest import samples_for, unique

PROMPTS = {
    "q1": ("Name three primes.", ["2, 3, 5", "1, 2, 3", "4, 6, 8"]),
    "q2": ("Write a haiku about rain.", ["rain taps the window", "Rain.", "drip drop drip drop", "the sky is crying"]),
    "q3": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}], ["4", "four"]),
}


def _my_assignments(workbench, username: str) -> dict[str, tuple[int, list[int]]]:
    """prompt id -> (assignment id, display order) of one labeler."""
    with workbench.db.read() as session:
        rows = session.execute(
            select(Task.external_id, Assignment.id, Assignment.order)
            .join(Assignment, Assignment.task_id == Task.id)
            .join(User, User.id == Assignment.user_id)
            .where(User.username == username)
        ).all()
    return {pid: (aid, order) for pid, aid, order in rows}


def _rank_form(
    token: str, order: list[int], likert: list[int], ranks: list[int], flags: list[set[str]], version
) -> dict:
    """The form a labeler sends, from values given in the imported order (the page shows ``order``)."""
    form: dict = {"csrf_token": token, "instruction_version": str(version)}
    for position, index in enumerate(order):
        form[f"likert_{position}"] = str(likert[index])
        form[f"rank_{position}"] = str(ranks[index])
        form[f"flags_{position}"] = sorted(flags[index])
    return form


def test_import_label_export_round_trip(workbench, tmp_path, capsys):
    org_name = unique("org")
    org = workbench.org(org_name)
    ann, ben = workbench.user(org), workbench.user(org)
    admin = workbench.user(org, "admin")
    project = unique("roundtrip")
    samples = [s for pid, (prompt, responses) in PROMPTS.items() for s in samples_for(pid, prompt, responses)]
    samples_path = workbench.write_jsonl(samples)
    instructions = tmp_path / "v1.md"
    instructions.write_text("Version one: prefer the helpful answer.\n", encoding="utf-8")
    code = main(
        [
            "label",
            "import",
            f"file={samples_path}",
            f"project={project}",
            f"org={org_name}",
            "overlap=1.0",
            "labelers_per_item=2",
            f"instructions={instructions}",
            f"db_url={workbench.db_url}",
        ]
    )
    assert code == 0
    assert (
        capsys.readouterr().out.strip() == f"imported 3 tasks into project '{project}' as 6 assignments for 2 labelers"
    )
    prompts_path = workbench.write_jsonl(
        [{"prompt": "Explain tides to a child.", "id": "d1", "category": "open_qa", "user_id": "u7"}]
    )
    assert (
        main(
            [
                "label",
                "import",
                f"file={prompts_path}",
                "task=demonstrate",
                f"project={project}",
                f"org={org_name}",
                f"labelers={ann}",
                f"db_url={workbench.db_url}",
            ]
        )
        == 0
    )

    ann_work, ben_work = _my_assignments(workbench, ann), _my_assignments(workbench, ben)
    assert sorted(ann_work) == ["d1", "q1", "q2", "q3"] and sorted(ben_work) == ["q1", "q2", "q3"]
    client, token = workbench.login(ann)
    page = client.get(f"/tasks/{ann_work['q1'][0]}").text
    version_1 = int(re.search(r'name="instruction_version" value="(\d+)"', page).group(1))
    assert "Version one: prefer the helpful answer." in page

    # q1: a tie for first place, two flags on one response
    q1 = dict(
        likert=[6, 6, 1], ranks=[1, 1, 3], flags=[set(), {"hallucination", "fails_instruction"}, {"fails_instruction"}]
    )
    response = client.post(
        f"/tasks/{ann_work['q1'][0]}/submit", data=_rank_form(token, ann_work["q1"][1], **q1, version=version_1)
    )
    assert response.status_code == 303
    # the same page sent again (a retry after a lost answer) changes nothing
    again = client.post(
        f"/tasks/{ann_work['q1'][0]}/submit",
        data=_rank_form(
            token, ann_work["q1"][1], likert=[1, 1, 1], ranks=[3, 2, 1], flags=[set()] * 3, version=version_1
        ),
    )
    assert again.status_code == 303

    # the admin publishes version 2 of the instructions; ann's next label is made under it
    admin_client, admin_token = workbench.login(admin)
    with workbench.db.read() as session:
        project_id = session.scalar(select(Project.id).where(Project.name == project))
    assert (
        admin_client.post(
            f"/admin/projects/{project_id}/instructions", data={"csrf_token": admin_token, "text": "Version two."}
        ).status_code
        == 303
    )
    page = client.get(f"/tasks/{ann_work['q2'][0]}").text
    version_2 = int(re.search(r'name="instruction_version" value="(\d+)"', page).group(1))
    assert version_2 != version_1 and "Version two." in page

    # q2: every response tied, all flags on the last one
    q2 = dict(likert=[4, 4, 4, 4], ranks=[2, 2, 2, 2], flags=[set(), set(), set(), set(FLAG_NAMES)])
    assert (
        client.post(
            f"/tasks/{ann_work['q2'][0]}/submit", data=_rank_form(token, ann_work["q2"][1], **q2, version=version_2)
        ).status_code
        == 303
    )
    # q3: a half-filled form is refused and stores nothing; then skipped with a reason
    incomplete = client.post(f"/tasks/{ann_work['q3'][0]}/submit", data={"csrf_token": token, "likert_0": "3"})
    assert incomplete.status_code == 400
    assert "Output B: choose a rating from 1 to 7." in incomplete.text
    reason = "Not sure about the arithmetic — I don't grade maths.\nSecond line."
    assert (
        client.post(
            f"/tasks/{ann_work['q3'][0]}/skip",
            data={"csrf_token": token, "skip_reason": reason, "instruction_version": str(version_2)},
        ).status_code
        == 303
    )
    # the demonstration: a draft first (it comes back on the page), then the submit
    demo_text = "The sea rises and falls twice a day\nbecause the Moon pulls on it."
    draft = client.post(
        f"/tasks/{ann_work['d1'][0]}/draft", json={"fields": {"response": [demo_text]}}, headers={"X-CSRF-Token": token}
    )
    assert draft.status_code == 200
    assert demo_text in client.get(f"/tasks/{ann_work['d1'][0]}").text
    assert (
        client.post(
            f"/tasks/{ann_work['d1'][0]}/submit",
            data={
                "csrf_token": token,
                "response": demo_text.replace("\n", "\r\n"),
                "instruction_version": str(version_2),
            },
        ).status_code
        == 303
    )

    # ben ranks q1 strictly, under version 2
    ben_client, ben_token = workbench.login(ben)
    q1_ben = dict(likert=[7, 2, 1], ranks=[1, 2, 3], flags=[{"satisfies_constraint"}, set(), {"harmful_advice"}])
    assert (
        ben_client.post(
            f"/tasks/{ben_work['q1'][0]}/submit",
            data=_rank_form(ben_token, ben_work["q1"][1], **q1_ben, version=version_2),
        ).status_code
        == 303
    )

    out = tmp_path / "export"
    assert (
        main(
            ["label", "export", f"project={project}", f"org={org_name}", f"out_dir={out}", f"db_url={workbench.db_url}"]
        )
        == 0
    )
    rankings = read_jsonl(out / "rankings.jsonl", Ranking)
    demos = read_jsonl(out / "demonstrations.jsonl", Demonstration)
    skips = [json.loads(line) for line in (out / "skips.jsonl").read_text(encoding="utf-8").splitlines()]

    def flags(sets):
        return [{name: name in chosen for name in FLAG_NAMES} for chosen in sets]

    got = [
        (
            r.meta["prompt_id"],
            r.labeler_id,
            r.ranks,
            r.likert,
            r.flags,
            r.meta["instruction_version"],
            r.responses,
            r.prompt,
        )
        for r in rankings
    ]
    assert got == [
        ("q1", ann, [1, 1, 3], [6, 6, 1], flags(q1["flags"]), 1, PROMPTS["q1"][1], PROMPTS["q1"][0]),
        ("q2", ann, [2, 2, 2, 2], [4, 4, 4, 4], flags(q2["flags"]), 2, PROMPTS["q2"][1], PROMPTS["q2"][0]),
        ("q1", ben, [1, 2, 3], [7, 2, 1], flags(q1_ben["flags"]), 2, PROMPTS["q1"][1], PROMPTS["q1"][0]),
    ]
    assert rankings[0].meta["policies"] == ["policy-0", "policy-1", "policy-0"]
    assert rankings[0].meta["sample_ids"] == ["q1-s0", "q1-s1", "q1-s2"]
    assert rankings[0].meta["schema_version"] == 1
    assert (
        rankings[0].meta["submitted_at"].endswith("Z")
        and rankings[0].meta["opened_at"] <= rankings[0].meta["submitted_at"]
    )
    assert [(s["prompt_id"], s["labeler_id"], s["reason"], s["instruction_version"], s["prompt"]) for s in skips] == [
        ("q3", ann, reason, 2, PROMPTS["q3"][0])
    ]
    assert [
        (d.prompt, d.response, d.category, d.user_id, d.meta["labeler_id"], d.meta["instruction_version"])
        for d in demos
    ] == [("Explain tides to a child.", demo_text, "open_qa", "u7", ann, 2)]
    # the admin's streamed download is the same file
    download = admin_client.get(f"/admin/projects/{project_id}/export/rankings.jsonl")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/x-ndjson")
    assert download.text == (out / "rankings.jsonl").read_text(encoding="utf-8")
    assert (out / "config.yaml").exists()
