"""The steps of ``instructrl run``: each stage's config built from its section, and the data work
that lies between stages (sharing out the prompts, sampling for the labelers, leaving test users'
demonstrations out of SFT).

Each stage is reached through a small function that imports its ``run`` when the step runs (the
stages load torch and transformers). Each stage config is built once per step by
:func:`instructrl.pipeline.config.stage_configs`, the builders that also tell which keys the
pipeline sets.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from instructrl.builtin import load_demonstrations, resolve
from instructrl.data.config import CurateConfig
from instructrl.eval.config import EvalConfig
from instructrl.label.config import LabelConfig
from instructrl.models.generation import is_cut
from instructrl.pipeline.config import DataConfig, Paths, PipelineConfig, SamplingConfig, stage_configs
from instructrl.pipeline.engine import Step
from instructrl.ppo.config import PPOConfig
from instructrl.records import (
    Demonstration,
    Prompt,
    Ranking,
    RecordError,
    atomic_write_text,
    prompt_text,
    read_jsonl,
    write_jsonl,
)
from instructrl.rm.config import RMConfig
from instructrl.sft.config import SFTConfig
from instructrl.utils.seed import derive, unit

log = logging.getLogger("instructrl.run")

ROLES = ("sft", "rm", "ppo")


# --------------------------------------------------------------------------- the stages


def run_curate(cfg: CurateConfig) -> Path:
    from instructrl.data.curate.run import run

    return run(cfg)


def run_label(cfg: LabelConfig) -> Path:
    from instructrl.label.run import run

    return run(cfg)


def run_sft(cfg: SFTConfig) -> Path:
    from instructrl.sft.train import run

    return run(cfg)


def run_rm(cfg: RMConfig) -> Path:
    from instructrl.rm.train import run

    return run(cfg)


def run_ppo(cfg: PPOConfig) -> Path:
    from instructrl.ppo.train import run

    return run(cfg)


def run_eval(cfg: EvalConfig) -> Path:
    from instructrl.eval.run import run

    return run(cfg)


# --------------------------------------------------------------------------- the steps


def build_steps(cfg: PipelineConfig) -> list[Step]:
    """Every step in order; a step's spec is what its output depends on (the engine fingerprints it)."""
    paths, seed = Paths.of(cfg), cfg.run.seed
    stage = {step: built for step, (_, built) in stage_configs(cfg).items()}
    steps = []
    if cfg.model == "tiny":
        steps.append(Step("base", {"model": "tiny", "seed": seed}, lambda: build_base(paths.base, seed)))
    return steps + [
        Step(
            "curate",
            {"curate": stage["curate"], "data": cfg.data, "seed": seed},
            lambda: curate_step(cfg, paths, stage["curate"]),
        ),
        Step(
            "demo_samples",
            {"model": paths.base, "sampling": cfg.demo_sampling, "seed": seed},
            lambda: sample_step(
                cfg, paths, "demo_samples", paths.base, "sft", cfg.demo_sampling, without_reference=True
            ),
        ),
        Step(
            "demonstrations",
            {
                "label": stage["demonstrations"],
                "extra": cfg.data.demonstrations,
                **workbench_spec(cfg, paths, "demonstrations"),
            },
            lambda: demonstrations_step(cfg, paths, stage["demonstrations"]),
        ),
        Step("sft", {"sft": stage["sft"]}, lambda: {"output": str(run_sft(stage["sft"]))}),
        Step(
            "samples",
            {"model": paths.sft_model, "sampling": cfg.rm_sampling, "seed": seed},
            lambda: sample_step(cfg, paths, "samples", paths.sft_model, "rm", cfg.rm_sampling),
        ),
        Step(
            "rankings",
            {"label": stage["rankings"], **workbench_spec(cfg, paths, "rankings")},
            lambda: rankings_step(cfg, paths, stage["rankings"]),
        ),
        Step("rm", {"rm": stage["rm"]}, lambda: {"output": str(run_rm(stage["rm"]))}),
        *(
            [
                Step(
                    "best_of_n",
                    {
                        # what the curve depends on (not PPO's monitor settings: every, samples, keep_best)
                        "overopt": {"prompts": cfg.overopt.prompts, "n": cfg.overopt.n},
                        "sampling": cfg.rm_sampling,
                        "rm": stage["rm"],
                        "seed": seed,
                    },
                    lambda: best_of_n_step(cfg, paths),
                )
            ]
            if cfg.overopt.prompts
            else []
        ),
        Step("ppo", {"ppo": stage["ppo"]}, lambda: {"output": str(run_ppo(stage["ppo"]))}),
        Step("ppo_ptx", {"ppo": stage["ppo_ptx"]}, lambda: {"output": str(run_ppo(stage["ppo_ptx"]))}),
        Step("eval", {"eval": stage["eval"]}, lambda: {"output": str(run_eval(stage["eval"]))}),
        # the automatic evaluations depend on the models, not on the preference evaluation: a change to
        # either evaluation redoes only that one
        *(
            [Step("suite", {"suite": stage["suite"]}, lambda: suite_step(stage["suite"]), after="ppo_ptx")]
            if "suite" in stage
            else []
        ),
    ]


