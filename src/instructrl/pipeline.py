"""``instructrl run``: the whole InstructGPT loop from one config, with simulated labelers.

Steps (each writes ``run.out_dir/<step>/``)::

    base            (model: tiny only) build the tiny test model
    curate          prompts -> train/test split by user (instructrl curate); the train prompts are
                    divided into SFT, RM and PPO prompts -> curate/prompts/{sft,rm,ppo,test}.jsonl
    demo_samples    N samples of the base model per SFT prompt without a reference answer
    demonstrations  the training panel picks each SFT prompt's demonstration (reference, else best of
                    N; instructrl label) + the labeler-written demonstrations -> sft_data.jsonl
    sft             supervised fine-tuning of the base model (instructrl sft)
    samples         K samples of the SFT model per RM prompt
    rankings        the training panel ranks them (instructrl label; panels.json holds both panels)
    rm              reward model from the rankings, normalized on the demonstrations (instructrl rm)
    ppo             PPO of the SFT policy against the RM (instructrl ppo; ptx.coef = 0, the held-out
                    pretraining loss still measured)
    ppo_ptx         the same with the pretraining term (ptx.coef = gamma)
    eval            base, base with a few-shot prefix, SFT, PPO, PPO-ptx on the test prompts,
                    judged by the held-out panel (instructrl.eval.evaluate)
    report          report.md, report.html and figures (instructrl.eval.report)

A step that finished writes ``<step>/pipeline.json`` with its config fingerprint and run time; a
re-run skips it while its fingerprint (its own config and every earlier step's) is unchanged, and
resumes a step that was interrupted (the training stages resume from their checkpoints). A step
whose fingerprint changed is redone from scratch, and so is every step after it.

The pipeline calls each stage's ``run(cfg)`` with a config built from its own sections; the keys it
sets itself (paths between steps) are marked ``(set by instructrl run)`` and may not be given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from instructrl.config import ModelConfig, OptimConfig, RunConfig, option, save_config, \
    section, to_dict
from instructrl.data.config import CurateConfig, FieldMap, InputConfig, SplitConfig, StatsConfig
from instructrl.eval.config import EvalConfig, PolicySpec
from instructrl.label.config import LabelConfig
from instructrl.ppo.config import KLConfig, MemoryConfig, PPOAlgoConfig, PPOConfig, PPODataConfig, PPOTrainConfig, \
    PtxConfig, RewardConfig, RolloutConfig, ValueConfig
from instructrl.rm.config import RMConfig, RMDataConfig, RMTrainConfig
from instructrl.sft.config import SFTConfig, SFTDataConfig, SFTTrainConfig

log = logging.getLogger("instructrl.run")

SET = "(set by instructrl run)"
MARKER = "pipeline.json"
BUILTIN_PROMPTS = "builtin:prompts"


# --------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    """Prompts and labeler-written demonstrations, and how the training prompts are shared out."""

    prompts: list[str] = option(
        [BUILTIN_PROMPTS], "Prompt JSONL files (instructrl Prompt records: prompt, user_id, and where they have them "
        "constraints and a reference answer); 'builtin:prompts' is the project's prompt set (473 prompts).")
    demonstrations: list[str] = option(
        ["builtin:demo"], "Labeler-written Demonstration JSONL added to the SFT data ('builtin:demo': the built-in "
        "236); demonstrations of test users or of test prompts are left out.")
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
        for k in ("max_sft_prompts", "max_rm_prompts", "max_ppo_prompts", "max_test_prompts"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ValueError(f"data.{k} must be >= 1 or null, got {v}")
        if not self.prompts:
            raise ValueError("data.prompts needs at least one file")


@dataclass
class SamplingConfig:
    """Sampling responses from a model for labeling."""

    n: int = option(4, "Responses per prompt.")
    max_new_tokens: int = option(64, "Longest response.")
    temperature: float = option(1.0, "Sampling temperature.")
    top_p: float = option(1.0, "Nucleus sampling threshold.")
    batch_size: int = option(64, "Sequences decoded together (on a 2-core CPU a decode step of 64 rows yields about "
                                 "twice the tokens per second of one of 16).")
    max_prompt_tokens: int = option(512, "Longer prompts keep their last tokens.")
    engine: Literal["cached", "hf"] = option("cached", "Generation engine.")
    dtype: Literal["fp32", "bf16", "fp16"] = option("bf16", "Weight dtype of the model while it samples.")

    def __post_init__(self) -> None:
        if self.n < 0 or self.max_new_tokens < 1 or self.batch_size < 1 or self.temperature <= 0:
            raise ValueError("sampling: n >= 0, max_new_tokens >= 1, batch_size >= 1 and temperature > 0 are needed")


@dataclass
class PipelinePtxConfig:
    """PPO-ptx's pretraining term."""

    coef: float = option(1.0, "gamma_ptx of the ppo_ptx step (InstructGPT: 27.8; must be > 0). The ppo step uses 0.")
    data: list[str] = option(
        ["builtin:demo"], "Pretraining text: .txt or JSONL files (see instructrl ppo --help, ptx.data); "
                          "'builtin:demo' is the text of the built-in demonstrations.")

    def __post_init__(self) -> None:
        if self.coef <= 0:
            raise ValueError(f"ptx.coef must be > 0 (the ppo step is the run without it), got {self.coef}")
        if not self.data:
            raise ValueError("ptx.data needs at least one source")


