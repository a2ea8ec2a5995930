"""Configuration of ``instructrl selfinstruct`` (no torch import here, so ``--help`` is instant)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from instructrl.config import RunConfig, option, section

BANNED_WORDS = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "photo",
    "photos",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "drawing",
    "plot",
    "plotting",
    "video",
    "audio",
    "music",
    "diagram",
    "flowchart",
    "go to",
]


@dataclasses.dataclass
class BackendConfig:
    """Which model writes the instructions and instances."""

    kind: Literal["hf", "openai"] = option(
        "hf",
        "'hf': a local Hugging Face model (batched sampling on CPU or GPU); 'openai': an OpenAI-compatible server.",
    )
    name_or_path: str = option("default", "hf: 'default' (SmolLM2-135M-Instruct), a model directory, or a hub id.")
    dtype: Literal["fp32", "bf16", "fp16"] = option("fp32", "hf: dtype of the weights.")
    batch_size: int = option(8, "hf: prompts per generate() batch.")
    max_prompt_tokens: int | None = option(None, "hf: keep only the last this-many prompt tokens (null: no limit).")
    base_url: str = option("http://127.0.0.1:8000/v1", "openai: the API root including /v1.")
    model: str = option("", "openai: the model name sent with each request.")
    api_key_env: str = option(
        "OPENAI_API_KEY", "openai: environment variable holding the API key (unset: no key sent)."
    )
    concurrency: int = option(4, "openai: requests in flight at once.")
    timeout: float = option(120.0, "openai: seconds to wait for one answer.")
    prompt_format: Literal["raw", "chat"] = option(
        "raw",
        "'raw': prompts are text for the model to continue (a completion; /v1/completions); 'chat': each prompt "
        "is sent as one user turn through the chat template (/v1/chat/completions), for chat-only models.",
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"backend.batch_size must be >= 1, got {self.batch_size}")
        if self.concurrency < 1:
            raise ValueError(f"backend.concurrency must be >= 1, got {self.concurrency}")
        if self.kind == "openai" and not self.model:
            raise ValueError("backend.model must name the server's model when backend.kind is 'openai'")


@dataclasses.dataclass
class GenerateConfig:
    """How many tasks to make and how to sample them."""

    target: int = option(100, "Stop after the step in which the pool has gained this many new tasks.")
    max_steps: int = option(1000, "Stop after this many steps even if the target was not reached.")
    prompts_per_step: int = option(8, "Instruction-generation prompts sampled per step (one generate() batch).")
    mode: Literal["pipeline", "single_step"] = option(
        "pipeline",
        "'pipeline': the paper's steps (instructions, then classification identification, then instances); "
        "'single_step': one prompt yields instruction, input and output together.",
    )
    num_prompt_instructions: int = option(8, "Instructions shown in each instruction-generation prompt.")
    num_machine_in_prompt: int = option(
        2, "Of those, how many come from the generated tasks (human seeds fill the rest)."
    )
    max_new_instructions: int = option(8, "The most new instructions taken from one prompt's continuation.")
    instruction_max_new_tokens: int = option(256, "Token budget of an instruction-generation continuation.")
    instruction_temperature: float = option(0.7, "Sampling temperature for instructions.")
    instruction_top_p: float = option(0.5, "Nucleus sampling for instructions.")
    instance_max_new_tokens: int = option(300, "Token budget for the instances of one task.")
    instance_temperature: float = option(0.0, "Temperature for instances (0 = greedy).")
    instance_top_p: float = option(1.0, "Nucleus sampling for instances.")
    max_instances: int = option(5, "Keep at most this many instances per task.")
    single_step_shots: int = option(3, "single_step: complete tasks shown per prompt.")
    single_step_machine_shots: int = option(1, "single_step: of those, how many come from the generated tasks.")

    def __post_init__(self) -> None:
        for name in (
            "target",
            "max_steps",
            "prompts_per_step",
            "num_prompt_instructions",
            "max_new_instructions",
            "instruction_max_new_tokens",
            "instance_max_new_tokens",
            "max_instances",
            "single_step_shots",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"generate.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.num_machine_in_prompt <= self.num_prompt_instructions:
            raise ValueError("generate.num_machine_in_prompt must be between 0 and num_prompt_instructions")
        if not 0 <= self.single_step_machine_shots <= self.single_step_shots:
            raise ValueError("generate.single_step_machine_shots must be between 0 and single_step_shots")
        for name in ("instruction_temperature", "instance_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"generate.{name} must be >= 0")
        for name in ("instruction_top_p", "instance_top_p"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"generate.{name} must be in (0, 1]")


@dataclasses.dataclass
class FilterConfig:
    """What a new instruction and its instances must satisfy; every drop is counted by reason."""

    max_rouge_l: float = option(
        0.7,
        "A new instruction is kept only if its ROUGE-L F1 with every pool instruction (seeds included) is below this.",
    )
    min_words: int = option(4, "Instructions with fewer words are dropped ('too_short').")
    max_words: int = option(150, "Instructions with more words are dropped ('too_long').")
    banned_words: list[str] = option(
        BANNED_WORDS,
        "Instructions containing any of these words or phrases (whole words, any case) are dropped ('banned_word'): "
        "a text model cannot see or make images, graphs, files, maps or sounds.",
    )
    banned_prefixes: list[str] = option(["write a program"], "Instructions starting with these (any case) are dropped.")
    drop_leading_punctuation: bool = option(True, "Drop instructions that start with punctuation.")
    drop_non_ascii_start: bool = option(True, "Drop instructions whose first character is not ASCII.")
    max_field_chars: int = option(5000, "Instances whose input or output is longer than this are dropped ('too_long').")

    def __post_init__(self) -> None:
        if not 0 < self.max_rouge_l <= 1:
            raise ValueError(f"filters.max_rouge_l must be in (0, 1], got {self.max_rouge_l}")
        if self.min_words < 0 or self.max_words < self.min_words:
            raise ValueError("filters.min_words must be >= 0 and <= filters.max_words")


@dataclasses.dataclass
class SelfInstructConfig:
    """Self-Instruct (Wang et al. 2022): grow a task pool from seed tasks with the model itself."""

    run: RunConfig = option(
        factory=lambda: RunConfig(out_dir="runs/selfinstruct"), doc="Output directory, seed, device."
    )
    seeds: str | None = option(
        None, "Seed tasks in the Self-Instruct JSONL format; null uses the small set shipped with instructrl."
    )
    backend: BackendConfig = section(BackendConfig, "The model that generates.")
    generate: GenerateConfig = section(GenerateConfig, "Targets and sampling.")
    filters: FilterConfig = section(FilterConfig, "Filters and thresholds.")
