"""``instructrl <stage> [--config FILE] [key.sub=value ...]``.

Each stage is a config dataclass and a ``run(cfg) -> Path`` function, imported lazily so that
``--help`` is instant and a stage's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap

from instructrl.config import ConfigError, describe, load_config

# name -> (config class "module:Class", run function "module:function", one-line description)
STAGES: dict[str, tuple[str, str, str]] = {
    "curate": ("instructrl.data.config:CurateConfig", "instructrl.data.curate:run", "prompt logs -> train/valid/test by user: dedup, per-user cap, PII, langid, report"),
    "sft": ("instructrl.sft.config:SFTConfig", "instructrl.sft.train:run",
            "supervised fine-tuning on demonstrations (prompt tokens masked)"),
    "label": ("instructrl.label.config:LabelConfig", "instructrl.label.run:run", "rank samples or pick demonstrations with simulated labelers (calibrated panels) or an LLM judge"),
    "rm": ("instructrl.rm.config:RMConfig", "instructrl.rm.train:run", "reward model from rankings (K-way loss, all C(K,2) pairs of a prompt in one batch element)"),
    "rm score": ("instructrl.rm.config:RMScoreConfig", "instructrl.rm.score:run", "score prompt/response JSONL (or preference data) with a reward model"),
    "ppo": ("instructrl.ppo.config:PPOConfig", "instructrl.ppo.train:run", "PPO / PPO-ptx of the SFT policy against a reward model (KL penalty to the SFT policy)"),
    "selfinstruct": ("instructrl.data.selfinstruct.config:SelfInstructConfig", "instructrl.data.selfinstruct.run:run", "Self-Instruct: grow a task pool from seed tasks with the model itself"),
    "run": ("instructrl.pipeline:PipelineConfig", "instructrl.pipeline:run", "the whole loop: curate, simulated labels, SFT, RM, PPO and PPO-ptx, evaluation and report"),
}


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    width = max(len(n) for n in STAGES)
    lines = [
        "usage: instructrl <stage> [--config FILE] [key.sub=value ...]",
        "       instructrl <stage> --help      (every config field with its documentation)",
        "",
        "Turn a pretrained language model into an instruction follower, the InstructGPT way.",
        "",
        "stages:",
    ]
    lines += [f"  {n.ljust(width)}  {d}" for n, (_, _, d) in STAGES.items()]
    return "\n".join(lines)


def stage_help(name: str) -> str:
    cfg_spec, _, desc = STAGES[name]
    cls = _load(cfg_spec)
    lines = [f"usage: instructrl {name} [--config FILE] [key.sub=value ...]", "", desc, "", "config fields:"]
    for key, tp, default, doc in describe(cls):
        lines.append(f"  {key} ({tp}, default {default!r})")
        if doc:
            lines += textwrap.wrap(doc, 96, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("--version", "-V"):
        from instructrl import __version__

        print(__version__)
        return 0
    # two-word stages ("rm score") take precedence over one-word ones
    name = argv[0]
    if len(argv) > 1 and f"{argv[0]} {argv[1]}" in STAGES:
        name = f"{argv[0]} {argv[1]}"
        argv = argv[1:]
    if name not in STAGES:
        print(f"instructrl: unknown stage '{argv[0]}'\n\n{_usage()}", file=sys.stderr)
        return 2
    rest = argv[1:]
    if any(a in ("-h", "--help") for a in rest):
        print(stage_help(name))
        return 0
    config_path = None
    overrides: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("--config", "-c"):
            if i + 1 >= len(rest):
                print("instructrl: --config needs a file", file=sys.stderr)
                return 2
            config_path = rest[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            config_path = a.split("=", 1)[1]
        else:
            overrides.append(a)
        i += 1
    cfg_spec, run_spec, _ = STAGES[name]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(_load(cfg_spec), config_path, overrides)
    except ConfigError as e:
        print(f"instructrl {name}: config error: {e}", file=sys.stderr)
        return 2
    out = _load(run_spec)(cfg)
    if out is not None:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