def suite_step(suite: EvalConfig) -> dict:
    """instructrl eval's automatic evaluations of the run's policies (resumable per policy and task)."""
    from instructrl.eval.tasks.suite import RESULTS_JSON

    out = run_eval(suite)
    rows = json.loads((out / RESULTS_JSON).read_text(encoding="utf-8"))["rows"]
    sizes = {r["task"]: f"{r['n']} of {r['total']}" for r in rows if r["policy"]}
    log.info("run: suite %s", ", ".join(f"{task} {size}" for task, size in sizes.items()))
    return {"output": str(out / RESULTS_JSON), "rows": len(rows), "items": sizes}


def build_base(path: str, seed: int) -> dict:
    from instructrl.models.tiny import build_tiny_model

    return {"output": str(build_tiny_model(path, seed=seed))}


def curate_step(cfg: PipelineConfig, paths: Paths, curate: CurateConfig) -> dict:
    originals, rows = curate_input(cfg.data.prompts)
    write_jsonl(paths.out / "curate" / "input.jsonl", rows)
    run_curate(curate)
    pool, test = [], []
    for split in ("train", "valid", "test"):
        path = paths.out / "curate" / f"{split}.jsonl"
        for p in read_jsonl(path, Prompt) if path.exists() else []:
            # curation keeps the (PII-masked) text; constraints and metadata come back from the input
            original = originals[p.id]
            p.constraints, p.meta = original.constraints, dict(original.meta, **p.meta)
            (test if split == "test" else pool).append(p)
    roles = share_out(pool, test, cfg.data, cfg.run.seed)
    for role, prompts in roles.items():
        if not prompts:
            raise ValueError(f"curate: no {role} prompts; add prompts or change data.* / curate.split.*")
        write_jsonl(paths.prompts / f"{role}.jsonl", prompts)
    counts = {role: len(prompts) for role, prompts in roles.items()}
    counts["test_users"] = len({p.user_id for p in roles["test"]})
    log.info("run: prompts %s", counts)
    return {"prompts": counts}


def curate_input(specs: list[str]) -> tuple[dict[str, Prompt], list[dict]]:
    """The prompts of every file, by id, and as rows for curate (a prompt without an id gets
    '<file stem>-<line>')."""
    originals: dict[str, Prompt] = {}
    rows = []
    for spec in specs:
        path = resolve(spec)
        for i, p in enumerate(read_jsonl(path, Prompt), 1):
            p.id = p.id or f"{path.stem}-{i}"
            if p.id in originals:
                raise RecordError(f"{path}:{i}", "id", f"prompt id {p.id!r} appears twice in data.prompts")
            originals[p.id] = p
            row = {
                "id": p.id,
                "user_id": p.user_id,
                "source": p.source,
                "type": p.type,
                "category": p.category,
                "timestamp": p.timestamp,
                "org_id": p.org_id,
                "reference": p.reference,
                ("messages" if isinstance(p.prompt, list) else "text"): p.prompt,
            }
            rows.append({k: v for k, v in row.items() if v not in (None, "")})
    return originals, rows


