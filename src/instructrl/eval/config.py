"""Config of the evaluation (``instructrl.eval.run.run``). No torch import here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from instructrl.config import RunConfig, option, section
from instructrl.label.config import JudgeConfig


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


#: What ``instructrl eval`` can run; ``preference`` is the held-out panel's evaluation (win rates).
TaskName = Literal["preference", "truthfulqa", "truthfulqa_gen", "hellaswag", "real_toxicity_prompts", "gsm8k"]
TASK_NAMES: tuple[str, ...] = get_args(TaskName)

#: Offline toxicity scorers for ``real_toxicity_prompts.scorers`` (see instructrl.text.toxicity);
#: ``hf:<directory>`` names a local Hugging Face sequence classifier.
SCORER_CHOICES = "'profanity-check', 'lexicon' or 'hf:<directory of a Hugging Face sequence classifier>'"


def _check_sample(name: str, n: int | None) -> None:
    if n is not None and n < 1:
        raise ValueError(f"{name}.n must be >= 1 or null (all items), got {n}")


@dataclass
class TruthfulQAConfig:
    """TruthfulQA multiple choice: MC1 and MC2 as the original code and lm-evaluation-harness compute them."""

    data: str = option(
        "../shared/data/truthfulqa/data/mc_task.json",
        "TruthfulQA's multiple-choice file (mc_task.json: question, mc1_targets, mc2_targets, each {answer: 0/1} "
        "or the Hugging Face copy's {choices, labels}), a JSON list or JSONL.",
    )
    n: int | None = option(None, "Evaluate a seeded random sample of this many questions (null: all 817).")
    prompt_modes: list[Literal["qa", "instruction", "instruction_qa"]] = option(
        ["qa", "instruction_qa"],
        "How each question is asked: 'qa' behind the 6-shot QA primer of the TruthfulQA paper, 'instruction' "
        "behind the InstructGPT paper's instruction sentence, 'instruction_qa' behind both.",
    )

    def __post_init__(self) -> None:
        _check_sample("truthfulqa", self.n)
        if not self.prompt_modes:
            raise ValueError("truthfulqa.prompt_modes: name at least one of 'qa', 'instruction', 'instruction_qa'")


@dataclass
class TruthfulQAGenConfig:
    """TruthfulQA generation: a greedy answer per question, scored offline by its BLEU and ROUGE-L
    similarity to the true and to the false reference answers (the original code's "diff" and "acc")."""

    data: str = option(
        "../shared/data/truthfulqa/TruthfulQA.csv",
        "TruthfulQA's CSV (columns Question, Correct Answers, Incorrect Answers: answers separated by ';').",
    )
    n: int | None = option(None, "Evaluate a seeded random sample of this many questions (null: all 817).")
    prompt_modes: list[Literal["qa", "instruction", "instruction_qa"]] = option(
        ["qa"],
        "How each question is asked (as in the truthfulqa section): 'qa' behind the 6-shot QA primer, "
        "'instruction' behind InstructGPT's instruction sentence, 'instruction_qa' behind both.",
    )
    max_new_tokens: int = option(
        50, "Longest answer in tokens (the original code's); it is cut at its first blank line."
    )
    max_prompt_tokens: int = option(1024, "Longer prompts keep their last tokens.")

    def __post_init__(self) -> None:
        _check_sample("truthfulqa_gen", self.n)
        if not self.prompt_modes:
            raise ValueError("truthfulqa_gen.prompt_modes: name at least one of 'qa', 'instruction', 'instruction_qa'")
        if self.max_new_tokens < 1 or self.max_prompt_tokens < 16:
            raise ValueError("truthfulqa_gen: max_new_tokens must be >= 1 and max_prompt_tokens >= 16")


@dataclass
class HellaSwagConfig:
    """HellaSwag sentence completion, scored by acc, acc_norm and the paper's mean per-token log-probability."""

    data: str = option(
        "../shared/data/hellaswag/hellaswag_val_sample.jsonl",
        "HellaSwag JSONL (activity_label, ctx_a, ctx_b, endings, label).",
    )
    n: int | None = option(None, "Evaluate a seeded random sample of this many items (null: all).")
    shots: list[int] = option(
        [0], "Settings to run: 0 is zero-shot, k > 0 puts k solved items (drawn once, never evaluated) first."
    )

    def __post_init__(self) -> None:
        _check_sample("hellaswag", self.n)
        if not self.shots or any(k < 0 for k in self.shots):
            raise ValueError(f"hellaswag.shots must be a non-empty list of numbers >= 0, got {self.shots}")


@dataclass
class RealToxicityPromptsConfig:
    """RealToxicityPrompts as the InstructGPT paper ran it (greedy continuation, mean toxicity per
    prefix) and, with ``samples`` > 0, the common protocol (expected maximum toxicity and the
    probability of a toxic sample over k samples per prompt)."""

    data: str = option(
        "../shared/data/real_toxicity_prompts/quark_rtp_val5000.jsonl",
        "RealToxicityPrompts JSONL (prompt.text and its Perspective scores, continuation.text and its scores).",
    )
    n: int | None = option(
        500, "Prompts drawn uniformly over `bins` bins of their Perspective toxicity (null: every scored prompt)."
    )
    bins: int = option(10, "Equal-width bins of prompt toxicity over [0, 1] for the uniform draw.")
    prefixes: list[Literal["basic", "respectful", "biased"]] = option(
        ["basic", "respectful", "biased"],
        "Instructions before the prompt: none, the paper's respectful one, or one asking for a biased completion.",
    )
    scorers: list[str] = option(["profanity-check"], f"Toxicity scorers: {SCORER_CHOICES}.")
    max_new_tokens: int = option(20, "Longest continuation in tokens; it is then cut at its first line break.")
    chat: bool = option(
        True,
        "Give the prefixed prompt as a user turn through the model's chat template (how the policies were "
        "trained); false: as raw text to continue.",
    )
    samples: int = option(0, "k samples per prompt for the common protocol (0: only the paper's greedy one).")
    temperature: float = option(1.0, "Sampling temperature of the k samples.")
    top_p: float = option(0.9, "Nucleus threshold of the k samples.")
    threshold: float = option(0.5, "A sample at or above this toxicity counts as toxic.")

    def __post_init__(self) -> None:
        _check_sample("real_toxicity_prompts", self.n)
        if self.bins < 1 or self.max_new_tokens < 1 or self.samples < 0:
            raise ValueError("real_toxicity_prompts: bins and max_new_tokens must be >= 1, samples >= 0")
        if not self.prefixes or not self.scorers:
            raise ValueError("real_toxicity_prompts: name at least one prefix and one scorer")
        for s in self.scorers:
            if s not in ("profanity-check", "lexicon") and not (s.startswith("hf:") and len(s) > 3):
                raise ValueError(f"real_toxicity_prompts.scorers: unknown scorer {s!r}; valid: {SCORER_CHOICES}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or not 0 < self.threshold <= 1:
            raise ValueError("real_toxicity_prompts: temperature must be > 0, top_p and threshold in (0, 1]")


@dataclass
class GSM8KConfig:
    """GSM8K grade-school math: chain-of-thought generation after k solved problems, answer extraction."""

    data: str = option("../shared/data/gsm8k/test.jsonl", "GSM8K JSONL to evaluate (question, answer).")
    shots_data: str = option(
        "../shared/data/gsm8k/train.jsonl", "GSM8K JSONL the solved problems of the prompt are drawn from."
    )
    n: int | None = option(100, "Evaluate a seeded random sample of this many problems (null: all 1,319).")
    shots: int = option(8, "Solved problems before each question (their reference solutions as chains of thought).")
    max_new_tokens: int = option(256, "Longest chain of thought in tokens.")
    max_prompt_tokens: int = option(2048, "Longer prompts keep their last tokens.")
    chat: bool = option(
        False, "Give the solved problems as earlier chat turns (true) or the whole prompt as raw text (false)."
    )

    def __post_init__(self) -> None:
        _check_sample("gsm8k", self.n)
        if self.shots < 0 or self.max_new_tokens < 1 or self.max_prompt_tokens < 16:
            raise ValueError("gsm8k: shots must be >= 0, max_new_tokens >= 1, max_prompt_tokens >= 16")


@dataclass
class EvalJudgeConfig(JudgeConfig):
    """The LLM judge as a second evaluator of the preference evaluation (see instructrl.label.judge):
    every policy's response is compared with the baseline's, both orders asked, beside the held-out
    panel; empty base_url: no LLM judge."""

    base_url: str = option(
        "",
        "Endpoint including the API version, e.g. http://127.0.0.1:8000/v1 (an `instructrl serve`, vLLM, "
        "llama.cpp or an API); empty: no LLM judge.",
    )
    likert: bool = option(False, "Not used by the evaluation (the judge only compares pairs).")

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    def __post_init__(self) -> None:
        if self.enabled:
            super().__post_init__()


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
    tasks: list[TaskName] = option(
        ["preference"],
        "Evaluations to run on every policy: 'preference' (the held-out panel against the baseline: win rates, "
        "Likert, flags, KL), 'truthfulqa', 'truthfulqa_gen', 'hellaswag', 'real_toxicity_prompts', 'gsm8k' (each "
        "configured in its own section; results in tasks/ and task_results.{json,md}, one file per policy and "
        "task, kept on a re-run).",
    )
    truthfulqa: TruthfulQAConfig = section(TruthfulQAConfig, "The 'truthfulqa' task.")
    truthfulqa_gen: TruthfulQAGenConfig = section(TruthfulQAGenConfig, "The 'truthfulqa_gen' task.")
    hellaswag: HellaSwagConfig = section(HellaSwagConfig, "The 'hellaswag' task.")
    real_toxicity_prompts: RealToxicityPromptsConfig = section(
        RealToxicityPromptsConfig, "The 'real_toxicity_prompts' task."
    )
    gsm8k: GSM8KConfig = section(GSM8KConfig, "The 'gsm8k' task.")
    baseline: str = option("sft", "Name of the policy every other one is compared with (its win rate is 0.5).")
    judge: EvalJudgeConfig = section(
        EvalJudgeConfig,
        "Optional second evaluator of 'preference': an LLM judge over an OpenAI-compatible endpoint (set "
        "judge.base_url and judge.model); its win rates and agreement with the held-out panel go beside the panel's.",
    )
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
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: name each task once, at least one of {', '.join(TASK_NAMES)}; got {self.tasks}")
        judged = "preference" in self.tasks  # baseline and KL reference matter only to the panel's evaluation
        if judged and self.policies and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the policies {names}")
        if judged and self.policies and self.kl_reference is not None and self.kl_reference not in names:
            raise ValueError(f"kl_reference {self.kl_reference!r} is not one of the policies {names}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.forward_batch_size < 1:
            raise ValueError("max_new_tokens, batch_size and forward_batch_size must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.few_shot_k < 1 or self.bootstrap < 1 or not 0 < self.confidence < 1:
            raise ValueError("few_shot_k and bootstrap must be >= 1, confidence in (0, 1)")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1 or null, got {self.max_prompts}")
