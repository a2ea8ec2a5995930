"""The config of ``instructrl run``: its own sections and one section per stage.

Each stage section is that stage's own config. Its defaults here state only where the pipeline
departs from the stage's defaults (shorter runs, smaller batches); everything else is the stage's
default, written once in the stage's config. Keys the pipeline fills in itself (output folders,
the model each step starts from, the files between steps) show ``(set by instructrl run)`` in
``--help``; which keys those are is read off the code that builds the stage configs
(:func:`stage_configs`, below), and a config that gives one is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from instructrl.config import ModelConfig, OptimConfig, RunConfig, option, section
from instructrl.data.config import CurateConfig, FieldMap, InputConfig, SplitConfig, StatsConfig
from instructrl.eval.config import (
    EvalConfig,
    GSM8KConfig,
    HellaSwagConfig,
    PolicySpec,
    RealToxicityPromptsConfig,
    TruthfulQAConfig,
    TruthfulQAGenConfig,
)
from instructrl.label.config import LabelConfig
from instructrl.ppo.config import (
    MemoryConfig,
    MonitorConfig,
    MonitorReward,
    PPOAlgoConfig,
    PPOConfig,
    PPODataConfig,
    PPOTrainConfig,
    PtxConfig,
    RewardConfig,
    RolloutConfig,
    ValueConfig,
)
from instructrl.rm.config import RMConfig, RMDataConfig, RMTrainConfig
from instructrl.sft.config import SFTConfig, SFTDataConfig, SFTTrainConfig

#: The default of every key the pipeline sets itself, so that --help says so.
SET = "(set by instructrl run)"


@dataclass
class DataConfig:
    """Prompts and labeler-written demonstrations, and how the training prompts are shared out."""

    prompts: list[str] = option(
        ["builtin:prompts"],
        "Prompt JSONL files (instructrl Prompt records: prompt, user_id, and where they have "
        "them constraints and a reference answer); 'builtin:prompts' is the project's prompt set (473 prompts).",
    )
    demonstrations: list[str] = option(
        ["builtin:demo"],
        "Labeler-written Demonstration JSONL added to the SFT data ('builtin:demo': the built-in "
        "236); demonstrations of test users or of test prompts are left out.",
    )
    sft: float = option(0.3, "Share of the training prompts that get demonstrations (the SFT prompts).")
    rm: float = option(0.4, "Share of the training prompts whose sampled responses are ranked (the RM prompts).")
    ppo: float = option(0.3, "Share of the training prompts PPO samples from (the PPO prompts).")
    max_sft_prompts: int | None = option(40, "Use at most this many SFT prompts (a seeded random subset; null: all).")
    max_rm_prompts: int | None = option(64, "Use at most this many RM prompts.")
    max_ppo_prompts: int | None = option(None, "Use at most this many PPO prompts.")
    max_test_prompts: int | None = option(64, "Evaluate on at most this many test prompts.")

    def __post_init__(self) -> None:
        shares = (self.sft, self.rm, self.ppo)
        if min(shares) <= 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"data.sft, data.rm and data.ppo must be > 0 and sum to 1, got {shares}")
        for key in ("max_sft_prompts", "max_rm_prompts", "max_ppo_prompts", "max_test_prompts"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"data.{key} must be >= 1 or null, got {value}")
        if not self.prompts:
            raise ValueError("data.prompts needs at least one file")

    def cap(self, role: str) -> int | None:
        """The most prompts of a role (sft, rm, ppo or test) the run uses; None: all."""
        return {
            "sft": self.max_sft_prompts,
            "rm": self.max_rm_prompts,
            "ppo": self.max_ppo_prompts,
            "test": self.max_test_prompts,
        }[role]


@dataclass
class SamplingConfig:
    """Sampling responses from a model for labeling."""

    n: int = option(4, "Responses per prompt.")
    max_new_tokens: int = option(64, "Longest response.")
    temperature: float = option(1.0, "Sampling temperature.")
    top_p: float = option(1.0, "Nucleus sampling threshold.")
    batch_size: int = option(
        64,
        "Sequences decoded together (on a 2-core CPU a decode step of 64 rows yields about "
        "twice the tokens per second of one of 16).",
    )
    max_prompt_tokens: int = option(512, "Longer prompts keep their last tokens.")
    engine: Literal["cached", "hf"] = option("cached", "Generation engine.")
    dtype: Literal["fp32", "bf16", "fp16"] = option("bf16", "Weight dtype of the model while it samples.")

    def __post_init__(self) -> None:
        if self.n < 0 or self.max_new_tokens < 1 or self.batch_size < 1 or self.temperature <= 0:
            raise ValueError("sampling: n >= 0, max_new_tokens >= 1, batch_size >= 1 and temperature > 0 are needed")


@dataclass
class OveroptConfig:
    """The over-optimization curves: proxy (the learned reward model) and gold (the training panel's
    noise-free judgment) against the KL to SFT, for best-of-n samples of SFT and along PPO."""

    prompts: int = option(
        16, "Monitor prompts: the first N SFT prompts (never trained on by the reward model or PPO; 0: no curves)."
    )
    n: int = option(8, "Best-of-n: SFT samples per monitor prompt (curves for n = 1, 2, 4, ... up to this).")
    every: int = option(5, "PPO: score the monitor prompts every N iterations (and before the first, after the last).")
    samples: int = option(1, "PPO: responses per monitor prompt at each point (more: less noise, more time).")
    keep_best: bool = option(
        False,
        "PPO and PPO-ptx keep the policy of the monitor point with the highest gold score (best/) and the "
        "evaluation takes it instead of the last one: checkpoint selection on the monitor prompts (SFT "
        "prompts, never test prompts).",
    )

    def __post_init__(self) -> None:
        if self.prompts < 0 or self.n < 1 or self.every < 1 or self.samples < 1:
            raise ValueError("overopt: prompts >= 0, n >= 1, every >= 1 and samples >= 1 are needed")


WORKBENCH_STEPS = ("demonstrations", "rankings")


@dataclass
class PipelineWorkbenchConfig:
    """People (and bot labelers) in the labeling workbench give the run its demonstrations and rankings,
    instead of the simulated training panel. The simulated panels are still built: the held-out panel
    judges the evaluation."""

    steps: list[str] = option(
        [],
        "Steps whose labels come from the workbench: demonstrations, rankings (either or both); empty: none, "
        "the simulated training panel labels.",
    )
    db_url: str = option(
        "",
        "The workbench's database (as instructrl label serve); '': sqlite:///<run.out_dir>/workbench.db.",
    )
    org: str = option("default", "Organization of the projects (it must exist: create its first admin first).")
    project: str = option(
        "",
        "Name prefix of the run's projects (<project>-demonstrations, <project>-rankings); '': the run folder's name.",
    )
    labelers: list[str] = option([], "User names the tasks go to; empty: every active labeler of the org.")
    overlap: float = option(0.0, "Share of the items given to labelers_per_item labelers (for measuring agreement).")
    labelers_per_item: int = option(2, "Labelers each overlapping item goes to.")
    instructions: str = option("", "A text file of labeling instructions, shown beside every task.")
    candidates: bool = option(
        True,
        "Demonstration tasks carry the base model's candidates (demo_sampling) in their meta, for bot labelers "
        "(a person writes the answer).",
    )
    wait: float | None = option(
        None,
        "Seconds to wait for the labels before stopping (exit code 3; run the same command again to go on); "
        "None: wait as long as it takes.",
    )
    poll: float = option(10.0, "Seconds between two looks at the workbench while waiting.")

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in WORKBENCH_STEPS]
        if unknown:
            raise ValueError(f"workbench.steps: unknown step {unknown[0]!r}; valid: {', '.join(WORKBENCH_STEPS)}")
        if not 0.0 <= self.overlap <= 1.0 or self.labelers_per_item < 1:
            raise ValueError("workbench: overlap in [0, 1] and labelers_per_item >= 1 are needed")
        if (self.wait is not None and self.wait < 0) or self.poll <= 0:
            raise ValueError("workbench: wait >= 0 (or null) and poll > 0 are needed")


@dataclass
class PipelinePtxConfig:
    """PPO-ptx's pretraining term."""

    coef: float = option(1.0, "gamma_ptx of the ppo_ptx step (InstructGPT: 27.8; must be > 0). The ppo step uses 0.")
    data: list[str] = option(
        ["builtin:demo"],
        "Pretraining text: .txt or JSONL files (see instructrl ppo --help, ptx.data); "
        "'builtin:demo' is the text of the built-in demonstrations.",
    )

    def __post_init__(self) -> None:
        if self.coef <= 0:
            raise ValueError(f"ptx.coef must be > 0 (the ppo step is the run without it), got {self.coef}")
        if not self.data:
            raise ValueError("ptx.data needs at least one source")


