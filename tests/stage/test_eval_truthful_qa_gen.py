"""``instructrl eval tasks=[truthfulqa_gen]`` on the tiny model and a few TruthfulQA questions: the
generation task runs from the command line, its rows say how many items they cover, and its figures are
the scoring functions applied to the model's own greedy answers."""

from __future__ import annotations

import json

import pytest

from instructrl.cli import main
from instructrl.eval.config import TruthfulQAGenConfig
from instructrl.eval.metrics import rouge_l, sentence_bleu, similarity_scores
from instructrl.eval.tasks.lm import HFLanguageModel
from instructrl.eval.tasks.truthful_qa import question_context
from instructrl.eval.tasks.truthful_qa_gen import STOP, TruthfulQAGenTask


def test_truthfulqa_generation_on_the_tiny_model(shared_data, tmp_path, tiny_model_dir):
    data = shared_data / "truthfulqa" / "TruthfulQA.csv"
    out = tmp_path / "eval"
    args = [
        "eval",
        f"run.out_dir={out}",
        f"policies=[{{name: tiny, model: {tiny_model_dir}}}]",
        "tasks=[truthfulqa_gen]",
        f"truthfulqa_gen.data={data}",
        "truthfulqa_gen.n=3",
        "truthfulqa_gen.prompt_modes=[qa, instruction_qa]",
        "truthfulqa_gen.max_new_tokens=8",
        "bootstrap=100",
        "run.threads=1",
        "run.progress=false",
    ]
    assert main(args) == 0
    results = json.loads((out / "task_results.json").read_text())
    rows = {(r["metric"], r["prompt_mode"]): r for r in results["rows"]}
    metrics = {f"{s}_{t}" for s in ("bleu", "rougeL") for t in ("max", "diff", "acc")}
    assert set(rows) == {(m, mode) for m in metrics for mode in ("qa", "instruction_qa")}
    for r in rows.values():
        assert r["task"] == "truthfulqa_gen" and r["policy"] == "tiny"
        assert r["n"] == 3 and r["total"] == 817 and r["sample"] == "3 of 817, a seeded random sample"
        assert r["low"] <= r["value"] <= r["high"]
    assert "| truthfulqa_gen | bleu_diff |" in (out / "task_results.md").read_text()

    # the same questions answered again here, scored by the metric functions: the same figures
    task = TruthfulQAGenTask(TruthfulQAGenConfig(data=str(data), n=3), bootstrap=100)
    task.load()
    lm = HFLanguageModel.load(str(tiny_model_dir), device="cpu", dtype="fp32", precision="fp32")
    answers = lm.generate(
        [question_context(q.question, "qa") for q in task.questions],
        raw=True,
        max_new_tokens=8,
        temperature=0.0,
        stop=list(STOP),
        max_prompt_tokens=task.cfg.max_prompt_tokens,
    )
    for name, sim in (("bleu", sentence_bleu), ("rougeL", rouge_l)):
        scores = [similarity_scores(a.strip(), q.true, q.false, sim) for a, q in zip(answers, task.questions)]
        for stat in ("max", "diff", "acc"):
            assert rows[(f"{name}_{stat}", "qa")]["value"] == pytest.approx(sum(s[stat] for s in scores) / 3)
