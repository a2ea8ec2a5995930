"""The report: target checks by hand, the HTML rendering, and a report of a synthetic run."""

import json

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