#: The automatic evaluations the suite step can run (instructrl eval's tasks less 'preference', the eval step's).
SuiteTaskName = Literal["truthfulqa", "truthfulqa_gen", "hellaswag", "real_toxicity_prompts", "gsm8k"]

#: instructrl eval's keys that only its preference evaluation reads: the eval step's, refused in suite.
PREFERENCE_KEYS = (
    "prompts",
    "baseline",
    "panel_file",
    "reward_model",
    "kl_reference",
    "max_prompts",
    "max_new_tokens",
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "few_shot_k",
    "few_shot_demos",
    "few_shot_max_words",
    "examples",
    "judge",
)
#: instructrl eval's keys of the automatic evaluations: the suite step's, refused in eval.
SUITE_KEYS = ("tasks", "truthfulqa", "truthfulqa_gen", "hellaswag", "real_toxicity_prompts", "gsm8k")


@dataclass
class SuiteConfig(EvalConfig):
    """instructrl eval's config (instructrl eval --help) for the suite step: the automatic evaluations of
    the run's policies. Its keys of the preference evaluation (prompts, temperature, few_shot_k, ...)
    belong to the eval step and are refused here."""

    tasks: list[SuiteTaskName] = option(
        ["truthfulqa", "hellaswag", "real_toxicity_prompts", "gsm8k"],
        "Automatic evaluations of base, SFT, PPO and PPO-ptx, each configured in its section below "
        "([]: no suite step). Their data is read from the paths in those sections (the public data sets "
        "in ../shared/data beside the project). 'truthfulqa_gen' (TruthfulQA generation, BLEU and ROUGE-L "
        "diff/acc) is left out by default: it generates an answer per question (about 10 s per policy for "
        "its 60 questions on the default model).",
    )

    def __post_init__(self) -> None:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"suite.tasks: name each task once, got {self.tasks}")
        # instructrl eval's checks of the other keys (it needs a task; [] is checked as one would be)
        as_eval(self, tasks=list(self.tasks) or ["truthfulqa"])