def share_out(pool: list[Prompt], test: list[Prompt], data: DataConfig, seed: int) -> dict[str, list[Prompt]]:
    """The training prompts shared out into SFT, RM and PPO prompts, each role capped, and the test
    prompts capped. Both the order and the role of a prompt depend only on the seed and its id."""
    roles: dict[str, list[Prompt]] = {role: [] for role in ROLES}
    for p in sorted(pool, key=lambda p: unit(seed, "order", p.id)):
        u = unit(seed, "role", p.id)
        roles["sft" if u < data.sft else "rm" if u < data.sft + data.rm else "ppo"].append(p)
    roles["test"] = sorted(test, key=lambda p: unit(seed, "order", p.id))
    return {role: prompts[: data.cap(role)] for role, prompts in roles.items()}


def sample_step(
    cfg: PipelineConfig,
    paths: Paths,
    step: str,
    model_path: str,
    role: str,
    sampling: SamplingConfig,
    without_reference: bool = False,
) -> dict:
    """``sampling.n`` responses of a model per prompt of a role, for the labelers."""
    from instructrl.eval.sample import load_policy, sample_prompts
    from instructrl.models.engines import make_generator
    from instructrl.utils.device import autocast, resolve_precision

    prompts = read_jsonl(paths.prompts / f"{role}.jsonl", Prompt)
    if without_reference:
        prompts = [p for p in prompts if not (p.reference and p.reference.strip())]
    samples = []
    if prompts and sampling.n > 0:
        model, tok, device = load_policy(model_path, device=cfg.run.device, dtype=sampling.dtype)
        generator = make_generator(
            model,
            tok,
            engine=sampling.engine,
            batch_size=sampling.batch_size,
            max_prompt_tokens=sampling.max_prompt_tokens,
            progress=cfg.run.progress,
        )
        amp_dtype = resolve_precision(cfg.run.precision, device)
        log.info(
            "run: sampling %d responses for each of %d %s prompts from %s", sampling.n, len(prompts), role, model_path
        )
        samples = sample_prompts(
            generator,
            prompts,
            n=sampling.n,
            policy=step,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=cfg.run.seed,
            autocast_ctx=lambda: autocast(device, amp_dtype),
        )
    write_jsonl(paths.out / step / "samples.jsonl", samples)
    return {"prompts": len(prompts), "samples": len(samples), "cut": sum(is_cut(s.finish_reason) for s in samples)}


