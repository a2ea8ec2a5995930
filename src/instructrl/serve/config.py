"""Configs of ``instructrl serve`` and its admin commands (``serve key create|revoke``, ``serve export``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from instructrl.config import option
from instructrl.web.settings import WebSettings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
DEFAULT_DB = "sqlite:///runs/workbench/workbench.db"  # the workbench's: one database, one set of users


def parse_models(specs: list[str]) -> dict[str, str]:
    """``["sft=runs/x/sft", "default"]`` -> ``{"sft": "runs/x/sft", "default": "default"}``."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path = spec
            name = spec.rstrip("/").rsplit("/", 1)[-1] or spec
        name, path = name.strip(), path.strip()
        if not NAME.fullmatch(name):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_', ':' or '-' (at most 64)")
        if not path:
            raise ValueError(f"model {name!r} names no directory")
        if name in models:
            raise ValueError(f"two models are called {name!r}; name them: models=[a=DIR,b=DIR]")
        models[name] = path
    return models


@dataclass
class ServeConfig(WebSettings):
    """An OpenAI-compatible API and the playground over one or more models (see the README, "Serving")."""

    models: list[str] = option(
        [],
        "Models to serve, each NAME=DIR or DIR (named after its folder): an instructrl checkpoint (sft/ppo "
        "output folder), a Hugging Face model directory, or 'default'. With neither models nor model: 'default'.",
    )
    model: str = option("", "A model to serve (NAME=DIR or DIR), besides any in models.")
    engine: Literal["batched", "hf"] = option(
        "batched",
        "Decode engine: 'batched' (continuous batching: requests join and leave a running batch) or 'hf' (Hugging "
        "Face generate, one request at a time).",
    )
    max_batch: int = option(32, "Rows the batched engine decodes together (requests beyond wait for a slot).")
    max_prefill: int = option(8, "Prompts prefilled at most between two decode steps (batched engine).")
    max_context: int = option(0, "Context length (prompt + completion) in tokens; 0: the model's own.")
    default_max_tokens: int = option(256, "Completion tokens when a request does not say max_tokens.")
    max_n: int = option(8, "Largest n (completions per prompt) a request may ask for.")
    device: str = option("auto", "Device of the models: auto, cpu, cuda, cuda:N, mps.")
    dtype: Literal["fp32", "bf16", "fp16"] = option("fp32", "Weights' dtype.")
    threads: int = option(0, "Torch threads of the engines (0: torch's default).")
    rate_limit_per_minute: int = option(600, "Requests per minute one API key may make (429 beyond).")
    store_prompts: bool = option(
        True,
        "Keep every prompt of a signed-in user or key in the database (with user, organization, model and consent "
        "state), for the next round. Prompts of users or organizations that opted out are kept but never exported.",
    )
    notice_version: int = option(
        1, "Version of the training-data notice shown on switching models; raising it asks every user again."
    )
    db_url: str = option(DEFAULT_DB, "SQLAlchemy URL of the database (the workbench's by default).")
    port: int = option(8500, "TCP port to listen on.")
    title: str = option("instructrl playground", "Name shown in the page header.")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model_dirs()
        if self.workers != 1:
            raise ValueError("serve runs one worker process (the models live in it); workers must be 1")
        for key in ("max_batch", "max_prefill", "default_max_tokens", "max_n", "rate_limit_per_minute"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_context < 0 or self.threads < 0:
            raise ValueError("max_context and threads must be >= 0")

    def model_dirs(self) -> dict[str, str]:
        return parse_models(list(self.models) + ([self.model] if self.model else []) or ["default"])


@dataclass
class KeyConfig:
    """``instructrl serve key create``: an API key for a user (printed once; only its hash is kept)."""

    user: str = option("", "User name the key belongs to (its organization is the user's).")
    name: str = option("", "A label for the key (shown in lists).")
    db_url: str = option(DEFAULT_DB, "SQLAlchemy URL of the database (as serve).")

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise ValueError("user is required: instructrl serve key create user=NAME")


@dataclass
class RevokeConfig:
    """``instructrl serve key revoke``: a key stops working at once."""

    prefix: str = option("", "The key's first characters as listed (e.g. irl-AbCd1234), or the whole key.")
    db_url: str = option(DEFAULT_DB, "SQLAlchemy URL of the database (as serve).")

    def __post_init__(self) -> None:
        if len(self.prefix.strip()) < 8:
            raise ValueError("prefix: give at least the first 8 characters of the key")


@dataclass
class PromptExportConfig:
    """``instructrl serve export``: the stored prompts that may train the next round, as Prompt records."""

    out: str = option("", "JSONL file to write (Prompt records with user, organization, model and time in meta).")
    org: str = option("", "Only this organization's prompts (empty: every organization's).")
    source: Literal["all", "api", "playground"] = option("all", "Where the prompts were typed.")
    db_url: str = option(DEFAULT_DB, "SQLAlchemy URL of the database (as serve).")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is required: instructrl serve export out=prompts.jsonl")