def as_eval(cfg: EvalConfig, **changes: Any) -> EvalConfig:
    """``cfg`` (an EvalConfig or a subclass) as a plain EvalConfig, with ``changes``; checked."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(EvalConfig)}
    return EvalConfig(**{**values, **changes})


# The stage sections' defaults: only where the pipeline departs from the stage (a short run on a CPU).


def _run() -> RunConfig:
    return RunConfig(out_dir=SET)


def _curate() -> CurateConfig:
    return CurateConfig(
        run=_run(), split=SplitConfig(method="balanced", valid=0.0, test=0.2), stats=StatsConfig(tokenizer="whitespace")
    )


def _label() -> LabelConfig:
    return LabelConfig(run=_run(), samples=SET, prompts=SET)


def _sft() -> SFTConfig:
    return SFTConfig(
        run=_run(),
        model=ModelConfig(name_or_path=SET, max_seq_len=512, dropout=0.0),
        optim=OptimConfig(lr=2e-5, warmup_ratio=0.05),
        data=SFTDataConfig(train=SET, few_shot_variants=1),
        train=SFTTrainConfig(epochs=1, max_steps=24, save_every=8, keep_checkpoints=1),
    )


def _rm() -> RMConfig:
    return RMConfig(
        run=_run(),
        model=ModelConfig(name_or_path=SET, max_seq_len=384),
        optim=OptimConfig(lr=3e-5, warmup_ratio=0.05),
        data=RMDataConfig(train=[SET], demonstrations=[SET], eval_fraction=0.15, max_normalize=64),
        train=RMTrainConfig(batch_size=4, micro_batch_size=2, save_every=10, keep_checkpoints=1, trainable_layers=12),
    )


def _ppo() -> PPOConfig:
    return PPOConfig(
        run=_run(),
        policy=ModelConfig(name_or_path=SET, max_seq_len=512),
        optim=OptimConfig(schedule="constant", warmup_ratio=0.0),
        data=PPODataConfig(prompts=[SET], max_prompt_tokens=256),
        reward=RewardConfig(model=SET, max_seq_len=512),
        value=ValueConfig(lr=1e-5, trainable_layers=8),
        rollout=RolloutConfig(batch_size=8, max_new_tokens=64),
        ppo=PPOAlgoConfig(steps=10, batch_size=8, minibatch_size=4, trainable_layers=16),
        ptx=PtxConfig(block_size=128, batch_size=2, eval_blocks=16),
        memory=MemoryConfig(frozen_dtype="bf16"),
        train=PPOTrainConfig(save_every=5, keep_checkpoints=1, sample_every=0, eval_every=5),
    )


def _eval() -> EvalConfig:
    return EvalConfig(
        run=_run(),
        prompts=SET,
        panel_file=SET,
        reward_model=SET,
        max_new_tokens=64,
        dtype="bf16",
        few_shot_max_words=40,
        batch_size=64,
        forward_batch_size=32,
    )


def _suite() -> SuiteConfig:
    # subsets sized so the step takes about 2 1/4 minutes (135 s measured) for the four policies of
    # the default model on a 2-core CPU (README); each result row says how large its sample is
    return SuiteConfig(
        run=_run(),
        prompts=SET,
        panel_file=SET,
        reward_model=SET,
        truthfulqa=TruthfulQAConfig(n=60, prompt_modes=["qa", "instruction_qa"]),
        truthfulqa_gen=TruthfulQAGenConfig(n=60),  # when suite.tasks names it: about 10 s per policy (README)
        hellaswag=HellaSwagConfig(n=100, shots=[0]),
        real_toxicity_prompts=RealToxicityPromptsConfig(n=40, prefixes=["basic", "respectful"]),
        gsm8k=GSM8KConfig(n=4, max_new_tokens=128),
        dtype="bf16",
        batch_size=64,
        forward_batch_size=32,
    )


@dataclass
class PipelineConfig:
    """The whole loop: curate -> demonstrations -> SFT -> samples -> rankings -> RM -> PPO, PPO-ptx ->
    evaluation -> report, with simulated labelers. Its defaults are the default preset (the default
    model: 9 to 33 minutes on a 2-core CPU as measured so far, see the README)."""

    run: RunConfig = option(
        factory=lambda: RunConfig(out_dir="runs/default"),
        doc="Output directory (one folder per step), seed, device, precision, threads and progress of every step.",
    )
    model: str = option(
        "default",
        "Base model: 'default' (SmolLM2-135M-Instruct), a model directory, a hub id, or "
        "'tiny' (a 2-layer test model built in the run's base/ folder).",
    )
    data: DataConfig = section(DataConfig, "Prompts, demonstrations and the SFT/RM/PPO shares.")
    curate: CurateConfig = option(
        factory=_curate,
        doc="Curation (instructrl curate --help); inputs come from "
        "data.prompts; curate.split.test is the share of test prompts (users unseen in "
        "training).",
    )
    demo_sampling: SamplingConfig = option(
        factory=lambda: SamplingConfig(n=2, max_new_tokens=96, temperature=0.7),
        doc="Candidates of the base model per SFT prompt without a reference answer (n = 0: references only).",
    )
    label: LabelConfig = option(
        factory=_label,
        doc="Simulated labelers (instructrl label --help): the panels, K "
        "limits, use_reference and min_quality of the demonstrations.",
    )
    sft: SFTConfig = option(factory=_sft, doc="Supervised fine-tuning (instructrl sft --help).")
    rm_sampling: SamplingConfig = option(
        factory=lambda: SamplingConfig(n=4, max_new_tokens=64),
        doc="K responses of the SFT model per RM prompt (n is K, 2 or more).",
    )
    rm_base: str | None = option(
        None,
        "Model the reward model starts from: null is the SFT model (InstructGPT's choice), else a larger "
        "model (directory or hub id), as InstructGPT's 6B reward model served every policy size. The value "
        "function then starts from the SFT model (unless ppo.value.init is set): it reads the policy's tokens.",
    )
    rm: RMConfig = option(factory=_rm, doc="Reward model (instructrl rm --help).")
    reward: Literal["model", "gold"] = option(
        "model",
        "What PPO maximizes: the learned reward model, or 'gold': the training panel's own noise-free judgment "
        "(instructrl.label.gold), to test the RL stage apart from the reward model. The held-out panel judges "
        "either way and is never read by the gold reward.",
    )
    workbench: PipelineWorkbenchConfig = section(
        PipelineWorkbenchConfig, "Labels from people in the labeling workbench (instructrl label serve)."
    )
    ppo: PPOConfig = option(factory=_ppo, doc="PPO, for both the ppo and ppo_ptx steps (instructrl ppo --help).")
    ptx: PipelinePtxConfig = section(PipelinePtxConfig, "The pretraining term of PPO-ptx.")
    overopt: OveroptConfig = section(OveroptConfig, "Over-optimization curves (proxy and gold score against KL).")
    eval: EvalConfig = option(
        factory=_eval,
        doc="Preference evaluation on the test prompts (instructrl.eval.config.EvalConfig; its automatic "
        "evaluations are the suite section's).",
    )
    suite: SuiteConfig = option(
        factory=_suite,
        doc="The automatic evaluations (TruthfulQA, HellaSwag, RealToxicityPrompts, GSM8K; instructrl eval "
        "--help) of base, SFT, PPO and PPO-ptx on samples of the public data sets.",
    )

    def __post_init__(self) -> None:
        if self.rm_sampling.n < 2:
            raise ValueError(f"rm_sampling.n (K) must be >= 2, got {self.rm_sampling.n}")
        if "rankings" in self.workbench.steps and self.rm_sampling.n > 9:
            raise ValueError(f"rm_sampling.n (K) is at most 9 for workbench rankings, got {self.rm_sampling.n}")
        refuse_keys_the_run_sets(self)


def refuse_keys_the_run_sets(cfg: PipelineConfig) -> None:
    """Raise where a stage section gives a key that the built stage config does not keep.

    Such a key is one the pipeline sets itself: a value given for it would be silently replaced. The
    check builds every stage config exactly as the run does, so it follows the builders as they change."""
    defaults = {
        f.name: f.default_factory()
        for f in dataclasses.fields(PipelineConfig)
        if f.default_factory is not dataclasses.MISSING
    }
    for name, built in stage_configs(cfg).values():
        given, default = leaves(getattr(cfg, name)), leaves(defaults[name])
        for key, value in leaves(built).items():
            if given[key] != default[key] and value != given[key]:
                instead = instead_of(name, key)
                raise ValueError(
                    f"{name}.{key} is set by instructrl run (to {value!r}); leave it out (got {given[key]!r}){instead}"
                )


def instead_of(section: str, key: str) -> str:
    """Where a refused key can be set, as "; set ... instead" (empty where nowhere)."""
    top = key.split(".")[0]
    if top == "run":
        return f"; set {key} instead"
    if section == "eval" and top in SUITE_KEYS:
        return f"; set suite.{key} instead (the automatic evaluations are the suite step's)"
    if section == "suite" and top in PREFERENCE_KEYS and top not in PIPELINE_EVAL_KEYS:
        return f"; it is the preference evaluation's: set eval.{key} instead"
    return ""


def leaves(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Every value of a config tree by its dotted key (lists and mappings are values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(leaves(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


# --------------------------------------------------------------------------- where each step writes


@dataclass(frozen=True)
class Paths:
    """Where each step writes what a later step reads."""

    out: Path
    base: str  # the base model: 'default', a directory or hub id, or the tiny model built in base/

    @classmethod
    def of(cls, cfg: PipelineConfig) -> Paths:
        out = Path(cfg.run.out_dir)
        return cls(out, str(out / "base" / "model") if cfg.model == "tiny" else cfg.model)

    @property
    def prompts(self) -> Path:  # curate/prompts/{sft,rm,ppo,test}.jsonl
        return self.out / "curate" / "prompts"

    @property
    def sft_data(self) -> Path:
        return self.out / "demonstrations" / "sft_data.jsonl"

    @property
    def sft_model(self) -> str:
        return str(self.out / "sft" / "final")

    @property
    def rankings(self) -> Path:
        return self.out / "rankings" / "rankings.jsonl"

    @property
    def panels(self) -> str:
        return str(self.out / "rankings" / "panels.json")

    @property
    def rm_model(self) -> str:
        return str(self.out / "rm" / "final")

    def ppo_model(self, cfg: PipelineConfig, step: str) -> str:
        """The policy a PPO step hands to the evaluation: final/, or best/ with overopt.keep_best."""
        return str(self.out / step / ("best" if cfg.overopt.keep_best and cfg.overopt.prompts else "final"))


# --------------------------------------------------------------------------- stage configs


def step_run(cfg: PipelineConfig, step: str) -> RunConfig:
    return replace(cfg.run, out_dir=str(Path(cfg.run.out_dir) / step))


def curate_config(cfg: PipelineConfig, paths: Paths) -> CurateConfig:
    # the curate step writes every data.prompts file into one input (see curate_input)
    source = InputConfig(
        path=str(paths.out / "curate" / "input.jsonl"),
        name="prompts",
        source="labeler",
        fields=FieldMap(text="text", messages="messages", response="reference"),
    )
    return replace(cfg.curate, run=step_run(cfg, "curate"), inputs=[source])


def label_config(cfg: PipelineConfig, paths: Paths, task: str) -> LabelConfig:
    """The training panel picks demonstrations (task 'demonstrate') or ranks the SFT samples ('rank')."""
    step, samples, role = (
        ("demonstrations", "demo_samples", "sft") if task == "demonstrate" else ("rankings", "samples", "rm")
    )
    return replace(
        cfg.label,
        run=step_run(cfg, step),
        task=task,
        samples=str(paths.out / samples / "samples.jsonl"),
        prompts=str(paths.prompts / f"{role}.jsonl"),
        labeler="train",
        panel_file="",
    )


def sft_config(cfg: PipelineConfig, paths: Paths) -> SFTConfig:
    sft = cfg.sft
    return replace(
        sft,
        run=step_run(cfg, "sft"),
        model=replace(sft.model, name_or_path=paths.base),
        data=replace(sft.data, train=str(paths.sft_data)),
    )


def rm_config(cfg: PipelineConfig, paths: Paths) -> RMConfig:
    rm = cfg.rm
    return replace(
        rm,
        run=step_run(cfg, "rm"),
        model=replace(rm.model, name_or_path=cfg.rm_base or paths.sft_model),
        data=replace(rm.data, train=[str(paths.rankings)], demonstrations=[str(paths.sft_data)]),
    )


def ppo_config(cfg: PipelineConfig, paths: Paths, step: str, ptx_coef: float) -> PPOConfig:
    ppo = cfg.ppo
    value_init = ppo.value.init
    if cfg.rm_base and value_init is None:
        value_init = paths.sft_model  # a reward model of another family reads other tokens than the policy
    elif cfg.reward == "gold" and value_init is None:
        value_init = paths.rm_model  # the value function starts from the reward model either way
    return replace(
        ppo,
        run=step_run(cfg, step),
        policy=replace(ppo.policy, name_or_path=paths.sft_model),
        data=replace(ppo.data, prompts=[str(paths.prompts / "ppo.jsonl")]),
        reward=ppo_reward(cfg, paths),
        monitor=ppo_monitor(cfg, paths),
        value=replace(ppo.value, init=value_init),
        ptx=replace(ppo.ptx, data=list(cfg.ptx.data), coef=ptx_coef),
    )


GOLD = "instructrl.label.gold:GoldReward"


def gold_args(cfg: PipelineConfig, paths: Paths, roles: Sequence[str]) -> dict:
    """GoldReward's arguments: the run's panels (it reads only the training panel) and prompt records."""
    return {
        "panel_file": paths.panels,
        "prompts": [str(paths.prompts / f"{role}.jsonl") for role in roles],
        "rubric": dataclasses.asdict(cfg.label.panel.rubric),
    }


def ppo_reward(cfg: PipelineConfig, paths: Paths) -> RewardConfig:
    """The learned reward model, or the training panel's gold judgment."""
    common = {"model": paths.rm_model, "function": None, "target_tokens": []}
    if cfg.reward == "model":
        return replace(cfg.ppo.reward, kind="model", factory=None, factory_args={}, **common)
    args = gold_args(cfg, paths, ["ppo", "sft"])  # sft: the monitor prompts, scored by the training reward too
    return replace(cfg.ppo.reward, kind="factory", factory=GOLD, factory_args=args, **common)