def best_of_n_step(cfg: PipelineConfig, paths: Paths) -> dict:
    """Best-of-n from SFT on the monitor prompts: proxy and gold scores against KL (log n - (n-1)/n).

    The SFT model samples ``overopt.n`` responses per prompt as PPO's rollouts do (rm_sampling's
    temperature and length); the learned reward model scores them as PPO's reward would, the gold
    reward as the training panel judges."""
    from instructrl.eval.overopt import best_of_n_curve
    from instructrl.eval.sample import load_policy, sample_prompts
    from instructrl.label.gold import GoldReward
    from instructrl.models.engines import make_generator
    from instructrl.models.generation import ended_flags
    from instructrl.models.scalar import load_reward_model
    from instructrl.utils.device import DTYPES, autocast, resolve_precision

    prompts = read_jsonl(paths.prompts / "sft.jsonl", Prompt)[: cfg.overopt.prompts]
    sc, n = cfg.rm_sampling, cfg.overopt.n
    model, tok, device = load_policy(paths.sft_model, device=cfg.run.device, dtype=sc.dtype)
    amp_dtype = resolve_precision(cfg.run.precision, device)
    generator = make_generator(
        model,
        tok,
        engine=sc.engine,
        batch_size=sc.batch_size,
        max_prompt_tokens=sc.max_prompt_tokens,
        progress=cfg.run.progress,
    )
    samples = sample_prompts(
        generator,
        prompts,
        n=n,
        policy="sft",
        max_new_tokens=sc.max_new_tokens,
        temperature=sc.temperature,
        top_p=sc.top_p,
        seed=derive(cfg.run.seed, "best_of_n"),
        autocast_ctx=lambda: autocast(device, amp_dtype),
    )
    del model, generator
    rm, rm_tok = load_reward_model(paths.rm_model, device=device, dtype=DTYPES[cfg.ppo.memory.frozen_dtype])
    finish = [s.finish_reason for s in samples]
    proxy = rm.score_texts(
        rm_tok,
        [s.prompt for s in samples],
        [s.response for s in samples],
        max_len=cfg.ppo.reward.max_seq_len,
        batch_size=cfg.ppo.reward.batch_size,
        device=device,
        amp_dtype=amp_dtype,
        ended=ended_flags(finish, len(samples)),
    )
    gold = GoldReward(paths.panels, [str(paths.prompts / "sft.jsonl")], dataclasses.asdict(cfg.label.panel.rubric))
    gold_scores = gold.qualities([s.prompt for s in samples], [s.response for s in samples], finish)
    per_prompt = [list(range(i * n, (i + 1) * n)) for i in range(len(prompts))]
    ns = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    rows = best_of_n_curve(
        [[proxy[j] for j in idx] for idx in per_prompt], [[gold_scores[j] for j in idx] for idx in per_prompt], ns
    )
    out = {"prompts": len(prompts), "samples_per_prompt": n, "curve": rows}
    atomic_write_text(paths.out / "best_of_n" / "best_of_n.json", json.dumps(out, indent=2) + "\n")
    write_jsonl(paths.out / "best_of_n" / "samples.jsonl", samples)
    log.info("run: best-of-n %s", ", ".join(f"n={r['n']} proxy {r['proxy']:.3f} gold {r['gold']:.3f}" for r in rows))
    return {"curve": rows}


def demonstrations_step(cfg: PipelineConfig, paths: Paths, label: LabelConfig) -> dict:
    """The training panel's demonstrations (or the workbench's), after the labeler-written ones that no
    test user or test prompt shares."""
    if "demonstrations" in cfg.workbench.steps:
        collected = workbench_labels(cfg, paths, "demonstrations", demonstration_items(cfg, paths, label))
        panel = read_jsonl(collected["demonstrations"], Demonstration)
    else:
        run_label(label)
        panel = read_jsonl(paths.out / "demonstrations" / "demonstrations.jsonl", Demonstration)
    test = read_jsonl(paths.prompts / "test.jsonl", Prompt)
    written = [d for spec in cfg.data.demonstrations for d in load_demonstrations(spec)]
    kept = leave_out_test(written, test)
    write_jsonl(paths.sft_data, kept + panel)
    info = {
        "labeler_written": len(kept),
        "left_out_test": len(written) - len(kept),
        "panel": len(panel),
        "from_reference": sum(d.meta.get("from") == "reference" for d in panel),
        "best_of_n": sum(d.meta.get("from") == "best_of_n" for d in panel),
    }
    log.info("run: SFT data %s", info)
    return info


def leave_out_test(demos: list[Demonstration], test: list[Prompt]) -> list[Demonstration]:
    """The demonstrations of no test user and of no test prompt (compared case- and space-blind)."""
    users = {p.user_id for p in test}
    texts = {prompt_text(p.prompt).strip().lower() for p in test}
    return [
        d
        for d in demos
        if d.user_id not in users and (d.prompt is None or prompt_text(d.prompt).strip().lower() not in texts)
    ]


