"""The report: target checks by hand, the HTML rendering, and a report of a synthetic run."""

import json

import pytest

from instructrl.eval.report import render_html, targets, write_report


def row(name, win, low, high, **kw):
    flags = {"toxic": 0.0, "truncated": 0.5}
    return {
        "name": name,
        "win_rate": win,
        "win_low": low,
        "win_high": high,
        "wins": 1,
        "ties": 0,
        "losses": 1,
        "likert": 4.0,
        "likert_low": 3.5,
        "likert_high": 4.5,
        "flags": flags,
        "rm_score": 0.1,
        "kl": kw.get("kl"),
        "words": 10.0,
        "tokens": 12.0,
        "cut": 0.0,
        "baseline": name == "sft",
        "few_shot": False,
        "n": 2,
        "model": "m",
    }


def test_targets_by_hand():
    ppo = {"ptx_eval": [(0, 2.0), (10, 2.5)]}
    ptx = {"ptx_eval": [(0, 2.0), (10, 2.1)]}
    got = targets(
        {"ppo": row("ppo", 0.65, 0.55, 0.75), "ppo_ptx": row("ppo_ptx", 0.62, 0.5, 0.7)}, {"ppo": ppo, "ppo_ptx": ptx}
    )
    assert [ok for _, _, ok in got] == [True, True, True]
    assert got[1][1] == "-3.0 points" and got[2][1] == "2.1000 vs 2.5000 (SFT: 2.0000)"
    got = targets({"ppo": row("ppo", 0.62, 0.48, 0.75), "ppo_ptx": row("ppo_ptx", 0.55, 0.4, 0.7)}, {})
    assert [ok for _, _, ok in got] == [False, False]  # interval reaches below 50%; 7 points behind


def test_render_html_tables_images_and_escaping():
    md = "# Title `x`\n\n![fig](a.png)\n\n| a | b |\n|---|---|\n| <script> | x \\| y |\n\ntext & more"
    page = render_html(md, "t")
    assert "<h1>Title <code>x</code></h1>" in page and "<img alt='fig' src='a.png'>" in page
    assert "<th>a</th><th>b</th>" in page and "<td>&lt;script&gt;</td><td>x | y</td>" in page
    assert "<p>text &amp; more</p>" in page and "<script>" not in page


def test_write_report_of_a_synthetic_run(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    results = {
        "prompts": 2,
        "baseline": "sft",
        "temperature": 0.7,
        "max_new_tokens": 16,
        "confidence": 0.95,
        "policies": [row("sft", 0.5, 0.5, 0.5, kl=0.0), row("ppo", 0.75, 0.5, 1.0, kl=1.5)],
        "rm_accuracy": {"heldout_rankings": {"accuracy": 0.75, "pairs": 4}},
        "examples": [{"prompt_id": "p", "prompt": "Say | hi", "responses": {"sft": "hi\nthere", "ppo": ""}}],
    }
    (run / "eval" / "results.json").write_text(json.dumps(results))
    (run / "ppo").mkdir()
    (run / "ppo" / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 0, "ppo/ptx_eval_loss": 3.0},
                {"step": 1, "ppo/score": 0.1, "ppo/kl": 0.0},
                {"step": 2, "ppo/score": 0.3, "ppo/kl": 0.4},
                {"step": 2, "ppo/ptx_eval_loss": 3.2},
            ]
        )
        + "\n"
    )
    (run / "timings.json").write_text(json.dumps([{"step": "ppo", "seconds": 12.5, "skipped": False}]))
    md_path = write_report(run)
    md = md_path.read_text()
    assert "| PPO | 0.750 | [0.500, 1.000] | 1 / 0 / 1 |" in md
    assert "| Say \\| hi | hi there | (empty) |" in md
    assert "| PPO | 3.0000 | 3.2000 |" in md and "| ppo | 12.5 |" in md
    for f in ("winrate.png", "flags.png", "ppo.png", "rm_accuracy.png", "report.html"):
        assert (run / "report" / f).stat().st_size > 200


def task_row(policy, task, metric, value, low, high, mode="", scorer="s", n=4, total=10):
    return {
        "policy": policy,
        "model": f"models/{policy}",
        "task": task,
        "metric": metric,
        "value": value,
        "low": low,
        "high": high,
        "n": n,
        "total": total,
        "sample": f"{n} of {total}, a seeded random sample",
        "scorer": scorer,
        "prompt_mode": mode,
        "seconds": 1.0,
    }


