"""Import and the pure parts of the workbench: bad input names its file and line and imports nothing; who
gets which item; reading a submitted form back into the imported order."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import func, select

from instructrl.cli import main
from instructrl.label.workbench.imports import plan_assignments, read_rank_items
from instructrl.label.workbench.schema import FLAG_NAMES, clean_draft, display_order, parse_rank_form
from instructrl.records import RecordError
from instructrl.web.db import InputError
from instructrl.web.models import Assignment, Project, Task

from .conftest import samples_for, unique


def _counts(workbench) -> tuple[int, int, int]:
    with workbench.db.read() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Project, Task, Assignment))


@pytest.mark.parametrize(
    "case, line, message",
    [
        ("broken", 3, "not valid JSON"),
        ("too_many", 12, "has more than 9 responses (lines 2, 3, 4, 5, 6, 7, 8, 9, 11, 12)"),
        ("too_few", 11, "prompt 'lonely' has only 1 response"),
        ("bad_field", 2, "field 'response': expected a string"),
        ("mixed_prompt", 3, "field 'prompt': differs from the prompt of"),
    ],
)
def test_bad_import_names_file_and_line_and_imports_nothing(workbench, capsys, case, line, message):
    org_name = unique("org")
    org = workbench.org(org_name)
    workbench.user(org)
    good = samples_for("ok", "Fine prompt", ["a", "b"])
    rows: list = [good[0]] + samples_for("big", "Big prompt", [f"r{i}" for i in range(8)]) + [good[1]]
    if case == "too_many":
        rows += samples_for("big", "Big prompt", ["r8", "r9"])
    elif case == "too_few":
        rows += samples_for("lonely", "Alone", ["only one"])
    elif case == "bad_field":
        rows[1] = {**rows[1], "response": 5}
    elif case == "mixed_prompt":
        rows[2] = {**rows[2], "prompt": "Another prompt"}
    path = workbench.write_jsonl(rows, name=f"{case}.jsonl")
    if case == "broken":
        lines = path.read_text().splitlines(keepends=True)
        lines[2] = lines[2][:25] + "\n"
        path.write_text("".join(lines))
    before = _counts(workbench)
    code = main(
        ["label", "import", f"file={path}", f"project={unique('p')}", f"org={org_name}", f"db_url={workbench.db_url}"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"instructrl label import: error: {path}:{line}: " in err
    assert message in err
    assert _counts(workbench) == before


def test_import_into_an_org_without_labelers_creates_nothing(workbench, capsys):
    org_name = unique("org")
    workbench.org(org_name)
    path = workbench.write_jsonl(samples_for("p", "Hi", ["a", "b"]))
    before = _counts(workbench)
    project = unique("p")
    assert (
        main(["label", "import", f"file={path}", f"project={project}", f"org={org_name}", f"db_url={workbench.db_url}"])
        == 2
    )
    assert "the organization has no active labelers" in capsys.readouterr().err
    # not even the project was left behind
    assert _counts(workbench) == before
    assert (
        main(["label", "import", f"file={path}", f"project={project}", "org=no-such-org", f"db_url={workbench.db_url}"])
        == 2
    )
    assert "no organization 'no-such-org'" in capsys.readouterr().err


def test_samples_group_by_prompt_id_else_prompt(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = samples_for("a", "Same text", ["1", "2"]) + [
        {"prompt": "No id", "response": "x"},
        {"prompt": "No id", "response": "y", "policy": "sft"},
        {"prompt": "Same text", "response": "3", "meta": {"prompt_id": "b"}},
        {"prompt": "Same text", "response": "4", "meta": {"prompt_id": "b", "category": "generation"}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_rank_items(path)
    assert [(i.external_id, [r["text"] for r in i.responses], i.where) for i in items] == [
        ("a", ["1", "2"], f"{path}:1"),
        ("", ["x", "y"], f"{path}:3"),
        ("b", ["3", "4"], f"{path}:5"),
    ]
    assert items[1].responses[1] == {"text": "y", "policy": "sft", "sample_id": "", "finish_reason": None}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(RecordError, match="no samples in the file"):
        read_rank_items(empty)


def test_plan_assignments_overlap_and_balance():
    # 10 items, 3 labelers, 20% overlap on 2 labelers: 2 items x 2 + 8 x 1 = 12 assignments, 4 each
    plan = plan_assignments(10, [11, 12, 13], overlap=0.2, per_item=2, seed=0)
    assert sorted(len(users) for users in plan) == [1] * 8 + [2] * 2
    assert all(len(set(users)) == len(users) for users in plan)
    assert Counter(u for users in plan for u in users) == {11: 4, 12: 4, 13: 4}
    assert plan == plan_assignments(10, [11, 12, 13], overlap=0.2, per_item=2, seed=0)  # seeded
    # everything to everyone
    assert [sorted(users) for users in plan_assignments(3, [1, 2], overlap=1.0, per_item=2, seed=5)] == [[1, 2]] * 3
    # no overlap: round robin, 7 items over 3 labelers -> 3, 2, 2
    assert sorted(Counter(u for users in plan_assignments(7, [1, 2, 3], 0.0, 2, 1) for u in users).values()) == [
        2,
        2,
        3,
    ]
    with pytest.raises(InputError, match="labelers_per_item=3 but only 2 labelers"):
        plan_assignments(4, [1, 2], overlap=0.5, per_item=3, seed=0)


def test_parse_rank_form_maps_display_positions_back():
    # the page shows the imported responses in the order [2, 0, 1]: position 0 is response 2
    order = [2, 0, 1]
    form = {
        "likert_0": ["7"],
        "rank_0": ["1"],
        "flags_0": ["satisfies_constraint"],
        "likert_1": ["2"],
        "rank_1": ["3"],
        "flags_1": ["hallucination", "harmful_advice"],
        "likert_2": ["5"],
        "rank_2": ["1"],
    }
    payload, errors = parse_rank_form(form, order)
    assert errors == []
    assert payload["likert"] == [2, 5, 7]
    assert payload["ranks"] == [3, 1, 1]
    assert [sorted(k for k, v in f.items() if v) for f in payload["flags"]] == [
        ["hallucination", "harmful_advice"],
        [],
        ["satisfies_constraint"],
    ]
    assert all(list(f) == list(FLAG_NAMES) for f in payload["flags"])
    bad = {**form, "likert_1": ["8"], "rank_2": ["4"], "flags_0": ["not_a_flag"]}
    assert parse_rank_form(bad, order) == (
        None,
        [
            "Output A: unknown flag 'not_a_flag'.",
            "Output B: choose a rating from 1 to 7.",
            "Output C: choose a rank from 1 to 3.",
        ],
    )
    assert parse_rank_form({**form, "likert_0": ["1", "2"]}, order)[1] == ["Output A: choose a rating from 1 to 7."]


def test_drafts_and_orders():
    assert clean_draft({"likert_0": ["3"], "response": "text", "evil": ["x"], "rank_9": ["1"]}) == {
        "likert_0": ["3"],
        "response": ["text"],
    }
    assert clean_draft({"likert_0": [3]}) is None
    assert clean_draft(["not", "a", "dict"]) is None
    assert clean_draft({"response": ["x" * 70_000]}) is None
    assert sorted(display_order(9, 123)) == list(range(9))
    assert display_order(9, 123) == display_order(9, 123)
    assert len({tuple(display_order(4, seed)) for seed in range(50)}) > 10


def test_admin_uploads_an_import(workbench):
    org = workbench.org()
    labeler, admin = workbench.user(org), workbench.user(org, "admin")
    project = workbench.project(org)
    client, token = workbench.login(admin)
    good = "".join(json.dumps(r) + "\n" for r in samples_for("u1", "Upload me", ["one", "two", "three"]))
    response = client.post(
        f"/admin/projects/{project}/import",
        data={"csrf_token": token, "kind": "rank", "overlap": "0", "per_item": "2", "labelers": labeler, "seed": "0"},
        files={"file": ("batch.jsonl", good.encode(), "application/x-ndjson")},
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/projects/{project}?imported=1"
    before = _counts(workbench)
    broken = good + '{"prompt": "cut off\n'
    refused = client.post(
        f"/admin/projects/{project}/import",
        data={"csrf_token": token, "kind": "rank", "overlap": "0", "per_item": "2", "labelers": "", "seed": "0"},
        files={"file": ("broken.jsonl", broken.encode(), "application/x-ndjson")},
    )
    assert refused.status_code == 400
    assert "broken.jsonl:4: not valid JSON" in refused.text
    assert "/tmp" not in refused.text  # the server's temporary file is not named
    assert _counts(workbench) == before
    # without the token the upload is refused before it is read
    assert (
        client.post(f"/admin/projects/{project}/import", files={"file": ("b.jsonl", good.encode())}).status_code == 403
    )
    assert _counts(workbench) == before


def test_create_user_on_the_command_line(tmp_path, capsys, monkeypatch):
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("INSTRUCTRL_PASSWORD", "a long passphrase")
    assert main(["label", "admin", "create-user", "username=Ada", "org=lab", f"db_url={db_url}"]) == 0
    assert capsys.readouterr().out.startswith("created admin 'ada' in organization 'lab'")
    assert main(["label", "admin", "create-user", "username=ada", f"db_url={db_url}"]) == 2
    assert "the user name 'ada' is taken" in capsys.readouterr().err
    monkeypatch.setenv("INSTRUCTRL_PASSWORD", "short")
    assert main(["label", "admin", "create-user", "username=bo", "role=labeler", f"db_url={db_url}"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["label", "admin", "create-user", "username=bo", "role=boss", f"db_url={db_url}"]) == 2
    assert "'boss' is not one of the valid choices" in capsys.readouterr().err
