"""The command line of a preference evaluation on the tiny models, shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def preference_args(out: Path, panel_file: Path, policies: str, *extra: str) -> list[str]:
    """``instructrl eval`` of ``policies`` (a YAML list) on the example prompts, judged by ``panel_file``'s
    held-out panel, without a reward model; ``extra`` adds or overrides settings."""
    return [
        "eval",
        "--config",
        str(ROOT / "configs" / "tiny" / "eval.yaml"),
        f"run.out_dir={out}",
        "prompts=builtin:example_prompts",
        f"panel_file={panel_file}",
        "reward_model=null",
        f"policies={policies}",
        "baseline=base",
        "run.threads=1",
        *extra,
    ]