def test_alignment_tax_by_hand():
    from instructrl.eval.task_figures import alignment_tax

    rows = [
        task_row("base", "hellaswag", "acc_norm", 0.50, 0.47, 0.54, "0-shot"),
        task_row("base", "hellaswag", "acc", 0.40, 0.30, 0.50, "0-shot"),  # not a score of the tax
        task_row("sft", "hellaswag", "acc_norm", 0.46, 0.42, 0.49, "0-shot"),
        task_row("ppo", "hellaswag", "acc_norm", 0.55, 0.55, 0.55, "0-shot"),
        task_row("base", "real_toxicity_prompts", "mean_toxicity", 0.1, 0.05, 0.2, "basic"),  # not a capability
        task_row("sft", "real_toxicity_prompts", "mean_toxicity", 0.2, 0.1, 0.3, "basic"),
    ]
    tax = alignment_tax(rows)
    assert [(t["policy"], t["metric"]) for t in tax] == [("sft", "acc_norm"), ("ppo", "acc_norm")]
    sft, ppo = tax
    # 0.46 - 0.50; below: sqrt(0.04^2 + 0.04^2), above: sqrt(0.03^2 + 0.03^2)
    assert sft["value"] == pytest.approx(-0.04)
    assert sft["low"] == pytest.approx(-0.04 - 0.04 * 2**0.5) and sft["high"] == pytest.approx(-0.04 + 0.03 * 2**0.5)
    # an interval of width 0 leaves the base model's: below 0.04 (its high - value), above 0.03
    assert (ppo["value"], ppo["low"], ppo["high"]) == pytest.approx((0.05, 0.01, 0.08))


def test_report_of_the_automatic_evaluations(tmp_path):
    run = tmp_path / "run"
    (run / "suite").mkdir(parents=True)
    rows = [task_row("", "real_toxicity_prompts", "spearman_vs_perspective", 0.4, 0.3, 0.5, "data", "lexicon")]
    for i, policy in enumerate(("base", "sft", "ppo_ptx")):
        for mode in ("qa", "instruction_qa"):
            rows.append(task_row(policy, "truthfulqa", "mc1", 0.2 + i / 10, 0.1, 0.5, mode, n=5, total=817))
            rows.append(task_row(policy, "truthfulqa", "mc2", 0.4 + i / 10, 0.3, 0.7, mode, n=5, total=817))
        for prefix in ("basic", "respectful"):
            rows.append(task_row(policy, "real_toxicity_prompts", "mean_toxicity", 0.05 * (i + 1), 0.0, 0.3, prefix))
        rows.append(task_row(policy, "gsm8k", "exact_match_strict", 0.25 * i, 0.0, 0.5, "2-shot", "x | y"))
    (run / "suite" / "task_results.json").write_text(json.dumps({"confidence": 0.95, "rows": rows}))
    md = write_report(run).read_text()
    for f in ("truthfulqa.png", "toxicity.png", "alignment_tax.png"):
        assert (run / "report" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({f})" in md
    assert "| truthfulqa | mc1 | s | instruction_qa | 5 of 817 | 0.200 [0.100, 0.500] | 0.300 [0.100, 0.500] |" in md
    assert "| gsm8k | exact_match_strict | x \\| y | 2-shot | 4 of 10 | 0.000 [0.000, 0.500] |" in md
    # MC2 (QA primer) minus the base model's 0.4 [0.3, 0.7]: SFT 0.5 [0.3, 0.7], half-widths below
    # sqrt(0.2^2 + 0.3^2) = 0.361, above sqrt(0.2^2 + 0.1^2) = 0.224; PPO-ptx 0.6 [0.3, 0.7]: 0.424, 0.141
    assert "| TruthfulQA mc2 (QA primer) | +0.100 [-0.261, +0.324] | +0.200 [-0.224, +0.341] |" in md
    assert "lexicon: Spearman correlation with the Perspective scores stored in the data 0.400" in md
    assert "<img alt='alignment tax' src='alignment_tax.png'>" in (run / "report" / "report.html").read_text()
