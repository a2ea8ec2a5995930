"""Config of the evaluation (``instructrl.eval.run.run``). No torch import here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instructrl.config import RunConfig, option, section


@dataclass
class PolicySpec:
    """One policy to evaluate: a causal-LM checkpoint, optionally prompted with a few-shot prefix."""

    name: str = option("", "Short name used in tables, plots and file names (letters, digits, '_', '-').")
    model: str = option("", "Model directory, run directory with final/, hub id, or 'default'.")
    few_shot: bool = option(
        False,
        "Prefix every prompt with eval.few_shot_k demonstrations as earlier chat turns (the paper's "
        "'GPT-3 prompted' baseline).",
    )

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.name or ""):
            raise ValueError(f"policies[].name must be letters, digits, '_' or '-', got {self.name!r}")
        if not self.model:
            raise ValueError(f"policies[{self.name}].model is required")


@dataclass
class EvalConfig:
    """Sample every policy on held-out test prompts; the held-out panel compares each with the baseline."""

    run: RunConfig = section(
        RunConfig,
        "Output directory (samples/<policy>.jsonl, comparisons.jsonl, results.json, "
        "metrics.jsonl), seed, device, precision.",
    )
    prompts: str = option(
        "",
        "Prompt JSONL (or a builtin: name) of the test prompts (users unseen in training); constraints and "
        "reference answers in the records are used by the labelers.",
    )
    policies: list[PolicySpec] = option([], "Policies to evaluate, in the order of tables and plots.")
    baseline: str = option("sft", "Name of the policy every other one is compared with (its win rate is 0.5).")
    panel_file: str = option(
        "",
        "panels.json of a labeling run (`instructrl label`) whose held-out panel judges: 'path#heldout'; "
        "a plain path means its 'heldout' panel.",
    )
    reward_model: str | None = option(
        None, "Reward-model checkpoint whose accuracy on the held-out panel's comparisons is measured (null: skip)."
    )
    kl_reference: str | None = option("sft", "Name of the policy KL is measured to (null: skip KL).")
    max_prompts: int | None = option(None, "Evaluate at most this many test prompts (the first ones).")
    max_new_tokens: int = option(128, "Longest response; longer ones are cut (the labelers flag them truncated).")
    temperature: float = option(0.7, "Sampling temperature (0: greedy; KL is then not measured).")
    top_p: float = option(1.0, "Nucleus sampling threshold (KL is exact only at 1.0).")
    max_prompt_tokens: int = option(768, "Longer prompts (few-shot prefix included) keep their last tokens.")
    batch_size: int = option(16, "Sequences decoded together.")
    forward_batch_size: int = option(8, "Sequences per forward pass for log-probs and reward scores.")
    engine: Literal["cached", "hf"] = option("cached", "Generation engine (see instructrl.models.cached_generation).")
    dtype: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "Weight dtype of the policies while they sample, of the KL reference and of the reward model."
    )
    few_shot_k: int = option(3, "Demonstrations in the few-shot prefix.")
    few_shot_demos: list[str] = option(
        ["builtin:demo"],
        "Demonstration JSONL the few-shot prefix is drawn from (plain ones with short responses; "
        "never from a test user).",
    )
    few_shot_max_words: int = option(60, "Longest response (in words) a few-shot demonstration may have.")
    bootstrap: int = option(2000, "Bootstrap resamples of the prompts for the confidence intervals.")
    confidence: float = option(0.95, "Confidence level of the intervals.")
    examples: int = option(4, "Test prompts shown with every policy's response in the report.")

    def __post_init__(self) -> None:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policies: names must be unique, got {names}")
        if self.policies and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the policies {names}")
        if self.policies and self.kl_reference is not None and self.kl_reference not in names:
            raise ValueError(f"kl_reference {self.kl_reference!r} is not one of the policies {names}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.forward_batch_size < 1:
            raise ValueError("max_new_tokens, batch_size and forward_batch_size must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.few_shot_k < 1 or self.bootstrap < 1 or not 0 < self.confidence < 1:
            raise ValueError("few_shot_k and bootstrap must be >= 1, confidence in (0, 1)")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1 or null, got {self.max_prompts}")
