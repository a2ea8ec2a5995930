"""The chosen/rejected pairs and the Hugging Face dataset exports: rankings entered over HTTP (ties among them)
come out of ``instructrl label export formats=jsonl,pairs,hf`` as every strictly ranked pair, ties left out,
with the labeler, the instruction version and the time of the submit; the datasets on disk hold exactly the
records of the JSONL exports, and ``instructrl rm``'s reader takes the pairs dataset."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from instructrl.cli import main
from instructrl.label.workbench.config import ExportConfig
from instructrl.label.workbench.imports import create_prompt_tasks
from instructrl.label.workbench.schema import FLAG_NAMES
from instructrl.records import Comparison, Demonstration, Prompt, Ranking, read_jsonl, to_dict
from instructrl.web.models import Assignment, Project, Task, User

from .conftest import samples_for, unique

PRIMES = ("Name three primes.", ["2, 3, 5", "1, 2, 3", "4, 6, 8"])
RAIN = ("Write a haiku about rain.", ["rain taps the window", "Rain.", "drip drop drip drop", "the sky is crying"])
CHAT = ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}], ["4", "four"])


def _assignments(workbench, username: str) -> dict[str, tuple[int, list[int]]]:
    with workbench.db.read() as session:
        rows = session.execute(
            select(Task.external_id, Assignment.id, Assignment.order)
            .join(Assignment, Assignment.task_id == Task.id)
            .join(User, User.id == Assignment.user_id)
            .where(User.username == username)
        ).all()
    return {pid: (aid, order) for pid, aid, order in rows}


def _rank(client, token: str, work: tuple[int, list[int]], ranks: list[int], flags: list[set], version: int) -> None:
    """Submit a ranking given in the imported order (the page shows the responses in ``order``)."""
    assignment, order = work
    form: dict = {"csrf_token": token, "instruction_version": str(version)}
    for position, index in enumerate(order):
        form |= {f"likert_{position}": str(8 - ranks[index]), f"rank_{position}": str(ranks[index])}
        form[f"flags_{position}"] = sorted(flags[index])
    assert client.post(f"/tasks/{assignment}/submit", data=form).status_code == 303


def test_pairs_and_hf_exports_hold_what_was_ranked(workbench, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the hf export needs the datasets package")
    org_name = unique("org")
    org = workbench.org(org_name)
    ann = workbench.user(org)
    project = unique("pairs")
    instructions = tmp_path / "v1.md"
    instructions.write_text("Prefer the correct answer.\n", encoding="utf-8")
    samples = samples_for("primes", *PRIMES) + samples_for("rain", *RAIN) + samples_for("chat", *CHAT)
    args = [f"project={project}", f"org={org_name}", f"db_url={workbench.db_url}"]
    imported = main(
        ["label", "import", f"file={workbench.write_jsonl(samples)}", f"instructions={instructions}", *args]
    )
    assert imported == 0
    work = _assignments(workbench, ann)
    client, token = workbench.login(ann)
    version = int(
        re.search(r'name="instruction_version" value="(\d+)"', client.get(f"/tasks/{work['primes'][0]}").text)[1]
    )
    primes_flags = [set(), {"hallucination"}, {"fails_instruction"}]
    _rank(client, token, work["primes"], [1, 1, 3], primes_flags, version)  # a tie for first
    _rank(client, token, work["rain"], [2, 1, 3, 4], [set()] * 4, version)
    _rank(client, token, work["chat"], [1, 1], [set(FLAG_NAMES), set()], version)  # all tied: no pair

    out = tmp_path / "export"
    assert main(["label", "export", f"out_dir={out}", "formats=jsonl,pairs,hf", *args]) == 0
    pairs = read_jsonl(out / "pairs.jsonl", Comparison)
    # by hand: every pair i < j of each ranking with a strict preference, the better one chosen
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        (PRIMES[0], "2, 3, 5", "4, 6, 8"),
        (PRIMES[0], "1, 2, 3", "4, 6, 8"),
        (RAIN[0], "Rain.", "rain taps the window"),
        (RAIN[0], "rain taps the window", "drip drop drip drop"),
        (RAIN[0], "rain taps the window", "the sky is crying"),
        (RAIN[0], "Rain.", "drip drop drip drop"),
        (RAIN[0], "Rain.", "the sky is crying"),
        (RAIN[0], "drip drop drip drop", "the sky is crying"),
    ]
    rankings = read_jsonl(out / "rankings.jsonl", Ranking)
    submitted = {r.meta["prompt_id"]: r.meta["submitted_at"] for r in rankings}
    assert {p.labeler_id for p in pairs} == {ann}
    assert {p.meta["instruction_version"] for p in pairs} == {1}
    assert [p.meta["submitted_at"] for p in pairs] == [submitted["primes"]] * 2 + [submitted["rain"]] * 6
    assert [(p.meta["chosen_rank"], p.meta["rejected_rank"]) for p in pairs[:3]] == [(1, 3), (1, 3), (1, 2)]
    assert pairs[0].meta["chosen_sample_id"] == "primes-s0" and pairs[0].meta["rejected_sample_id"] == "primes-s2"
    assert len({p.id for p in pairs}) == len(pairs)

    # the datasets on disk: the same records, column by column
    hf_pairs = datasets.load_from_disk(str(out / "hf" / "pairs"))
    assert [
        (r["prompt"], r["chosen"], r["rejected"], r["labeler_id"], r["instruction_version"], r["timestamp"])
        for r in hf_pairs
    ] == [
        ([{"role": "user", "content": p.prompt}], p.chosen, p.rejected, ann, 1, p.meta["submitted_at"]) for p in pairs
    ]
    assert [json.loads(r["meta"]) for r in hf_pairs] == [p.meta for p in pairs]
    hf_rankings = datasets.load_from_disk(str(out / "hf" / "rankings"))
    assert [(r["prompt"], r["responses"], r["ranks"], r["likert"], r["labeler_id"]) for r in hf_rankings] == [
        ([{"role": "user", "content": PRIMES[0]}], PRIMES[1], [1, 1, 3], [7, 7, 5], ann),
        ([{"role": "user", "content": RAIN[0]}], RAIN[1], [2, 1, 3, 4], [6, 7, 5, 4], ann),
        (CHAT[0], CHAT[1], [1, 1], [7, 7], ann),
    ]
    assert hf_rankings[0]["flags"] == [{name: name in chosen for name in FLAG_NAMES} for chosen in primes_flags]
    assert [json.loads(r["meta"]) for r in hf_rankings] == [r.meta for r in rankings]
    # no demonstrations or prompts were written: empty datasets, with their columns
    for what in ("demonstrations", "prompts"):
        empty = datasets.load_from_disk(str(out / "hf" / what))
        assert len(empty) == 0 and "labeler_id" in empty.column_names

    # the reward model's readers take both: the pairs as Comparison records and the dataset
    from instructrl.rm.importers import import_hf_dataset

    read = import_hf_dataset(out / "hf" / "pairs")
    assert [(r.responses, r.ranks) for r in read.rankings] == [([p.chosen, p.rejected], [1, 2]) for p in pairs]


def test_few_shot_and_written_prompts_in_every_format(workbench, tmp_path):
    """Written prompts (stored as the form stores them) come out as Prompt records, few-shot ones also as
    Demonstrations with their examples, and the same rows in the datasets."""
    datasets = pytest.importorskip("datasets", reason="the hf export needs the datasets package")
    org_name = unique("org")
    org = workbench.org(org_name)
    lee = workbench.user(org)
    project_id = workbench.project(org, name=unique("prompts"))
    with workbench.db.write() as session:
        create_prompt_tasks(
            session, project_id, per_labeler=2, prompt_types=["few-shot", "user-based"], use_cases=["a pub quiz app"]
        )
    client, token = workbench.login(lee)
    with workbench.db.read() as session:
        rows = session.execute(
            select(Assignment.id, Task.meta)
            .join(Task, Task.id == Assignment.task_id)
            .where(Task.project_id == project_id)
            .order_by(Assignment.id)
        ).all()
    (few_id, few_meta), (user_id, user_meta) = rows
    assert few_meta["prompt_type"] == "few-shot" and user_meta == {
        "prompt_type": "user-based",
        "use_case": "a pub quiz app",
    }
    examples = [("Paris", "France"), ("Lima", "Peru"), ("Ottawa", "Canada")]
    form = {"csrf_token": token, "category": "classification", "instruction": "Name the country of each capital."}
    for i, (query, answer) in enumerate(examples):
        form |= {f"query_{i}": query, f"answer_{i}": answer}
    assert client.post(f"/tasks/{few_id}/submit", data=form).status_code == 303
    quiz = "Give me five questions about\r\nrivers, with answers."
    assert (
        client.post(
            f"/tasks/{user_id}/submit", data={"csrf_token": token, "category": "brainstorming", "prompt": quiz}
        ).status_code
        == 303
    )
    project_name = _project_name(workbench, project_id)
    out = tmp_path / "export"
    args = [f"project={project_name}", f"org={org_name}", f"db_url={workbench.db_url}", f"out_dir={out}"]
    assert main(["label", "export", "formats=jsonl,hf", *args]) == 0
    prompts = read_jsonl(out / "prompts.jsonl", Prompt)
    typed = [{"query": q, "response": r} for q, r in examples]
    assert [(p.type, p.category, p.source, p.user_id) for p in prompts] == [
        ("few-shot", "classification", "labeler", lee),
        ("user-based", "brainstorming", "labeler", lee),
    ]
    assert (
        prompts[0].meta["instruction"] == "Name the country of each capital." and prompts[0].meta["examples"] == typed
    )
    assert prompts[0].prompt.startswith("Name the country of each capital.\n\nInput: Paris\nOutput: France\n\n")
    assert prompts[1].prompt == quiz.replace("\r\n", "\n") and prompts[1].meta["use_case"] == "a pub quiz app"
    assert all(p.timestamp and p.timestamp == p.meta["submitted_at"] for p in prompts)
    demos = read_jsonl(out / "demonstrations.jsonl", Demonstration)
    assert [(d.instruction, d.examples, d.type, d.user_id, d.prompt) for d in demos] == [
        ("Name the country of each capital.", typed, "few-shot", lee, None)
    ]
    hf_prompts = datasets.load_from_disk(str(out / "hf" / "prompts"))
    assert [(r["prompt"], r["type"], r["use_case"], r["examples"]) for r in hf_prompts] == [
        (p.prompt, p.type, p.meta.get("use_case"), p.meta.get("examples")) for p in prompts
    ]
    hf_demos = datasets.load_from_disk(str(out / "hf" / "demonstrations"))
    assert [(r["instruction"], r["examples"], r["prompt"]) for r in hf_demos] == [
        ("Name the country of each capital.", typed, [])
    ]
    assert not (out / "pairs.jsonl").exists()  # not asked for
    assert [to_dict(d)["examples"] for d in demos] == [typed]


def _project_name(workbench, project_id: int) -> str:
    with workbench.db.read() as session:
        return session.get(Project, project_id).name


def test_export_formats_are_checked():
    assert ExportConfig(project="p", formats=["jsonl", "pairs", "hf"]).formats == ["jsonl", "pairs", "hf"]
    with pytest.raises(ValueError, match="formats are any of jsonl, pairs, hf"):
        ExportConfig(project="p", formats=["csv"])
    with pytest.raises(ValueError, match="formats are any of"):
        ExportConfig(project="p", formats=[])
