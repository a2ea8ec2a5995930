"""The data shipped inside the package, named ``builtin:<name>`` wherever a config takes a path.

One table for every stage, so a name means the same file in ``instructrl sft``, ``rm``, ``ppo``,
``label``, ``selfinstruct`` and ``run``. Anything that is not a ``builtin:`` name is a path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from instructrl.records import Demonstration, RecordError, prompt_text, read_jsonl, require_records

PREFIX = "builtin:"

#: name -> (file inside the package, what it holds)
BUILTIN: dict[str, tuple[str, str]] = {
    "builtin:demo": ("data/demo/demonstrations.jsonl", "236 labeler-style demonstrations (plain and few-shot)"),
    "builtin:prompts": (
        "data/prompts/prompts.jsonl",
        "the project's prompt set (473 prompts with users, categories, constraints and reference answers)",
    ),
    "builtin:seeds": ("data/selfinstruct/builtin_seeds.jsonl", "Self-Instruct seed tasks (35, 9 classification)"),
    "builtin:example": ("label/example_samples.jsonl", "a small hand-written set of samples to label"),
    "builtin:example_prompts": ("label/example_prompts.jsonl", "the prompts of builtin:example"),
}


def is_builtin(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def resolve(spec: str | Path) -> Path:
    """The file a data spec names: a ``builtin:`` name's packaged file, else the path itself."""
    if not is_builtin(str(spec)):
        return Path(spec)
    if spec not in BUILTIN:
        names = ", ".join(BUILTIN)
        raise RecordError(str(spec), None, f"unknown built-in data set; the built-ins are {names}")
    return Path(str(resources.files("instructrl").joinpath(BUILTIN[str(spec)][0])))


def load_demonstrations(spec: str) -> list[Demonstration]:
    """The demonstrations a spec names; an empty file is an error (no stage runs on none)."""
    path = resolve(spec)
    return require_records(read_jsonl(path, Demonstration), path, "demonstrations")


def demonstration_text(demo: Demonstration) -> str:
    """A demonstration as one plain-text document (PPO-ptx's pretraining text from ``builtin:demo``)."""
    if demo.examples:
        return demo.instruction + "\n\n" + "\n\n".join(f"{e['query']}\n{e['response']}" for e in demo.examples)
    return prompt_text(demo.prompt) + "\n\n" + demo.response
