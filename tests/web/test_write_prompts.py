"""Write-a-prompt work over HTTP: an admin gives each labeler prompt-writing tasks (plain, few-shot, user-based)
and lists the project's use cases; a labeler finds them in the queue, is told what is missing (no category, a
single example, half a pair), keeps a draft, and submits; another labeler cannot reach them; what users wrote
is shown escaped; the export is what was typed."""

from __future__ import annotations

import random

from markupsafe import escape
from sqlalchemy import select

from instructrl.label.workbench.export import iter_export
from instructrl.label.workbench.schema import parse_prompt_form
from instructrl.web.models import Assignment, Task, User

XSS = '<script>alert("use case")</script>'


def _tasks(workbench, username: str, project_id: int) -> list[tuple[int, dict]]:
    with workbench.db.read() as session:
        return [
            (a, meta)
            for a, meta in session.execute(
                select(Assignment.id, Task.meta)
                .join(Task, Task.id == Assignment.task_id)
                .join(User, User.id == Assignment.user_id)
                .where(User.username == username, Task.project_id == project_id, Task.kind == "write_prompt")
                .order_by(Assignment.id)
            ).all()
        ]


def test_admin_gives_prompt_writing_work_and_labelers_write(workbench):
    org = workbench.org()
    ann, ben = workbench.user(org), workbench.user(org)
    admin = workbench.user(org, "admin")
    project_id = workbench.project(org)
    admin_client, admin_token = workbench.login(admin)
    url = f"/admin/projects/{project_id}/prompt-tasks"

    # user-based prompts need use cases; a count of 0 is refused; nothing is created by either
    refused = admin_client.post(url, data={"csrf_token": admin_token, "kind": "user-based", "per_labeler": "2"})
    assert refused.status_code == 400 and "use cases" in refused.text
    refused = admin_client.post(url, data={"csrf_token": admin_token, "kind": "plain", "per_labeler": "0"})
    assert refused.status_code == 400
    assert admin_client.post(url, data={"kind": "plain", "per_labeler": "1"}).status_code == 403  # no CSRF token
    assert _tasks(workbench, ann, project_id) == []

    use_cases = f"a cooking app that plans meals\n{XSS}\n\na cooking app that plans meals\n"
    created = admin_client.post(
        url,
        data={
            "csrf_token": admin_token,
            "kind": "mix",
            "per_labeler": "3",
            "labelers": f"{ann}, {ben}",
            "use_cases": use_cases,
        },
    )
    assert created.status_code == 303
    for name in (ann, ben):
        assert [meta["prompt_type"] for _, meta in _tasks(workbench, name, project_id)] == [
            "plain",
            "few-shot",
            "user-based",
        ]
    given = {meta["use_case"] for name in (ann, ben) for _, meta in _tasks(workbench, name, project_id)[2:]}
    assert given == {"a cooking app that plans meals", XSS}  # two labelers, two use cases dealt
    project_page = admin_client.get(f"/admin/projects/{project_id}").text
    assert XSS not in project_page and str(escape(XSS)) in project_page

    client, token = workbench.login(ann)
    queue = client.get("/queue").text
    assert queue.count("write a prompt") == 3 and XSS not in queue
    (plain, _), (few, _), (user, user_meta) = _tasks(workbench, ann, project_id)
    page = client.get(f"/tasks/{user}").text
    assert str(escape(user_meta["use_case"])) in page and XSS not in page
    assert 'name="category"' in page and 'name="prompt"' in page

    # another labeler reaches none of them
    ben_client, ben_token = workbench.login(ben)
    assert ben_client.get(f"/tasks/{plain}").status_code == 404
    assert ben_client.post(f"/tasks/{plain}/submit", data={"csrf_token": ben_token}).status_code == 404

    # what is missing is said, and nothing is stored
    no_category = client.post(f"/tasks/{plain}/submit", data={"csrf_token": token, "prompt": "Tell me a joke."})
    assert no_category.status_code == 400 and "Choose the use-case category" in no_category.text
    assert "Tell me a joke." in no_category.text  # what was typed stays on the page
    one_example = {"csrf_token": token, "category": "rewrite", "instruction": "Make it formal.", "query_0": "hey"}
    one_example |= {"answer_0": "Good afternoon.", "query_1": "", "answer_1": "Thanks."}
    refused = client.post(f"/tasks/{few}/submit", data=one_example)
    assert refused.status_code == 400
    assert "Example 2: write both the query and its response" in refused.text
    assert "at least 2 query/response pairs" not in refused.text  # two pairs were started
    refused = client.post(f"/tasks/{few}/submit", data=one_example | {"answer_1": ""})
    assert refused.status_code == 400 and "Write at least 2 query/response pairs." in refused.text
    assert list(iter_export(workbench.db, project_id, "prompts")) == []

    # a draft of the few-shot page (a fourth pair too) comes back on the page
    draft = {"instruction": ["Make it formal."], "query_3": ["yo <b>bold</b>"], "answer_3": ["Greetings."]}
    saved = client.post(f"/tasks/{few}/draft", json={"fields": draft}, headers={"X-CSRF-Token": token})
    assert saved.status_code == 200
    page = client.get(f"/tasks/{few}").text
    assert 'name="query_3"' in page and "yo &lt;b&gt;bold&lt;/b&gt;" in page and 'name="query_4"' not in page

    # submitted: a plain prompt, a few-shot prompt with a blank pair between two filled ones, a user-based one
    assert (
        client.post(
            f"/tasks/{plain}/submit",
            data={"csrf_token": token, "category": "generation", "prompt": "Tell me a joke\r\nabout <cats>."},
        ).status_code
        == 303
    )
    few_form = {"csrf_token": token, "category": "rewrite", "instruction": "Make it formal."}
    few_form |= {"query_0": "hey", "answer_0": "Good afternoon.", "query_1": "", "answer_1": ""}
    few_form |= {"query_2": "thx", "answer_2": "Thank you very much."}
    assert client.post(f"/tasks/{few}/submit", data=few_form).status_code == 303
    assert (
        client.post(
            f"/tasks/{user}/submit", data={"csrf_token": token, "category": "other", "prompt": "Plan my week."}
        ).status_code
        == 303
    )
    assert client.get(f"/tasks/{few}/draft").status_code in (404, 405)  # drafts are POST only
    prompts = list(iter_export(workbench.db, project_id, "prompts"))
    assert [(p.type, p.category, p.user_id, p.source, p.meta.get("use_case")) for p in prompts] == [
        ("plain", "generation", ann, "labeler", None),
        ("few-shot", "rewrite", ann, "labeler", None),
        ("user-based", "other", ann, "labeler", user_meta["use_case"]),
    ]
    assert prompts[0].prompt == "Tell me a joke\nabout <cats>."
    assert prompts[1].meta["examples"] == [
        {"query": "hey", "response": "Good afternoon."},
        {"query": "thx", "response": "Thank you very much."},
    ]
    assert prompts[2].prompt == "Plan my week."
    # the admin reads the latest prompts escaped
    project_page = admin_client.get(f"/admin/projects/{project_id}").text
    assert "about &lt;cats&gt;." in project_page and "<cats>" not in project_page


