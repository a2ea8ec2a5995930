"""Evaluation: win rates against a baseline policy judged by the held-out panel, Likert scores,
metadata flags, reward-model accuracy, KL to the SFT policy, and the report.

* :mod:`.winrate`: pure math (win rate with ties counted half, percentile bootstrap intervals,
  preference accuracy, KL estimate).
* :mod:`.config`: :class:`~.config.EvalConfig` (no torch import).
* :mod:`.sample`: sampling responses from a policy into Sample records.
* :mod:`.run`: ``run(EvalConfig)``: sample every policy on the test prompts and judge them, and
  run the automatic evaluations of :mod:`.tasks` (TruthfulQA, HellaSwag, RealToxicityPrompts, GSM8K).
* :mod:`.metrics`: their pure scoring functions (MC1, MC2, acc, acc_norm, toxicity, GSM8K answers).
* :mod:`.report`: ``report.md`` / ``report.html`` with matplotlib figures from a pipeline run.
"""