def ppo_monitor(cfg: PipelineConfig, paths: Paths) -> MonitorConfig:
    """Proxy and gold scores of the policy on the monitor prompts, every overopt.every iterations."""
    if not cfg.overopt.prompts:
        return MonitorConfig()
    rewards = [
        MonitorReward(name="proxy", model=paths.rm_model),
        MonitorReward(name="gold", factory=GOLD, factory_args=gold_args(cfg, paths, ["sft"])),
    ]
    return MonitorConfig(
        every=cfg.overopt.every,
        prompts=[str(paths.prompts / "sft.jsonl")],
        max_prompts=cfg.overopt.prompts,
        samples_per_prompt=cfg.overopt.samples,
        rewards=rewards,
        keep_best="gold" if cfg.overopt.keep_best else "",
    )


#: The eval step's keys that the pipeline sets (see eval_config).
PIPELINE_EVAL_KEYS = ("prompts", "panel_file", "reward_model", "baseline", "kl_reference")


def eval_config(cfg: PipelineConfig, paths: Paths) -> EvalConfig:
    """The preference evaluation of the five policies; its automatic evaluations are left at the
    defaults (the suite step runs them), so that a value given for them is refused."""
    unused = _eval()
    policies = [
        PolicySpec("base", paths.base),
        PolicySpec("base_prompted", paths.base, few_shot=True),
        PolicySpec("sft", paths.sft_model),
        PolicySpec("ppo", paths.ppo_model(cfg, "ppo")),
        PolicySpec("ppo_ptx", paths.ppo_model(cfg, "ppo_ptx")),
    ]
    return replace(
        cfg.eval,
        run=step_run(cfg, "eval"),
        prompts=str(paths.prompts / "test.jsonl"),
        policies=policies,
        baseline="sft",
        kl_reference="sft",
        panel_file=paths.panels,
        reward_model=paths.rm_model,
        **{key: getattr(unused, key) for key in SUITE_KEYS},
    )