def test_prompt_form_parsing_keeps_the_text_as_typed():
    rng = random.Random(7)
    for _ in range(50):
        texts = ["".join(rng.choice(" ab\n<>&é\t") for _ in range(rng.randint(1, 30))) + "x" for _ in range(7)]
        form = {"category": ["chat"], "instruction": [texts[0]]}
        pairs = [(texts[1], texts[2]), (texts[3], texts[4]), (texts[5], texts[6])]
        for i, (query, answer) in enumerate(pairs):
            form |= {f"query_{i}": [query], f"answer_{i}": [answer]}
        payload, errors = parse_prompt_form(form, "few-shot")
        assert errors == []
        assert payload == {
            "type": "few-shot",
            "category": "chat",
            "instruction": texts[0],
            "examples": [{"query": q, "response": a} for q, a in pairs],
        }
    payload, errors = parse_prompt_form({"category": ["open_qa"], "prompt": ["  Why?\r\n "]}, "user-based", "a quiz")
    assert errors == [] and payload == {
        "type": "user-based",
        "category": "open_qa",
        "prompt": "  Why?\n ",
        "use_case": "a quiz",
    }
    assert parse_prompt_form({"category": ["poetry"], "prompt": ["x"]}, "plain")[1] == [
        "Choose the use-case category of your prompt."
    ]
    assert parse_prompt_form({"category": ["chat"], "prompt": [" \n "]}, "plain")[1] == [
        "Write a prompt before submitting."
    ]
