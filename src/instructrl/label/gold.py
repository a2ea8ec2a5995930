"""The gold reward: what the training panel itself thinks of a response, without its noise.

Reward-model over-optimization studies (and AlpacaFarm) train the policy against a known-good reward
to test the RL stage apart from the learned reward model. Here that reward is the training panel's
mean noise-free quality of a response: the rubric's assessment weighted by each training labeler's
own feature weights and flag penalties, averaged over the labelers. It is what the learned reward
model is trained to approximate (the labelers rank by it plus noise), so it is its ceiling.

Only the training panel is read (``panels.json#train``): the held-out panel judges the evaluation
and must stay independent of what the policy was optimized for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from instructrl.builtin import resolve
from instructrl.label.config import RubricConfig
from instructrl.label.panel import Panel, build_rubric
from instructrl.label.rubric import as_prompt
from instructrl.records import Prompt, PromptText, read_jsonl, require_records


def _key(prompt: PromptText) -> str:
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)


class GoldReward:
    """``reward(prompts, responses, response_ids, finish_reasons)`` -> the training panel's mean quality.

    ``prompts``: Prompt JSONL files whose records (constraints, reference answers, categories) the
    rubric needs; a prompt not found there is judged as plain text. ``rubric``: the labelers' rubric
    settings (``label.panel.rubric``), so that the gold reward judges as the panel that ranked."""

    def __init__(self, panel_file: str, prompts: Sequence[str] = (), rubric: dict | None = None):
        self.panel = Panel.load(f"{panel_file}#train", build_rubric(RubricConfig(**(rubric or {}))))
        self.records: dict[str, Prompt] = {}
        for spec in prompts:
            path = resolve(spec)
            for p in require_records(read_jsonl(path, Prompt), path, "prompts"):
                self.records.setdefault(_key(p.prompt), p)

    def qualities(
        self, prompts: Sequence[PromptText], responses: Sequence[str], finish_reasons: Sequence[str | None]
    ) -> list[float]:
        records = [self.records.get(_key(p)) or as_prompt(p) for p in prompts]
        items = list(zip(records, responses, finish_reasons))
        self.panel.prefetch(items)  # the rubric assesses each response once for every labeler
        return [
            sum(lab.qualities(p, [r], [f])[0] for lab in self.panel.labelers) / len(self.panel.labelers)
            for p, r, f in items
        ]

    def __call__(
        self,
        prompts: Sequence[PromptText],
        responses: Sequence[str],
        response_ids: Any,
        finish_reasons: Sequence[str | None],
    ) -> list[float]:
        return self.qualities(prompts, responses, finish_reasons)
