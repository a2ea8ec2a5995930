"""Bot labelers: the workbench's JSON API (keys, isolation, validation, retries) over a real server and
httpx, and ``instructrl label bot`` labeling a queue as the simulated labeler would, checked label by label
against the labeler run here on the same responses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from instructrl.label.labeler import rng_for
from instructrl.label.panel import Panel, make_panels
from instructrl.label.workbench.bot import workbench_flags
from instructrl.label.workbench.export import iter_export
from instructrl.records import Prompt
from instructrl.web.keys import create_key

from ..openai_stub import OpenAIStub, by_prompt
from .conftest import samples_for, unique
from .servers import ROOT
from .test_browser import CAPITAL, HAIKU


def _key(workbench, username: str) -> str:
    with workbench.db.write() as session:
        key, _ = create_key(session, username, "bot")
    return key


def _api(workbench, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=workbench.url, headers=headers, timeout=30)


def test_the_api_gives_a_bot_its_own_queue_and_checks_what_it_sends(workbench):
    org, other_org = workbench.org(), workbench.org()
    bot, person = workbench.user(org), workbench.user(org)
    stranger = workbench.user(other_org)
    applicant = workbench.user(org, "applicant")
    project = workbench.project(org)
    workbench.import_rank(project, samples_for("haiku", *HAIKU) + samples_for("capital", *CAPITAL), [bot])
    workbench.import_rank(project, samples_for("p", *CAPITAL), [person])

    with _api(workbench, None) as client:
        assert client.get("/api/label/v1/next").status_code == 401
    with _api(workbench, "irl-not-a-key") as client:
        assert client.get("/api/label/v1/next").status_code == 401
    with _api(workbench, _key(workbench, applicant)) as client:
        assert client.get("/api/label/v1/next").status_code == 403
    with _api(workbench, _key(workbench, stranger)) as client:
        assert client.get("/api/label/v1/next").status_code == 204  # another organization's tasks: none

    person_key = _key(workbench, person)
    with _api(workbench, person_key) as client:
        theirs = client.get("/api/label/v1/next").json()["assignment"]
    workbench.import_rank(workbench.project(other_org), samples_for("q", *CAPITAL), [stranger])
    with _api(workbench, _key(workbench, stranger)) as client:
        foreign = client.get("/api/label/v1/next").json()["assignment"]

    with _api(workbench, _key(workbench, bot)) as client:
        task = client.get("/api/label/v1/next", params={"project": project}).json()
        assert task["kind"] == "rank" and task["prompt"] == HAIKU[0]
        shown = [r["text"] for r in task["responses"]]
        assert sorted(shown) == sorted(HAIKU[1]) and [r["position"] for r in task["responses"]] == [0, 1, 2, 3]
        url = f"/api/label/v1/tasks/{task['assignment']}"
        # another labeler's assignment, and another organization's, are not there for this key
        assert client.post(f"/api/label/v1/tasks/{theirs}", json={"skip_reason": "x"}).status_code == 404
        assert client.post(f"/api/label/v1/tasks/{foreign}", json={"skip_reason": "x"}).status_code == 404
        # a CSRF token is not needed (the key is a header a cross-site form cannot send), but checks are
        bad = client.post(url, json={"likert": [7, 8, 1, 1], "ranks": [1, 2], "flags": [["no_such_flag"]] * 4})
        assert bad.status_code == 400
        detail = " ".join(bad.json()["detail"])
        assert "ranks: a list of 4 entries" in detail
        assert client.post(url, content=b"not json").status_code == 400
        bad = client.post(url, json={"likert": [7, 8, 1, 1], "ranks": [1, 2, 3, 4], "flags": [["no_such_flag"]] * 4})
        assert "choose a rating from 1 to 7" in " ".join(bad.json()["detail"])
        assert "unknown flag" in " ".join(bad.json()["detail"])
        good = {"likert": [7, 5, 1, 2], "ranks": [1, 2, 4, 3], "flags": [["satisfies_constraint"], [], [], []]}
        assert client.post(url, json=good).json() == {"status": "done"}
        assert client.post(url, json=good).status_code == 409  # a retry stores nothing twice
        second = client.get("/api/label/v1/next").json()
        skipped = client.post(f"/api/label/v1/tasks/{second['assignment']}", json={"skip_reason": "  "})
        assert skipped.status_code == 400
        skipped = client.post(f"/api/label/v1/tasks/{second['assignment']}", json={"skip_reason": "off topic"})
        assert skipped.json() == {"status": "skipped"}
        assert client.get("/api/label/v1/next").status_code == 204

    rankings = list(iter_export(workbench.db, project, "rankings"))
    assert len(rankings) == 1 and rankings[0].labeler_id == bot
    order = [HAIKU[1].index(t) for t in shown]  # imported index at each display position
    ranks = [0] * 4
    for position, index in enumerate(order):
        ranks[index] = good["ranks"][position]
    assert rankings[0].ranks == ranks
    skips = list(iter_export(workbench.db, project, "skips"))
    assert [s["reason"] for s in skips] == ["off topic"]


def test_label_bot_labels_the_queue_as_the_simulated_labeler_would(workbench, tmp_path):
    org = workbench.org(unique("botorg-"))
    bot = workbench.user(org)
    project = workbench.project(org)
    workbench.import_rank(project, samples_for("haiku", *HAIKU) + samples_for("capital", *CAPITAL), [bot])
    demo_prompts = [
        {"prompt": "What is 2 + 2? Answer with a number.", "id": "sum", "reference": "4"},
        {"prompt": "Name a colour of the sky.", "id": "sky"},
    ]
    workbench.import_demonstrate(project, demo_prompts, [bot])
    prompts_file = workbench.write_jsonl(demo_prompts)
    train, _ = make_panels()
    panel_file = tmp_path / "panels.json"
    panel_file.write_text(json.dumps({"train": train.to_dict(), "heldout": train.to_dict()}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BOT_KEY": _key(workbench, bot)}
    command = [
        sys.executable,
        "-m",
        "instructrl.cli",
        "label",
        "bot",
        f"url={workbench.url}",
        "api_key_env=BOT_KEY",
        f"project={project}",
        f"panel_file={panel_file}#train",
        f"prompts=[{prompts_file}]",
        "seed=7",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "'done': 3" in done.stdout and "'skipped': 1" in done.stdout, done.stdout

    labeler = Panel.load(f"{panel_file}#train").labelers[0]
    rankings = sorted(iter_export(workbench.db, project, "rankings"), key=lambda r: r.prompt)
    assert [r.prompt for r in rankings] == [HAIKU[0], CAPITAL[0]][::-1]
    with workbench.db.read() as session:
        from sqlalchemy import select

        from instructrl.web.models import Assignment, Task

        rows = session.execute(
            select(Assignment.id, Assignment.order, Task.prompt).join(Task).where(Task.project_id == project)
        ).all()
    for ranking in rankings:
        assignment, order, _ = next(row for row in rows if row.prompt == ranking.prompt)
        shown = [ranking.responses[i] for i in order]
        expected = labeler.rank(ranking.prompt, shown, rng_for(7, "bot", labeler.id, assignment))
        back = np.empty(len(order), dtype=int)
        back[order] = np.arange(len(order))
        assert ranking.ranks == [expected.ranks[back[i]] for i in range(len(order))]
        assert ranking.likert == [expected.likert[back[i]] for i in range(len(order))]
        prompt = Prompt(prompt=ranking.prompt)
        for i in range(len(order)):
            chosen = {name for name, on in ranking.flags[i].items() if on}
            assert chosen == set(workbench_flags(expected.flags[back[i]], prompt))
    demos = list(iter_export(workbench.db, project, "demonstrations"))
    assert [(d.prompt, d.response) for d in demos] == [(demo_prompts[0]["prompt"], "4")]  # the reference
    skips = list(iter_export(workbench.db, project, "skips"))
    assert len(skips) == 1 and "No reference answer" in skips[0]["reason"]


def test_label_bot_says_what_is_wrong_with_its_key(workbench):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BOT_KEY": "irl-wrong"}
    command = [sys.executable, "-m", "instructrl.cli", "label", "bot", f"url={workbench.url}", "api_key_env=BOT_KEY"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "refused the key in $BOT_KEY" in done.stderr
    env.pop("BOT_KEY")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "$BOT_KEY is empty" in done.stderr
    env["BOT_KEY"] = "irl-wrong"
    for args, message in (
        (["panel_file=/nonexistent/panels.json"], "panel_file: /nonexistent/panels.json: panel file not found"),
        (["url=http://127.0.0.1:84x0"], "is not a valid address"),
        (["labeler=judge", "judge.likert=false"], "labeler=judge needs judge.likert=true"),
    ):
        done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_loop_publishes_once_and_waits_only_for_active_labelers(workbench, tmp_path):
    from instructrl.label.workbench.imports import read_rank_items
    from instructrl.label.workbench.loop import WaitingForLabels, open_counts, publish, wait_for_labels
    from instructrl.web.db import InputError
    from instructrl.web.models import User

    org_name = unique("looporg-")
    org = workbench.org(org_name)
    stays, leaves = workbench.user(org), workbench.user(org)
    items = read_rank_items(workbench.write_jsonl(samples_for("haiku", *HAIKU) + samples_for("capital", *CAPITAL)))
    common = dict(org=org_name, project="round-rankings", kind="rank", labelers=[stays, leaves], overlap=0.0)
    project = publish(workbench.db, items=items, per_item=2, seed=0, instructions="", **common)
    assert publish(workbench.db, items=items, per_item=2, seed=0, instructions="", **common) == project  # once
    assert open_counts(workbench.db, project) == (2, 2)
    with pytest.raises(WaitingForLabels, match=r"2 of 2 items still wait .*open assignments: "):
        wait_for_labels(workbench.db, project, "round-rankings", wait=0, poll=1, progress=False)
    # other responses for the same prompts (a new SFT model): refused, not mixed with the old labels
    other = read_rank_items(
        workbench.write_jsonl(samples_for("haiku", HAIKU[0], HAIKU[1][::-1]) + samples_for("capital", *CAPITAL))
    )
    with pytest.raises(InputError, match="not this step's items"):
        publish(workbench.db, items=other, per_item=2, seed=0, instructions="", **common)
    with workbench.db.write() as session:  # the labeler who left is not waited for
        session.query(User).filter(User.username == leaves).update({"active": False})
    waiting, total = open_counts(workbench.db, project)
    assert total == 2 and waiting == 1  # one item each; the one that went to the labeler who left is not open


def _stub_judge(text: str) -> str:
    """A stub LLM judge: the shorter response wins a pair; a response naming Sydney is a hallucination
    rated 2, any other is rated 6."""
    pair = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nThink briefly", text, re.DOTALL)
    if pair:
        a, b = pair.group(1), pair.group(2)
        return "Verdict: " + ("A" if len(a) < len(b) else "B" if len(b) < len(a) else "tie")
    one = re.search(r"\[Response\]\n(.*)\n\nAnswer with one JSON", text, re.DOTALL)
    if one:
        wrong = "Sydney" in one.group(1)
        return json.dumps({"likert": 2 if wrong else 6, "hallucination": wrong})
    return "OK"


def test_label_bot_as_the_llm_judge(workbench):
    org = workbench.org(unique("judgeorg-"))
    bot = workbench.user(org)
    project = workbench.project(org)
    workbench.import_rank(project, samples_for("capital", *CAPITAL), [bot])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BOT_KEY": _key(workbench, bot)}
    with OpenAIStub(by_prompt(_stub_judge)) as judge:
        command = [
            *("label", "bot", f"url={workbench.url}", "api_key_env=BOT_KEY", "labeler=judge"),
            *(f"judge.base_url={judge.base_url}", "judge.model=stub"),
        ]
        done = subprocess.run(
            [sys.executable, "-m", "instructrl.cli", *command], env=env, capture_output=True, text=True, timeout=300
        )
        asked = len(judge.requests)
    assert done.returncode == 0, done.stderr
    assert asked == 2 * 3 + 3  # both orders of the C(3, 2) pairs, and one rating per response
    (ranking,) = iter_export(workbench.db, project, "rankings")
    assert ranking.labeler_id == bot
    lengths = [len(r) for r in ranking.responses]
    assert ranking.ranks == [sorted(lengths).index(n) + 1 for n in lengths]  # shortest first, as the stub judged
    assert ranking.likert == [2 if "Sydney" in r else 6 for r in ranking.responses]
    assert [f["hallucination"] for f in ranking.flags] == ["Sydney" in r for r in ranking.responses]
