"""``instructrl <stage> [--config FILE] [key.sub=value ...]``.

Each stage is a config dataclass and a ``run(cfg) -> Path`` function, imported lazily so that
``--help`` is instant and a stage's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import textwrap

from instructrl.config import ConfigError, describe, load_config
from instructrl.records import RecordError

# name -> (config class "module:Class", run function "module:function", one-line description)
STAGES: dict[str, tuple[str, str, str]] = {
    "curate": (
        "instructrl.data.config:CurateConfig",
        "instructrl.data.curate.run:run",
        "prompt logs -> train/valid/test by user: dedup, per-user cap, PII, langid, report",
    ),
    "selfinstruct": (
        "instructrl.data.selfinstruct.config:SelfInstructConfig",
        "instructrl.data.selfinstruct.run:run",
        "Self-Instruct: grow a task pool from seed tasks with the model itself",
    ),
    "label": (
        "instructrl.label.config:LabelConfig",
        "instructrl.label.run:run",
        "rank samples or pick demonstrations with simulated labelers (calibrated panels) or an LLM judge",
    ),
    "label serve": (
        "instructrl.web.settings:WebSettings",
        "instructrl.label.workbench.run:serve",
        "the labeling workbench: people rate and rank outputs and write demonstrations in a browser",
    ),
    "label import": (
        "instructrl.label.workbench.config:ImportConfig",
        "instructrl.label.workbench.run:import_cli",
        "samples (K per prompt) or prompts -> workbench tasks, given to labelers with an overlap",
    ),
    "label export": (
        "instructrl.label.workbench.config:ExportConfig",
        "instructrl.label.workbench.run:export_cli",
        "workbench labels -> Ranking and Demonstration records (streamed), skips and agreement.json",
    ),
    "label bot": (
        "instructrl.label.workbench.config:BotConfig",
        "instructrl.label.workbench.bot:bot_cli",
        "a simulated labeler or the LLM judge labels a workbench user's queue through the workbench's API",
    ),
    "label admin create-user": (
        "instructrl.web.users:CreateUserConfig",
        "instructrl.web.users:create_user_cli",
        "a workbench user (the first admin); the password comes from $INSTRUCTRL_PASSWORD or the terminal",
    ),
    "serve": (
        "instructrl.serve.config:ServeConfig",
        "instructrl.serve.run:serve",
        "an OpenAI-compatible API and the playground over one or more models (continuous batching)",
    ),
    "serve key create": (
        "instructrl.serve.config:KeyConfig",
        "instructrl.serve.run:key_create_cli",
        "an API key for a user (printed once); once a key exists, every API request needs one",
    ),
    "serve key revoke": (
        "instructrl.serve.config:RevokeConfig",
        "instructrl.serve.run:key_revoke_cli",
        "revoke an API key by its first characters",
    ),
    "serve export": (
        "instructrl.serve.config:PromptExportConfig",
        "instructrl.serve.run:export_cli",
        "the stored API and playground prompts that may train the next round -> Prompt records",
    ),
    "sft": (
        "instructrl.sft.config:SFTConfig",
        "instructrl.sft.train:run",
        "supervised fine-tuning on demonstrations (prompt tokens masked)",
    ),
    "rm": (
        "instructrl.rm.config:RMConfig",
        "instructrl.rm.train:run",
        "reward model from rankings (K-way loss, all C(K,2) pairs of a prompt in one batch element)",
    ),
    "rm score": (
        "instructrl.rm.config:RMScoreConfig",
        "instructrl.rm.score:run",
        "score prompt/response JSONL (or preference data) with a reward model",
    ),
    "ppo": (
        "instructrl.ppo.config:PPOConfig",
        "instructrl.ppo.train:run",
        "PPO / PPO-ptx of the SFT policy against a reward model (KL penalty to the SFT policy)",
    ),
    "eval": (
        "instructrl.eval.config:EvalConfig",
        "instructrl.eval.run:run",
        "policies on held-out test prompts: win rate against a baseline by the held-out panel, Likert, flags, KL",
    ),
    "run": (
        "instructrl.pipeline.config:PipelineConfig",
        "instructrl.pipeline.run:run",
        "the whole loop: curate, simulated labels, SFT, RM, PPO and PPO-ptx, evaluation and report",
    ),
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
    # longer stage names ("label admin create-user", "rm score") take precedence over shorter ones
    name = argv[0]
    for words in (3, 2):
        if len(argv) >= words and " ".join(argv[:words]) in STAGES:
            name = " ".join(argv[:words])
            argv = argv[words - 1 :]
            break
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
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        cfg = load_config(_load(cfg_spec), config_path, overrides)
        processes = getattr(getattr(cfg, "run", None), "num_processes", 1)
        if processes > 1 or os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            if name not in DISTRIBUTED_STAGES:
                raise ConfigError(
                    f"run.num_processes: '{name}' runs in one process (several: {', '.join(DISTRIBUTED_STAGES)})"
                )
            from instructrl.utils.dist import launched, relaunch

            if not launched():  # start the processes; each of them comes back here
                return relaunch(processes, [*name.split(), *rest], cfg.run.threads)
        out = _load(run_spec)(cfg)
    except Exception as e:
        waiting = getattr(sys.modules.get("instructrl.label.workbench.loop"), "WaitingForLabels", None)
        if waiting is not None and isinstance(e, waiting):
            # not an error: the run stopped to let people label; the same command goes on later
            print(f"instructrl {name}: waiting: {e}", file=sys.stderr)
            return EXIT_WAITING
        # bad input ends in one line that names file, line and field, and exit code 2; anything
        # else is a bug and keeps its traceback (INSTRUCTRL_DEBUG=1 keeps it for bad input too)
        if not isinstance(e, _input_errors()) or os.environ.get("INSTRUCTRL_DEBUG", "0") not in ("", "0"):
            raise
        print(_error_lines(name, e), file=sys.stderr)
        return 2
    if out is not None and os.environ.get("RANK", "0") == "0":  # one line, from the main process
        print(out)
    return 0


#: Exit code of a run that stopped to wait for labels in the workbench (run it again to go on).
EXIT_WAITING = 3

#: Stages that train on several processes (run.num_processes, or under torchrun / accelerate launch).
DISTRIBUTED_STAGES = ("sft", "rm")

#: Errors a stage module raises on bad input, as "module:Class". They are looked up only among the
#: modules already imported: a stage that raised one has imported its module, and the CLI need not
#: import every stage to catch it.
_STAGE_INPUT_ERRORS = (
    "instructrl.data.curate.write:CurationError",
    "instructrl.web.db:InputError",
    "instructrl.label.workbench.bot:WorkbenchError",
)


def _input_errors() -> tuple[type[Exception], ...]:
    """The exception classes that mean bad input (a record, a config), not a bug."""
    specs = (spec.split(":") for spec in _STAGE_INPUT_ERRORS)
    found = [getattr(sys.modules.get(module), cls, None) for module, cls in specs]
    return (RecordError, ConfigError, *(c for c in found if isinstance(c, type) and issubclass(c, Exception)))


def _error_lines(stage: str, error: Exception) -> str:
    """``instructrl <stage>: error: <message>`` and a one-line hint on what to do."""
    kind = "config error" if isinstance(error, ConfigError) else "error"
    message = " ".join(str(error).split("\n"))  # one line, whatever the message holds
    if isinstance(error, ConfigError):
        hint = f"`instructrl {stage} --help` lists every config field with its documentation"
    elif isinstance(error, RecordError) and error.where.rpartition(":")[2].isdigit():
        hint = "each line of a JSONL input is one JSON object in UTF-8; fix or remove the line named above"
    elif isinstance(error, RecordError):
        hint = "check that the path names the right file and that it holds records, then run again"
    else:
        hint = "fix the input named above and run again"
    return (
        f"instructrl {stage}: {kind}: {message}\n"
        f"instructrl {stage}: hint: {hint} (INSTRUCTRL_DEBUG=1 shows the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
