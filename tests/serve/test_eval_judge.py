"""``instructrl eval`` with a real ``instructrl serve`` as its LLM judge: a tiny served model judges the
tiny policies beside the held-out panel, every request reaches the served model under the key, and the
judge's figures in results.json are those of the verdicts stored in comparisons.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructrl.cli import main
from instructrl.eval.winrate import OUTCOME_VALUE

from ..eval_cli import preference_args
from .test_backends import stored

ROOT = Path(__file__).resolve().parents[2]


def test_eval_with_a_served_model_as_the_llm_judge(
    served, tmp_path, monkeypatch, tiny_model_dir, second_model_dir, tiny_panel_file
):
    key = served.key(served.user(served.org()))
    monkeypatch.setenv("SERVE_KEY", key)
    out = tmp_path / "eval"
    args = preference_args(
        out,
        tiny_panel_file,
        f"[{{name: base, model: {tiny_model_dir}}}, {{name: other, model: {second_model_dir}}}]",
        "kl_reference=null",
        f"judge.base_url={served.api}",
        "judge.model=b",
        "judge.api_key_env=SERVE_KEY",
        "judge.max_tokens=8",
        "judge.concurrency=2",
    )
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    pairs = [json.loads(line) for line in (out / "comparisons.jsonl").read_text().splitlines()]
    assert len(pairs) == results["prompts"] == 10

    judge = results["judge"]
    assert judge["model"] == "b" and judge["base_url"] == served.api and judge["requests"] == 2 * 10
    # every request (the endpoint check and both orders of each pair) reached the served model "b"
    rows = stored(served, key)
    assert len(rows) == 1 + judge["requests"] and {r["model"] for r in rows} == {"b"}

    mine = results["policies"][1]["judge"]
    assert results["policies"][0]["judge"] is None and mine["pairs"] == 10
    assert mine["win_rate"] == pytest.approx(sum(OUTCOME_VALUE[p["judge"]] for p in pairs) / 10)
    assert mine["win_low"] <= mine["win_rate"] <= mine["win_high"]
    assert mine["agreement"] == pytest.approx(sum(p["judge"] == p["outcome"] for p in pairs) / 10)
    assert judge["agreement"]["rate"] == mine["agreement"] and judge["agreement"]["n"] == 10
    decided = [p for p in pairs if "tie" not in (p["judge"], p["outcome"])]
    assert mine["decided_pairs"] == judge["agreement"]["n_decided"] == len(decided)
    # a random tiny model rarely writes a verdict: whatever it leaves unparsed is counted, at most 2 a pair
    assert 0 <= mine["unparsed"] == judge["unparsed"] <= 2 * 10
    if mine["unparsed"] == 2 * 10:
        assert mine["ties"] == 10