def suite_config(cfg: PipelineConfig, paths: Paths) -> EvalConfig | None:
    """instructrl eval's config of the suite step (None: suite.tasks is empty, no step). Every policy
    that has a model of its own (the few-shot-prompted base is the base model to these tasks, which
    bring their own prompts); the preference evaluation's keys are pinned at the section's defaults,
    so that a value given for them is refused."""
    if not cfg.suite.tasks:
        return None
    policies = [
        PolicySpec("base", paths.base),
        PolicySpec("sft", paths.sft_model),
        PolicySpec("ppo", paths.ppo_model(cfg, "ppo")),
        PolicySpec("ppo_ptx", paths.ppo_model(cfg, "ppo_ptx")),
    ]
    unused = _suite()
    pinned = {key: getattr(unused, key) for key in PREFERENCE_KEYS}
    pinned.update(prompts="", panel_file="", reward_model=None)
    return as_eval(cfg.suite, **pinned, run=step_run(cfg, "suite"), policies=policies, tasks=list(cfg.suite.tasks))


def stage_configs(cfg: PipelineConfig) -> dict[str, tuple[str, Any]]:
    """step -> (the section it is built from, the stage config it runs with)."""
    paths = Paths.of(cfg)
    return {
        "curate": ("curate", curate_config(cfg, paths)),
        "demonstrations": ("label", label_config(cfg, paths, "demonstrate")),
        "sft": ("sft", sft_config(cfg, paths)),
        "rankings": ("label", label_config(cfg, paths, "rank")),
        "rm": ("rm", rm_config(cfg, paths)),
        "ppo": ("ppo", ppo_config(cfg, paths, "ppo", 0.0)),
        "ppo_ptx": ("ppo", ppo_config(cfg, paths, "ppo_ptx", cfg.ptx.coef)),
        "eval": ("eval", eval_config(cfg, paths)),
        **({"suite": ("suite", suite)} if (suite := suite_config(cfg, paths)) is not None else {}),
    }
