"""Configs of the simulated labelers and of ``instructrl label`` (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instructrl.config import RunConfig, option, section


@dataclass
class RubricConfig:
    """The shared rubric's thresholds (see instructrl.label.rubric)."""

    toxicity: Literal["auto", "profanity-check", "lexicon", "none"] = option(
        "auto",
        "Toxicity classifier: alt-profanity-check's shipped model, the built-in lexicon, 'auto' (the "
        "classifier where installed, else the lexicon) or none.",
    )
    toxic_threshold: float = option(0.8, "Toxicity probability at or above which a response is flagged toxic.")
    inappropriate_threshold: float = option(
        0.7, "Toxicity at or above which a response is inappropriate for a customer assistant."
    )
    on_topic_threshold: float = option(
        0.1,
        "A response is off topic when its content-word overlap with the prompt, |P∩R| / min(|P|, 8), is below this.",
    )
    repetition_threshold: float = option(
        0.3, "A response is degenerate when 1 - distinct/total word 3-grams reaches this."
    )

    def __post_init__(self) -> None:
        for name in ("toxic_threshold", "inappropriate_threshold", "on_topic_threshold", "repetition_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"rubric.{name} must be in [0, 1], got {v}")


@dataclass
class PanelConfig:
    """A training panel and a held-out panel of simulated labelers (see instructrl.label.panel)."""

    labelers: int = option(5, "Labelers in the training panel (each ranking is labeled by one of them, at random).")
    heldout_labelers: int = option(3, "Labelers in the held-out panel, used only for evaluation.")
    seed: int = option(0, "Seed of the labelers' personal weights, preferred lengths and noise levels.")
    weights: dict[str, float] = option(
        {},
        "Base rubric weights overriding the defaults, by feature: constraints, on_topic, non_toxic, fluent, "
        "complete, informative, reference, language, well_formed, grounded.",
    )
    penalties: dict[str, float] = option(
        {},
        "Multiplicative quality penalties per flag overriding the defaults (toxic: 0.6, degenerate: 0.6, "
        "fails_instruction: 0.4, hallucination: 0.3, off_topic: 0.2).",
    )
    weight_jitter: float = option(0.35, "Each labeler's weight = base weight x exp(N(0, weight_jitter^2)).")
    preferred_length: float = option(60.0, "Median preferred response length in words (informativeness feature).")
    length_jitter: float = option(0.4, "Each labeler's preferred length = median x exp(N(0, length_jitter^2)).")
    noise: float = option(
        0.1, "Base noise sigma of the judged score (each labeler: x U(0.75, 1.25)); calibration scales it."
    )
    tie_margin: float = option(
        0.02, "Scores in the same floor(s / tie_margin) bucket tie (0: ties only for equal scores)."
    )
    calibrate: bool = option(True, "Scale the noise so that the panels' agreement on the data meets the targets.")
    target_agreement: float = option(
        0.73, "Target agreement between two training labelers on pairwise comparisons (InstructGPT: 72.6%)."
    )
    heldout_target_agreement: float = option(
        0.77, "Target agreement between two held-out labelers (InstructGPT: 77.3%)."
    )
    calibration_groups: int = option(400, "Calibrate on at most this many prompts' responses (a seeded subset).")
    tolerance: float = option(0.02, "Calibration counts as reached when the measured agreement is this close.")
    rubric: RubricConfig = section(RubricConfig, "Rubric thresholds and toxicity classifier.")

    def __post_init__(self) -> None:
        if self.labelers < 2 or self.heldout_labelers < 1:
            raise ValueError(
                f"panel.labelers must be >= 2 and heldout_labelers >= 1, got {self.labelers}, {self.heldout_labelers}"
            )
        for name in ("target_agreement", "heldout_target_agreement"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"panel.{name} must be in (0, 1), got {v}")
        if min(self.noise, self.weight_jitter, self.length_jitter, self.tie_margin) < 0 or self.preferred_length <= 0:
            raise ValueError(
                "panel.noise, weight_jitter, length_jitter, tie_margin must be >= 0 and preferred_length > 0"
            )
        from instructrl.label.labeler import FEATURES
        from instructrl.label.rubric import FLAGS

        for field, valid in (("weights", FEATURES), ("penalties", FLAGS)):
            bad = set(getattr(self, field)) - set(valid)
            if bad:
                raise ValueError(f"panel.{field}: unknown keys {sorted(bad)}; valid: {', '.join(valid)}")
            if any(v < 0 for v in getattr(self, field).values()):
                raise ValueError(f"panel.{field}: values must be >= 0")


@dataclass
class JudgeConfig:
    """An LLM judge over an OpenAI-compatible endpoint (see instructrl.label.judge)."""

    base_url: str = option("http://127.0.0.1:8000/v1", "Endpoint including the API version, e.g. https://host/v1.")
    model: str = option("gpt-4o-mini", "Model name sent with each request.")
    api_key_env: str = option("OPENAI_API_KEY", "Environment variable that holds the API key (unset: no key sent).")
    temperature: float = option(0.0, "Sampling temperature of the judge (0: greedy).")
    max_tokens: int = option(64, "Longest answer of the judge, in tokens.")
    concurrency: int = option(4, "Requests in flight at once.")
    timeout: float = option(120.0, "Seconds to wait for one answer.")
    likert: bool = option(True, "Also ask for a Likert score and metadata flags per response (one call each).")

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge.base_url must start with http:// or https://, got {self.base_url!r}")
        if self.max_tokens < 1 or self.concurrency < 1 or self.temperature < 0:
            raise ValueError("judge.max_tokens and judge.concurrency must be >= 1, judge.temperature >= 0")


@dataclass
class LabelConfig:
    """Rank sampled responses or pick demonstrations with simulated labelers (or an LLM judge)."""

    run: RunConfig = section(
        RunConfig,
        "Output directory (rankings.jsonl or demonstrations.jsonl, panels.json, "
        "metrics.json) and seed of the labeling noise.",
    )
    task: Literal["rank", "demonstrate"] = option(
        "rank",
        "'rank': Sample JSONL -> Ranking JSONL (responses grouped by prompt); 'demonstrate': prompts -> "
        "Demonstration JSONL (the reference answer, else the best sample by the labeler's rubric).",
    )
    samples: str = option(
        "builtin:example",
        "Sample JSONL (prompt, response, finish_reason; meta.prompt_id links to a prompt) or "
        "'builtin:example' (a small hand-written set). Optional for 'demonstrate' when every prompt has a reference.",
    )
    prompts: str = option(
        "",
        "Prompt JSONL supplying constraints, reference answers, ids, users and categories, matched by "
        "meta.prompt_id = id, else by the prompt itself. Empty: the samples' prompts as they are.",
    )
    labeler: Literal["train", "heldout", "llm"] = option(
        "train", "Who labels: the training panel, the held-out panel, or the LLM judge (judge.*)."
    )
    panel_file: str = option(
        "", "panels.json of an earlier labeling run to reuse its calibrated panels (empty: build from panel.*)."
    )
    min_k: int = option(2, "Skip prompts with fewer responses than this.")
    max_k: int = option(9, "Prompts with more responses are split into rankings of at most max_k.")
    use_reference: bool = option(True, "'demonstrate': use a prompt's reference answer where it has one.")
    min_quality: float = option(0.0, "'demonstrate': skip prompts whose best sample's quality is below this (0..1).")
    panel: PanelConfig = section(PanelConfig, "Simulated labelers and their calibration.")
    judge: JudgeConfig = section(JudgeConfig, "LLM judge (labeler: llm).")

    def __post_init__(self) -> None:
        if not 2 <= self.min_k <= self.max_k:
            raise ValueError(f"need 2 <= min_k <= max_k, got min_k={self.min_k}, max_k={self.max_k}")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError(f"min_quality must be in [0, 1], got {self.min_quality}")
