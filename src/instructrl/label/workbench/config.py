"""Configs of ``instructrl label import``, ``label export`` and ``label bot`` (``label serve`` takes
:class:`instructrl.web.settings.WebSettings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from instructrl.config import option, section
from instructrl.label.config import JudgeConfig, RubricConfig

DEFAULT_DB = "sqlite:///runs/workbench/workbench.db"
EXPORT_FORMATS = ("jsonl", "pairs", "hf")  # as label/workbench/export.py FORMATS


@dataclass
class ImportConfig:
    """Samples (K responses per prompt) -> rate-and-rank tasks, or prompts -> write-a-demonstration tasks."""

    file: str = option(
        "",
        "JSONL to import: Sample records for task=rank (grouped into one task per prompt by meta.prompt_id, "
        "else by the prompt; 2 to 9 responses each), Prompt records for task=demonstrate.",
    )
    task: Literal["rank", "demonstrate"] = option("rank", "Kind of task the file becomes.")
    project: str = option("", "Project to import into (created if it does not exist).")
    org: str = option("default", "Organization of the project (it must exist: create its first user first).")
    overlap: float = option(
        0.0,
        "Share of the items given to labelers_per_item labelers (for measuring agreement); the rest go to one "
        "labeler each.",
    )
    labelers_per_item: int = option(2, "Labelers each overlapping item goes to.")
    labelers: list[str] = option([], "User names to give the tasks to; empty: every active labeler of the org.")
    instructions: str = option(
        "", "A text file of labeling instructions, published as the project's next version when it differs."
    )
    priority: Literal["helpfulness", "truthfulness_harmlessness"] = option(
        "helpfulness",
        "For a new project: what comes first when criteria conflict (helpfulness for training data, "
        "truthfulness and harmlessness for evaluation data).",
    )
    seed: int = option(0, "Seed of which items overlap, who gets what, and each labeler's order of responses.")
    db_url: str = option(DEFAULT_DB, "SQLAlchemy URL of the database (as label serve).")

    def __post_init__(self) -> None:
        if not self.file:
            raise ValueError("file is required: instructrl label import file=samples.jsonl project=NAME")
        if not self.project.strip():
            raise ValueError("project is required: instructrl label import file=... project=NAME")
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap}")
        if self.labelers_per_item < 1:
            raise ValueError(f"labelers_per_item must be >= 1, got {self.labelers_per_item}")


@dataclass
class ExportConfig:
    """A project's labels as the records ``instructrl rm`` and ``instructrl sft`` read."""

    project: str = option("", "Project to export.")
    org: str = option("default", "Organization of the project.")
    out_dir: str = option(
        "runs/workbench/export",
        "Folder for the exports (see formats), agreement.json (agreement among labelers, with gold, throughput) "
        "and config.yaml.",
    )
    formats: list[str] = option(
        ["jsonl"],
        "What to write, any of: jsonl (rankings.jsonl: Ranking records; demonstrations.jsonl: Demonstration "
        "records, written few-shot prompts among them; prompts.jsonl: the Prompt records labelers wrote; "
        "skips.jsonl), pairs (pairs.jsonl: a chosen/rejected Comparison record for every strictly ranked pair "
        "of a ranking, ties left out), hf (a Hugging Face dataset per export under hf/: rankings, pairs, "
        "demonstrations, prompts; needs the datasets package). E.g. formats=jsonl,pairs,hf.",
    )
    db_url: str = option(DEFAULT_DB, "SQLAlchemy URL of the database (as label serve).")

    def __post_init__(self) -> None:
        if not self.project.strip():
            raise ValueError("project is required: instructrl label export project=NAME")
        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        if not self.formats or unknown:
            raise ValueError(
                f"formats are any of {', '.join(EXPORT_FORMATS)}, e.g. formats=jsonl,pairs; got "
                f"{', '.join(unknown) or 'none'}"
            )


@dataclass
class BotConfig:
    """A simulated labeler (one labeler of a saved panel) or the LLM judge, labeling a workbench user's
    queue through the workbench's API, as a person would through its pages."""

    url: str = option("http://127.0.0.1:8400", "The workbench's address (as label serve prints it, without /login).")
    api_key_env: str = option(
        "INSTRUCTRL_LABEL_KEY",
        "Environment variable holding the bot user's API key (instructrl serve key create user=NAME db_url=...).",
    )
    project: int | None = option(None, "Label only this project's tasks (its id); None: the whole queue.")
    labeler: Literal["panel", "judge"] = option(
        "panel", "'panel': one simulated labeler of panel_file; 'judge': the LLM judge (the judge section)."
    )
    panel_file: str = option(
        "",
        "panels.json of an instructrl run with the panel to take the labeler from (#train, the default, or "
        "#heldout), e.g. runs/default/rankings/panels.json#train; '': a training panel with the default "
        "settings (label.panel), not calibrated.",
    )
    labeler_id: str = option("", "Which labeler of the panel the bot is (its id in panels.json); '': the first.")
    prompts: list[str] = option(
        [],
        "Prompt JSONL files whose records (constraints, reference answers, categories) the labeler reads "
        "beside the prompt text; a prompt found in none is judged as plain text.",
    )
    rubric: RubricConfig = section(
        RubricConfig, "The rubric the simulated labeler judges with (as label.panel.rubric)."
    )
    judge: JudgeConfig = section(JudgeConfig, "The LLM judge (labeler=judge).")
    max_items: int | None = option(None, "Stop after this many labels; None: when the queue is empty.")
    wait: float = option(0.0, "Seconds to keep asking an empty queue for new tasks before stopping (0: stop at once).")
    poll: float = option(2.0, "Seconds between two asks of an empty queue while waiting.")
    seed: int = option(0, "Seed of the labeler's noise (each label draws from seed and the assignment id).")
    timeout: float = option(60.0, "Seconds to wait for one answer of the workbench.")

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        try:
            urlsplit(self.url).port  # noqa: B018  (a malformed port raises here, not mid-run)
        except ValueError as e:
            raise ValueError(f"url: {self.url!r} is not a valid address ({e})") from None
        if self.labeler == "judge" and not self.judge.likert:
            raise ValueError(
                "labeler=judge needs judge.likert=true: a rate-and-rank label has a Likert score per output"
            )
        if min(self.wait, self.poll) < 0 or self.timeout <= 0:
            raise ValueError("wait and poll must be >= 0 and timeout > 0")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {self.max_items}")