def _run() -> RunConfig:
    return RunConfig(out_dir=SET)


def _curate() -> CurateConfig:
    return CurateConfig(run=_run(), split=SplitConfig(method="balanced", train=0.8, valid=0.0, test=0.2),
                        stats=StatsConfig(tokenizer="whitespace"))


def _label() -> LabelConfig:
    return LabelConfig(run=_run(), samples=SET, prompts=SET)


def _sft() -> SFTConfig:
    return SFTConfig(run=_run(), model=ModelConfig(name_or_path=SET, max_seq_len=512, dropout=0.0),
                     optim=OptimConfig(lr=2e-5, warmup_ratio=0.05),
                     data=SFTDataConfig(train=SET, few_shot_variants=1),
                     train=SFTTrainConfig(epochs=1, batch_size=8, max_steps=24, save_every=8, keep_checkpoints=1))


def _rm() -> RMConfig:
    return RMConfig(run=_run(), model=ModelConfig(name_or_path=SET, max_seq_len=384),
                    optim=OptimConfig(lr=3e-5, warmup_ratio=0.05),
                    data=RMDataConfig(train=[SET], demonstrations=[SET], eval_fraction=0.15, max_normalize=64),
                    train=RMTrainConfig(epochs=1, batch_size=4, micro_batch_size=2, save_every=10, keep_checkpoints=1,
                                        trainable_layers=12))


def _ppo() -> PPOConfig:
    return PPOConfig(run=_run(), policy=ModelConfig(name_or_path=SET, max_seq_len=512),
                     optim=OptimConfig(lr=1e-5, schedule="constant", warmup_ratio=0.0),
                     data=PPODataConfig(prompts=[SET], max_prompt_tokens=256),
                     reward=RewardConfig(model=SET, batch_size=8, max_seq_len=512),
                     value=ValueConfig(lr=1e-5, trainable_layers=8),
                     rollout=RolloutConfig(batch_size=8, max_new_tokens=64, forward_batch_size=8),
                     ppo=PPOAlgoConfig(steps=10, batch_size=8, minibatch_size=4, micro_batch_size=4, trainable_layers=16),
                     kl=KLConfig(coef=0.02), ptx=PtxConfig(block_size=128, batch_size=2, eval_blocks=16),
                     memory=MemoryConfig(frozen_dtype="bf16"),
                     train=PPOTrainConfig(save_every=5, keep_checkpoints=1, sample_every=0, eval_every=5))


def _eval() -> EvalConfig:
    return EvalConfig(run=_run(), prompts=SET, panel_file=SET, reward_model=SET, max_new_tokens=64, temperature=0.7,
                      dtype="bf16", few_shot_max_words=40, batch_size=64, forward_batch_size=32)


