"""The LLM judge as a second evaluator of the preference evaluation: agreement and win-rate arithmetic on
hand-computed outcomes, the results it adds, its config, and its part of the run report."""

from __future__ import annotations

import math

import pytest

from instructrl.config import ConfigError, load_config
from instructrl.eval.config import EvalConfig, EvalJudgeConfig
from instructrl.eval.report import judge_lines
from instructrl.eval.run import add_judge_results, load_judge
from instructrl.eval.winrate import agreement

PANEL = ["win", "tie", "loss", "win", "loss", "tie"]
JUDGE = ["win", "tie", "win", "tie", "loss", "win"]


def test_agreement_counts_a_tie_as_a_verdict_and_has_a_tie_free_variant():
    a = agreement(PANEL, JUDGE, resamples=500)
    # equal at 0 (win), 1 (tie), 4 (loss): 3 of 6
    assert a.rate == pytest.approx(3 / 6) and a.n == 6
    # neither a tie at 0 (win, win), 2 (loss, win), 4 (loss, loss): 2 of 3
    assert a.decided == pytest.approx(2 / 3) and a.n_decided == 3
    assert a.low <= a.rate <= a.high
    assert agreement(PANEL, PANEL).rate == 1.0 and agreement(PANEL, PANEL).low == 1.0
    assert agreement([1, 0.5], [0, 0.5]).rate == 0.5  # numeric outcomes too
    ties = agreement(["tie", "win"], ["tie", "tie"])
    assert ties.rate == 0.5 and ties.n_decided == 0 and math.isnan(ties.decided)
    with pytest.raises(ValueError, match="6 outcomes against 5"):
        agreement(PANEL, JUDGE[:5])
    with pytest.raises(ValueError, match="not one of win, tie, loss"):
        agreement(["won"], ["win"])


def test_add_judge_results_per_policy_and_pooled():
    cfg = EvalConfig(bootstrap=300, judge=EvalJudgeConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    results = {"policies": [{"name": "sft"}, {"name": "ppo"}, {"name": "base"}]}
    panel = {"ppo": PANEL, "base": ["loss", "loss"]}
    judge = {"ppo": JUDGE, "base": ["loss", "tie"]}
    add_judge_results(cfg, results, panel, judge, {"ppo": 3, "base": 0}, requests=16)
    rows = {r["name"]: r["judge"] for r in results["policies"]}
    assert rows["sft"] is None  # the baseline
    ppo = rows["ppo"]
    # judge win rate: wins 1 + tie 0.5 + win 1 + tie 0.5 + loss 0 + win 1 = 4 of 6
    assert ppo["win_rate"] == pytest.approx(4 / 6)
    assert (ppo["wins"], ppo["ties"], ppo["losses"], ppo["pairs"]) == (3, 2, 1, 6)
    assert ppo["win_low"] <= ppo["win_rate"] <= ppo["win_high"]
    assert ppo["agreement"] == pytest.approx(0.5) and ppo["agreement_decided"] == pytest.approx(2 / 3)
    assert ppo["decided_pairs"] == 3 and ppo["unparsed"] == 3
    assert rows["base"]["win_rate"] == pytest.approx(0.25) and rows["base"]["agreement"] == 0.5
    assert rows["base"]["agreement_decided"] == 1.0 and rows["base"]["decided_pairs"] == 1
    pooled = results["judge"]
    assert pooled["model"] == "m" and pooled["base_url"] == "http://127.0.0.1:9/v1"
    assert pooled["requests"] == 16 and pooled["unparsed"] == 3
    # 3 + 1 equal of 8 pairs; without ties 2 + 1 of 3 + 1
    assert pooled["agreement"]["rate"] == pytest.approx(4 / 8) and pooled["agreement"]["n"] == 8
    assert pooled["agreement"]["decided"] == pytest.approx(3 / 4) and pooled["agreement"]["n_decided"] == 4

    md = "\n".join(judge_lines(results))
    assert "### LLM judge (m)" in md and "16 requests, 3 answers without a verdict" in md
    assert "| PPO | 0.667 |" in md and "| 3 / 2 / 1 | 0.500 |" in md and "0.667 (3) | 3 |" in md
    assert "| SFT |" not in md and "| base | 0.250 |" in md
    assert judge_lines({"policies": [], "judge": None}) == []


def test_judge_section_is_off_by_default_and_checked_when_set():
    cfg = load_config(EvalConfig)
    assert not cfg.judge.enabled and cfg.judge.base_url == ""
    cfg = load_config(EvalConfig, None, ["judge.base_url=http://127.0.0.1:8000/v1", "judge.model=a"])
    assert cfg.judge.enabled and cfg.judge.model == "a" and cfg.judge.concurrency == 4
    with pytest.raises(ConfigError, match="judge.base_url must start with http"):
        load_config(EvalConfig, None, ["judge.base_url=localhost:8000"])
    with pytest.raises(ConfigError, match="unknown key 'judge.url'"):
        load_config(EvalConfig, None, ["judge.url=http://x/v1"])


def test_a_judge_that_does_not_answer_is_an_error_naming_the_endpoint():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ConfigError, match=rf"the LLM judge at {url} \(model 'm'\) does not answer"):
        load_judge(EvalJudgeConfig(base_url=url, model="m", timeout=5))


def test_the_report_draws_the_judge_beside_the_panel(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from instructrl.eval.report import plot_winrate

    panel = {"win_rate": 0.6, "win_low": 0.5, "win_high": 0.7}
    judge = {"win_rate": 0.55, "win_low": 0.4, "win_high": 0.7}
    policies = [{"name": "sft", **panel, "judge": None}, {"name": "ppo", **panel, "judge": judge}]
    plot_winrate(policies, tmp_path / "with.png", 0.95)
    plot_winrate([{k: v for k, v in p.items() if k != "judge"} for p in policies], tmp_path / "without.png", 0.95)
    assert (tmp_path / "with.png").stat().st_size > 0 and (tmp_path / "without.png").stat().st_size > 0
