"""Reward-model stage configs: ``instructrl rm`` (train) and ``instructrl rm score``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instructrl.config import LoraConfig, ModelConfig, OptimConfig, RunConfig, option, section

DATA_FORMATS = Literal["auto", "hh", "oasst", "ranking", "comparison", "hf"]


@dataclass
class RMDataConfig:
    train: list[str] = option(
        ["synthetic"],
        "Preference data: HH-RLHF (.jsonl/.jsonl.gz), OpenAssistant trees, instructrl Ranking/Comparison JSONL, "
        "or a Hugging Face dataset directory (save_to_disk) with chosen/rejected. 'synthetic' builds rankings of "
        "data.synthetic_k from data.demonstrations with a known order (for smoke runs).",
    )
    format: DATA_FORMATS = option("auto", "Format of every data.train/data.eval entry; 'auto' detects it per file.")
    eval: list[str] = option(
        [], "Held-out preference data; empty holds out data.eval_fraction of the conversations of data.train."
    )
    eval_fraction: float = option(0.1, "Fraction of conversations held out when data.eval is empty.")
    split_salt: str = option("instructrl", "Salt of the conversation hash that decides the held-out split.")
    max_train: int | None = option(None, "Use at most this many training rankings (prompts): a seeded random subset.")
    max_eval: int | None = option(None, "Use at most this many held-out rankings (a seeded random subset).")
    demonstrations: list[str] = option(
        ["builtin:demo"],
        "Demonstrations (SFT data) whose mean reward is set to 0 after training; empty skips normalization.",
    )
    max_normalize: int = option(512, "At most this many demonstrations are scored for the normalization bias.")
    synthetic_k: int = option(4, "K of the 'synthetic' rankings.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not self.train:
            raise ValueError("data.train needs at least one source")
        if not 2 <= self.synthetic_k <= 16:
            raise ValueError(f"data.synthetic_k must be in 2..16, got {self.synthetic_k}")


@dataclass
class RMTrainConfig:
    epochs: int = option(1, "Passes over the rankings (InstructGPT: 1; more overfits).")
    batch_size: int = option(16, "Prompts per optimizer step; each brings all C(K,2) comparisons of its K responses.")
    micro_batch_size: int = option(4, "Prompts per forward pass (all K responses of a prompt go in one pass).")
    max_steps: int | None = option(None, "Stop after this many optimizer steps (null: run all epochs).")
    trainable_layers: int | None = option(
        None, "Train only the top N decoder layers, the final norm and the head (null: all weights, or LoRA)."
    )
    head_lr: float | None = option(
        None,
        "Peak learning rate of the scalar head (null: optim.lr); the head starts from random weights while "
        "the backbone is pretrained, so short runs may want it higher.",
    )
    share_prompt: bool = option(
        True,
        "Compute each prompt once and run its K responses on its KV cache (same scores, fewer tokens); "
        "off with model.gradient_checkpointing.",
    )
    eval_every: int = option(
        0, "Evaluate on held-out data every N optimizer steps as well as after each epoch (0: epochs)."
    )
    eval_batch_size: int = option(8, "Prompts per forward pass during evaluation.")
    save_every: int = option(50, "Write a resumable step-NNNNNN/ checkpoint every N optimizer steps (0: never).")
    keep_checkpoints: int = option(2, "How many step checkpoints to keep (0: all).")
    log_every: int = option(1, "Write train metrics every N optimizer steps.")

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.micro_batch_size, self.eval_batch_size) < 1:
            raise ValueError("train.epochs, batch_size, micro_batch_size and eval_batch_size must be >= 1")
        if self.trainable_layers is not None and self.trainable_layers < 1:
            raise ValueError(f"train.trainable_layers must be >= 1 or null, got {self.trainable_layers}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ValueError(f"train.head_lr must be > 0 or null, got {self.head_lr}")


@dataclass
class RMConfig:
    """Reward model from rankings: K-way loss (all C(K,2) comparisons of a prompt in one batch
    element), held-out accuracy, then a bias so that the demonstrations' mean reward is 0."""

    run: RunConfig = section(RunConfig, "Output, seed, device, precision.")
    model: ModelConfig = section(
        ModelConfig,
        "Model to start from (the SFT model; its unembedding is replaced by a "
        "scalar head). model.max_seq_len bounds prompt + response.",
    )
    lora: LoraConfig = section(LoraConfig, "Optional LoRA adapters (the head is always fully trained).")
    optim: OptimConfig = section(OptimConfig, "Optimizer and learning-rate schedule.")
    data: RMDataConfig = section(RMDataConfig, "Rankings and demonstrations.")
    train: RMTrainConfig = section(RMTrainConfig, "Loop, evaluation, checkpoints.")

    def __post_init__(self) -> None:
        if self.lora.enabled and self.train.trainable_layers is not None:
            raise ValueError("choose lora.enabled or train.trainable_layers, not both")


@dataclass
class RMScoreConfig:
    """Score prompt/response JSONL with a trained reward model (normalized rewards)."""

    run: RunConfig = section(RunConfig, "Output directory (scores.jsonl, metrics.json), device, precision.")
    model: str = option("runs/demo/rm/final", "Reward-model checkpoint directory (or a run directory with final/).")
    input: str = option(
        "",
        "JSONL of objects with 'prompt' and 'response' (e.g. Sample or Demonstration records), or preference data "
        "in any format data.train accepts (then every response is scored and pairwise accuracy is reported).",
    )
    format: DATA_FORMATS = option("auto", "Format of preference data in input ('auto' detects it).")
    max_seq_len: int = option(1024, "Longest prompt + response in tokens (the prompt is cut from the left first).")
    batch_size: int = option(8, "Sequences per forward pass.")
    raw: bool = option(False, "Write raw scores (without the normalization bias).")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
