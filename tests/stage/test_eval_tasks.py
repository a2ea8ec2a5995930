"""``instructrl eval tasks=[...]`` on the tiny model and a few items of the real data sets: every task
runs and its rows have the right shape, TruthfulQA's MC2 bounds MC1's choice probability, a killed
evaluation resumes without redoing finished (policy, task) pairs, and bad input ends in one clear
line with exit code 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

from instructrl.cli import main
from instructrl.config import load_config
from instructrl.eval.config import EvalConfig, TruthfulQAConfig
from instructrl.eval.metrics import mc2
from instructrl.eval.tasks.lm import HFLanguageModel
from instructrl.eval.tasks.truthful_qa import TruthfulQATask, question_context

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("truthfulqa", "hellaswag", "real_toxicity_prompts", "gsm8k")


def task_args(data: Path, out: Path, model: Path) -> list[str]:
    return [
        "eval",
        f"run.out_dir={out}",
        f"policies=[{{name: tiny, model: {model}}}]",
        f"tasks=[{', '.join(TASKS)}]",
        f"truthfulqa.data={data / 'truthfulqa' / 'data' / 'mc_task.json'}",
        "truthfulqa.n=4",
        "truthfulqa.prompt_modes=[qa, instruction, instruction_qa]",
        f"hellaswag.data={data / 'hellaswag' / 'hellaswag_val_sample.jsonl'}",
        "hellaswag.n=4",
        "hellaswag.shots=[0, 2]",
        f"real_toxicity_prompts.data={data / 'real_toxicity_prompts' / 'quark_rtp_val5000.jsonl'}",
        "real_toxicity_prompts.n=5",
        "real_toxicity_prompts.samples=2",
        "real_toxicity_prompts.max_new_tokens=6",
        "real_toxicity_prompts.scorers=[profanity-check, lexicon]",
        f"gsm8k.data={data / 'gsm8k' / 'test.jsonl'}",
        f"gsm8k.shots_data={data / 'gsm8k' / 'train.jsonl'}",
        "gsm8k.n=3",
        "gsm8k.shots=2",
        "gsm8k.max_new_tokens=8",
        "bootstrap=100",
        "run.progress=false",
        "run.threads=1",
    ]


def test_shipped_configs_name_valid_tasks():
    for preset in ("tiny", "default"):
        cfg = load_config(EvalConfig, ROOT / "configs" / preset / "eval.yaml")
        assert set(cfg.tasks) <= {"preference", *TASKS}


def test_every_task_runs_and_a_killed_run_resumes(tmp_path, shared_data, tiny_model_dir, sigkill_when):
    out = tmp_path / "eval"
    args = task_args(shared_data, out, tiny_model_dir)
    first = out / "tasks" / "tiny" / "truthfulqa.json"
    sigkill_when(args, first)  # killed once the first (policy, task) pair is written
    done = {p.name for p in (out / "tasks" / "tiny").glob("*.json")}
    assert "truthfulqa.json" in done and "gsm8k.json" not in done
    written = first.stat().st_mtime_ns

    assert main(args) == 0
    assert first.stat().st_mtime_ns == written  # the finished pair was not evaluated again
    assert not list((out / "tasks" / "tiny").glob(".*"))  # scratch folders are removed
    table = json.loads((out / "task_results.json").read_text())
    rows = table["rows"]
    by = {}
    for r in rows:
        by.setdefault(r["task"], []).append(r)
    assert set(by) == set(TASKS)
    assert {(r["metric"], r["prompt_mode"]) for r in by["truthfulqa"]} == {
        (m, p) for m in ("mc1", "mc2") for p in ("qa", "instruction", "instruction_qa")
    }
    assert {(r["metric"], r["prompt_mode"]) for r in by["hellaswag"]} == {
        (m, p) for m in ("acc", "acc_norm", "acc_mean_token") for p in ("0-shot", "2-shot")
    }
    assert {r["metric"] for r in by["gsm8k"]} == {"exact_match_strict", "exact_match_flexible"}
    tox = [r for r in by["real_toxicity_prompts"] if r["policy"] == "tiny"]
    assert len(tox) == 3 * 2 * 3  # prefixes x scorers x (mean, expected max, probability)
    spearman_rows = [r for r in by["real_toxicity_prompts"] if r["metric"] == "spearman_vs_perspective"]
    assert len(spearman_rows) == 2 and all(r["policy"] == "" for r in spearman_rows)
    for r in rows:
        assert r["n"] >= 1 and r["n"] <= r["total"] and r["scorer"] and r["prompt_mode"] and r["seconds"] >= 0
        if r["metric"] == "spearman_vs_perspective":
            assert -1.0 <= r["value"] <= 1.0 or math.isnan(r["value"])
            continue
        assert 0.0 <= r["low"] <= r["value"] <= r["high"] <= 1.0, r
        assert r["policy"] == "tiny" and r["model"] == str(tiny_model_dir)
    sizes = {r["task"]: (r["n"], r["total"], r["sample"]) for r in rows if r["policy"]}
    assert sizes["truthfulqa"] == (4, 817, "4 of 817, a seeded random sample")
    assert sizes["gsm8k"][:2] == (3, 1319) and sizes["hellaswag"][:2] == (4, 1000)
    assert (
        sizes["real_toxicity_prompts"][:2] == (5, 5000) and "uniform over 10 bins" in sizes["real_toxicity_prompts"][2]
    )
    assert "versions" in table and "torch" in table["versions"]
    md = (out / "task_results.md").read_text()
    assert md.count("\n| tiny | truthfulqa | mc") == 6 and "95% interval" in md

    # other settings for a task: only that task is evaluated again
    before = {p.name: p.stat().st_mtime_ns for p in (out / "tasks" / "tiny").glob("*.json")}
    assert main([*args, "truthfulqa.n=3"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "tasks" / "tiny").glob("*.json")}
    assert [n for n in after if after[n] != before[n]] == ["truthfulqa.json"]


def test_a_policy_with_the_same_model_reuses_the_result(tmp_path, shared_data, tiny_model_dir):
    out = tmp_path / "eval"
    hs = shared_data / "hellaswag" / "hellaswag_val_sample.jsonl"
    args = [
        "eval",
        f"run.out_dir={out}",
        f"policies=[{{name: base, model: {tiny_model_dir}}}, {{name: prompted, model: {tiny_model_dir}, few_shot: true}}]",
        "tasks=[hellaswag]",
        f"hellaswag.data={hs}",
        "hellaswag.n=3",
        "run.progress=false",
    ]
    assert main(args) == 0
    base = json.loads((out / "tasks" / "base" / "hellaswag.json").read_text())
    prompted = json.loads((out / "tasks" / "prompted" / "hellaswag.json").read_text())
    assert prompted["reused_from"].endswith("base/hellaswag.json") and prompted["policy"] == "prompted"
    assert prompted["rows"] == base["rows"] and "reused_from" not in base
    table = json.loads((out / "task_results.json").read_text())["rows"]
    assert [r["policy"] for r in table] == ["base"] * 3 + ["prompted"] * 3


def test_mc2_bounds_the_probability_mc1_gives_the_correct_answer(shared_data, tiny_model_dir):
    """MC1's false answers are MC2's false answers and its correct one is one of MC2's true ones, so
    MC2 = T / (T + F) >= p / (p + F) = the softmax probability of the correct MC1 choice (exact)."""
    task = TruthfulQATask(TruthfulQAConfig(data=str(shared_data / "truthfulqa" / "data" / "mc_task.json"), n=12))
    task.load()
    lm = HFLanguageModel.load(str(tiny_model_dir), device="cpu")
    lls = lm.loglikelihoods(
        [(question_context(q.question, "qa"), [" " + a for a in q.answers]) for q in task.questions]
    )
    for q, ll in zip(task.questions, lls):
        values = [x.logprob for x in ll]
        assert set(q.mc1) <= set(q.mc2)
        ones = [values[i] for i in q.mc1]
        top = max(ones)
        p_correct = math.exp(ones[q.mc1_correct] - top) / sum(math.exp(v - top) for v in ones)
        assert mc2([values[i] for i in q.mc2], q.mc2_labels) >= p_correct - 1e-12


def test_bad_task_data_ends_in_one_line_with_its_file_and_line(tmp_path, shared_data, tiny_model_dir, capsys):
    bad = tmp_path / "hellaswag.jsonl"
    good = (shared_data / "hellaswag" / "hellaswag_val_sample.jsonl").read_text().splitlines()
    bad.write_text(good[0] + "\n" + good[1][: len(good[1]) // 2] + "\n" + good[2] + "\n")
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            f"run.out_dir={out}",
            f"policies=[{{name: tiny, model: {tiny_model_dir}}}]",
            "tasks=[hellaswag]",
            f"hellaswag.data={bad}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 2 and f"{bad}:2: not valid JSON" in err[0] and "hint:" in err[1]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]  # nothing evaluated, nothing half-written


def test_unknown_task_or_scorer_fails_at_config_load(capsys):
    assert main(["eval", "tasks=[truthfulqa, mmlu]"]) == 2
    err = capsys.readouterr().err
    assert "'mmlu' is not one of the valid choices" in err and "'real_toxicity_prompts'" in err
    assert main(["eval", "real_toxicity_prompts.scorers=[perspective]"]) == 2
    err = capsys.readouterr().err
    assert "unknown scorer 'perspective'" in err and "'profanity-check', 'lexicon'" in err
