"""The project's own OpenAI clients pointed at ``instructrl serve``: the LLM judge (``instructrl label
labeler=llm``) and Self-Instruct's openai backend run against a served model with an API key, and every
request they make shows up in the key's organization's prompt store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from instructrl.cli import main
from instructrl.records import Ranking, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def stored(served, key: str) -> list[dict]:
    with httpx.Client(base_url=served.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        rows, after = [], 0
        while True:
            page = client.get("/v1/prompts", params={"after": after, "limit": 1000}).json()
            rows += page["data"]
            if not page["has_more"]:
                return rows
            after = rows[-1]["id"]


def test_the_llm_judge_labels_with_a_served_model(served, tmp_path, monkeypatch):
    key = served.key(served.user(served.org()))
    monkeypatch.setenv("SERVE_KEY", key)
    out = tmp_path / "judged"
    args = [
        "label",
        "--config",
        str(ROOT / "configs" / "tiny" / "label.yaml"),
        f"run.out_dir={out}",
        "labeler=llm",
        f"judge.base_url={served.api}",
        "judge.model=a",
        "judge.api_key_env=SERVE_KEY",
        "judge.max_tokens=8",
    ]
    assert main(args) == 0
    rankings = read_jsonl(out / "rankings.jsonl", Ranking)
    assert rankings and {r.labeler_id for r in rankings} == {"llm:a"}
    metrics = json.loads((out / "metrics.json").read_text())
    rows = stored(served, key)
    assert len(rows) == metrics["label/judge_requests"] > 0
    assert {r["model"] for r in rows} == {"a"} and {r["source"] for r in rows} == {"api"}


def test_self_instruct_generates_with_a_served_model(served, tmp_path, monkeypatch):
    key = served.key(served.user(served.org()))
    monkeypatch.setenv("SERVE_KEY", key)
    args = [
        "selfinstruct",
        "--config",
        str(ROOT / "configs" / "tiny" / "selfinstruct.yaml"),
        f"run.out_dir={tmp_path / 'si'}",
        "backend.kind=openai",
        f"backend.base_url={served.api}",
        "backend.model=b",
        "backend.api_key_env=SERVE_KEY",
        "generate.target=2",
        "generate.prompts_per_step=2",
        "generate.max_steps=2",
    ]
    assert main(args) == 0
    rows = stored(served, key)
    assert rows and {r["model"] for r in rows} == {"b"}
    assert all(isinstance(r["prompt"], str) for r in rows)  # raw prompts go to /v1/completions
