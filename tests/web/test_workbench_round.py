"""A human-in-the-loop round: ``instructrl run`` on the tiny preset takes its demonstrations and rankings
from the labeling workbench. A person (a browser script in Debian's chromium) and a bot labeler
(``instructrl label bot``, the simulated labeler through the workbench's API) share the tasks, half of
them overlapping. The run publishes each step's tasks and stops with exit code 3 while labels are
missing; run again, it goes on, and what the person typed and clicked is what SFT and the reward model
train on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from instructrl.records import Demonstration, Ranking, read_jsonl
from instructrl.web.keys import create_key
from instructrl.web.models import Assignment

from .conftest import unique
from .servers import ROOT
from .test_browser import browser, sign_in  # noqa: F401  (browser: a fixture)

TINY = ROOT / "configs" / "run" / "tiny.yaml"


def _run(out: Path, workbench, org: str, labelers: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "instructrl.cli",
        "run",
        "--config",
        str(TINY),
        f"run.out_dir={out}",
        "run.progress=false",
        "suite.tasks=[]",
        "workbench.steps=[demonstrations,rankings]",
        f"workbench.db_url={workbench.db_url}",
        f"workbench.org={org}",
        f"workbench.labelers=[{','.join(labelers)}]",
        "workbench.overlap=0.5",
        "workbench.wait=0",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def _bot(workbench, key: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BOT_KEY": key}
    command = [sys.executable, "-m", "instructrl.cli", "label", "bot", f"url={workbench.url}", "api_key_env=BOT_KEY"]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _next(page, kind: str) -> bool:
    """Wait for the next task of ``kind`` (True) or for the end of the queue (False)."""
    task, done = page.locator(f"#task-form[data-kind={kind}]"), page.get_by_text("Nothing left to do here.")
    task.or_(done).first.wait_for()
    return not done.count()


def test_a_round_with_a_person_and_a_bot(workbench, browser, tmp_path):  # noqa: F811
    org_name = unique("round-")
    org = workbench.org(org_name)
    person = workbench.user(org, name=unique("alice"), display_name="Alice")
    bot = workbench.user(org, name=unique("bot"))
    with workbench.db.write() as session:
        key, _ = create_key(session, bot, "bot labeler")
    out = tmp_path / "run"

    # ---- first run: up to the demonstrations, which it publishes, then stops to wait
    first = _run(out, workbench, org_name, [person, bot])
    assert first.returncode == 3, first.stderr[-3000:]
    assert "waiting" in first.stderr and f"{out.name}-demonstrations" in first.stderr
    assert not (out / "sft" / "final").exists()

    typed: list[str] = []
    context, page = sign_in(browser, workbench.url, person, "**/queue", (1280, 860))
    page.click("text=Start labeling")
    while _next(page, "demonstrate"):
        text = f"Here is a careful answer, number {len(typed) + 1}, written by a person."
        page.fill("#response", text)
        typed.append(text)
        with page.expect_navigation():
            page.click("button:has-text('Submit')")
    context.close()
    assert typed, "the person got no demonstration to write"
    demos_by_bot = _bot(workbench, key, f"prompts=[{out / 'curate' / 'prompts' / 'sft.jsonl'}]")
    bot_done = int(re.search(r"'done': (\d+)", demos_by_bot).group(1))
    assert bot_done > 0, demos_by_bot

    # ---- second run: SFT on those demonstrations, samples, then the rankings wait
    second = _run(out, workbench, org_name, [person, bot])
    assert second.returncode == 3, second.stderr[-3000:]
    assert f"{out.name}-rankings" in second.stderr
    sft_data = read_jsonl(out / "demonstrations" / "sft_data.jsonl", Demonstration)
    responses = [d.response for d in sft_data]
    assert set(typed) <= set(responses)
    # every demonstration the workbench gave (the person's and the bot's) is in SFT's data
    given = read_jsonl(out / "demonstrations" / "workbench" / "demonstrations.jsonl", Demonstration)
    assert len(given) == len(typed) + bot_done and {d.meta["labeler_id"] for d in given} == {person, bot}
    assert all(d.response in responses for d in given)

    shown_ranks: dict[int, list[int]] = {}  # assignment -> the ranks given, by display position
    context, page = sign_in(browser, workbench.url, person, "**/queue", (1280, 860))
    page.click("text=Start labeling")
    while _next(page, "rank"):
        assignment = int(page.url.split("/tasks/")[1].split("?")[0])
        k = page.locator(".output .response-text").count()
        # the keyboard only: the first output shown best, the others tied behind it
        ranks = [1] + [2] * (k - 1)
        for position in range(k):
            page.keyboard.press(f"Digit{7 if position == 0 else 3}")
            page.keyboard.press(f"Shift+Digit{ranks[position]}")
            page.keyboard.press("j")
        shown_ranks[assignment] = ranks
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
    context.close()
    assert shown_ranks, "the person got no item to rank"
    with workbench.db.read() as session:
        rows = session.execute(
            select(Assignment.id, Assignment.task_id, Assignment.order).where(Assignment.id.in_(list(shown_ranks)))
        ).all()
    clicked: dict[int, list[int]] = {}  # task -> the ranks in the imported order
    for assignment, task_id, order in rows:
        ranks = [0] * len(order)
        for position, index in enumerate(order):
            ranks[index] = shown_ranks[assignment][position]
        clicked[task_id] = ranks
    _bot(workbench, key, f"panel_file={out / 'rankings' / 'panels.json'}#train")

    # ---- third run: the reward model trains on the workbench's rankings, and the loop ends
    third = _run(out, workbench, org_name, [person, bot])
    assert third.returncode == 0, third.stderr[-3000:]
    rankings = read_jsonl(out / "rankings" / "rankings.jsonl", Ranking)
    assert {r.labeler_id for r in rankings} == {person, bot}
    mine = [r for r in rankings if r.labeler_id == person]
    assert len(mine) == len(clicked)
    for r in mine:
        assert r.ranks == clicked[r.meta["task_id"]]
    assert (out / "rankings" / "panel_rankings.jsonl").exists()  # the panel still ranked (and was calibrated)
    metrics = json.loads((out / "rankings" / "metrics.json").read_text())
    assert metrics["workbench/rankings"] == len(rankings) and metrics["workbench/labelers"] == 2
    assert metrics["workbench/agreement_comparisons"] > 0  # half the items went to both
    assert 0.0 <= metrics["workbench/agreement"] <= 1.0
    assert (out / "rm" / "final").exists() and (out / "eval" / "results.json").exists()
    rm_rows = [json.loads(line) for line in open(out / "rm" / "metrics.jsonl", encoding="utf-8")]
    assert rm_rows, "the reward model logged nothing"