@dataclass
class PipelineConfig:
    """The whole loop: curate -> demonstrations -> SFT -> samples -> rankings -> RM -> PPO, PPO-ptx ->
    evaluation -> report, with simulated labelers. Its defaults are the default preset
    (configs/run/default.yaml: the default model, about 19 minutes on a 2-core CPU)."""

    run: RunConfig = option(factory=lambda: RunConfig(out_dir="runs/default"),
                            doc="Output directory (one folder per step), seed, device, precision and progress of "
                                "every step.")
    model: str = option("default", "Base model: 'default' (SmolLM2-135M-Instruct), a model directory, a hub id, or "
                                   "'tiny' (a 2-layer test model built in the run's base/ folder).")
    threads: int | None = option(
        None, "Torch intra-op threads for every step (null: torch's default, one per core). Small models run "
              "faster on 1: they gain nothing from splitting tiny operations, and lose a lot on a busy machine.")
    data: DataConfig = section(DataConfig, "Prompts, demonstrations and the SFT/RM/PPO shares.")
    curate: CurateConfig = option(factory=_curate, doc="Curation (instructrl curate --help); inputs come from "
                                  "data.prompts; curate.split.test is the share of test prompts (users unseen in training).")
    demo_sampling: SamplingConfig = option(
        factory=lambda: SamplingConfig(n=2, max_new_tokens=96, temperature=0.7),
        doc="Candidates of the base model per SFT prompt without a reference answer (n = 0: references only).")
    label: LabelConfig = option(factory=_label, doc="Simulated labelers (instructrl label --help): the panels, K "
                                "limits, use_reference and min_quality of the demonstrations.")
    sft: SFTConfig = option(factory=_sft, doc="Supervised fine-tuning (instructrl sft --help).")
    rm_sampling: SamplingConfig = option(factory=lambda: SamplingConfig(n=4, max_new_tokens=64),
                                         doc="K responses of the SFT model per RM prompt (n is K, 2 or more).")
    rm_base: str | None = option(
        None, "Model the reward model starts from: null is the SFT model (InstructGPT's choice), else a model "
              "directory or hub id — a larger model than the policy, as InstructGPT's 6B reward model served every "
              "policy size. It reads text with its own tokenizer; the value function then starts from the SFT "
              "model (unless ppo.value.init is set), since it reads the policy's tokens.")
    rm: RMConfig = option(factory=_rm, doc="Reward model (instructrl rm --help).")
    ppo: PPOConfig = option(factory=_ppo, doc="PPO, for both the ppo and ppo_ptx steps (instructrl ppo --help).")
    ptx: PipelinePtxConfig = section(PipelinePtxConfig, "The pretraining term of PPO-ptx.")
    eval: EvalConfig = option(factory=_eval, doc="Evaluation on the test prompts (instructrl.eval.config.EvalConfig).")

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")
        if self.rm_sampling.n < 2:
            raise ValueError(f"rm_sampling.n (K) must be >= 2, got {self.rm_sampling.n}")
        defaults = {"curate": _curate(), "label": _label(), "sft": _sft(), "rm": _rm(), "ppo": _ppo(), "eval": _eval()}
        for name, keys in WIRED.items():
            for key, instead in keys.items():
                mine, default = _get(getattr(self, name), key), _get(defaults[name], key)
                if mine != default:
                    raise ValueError(f"{name}.{key} is set by instructrl run ({instead}); leave it out "
                                      f"(got {mine!r})")


#: Keys of the stage sections that the pipeline sets, and what sets them.
WIRED: dict[str, dict[str, str]] = {
    "curate": {"run": "from run", "inputs": "from data.prompts"},
    "label": {"run": "from run", "task": "each labeling step", "samples": "the sampling steps",
              "prompts": "the curate step", "labeler": "the training panel labels; the held-out panel evaluates",
              "panel_file": "built from label.panel"},
    "sft": {"run": "from run", "model.name_or_path": "from model", "data.train": "the demonstrations step"},
    "rm": {"run": "from run", "model.name_or_path": "rm_base, else the SFT model",
           "data.train": "the rankings step",
           "data.demonstrations": "the demonstrations step"},
    "ppo": {"run": "from run", "policy.name_or_path": "the SFT model", "data.prompts": "the curate step",
            "reward.kind": "the rm step", "reward.model": "the rm step", "reward.function": "the rm step", "reward.target_tokens": "the rm step",
            "ptx.data": "set ptx.data", "ptx.coef": "set ptx.coef"},
    "eval": {"run": "from run", "prompts": "the curate step", "policies": "base, base_prompted, sft, ppo, ppo_ptx",
             "baseline": "sft", "kl_reference": "sft", "panel_file": "the rankings step",
             "reward_model": "the rm step"},
}


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, changes: dict[str, Any]) -> Any:
    """A copy of a config with dotted keys replaced (each section rebuilt, so it is validated again)."""
    nested: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            nested[head] = value
    return dataclasses.replace(obj, **{k: _set(getattr(obj, k), v) if isinstance(v, dict) and not
                                      isinstance(getattr(obj, k), dict) else v for k, v in nested.items()})