def rankings_step(cfg: PipelineConfig, paths: Paths, label: LabelConfig) -> dict:
    """The training panel's rankings of the SFT samples, or the workbench's. The panels are built and
    calibrated either way: the held-out panel judges the evaluation (and the training panel is the gold
    reward); with the workbench, the panel's own rankings are kept as panel_rankings.jsonl."""
    run_label(label)
    metrics = json.loads((Path(label.run.out_dir) / "metrics.json").read_text())
    if "rankings" not in cfg.workbench.steps:
        return metrics
    from instructrl.label.workbench.imports import read_rank_items

    collected = workbench_labels(cfg, paths, "rankings", read_rank_items(label.samples))
    paths.rankings.replace(paths.rankings.with_name("panel_rankings.jsonl"))
    Path(collected["rankings"]).replace(paths.rankings)
    agreement = json.loads(Path(collected["agreement"]).read_text())
    rankings = read_jsonl(paths.rankings, Ranking)
    if not rankings:
        raise RecordError(str(paths.rankings), None, "the workbench gave no rankings (every item was skipped)")
    info = {
        "workbench/rankings": len(rankings),
        "workbench/skipped": sum(1 for _ in open(collected["skips"], encoding="utf-8")),
        "workbench/labelers": len({r.labeler_id for r in rankings}),
    }
    pairwise = agreement.get("pairwise") or {}
    if pairwise.get("rate") is not None:  # only where items overlap (workbench.overlap > 0)
        info["workbench/agreement"] = pairwise["rate"]
        info["workbench/agreement_comparisons"] = pairwise["comparisons"]
    metrics |= info
    atomic_write_text(Path(label.run.out_dir) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log.info("run: rankings from the workbench %s", info)
    return metrics


# --------------------------------------------------------------------------- the workbench


def workbench_db_url(cfg: PipelineConfig, paths: Paths) -> str:
    return cfg.workbench.db_url or f"sqlite:///{(paths.out / 'workbench.db').resolve()}"


def workbench_project(cfg: PipelineConfig, paths: Paths, step: str) -> str:
    return f"{cfg.workbench.project or paths.out.resolve().name}-{step}"


def workbench_spec(cfg: PipelineConfig, paths: Paths, step: str) -> dict:
    """What a step's output depends on in the workbench (not how long it waits)."""
    w = cfg.workbench
    if step not in w.steps:
        return {}
    keep = ("org", "labelers", "overlap", "labelers_per_item", "instructions", "candidates")
    return {
        "workbench": {k: getattr(w, k) for k in keep}
        | {"db_url": workbench_db_url(cfg, paths), "project": workbench_project(cfg, paths, step)}
    }


def demonstration_items(cfg: PipelineConfig, paths: Paths, label: LabelConfig) -> list:
    """A write-a-demonstration item per SFT prompt; with ``workbench.candidates``, the base model's
    candidates for it (the demo_samples step) ride in its meta for bot labelers."""
    from instructrl.label.workbench.imports import read_demonstration_items
    from instructrl.records import Sample

    items = read_demonstration_items(label.prompts)
    if cfg.workbench.candidates:
        by_prompt: dict[str, list[str]] = {}
        for sample in read_jsonl(label.samples, Sample):
            by_prompt.setdefault(str(sample.meta.get("prompt_id", "")), []).append(sample.response)
        for item in items:
            if by_prompt.get(item.external_id):
                item.meta["candidates"] = by_prompt[item.external_id]
    return items


def workbench_labels(cfg: PipelineConfig, paths: Paths, step: str, items: list) -> dict:
    """Publish a step's items to the workbench (once), wait for their labels, export them under
    ``<step>/workbench/``."""
    from instructrl.label.workbench.loop import collect, publish, wait_for_labels
    from instructrl.web.db import Database

    w = cfg.workbench
    name = workbench_project(cfg, paths, step)
    try:
        instructions = Path(w.instructions).read_text(encoding="utf-8") if w.instructions else ""
    except OSError as e:
        raise RecordError(w.instructions, None, f"cannot read the labeling instructions: {e}") from None
    db = Database(workbench_db_url(cfg, paths))
    try:
        project_id = publish(
            db,
            org=w.org,
            project=name,
            kind="demonstrate" if step == "demonstrations" else "rank",
            items=items,
            labelers=w.labelers,
            overlap=w.overlap,
            per_item=w.labelers_per_item,
            seed=cfg.run.seed,
            instructions=instructions,
        )
        log.info("run: %s: %d items in workbench project %r (%s)", step, len(items), name, db.url.render_as_string())
        wait_for_labels(db, project_id, name, wait=w.wait, poll=w.poll, progress=cfg.run.progress)
        return collect(db, project_id, paths.out / step / "workbench")
    finally:
        db.dispose()
