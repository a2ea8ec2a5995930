"""``instructrl eval`` from the command line: the shipped configs load, the tiny model is evaluated on
the built-in example prompts by a labeling run's held-out panel, and a second run reuses the samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructrl.cli import STAGES, main
from instructrl.config import load_config
from instructrl.eval.config import EvalConfig
from instructrl.records import Sample, read_jsonl

from ..eval_cli import preference_args

ROOT = Path(__file__).resolve().parents[2]


def test_eval_is_a_stage_with_tiny_and_default_configs():
    assert STAGES["eval"][1] == "instructrl.eval.run:run"
    for preset in ("tiny", "default"):
        cfg = load_config(EvalConfig, ROOT / "configs" / preset / "eval.yaml")
        assert cfg.baseline == "sft" and "sft" in [p.name for p in cfg.policies]


def test_eval_command_runs_and_resumes(tmp_path, tiny_model_dir, tiny_panel_file):
    out = tmp_path / "eval"
    policies = f"[{{name: base, model: {tiny_model_dir}}}, {{name: prompted, model: {tiny_model_dir}, few_shot: true}}]"
    args = preference_args(out, tiny_panel_file, policies, "kl_reference=base", "few_shot_k=2")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["policies"]}
    assert results["prompts"] == 10 and set(rows) == {"base", "prompted"}
    assert rows["base"]["win_rate"] == 0.5 and rows["base"]["kl"] == 0.0
    prompted = rows["prompted"]
    assert prompted["wins"] + prompted["ties"] + prompted["losses"] == 10
    assert prompted["win_rate"] == pytest.approx((prompted["wins"] + 0.5 * prompted["ties"]) / 10)
    assert prompted["win_low"] <= prompted["win_rate"] <= prompted["win_high"]
    assert len(results["few_shot_prefix"]) == 2
    first = read_jsonl(out / "samples" / "prompted.jsonl", Sample)
    assert len(first) == 10 and all(s.policy == "prompted" for s in first)

    # a second run finds every policy's samples and judges them again without sampling
    mtime = (out / "samples" / "prompted.jsonl").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "samples" / "prompted.jsonl").stat().st_mtime_ns == mtime
    assert json.loads((out / "results.json").read_text())["policies"] == results["policies"]