# --------------------------------------------------------------------------- steps


@dataclass
class Step:
    name: str
    spec: Callable[[], dict]  # what determines the step's output (fingerprinted)
    execute: Callable[[], dict]  # does the work; returns facts for the marker and the report


class Pipeline:
    """The steps of one run; paths between steps are attributes computed from ``out``."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg, self.out = cfg, Path(cfg.run.out_dir)
        self.base = str(self.out / "base" / "model") if cfg.model == "tiny" else cfg.model
        self.split_dir = self.out / "curate" / "prompts"
        self.sft_data = self.out / "demonstrations" / "sft_data.jsonl"
        self.sft_model = str(self.out / "sft" / "final")
        self.rm_model = str(self.out / "rm" / "final")
        self.panels = str(self.out / "rankings" / "panels.json")
        self.ptx_corpus = self.out / "ppo" / "ptx_corpus.jsonl"

    def stage_run(self, name: str) -> RunConfig:
        return dataclasses.replace(self.cfg.run, out_dir=str(self.out / name))

    def steps(self) -> list[Step]:
        c = self.cfg
        steps = []
        if c.model == "tiny":
            steps.append(Step("base", lambda: {"model": "tiny", "seed": c.run.seed}, self.build_tiny))
        steps += [
            Step("curate", lambda: {"curate": self.curate_cfg(), "data": c.data, "seed": c.run.seed}, self.curate),
            Step("demo_samples", lambda: {"model": self.base, "sampling": c.demo_sampling, "seed": c.run.seed},
                 lambda: self.sample("demo_samples", self.base, "sft", c.demo_sampling, without_reference=True)),
            Step("demonstrations", lambda: {"label": self.label_cfg("demonstrations", "demonstrate"),
                                            "extra": c.data.demonstrations}, self.demonstrations),
            Step("sft", lambda: {"sft": self.sft_cfg()}, lambda: self.stage("instructrl.sft.train", self.sft_cfg())),
            Step("samples", lambda: {"model": self.sft_model, "sampling": c.rm_sampling, "seed": c.run.seed},
                 lambda: self.sample("samples", self.sft_model, "rm", c.rm_sampling)),
            Step("rankings", lambda: {"label": self.label_cfg("rankings", "rank")}, self.rankings),
            Step("rm", lambda: {"rm": self.rm_cfg()}, lambda: self.stage("instructrl.rm.train", self.rm_cfg())),
            Step("ppo", lambda: {"ppo": self.ppo_cfg("ppo", 0.0), "ptx": c.ptx.data},
                 lambda: self.ppo("ppo", 0.0)),
            Step("ppo_ptx", lambda: {"ppo": self.ppo_cfg("ppo_ptx", c.ptx.coef), "ptx": c.ptx.data},
                 lambda: self.ppo("ppo_ptx", c.ptx.coef)),
            Step("eval", lambda: {"eval": self.eval_cfg()}, lambda: self.stage("instructrl.eval.evaluate",
                                                                                 self.eval_cfg())),
        ]
        return steps

    # ---------------------------------------------------------------- stage configs

    def curate_cfg(self) -> CurateConfig:
        inp = InputConfig(path=str(self.out / "curate" / "input.jsonl"), name="prompts", source="labeler",
                          fields=FieldMap(text="text", messages="messages", response="reference"))
        return _set(self.cfg.curate, {"run": self.stage_run("curate"), "inputs": [inp]})

    def label_cfg(self, step: str, task: str) -> LabelConfig:
        samples = self.out / ("demo_samples" if task == "demonstrate" else "samples") / "samples.jsonl"
        prompts = self.split_dir / ("sft.jsonl" if task == "demonstrate" else "rm.jsonl")
        return _set(self.cfg.label, {"run": self.stage_run(step), "task": task, "samples": str(samples),
                                     "prompts": str(prompts), "labeler": "train", "panel_file": ""})

    def sft_cfg(self) -> SFTConfig:
        return _set(self.cfg.sft, {"run": self.stage_run("sft"), "model.name_or_path": self.base,
                                   "data.train": str(self.sft_data)})

    def rm_cfg(self) -> RMConfig:
        return _set(self.cfg.rm, {"run": self.stage_run("rm"),
                                  "model.name_or_path": self.cfg.rm_base or self.sft_model,
                                  "data.train": [str(self.out / "rankings" / "rankings.jsonl")],
                                  "data.demonstrations": [str(self.sft_data)]})

    def ptx_files(self) -> list[str]:
        return [str(self.ptx_corpus) if s == "builtin:demo" else s for s in self.cfg.ptx.data]

    def ppo_cfg(self, step: str, coef: float) -> PPOConfig:
        changes = {"run": self.stage_run(step), "policy.name_or_path": self.sft_model,
                   "data.prompts": [str(self.split_dir / "ppo.jsonl")], "reward.kind": "model",
                   "reward.model": self.rm_model, "ptx.data": self.ptx_files(), "ptx.coef": coef}
        if self.cfg.rm_base and self.cfg.ppo.value.init is None:
            changes["value.init"] = self.sft_model  # a reward model of another family reads other tokens
        return _set(self.cfg.ppo, changes)

    def eval_cfg(self) -> EvalConfig:
        policies = [PolicySpec("base", self.base), PolicySpec("base_prompted", self.base, few_shot=True),
                    PolicySpec("sft", self.sft_model), PolicySpec("ppo", str(self.out / "ppo" / "final")),
                    PolicySpec("ppo_ptx", str(self.out / "ppo_ptx" / "final"))]
        return _set(self.cfg.eval, {"run": self.stage_run("eval"), "prompts": str(self.split_dir / "test.jsonl"),
                                    "policies": policies, "baseline": "sft", "kl_reference": "sft",
                                    "panel_file": self.panels, "reward_model": self.rm_model})

    # ---------------------------------------------------------------- step bodies

    @staticmethod
    def stage(module: str, cfg: Any) -> dict:
        import importlib

        return {"output": str(importlib.import_module(module).run(cfg))}

    def build_tiny(self) -> dict:
        from instructrl.models.tiny import build_tiny_model

        return {"output": str(build_tiny_model(self.base, seed=self.cfg.run.seed))}

    def curate(self) -> dict:
        from instructrl.data.curate import run as curate_run
        from instructrl.records import Prompt, RecordError, read_jsonl, write_jsonl

        originals: dict[str, Prompt] = {}
        rows = []
        for spec in self.cfg.data.prompts:
            path = resolve_prompts(spec)
            for i, p in enumerate(read_jsonl(path, Prompt), 1):
                p.id = p.id or f"{Path(path).stem}-{i}"
                if p.id in originals:
                    raise RecordError(f"{path}:{i}", "id", f"prompt id {p.id!r} appears twice in data.prompts")
                originals[p.id] = p
                row = {"id": p.id, "user_id": p.user_id, "source": p.source, "type": p.type, "category": p.category,
                       "timestamp": p.timestamp, "org_id": p.org_id, "reference": p.reference,
                       ("messages" if isinstance(p.prompt, list) else "text"): p.prompt}
                rows.append({k: v for k, v in row.items() if v not in (None, "")})
        write_jsonl(self.out / "curate" / "input.jsonl", rows)
        curate_run(self.curate_cfg())
        pool, test = [], []
        for split in ("train", "valid", "test"):
            f = self.out / "curate" / f"{split}.jsonl"
            for p in read_jsonl(f, Prompt) if f.exists() else []:
                # curation keeps the (PII-masked) text; constraints and metadata come back from the input
                orig = originals[p.id]
                p.constraints, p.meta = orig.constraints, dict(orig.meta, **p.meta)
                (test if split == "test" else pool).append(p)
        d, seed = self.cfg.data, self.cfg.run.seed
        roles: dict[str, list] = {"sft": [], "rm": [], "ppo": []}
        for p in sorted(pool, key=lambda p: _unit(seed, "order", p.id)):
            u = _unit(seed, "role", p.id)
            roles["sft" if u < d.sft else "rm" if u < d.sft + d.rm else "ppo"].append(p)
        roles["test"] = sorted(test, key=lambda p: _unit(seed, "order", p.id))
        caps = {"sft": d.max_sft_prompts, "rm": d.max_rm_prompts, "ppo": d.max_ppo_prompts, "test": d.max_test_prompts}
        counts = {}
        for role, ps in roles.items():
            ps = ps[: caps[role]]
            if not ps:
                raise ValueError(f"curate: no {role} prompts; add prompts or change data.* / curate.split.*")
            write_jsonl(self.split_dir / f"{role}.jsonl", ps)
            counts[role] = len(ps)
        counts["test_users"] = len({p.user_id for p in roles["test"][: caps["test"]]})
        log.info("run: prompts %s", counts)
        return {"prompts": counts}

    def sample(self, step: str, model_path: str, role: str, sc: SamplingConfig, without_reference: bool = False
               ) -> dict:
        from instructrl.eval.sample import load_policy, make_generator, sample_prompts
        from instructrl.records import Prompt, read_jsonl, write_jsonl
        from instructrl.utils.device import autocast, resolve_precision

        prompts = read_jsonl(self.split_dir / f"{role}.jsonl", Prompt)
        if without_reference:
            prompts = [p for p in prompts if not (p.reference and p.reference.strip())]
        samples = []
        if prompts and sc.n > 0:
            model, tok, device = load_policy(model_path, device=self.cfg.run.device, dtype=sc.dtype)
            gen = make_generator(model, tok, engine=sc.engine, batch_size=sc.batch_size,
                                 max_prompt_tokens=sc.max_prompt_tokens, progress=self.cfg.run.progress)
            log.info("run: sampling %d responses for each of %d %s prompts from %s", sc.n, len(prompts), role,
                     model_path)
            samples = sample_prompts(gen, prompts, n=sc.n, policy=step, max_new_tokens=sc.max_new_tokens,
                                     temperature=sc.temperature, top_p=sc.top_p, seed=self.cfg.run.seed,
                                     amp=autocast(device, resolve_precision(self.cfg.run.precision, device)))
        write_jsonl(self.out / step / "samples.jsonl", samples)
        cut = sum(s.finish_reason == "length" for s in samples)
        return {"prompts": len(prompts), "samples": len(samples), "cut": cut}

    def demonstrations(self) -> dict:
        from instructrl.label.run import run as label_run
        from instructrl.records import Demonstration, Prompt, prompt_text, read_jsonl, write_jsonl
        from instructrl.sft.data import load_demonstrations

        label_run(self.label_cfg("demonstrations", "demonstrate"))
        panel_demos = read_jsonl(self.out / "demonstrations" / "demonstrations.jsonl", Demonstration)
        test = read_jsonl(self.split_dir / "test.jsonl", Prompt)
        users = {p.user_id for p in test}
        texts = {prompt_text(p.prompt).strip().lower() for p in test}
        extra, dropped = [], 0
        for spec in self.cfg.data.demonstrations:
            for d in load_demonstrations(spec):
                held = d.user_id in users or (d.prompt is not None and prompt_text(d.prompt).strip().lower() in texts)
                dropped += held
                if not held:
                    extra.append(d)
        write_jsonl(self.sft_data, extra + panel_demos)
        info = {"labeler_written": len(extra), "left_out_test": dropped, "panel": len(panel_demos),
                "from_reference": sum(d.meta.get("from") == "reference" for d in panel_demos),
                "best_of_n": sum(d.meta.get("from") == "best_of_n" for d in panel_demos)}
        log.info("run: SFT data %s", info)
        return info

    def rankings(self) -> dict:
        from instructrl.label.run import run as label_run

        label_run(self.label_cfg("rankings", "rank"))
        return json.loads((self.out / "rankings" / "metrics.json").read_text())

    def ppo(self, step: str, coef: float) -> dict:
        from instructrl.records import atomic_write_text, prompt_text
        from instructrl.sft.data import load_demonstrations

        if "builtin:demo" in self.cfg.ptx.data and not self.ptx_corpus.exists():
            docs = []
            for d in load_demonstrations("builtin:demo"):
                if d.examples:
                    docs.append(d.instruction + "\n\n" + "\n\n".join(f"{e['query']}\n{e['response']}" for e in d.examples))
                else:
                    docs.append(prompt_text(d.prompt) + "\n\n" + d.response)
            atomic_write_text(self.ptx_corpus, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs))
        return self.stage("instructrl.ppo.train", self.ppo_cfg(step, coef))


def resolve_prompts(spec: str) -> str:
    if spec == BUILTIN_PROMPTS:
        from importlib import resources

        return str(resources.files("instructrl").joinpath("data/prompts/prompts.jsonl"))
    return spec


def _unit(seed: int, *keys: Any) -> float:
    """A number in [0, 1) that depends only on the seed and the keys."""
    h = hashlib.sha256(repr((seed,) + keys).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def fingerprint(spec: dict, previous: str) -> str:
    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            d = to_dict(x)
            if isinstance(d.get("run"), dict):  # how a step is shown or resumed does not change its output
                for k in ("progress", "resume", "device"):
                    d["run"].pop(k, None)
            return d
        return x

    text = json.dumps({k: plain(v) for k, v in spec.items()}, sort_keys=True, default=str)
    return hashlib.sha256((previous + text).encode()).hexdigest()[:16]


def _check_dependencies(cfg: PipelineConfig) -> None:
    from importlib.util import find_spec

    needed = {"matplotlib": "the report", "langid": "language checks"}
    if cfg.curate.pii.action != "off":
        needed.update({"phonenumbers": "curate's PII checks", "stdnum": "curate's PII checks", "pyap": "curate's PII checks"})
    if cfg.label.panel.rubric.toxicity == "profanity-check":
        needed["profanity_check"] = "the labelers' toxicity classifier"
    missing = [f"{m} ({why})" for m, why in needed.items() if find_spec(m) is None]
    if missing:
        raise ImportError(f"instructrl run needs {', '.join(missing)}: pip install 'instructrl[run]'")


# --------------------------------------------------------------------------- run


def run(cfg: PipelineConfig) -> Path:
    """Run (or resume) every step; returns the path of report.md."""
    from instructrl.eval.report import write_report
    from instructrl.records import atomic_write_text

    _check_dependencies(cfg)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    pipe = Pipeline(cfg)
    steps = pipe.steps()
    timings: list[dict] = []
    previous = ""
    t_start = time.perf_counter()
    for i, step in enumerate(steps, 1):
        fp = fingerprint(step.spec(), previous)
        previous = fp
        folder = out / step.name
        marker = folder / MARKER
        state = json.loads(marker.read_text()) if marker.exists() else None
        if state and state.get("fingerprint") != fp:
            if cfg.run.resume:
                log.warning("run: %s was made with another config (or after other earlier steps); doing it again",
                            folder)
            shutil.rmtree(folder)
            state = None
        if cfg.run.resume and state and state.get("status") == "done":
            log.info("run: [%d/%d] %s: done before (%.1f s), skipped", i, len(steps), step.name, state["seconds"])
            timings.append({"step": step.name, "seconds": state["seconds"], "skipped": True})
            continue
        if not cfg.run.resume and folder.exists():
            shutil.rmtree(folder)
        log.info("run: [%d/%d] %s%s", i, len(steps), step.name, " (resuming)" if state else "")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps({"status": "running", "fingerprint": fp}) + "\n")
        t0 = time.perf_counter()
        info = step.execute()
        seconds = round(time.perf_counter() - t0, 2)
        atomic_write_text(marker, json.dumps({"status": "done", "fingerprint": fp, "seconds": seconds, "info": info},
                                             indent=2, default=str) + "\n")
        timings.append({"step": step.name, "seconds": seconds, "skipped": False})
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2) + "\n")
    t0 = time.perf_counter()
    report = write_report(out)
    timings.append({"step": "report", "seconds": round(time.perf_counter() - t0, 2), "skipped": False})
    print_timings(timings, time.perf_counter() - t_start)
    return report


def print_timings(timings: list[dict], wall: float) -> None:
    width = max(len(t["step"]) for t in timings)
    lines = [f"{'step'.ljust(width)}  seconds", f"{'-' * width}  -------"]
    for t in timings:
        lines.append(f"{t['step'].ljust(width)}  {t['seconds']:7.1f}" + ("  (done before, skipped)" if t["skipped"] else ""))
    lines.append(f"{'total'.ljust(width)}  {sum(t['seconds'] for t in timings):7.1f}  (this run: {wall:.1f} s)")
    print("\n".join(lines))
