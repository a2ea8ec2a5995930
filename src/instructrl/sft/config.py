"""SFT stage config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instructrl.config import LoraConfig, ModelConfig, OptimConfig, RunConfig, option, section


@dataclass
class SFTDataConfig:
    train: str = option(
        "builtin:demo",
        "Demonstration JSONL (.jsonl or .jsonl.gz) to train on; 'builtin:demo' is the project's built-in demo set.",
    )
    valid: str | None = option(
        None, "Demonstration JSONL for validation; null holds out data.valid_fraction of the *users* of data.train."
    )
    valid_fraction: float = option(0.1, "Fraction of user ids held out for validation when data.valid is null.")
    train_on: Literal["last", "all"] = option(
        "last", "Multi-turn chats: train on the last assistant turn only, or on every assistant turn."
    )
    few_shot_variants: int = option(
        2, "Few-shot demonstrations: training points per example, each with a different random subset of shots."
    )
    few_shot_k: int = option(3, "Few-shot demonstrations: at most this many shots in each training point's prompt.")
    packing: bool = option(
        False, "Pack several examples into each row of model.max_seq_len tokens; attention never crosses examples."
    )
    length_grouping: bool = option(
        True, "Group examples of similar length into batches (less padding, same data each epoch)."
    )
    max_examples: int | None = option(None, "Use at most this many training examples (after few-shot expansion).")

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.few_shot_variants < 1 or self.few_shot_k < 1:
            raise ValueError("data.few_shot_variants and data.few_shot_k must be >= 1")


@dataclass
class SFTTrainConfig:
    epochs: int = option(2, "Passes over the training data (InstructGPT used 16 and selected by RM score).")
    batch_size: int = option(8, "Sequences (or packed rows) per micro-batch.")
    grad_accum: int = option(1, "Micro-batches per optimizer step.")
    max_steps: int | None = option(None, "Stop after this many optimizer steps (null: run all epochs).")
    eval_every: int = option(
        0, "Validate every N optimizer steps as well as at the end of every epoch (0: epochs only)."
    )
    save_every: int = option(50, "Write a resumable step-NNNNNN/ checkpoint every N optimizer steps (0: never).")
    keep_checkpoints: int = option(2, "How many step checkpoints to keep (0: all).")
    log_every: int = option(1, "Write train metrics every N optimizer steps.")
    select_by: Literal["val_loss", "rm_score"] = option(
        "val_loss",
        "Which validation result picks final/: lowest validation loss, or highest mean reward-model score of "
        "greedy responses to validation prompts (the paper's rule; needs train.reward_model).",
    )
    reward_model: str | None = option(None, "Reward model checkpoint for select_by=rm_score.")
    rm_eval_prompts: int = option(32, "Validation prompts scored for select_by=rm_score.")
    rm_eval_max_new_tokens: int = option(128, "Longest response generated for select_by=rm_score.")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.epochs, train.batch_size and train.grad_accum must be >= 1")
        if self.select_by == "rm_score" and not self.reward_model:
            raise ValueError("train.select_by=rm_score needs train.reward_model (a reward model checkpoint)")


@dataclass
class SFTConfig:
    """Supervised fine-tuning: loss on response tokens only (token mean), prompt tokens masked."""

    run: RunConfig = section(RunConfig, "Output, seed, device, precision.")
    model: ModelConfig = section(ModelConfig, "Model to fine-tune.")
    lora: LoraConfig = section(LoraConfig, "Optional LoRA adapters.")
    optim: OptimConfig = section(OptimConfig, "Optimizer and learning-rate schedule.")
    data: SFTDataConfig = section(SFTDataConfig, "Demonstrations.")
    train: SFTTrainConfig = section(SFTTrainConfig, "Loop, validation, checkpoints.")
