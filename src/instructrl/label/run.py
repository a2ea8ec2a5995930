"""``instructrl label``: rankings or demonstrations from simulated labelers (or an LLM judge).

* ``task=rank``: Sample records are grouped by prompt (``meta.prompt_id`` where set, else the
  prompt itself); each group of at least ``min_k`` responses becomes Ranking records of at most
  ``max_k`` responses, labeled by one labeler of the chosen panel, with Likert scores and flags.
* ``task=demonstrate``: one Demonstration per prompt: its reference answer where it has one, else
  the best of its samples by a labeler's rubric (prompts with neither are skipped and counted).

The panels are built from ``panel.*`` and, with ``panel.calibrate``, their noise is calibrated on
the very responses being labeled: the training panel to ``panel.target_agreement``, the held-out
panel to ``panel.heldout_target_agreement`` (or they are reloaded from ``panel_file``). Writes
``out_dir/{config.yaml, rankings.jsonl | demonstrations.jsonl, panels.json, metrics.json,
metrics.jsonl}``. Labeling the same input with the same config and seed gives the same output
(each prompt's noise depends only on the seed and the prompt), so a re-run simply redoes it.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from instructrl.builtin import resolve
from instructrl.config import save_config
from instructrl.label.config import LabelConfig
from instructrl.label.labeler import rng_for
from instructrl.label.panel import Panel, build_rubric, make_panels
from instructrl.label.rubric import FLAGS
from instructrl.records import (
    Prompt,
    RecordError,
    Sample,
    atomic_write_text,
    iter_records,
    require_records,
    write_jsonl,
)
from instructrl.text.constraints import validate_constraint
from instructrl.utils.metrics import MetricsLogger

log = logging.getLogger("instructrl.label")


def _prompt_key(prompt: Any) -> str:
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def load_inputs(cfg: LabelConfig) -> tuple[list[Prompt], dict[str, list[Sample]]]:
    """The prompts (in order) and each prompt's samples, keyed by prompt id (or the prompt's JSON)."""
    samples_path, prompts_path = cfg.samples, cfg.prompts
    if samples_path == "builtin:example":
        prompts_path = prompts_path or str(resolve("builtin:example_prompts"))
    samples_path = str(resolve(samples_path))
    prompts: dict[str, Prompt] = {}
    by_text: dict[str, str] = {}
    if prompts_path:
        for lineno, p in enumerate(iter_records(prompts_path, Prompt), 1):
            for j, c in enumerate(p.constraints or []):
                try:
                    validate_constraint(c, f"constraints[{j}]")
                except ValueError as e:
                    raise RecordError(f"{prompts_path}:{lineno}", "constraints", str(e)) from None
            key = p.id or _prompt_key(p.prompt)
            prompts[key] = p
            by_text.setdefault(_prompt_key(p.prompt), key)
    groups: dict[str, list[Sample]] = {}
    if samples_path:
        for s in iter_records(samples_path, Sample):
            pid = s.meta.get("prompt_id")
            key = str(pid) if pid else by_text.get(_prompt_key(s.prompt), _prompt_key(s.prompt))
            if key not in prompts:
                prompts[key] = Prompt(prompt=s.prompt, id=str(pid) if pid else "")
                by_text.setdefault(_prompt_key(s.prompt), key)
            groups.setdefault(key, []).append(s)
        if cfg.task == "rank":  # demonstrations may come from reference answers alone
            require_records(list(groups), samples_path, "samples")
    return list(prompts.values()), {k: groups.get(k, []) for k in prompts}


def _calibrate(train: Panel, heldout: Panel, groups: list, cfg: LabelConfig) -> dict:
    pc = cfg.panel
    usable = [g for g in groups if len(set(g[1])) >= 2]
    if not usable:
        log.warning("label: no prompt has two different responses; the panels stay uncalibrated")
        return {}
    rnd = random.Random(cfg.run.seed)
    subset = usable if len(usable) <= pc.calibration_groups else rnd.sample(usable, pc.calibration_groups)
    metrics = {}
    for panel, target in ((train, pc.target_agreement), (heldout, pc.heldout_target_agreement)):
        if len(panel) < 2:
            continue
        cal = panel.calibrate(subset, target=target, seed=cfg.run.seed, tolerance=pc.tolerance)
        log.info(
            "label: %s panel agreement %.3f (target %.2f, noise scale %.3f, ceiling %.3f, %d prompts)",
            panel.name,
            cal.measured,
            target,
            cal.noise_scale,
            cal.ceiling,
            cal.n_prompts,
        )
        if not cal.reached:
            log.warning(
                "label: the %s panel's agreement %.3f misses its target %.2f (ceiling %.3f)",
                panel.name,
                cal.measured,
                target,
                cal.ceiling,
            )
        metrics.update(
            {
                f"label/agreement/{panel.name}": cal.measured,
                f"label/noise_scale/{panel.name}": cal.noise_scale,
                f"label/agreement_ceiling/{panel.name}": cal.ceiling,
            }
        )
    metrics["label/agreement/train_vs_heldout"] = train.agreement(subset, seed=cfg.run.seed + 2, other=heldout)
    return metrics


def run(cfg: LabelConfig) -> Path:
    from tqdm.auto import tqdm

    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    prompts, samples = load_inputs(cfg)
    groups = []  # (prompt, responses, finish_reasons, key)
    for p in prompts:
        key = p.id or _prompt_key(p.prompt)
        ss = samples[key]
        if ss:
            groups.append((p, [s.response for s in ss], [s.finish_reason for s in ss], key))
    metrics: dict[str, Any] = {"label/prompts": len(prompts), "label/samples": sum(len(v) for v in samples.values())}

    if cfg.labeler == "llm":
        from instructrl.label.judge import LLMJudge

        labeler: Any = LLMJudge.from_config(cfg.judge, build_rubric(cfg.panel.rubric))
        panels = None
    else:
        if cfg.panel_file:
            rubric = build_rubric(cfg.panel.rubric)
            train, heldout = (Panel.load(f"{cfg.panel_file}#{k}", rubric) for k in ("train", "heldout"))
        else:
            train, heldout = make_panels(cfg.panel)
            if cfg.panel.calibrate:
                metrics.update(_calibrate(train, heldout, [g[:3] for g in groups], cfg))
        panels = {"train": train, "heldout": heldout}
        atomic_write_text(out / "panels.json", json.dumps({k: v.to_dict() for k, v in panels.items()}, indent=2) + "\n")
        labeler = panels[cfg.labeler]

    seed = cfg.run.seed
    if cfg.task == "rank":
        chunks = []
        for p, rs, frs, key in groups:
            if len(rs) < cfg.min_k:
                continue
            n = -(-len(rs) // cfg.max_k)  # as few rankings as fit in max_k, sizes as even as possible
            bounds = [round(i * len(rs) / n) for i in range(n + 1)]
            for c in range(n):
                chunks.append(
                    (p, rs[bounds[c] : bounds[c + 1]], frs[bounds[c] : bounds[c + 1]], key, c if n > 1 else None)
                )
        metrics["label/skipped_prompts"] = sum(len(g[1]) < cfg.min_k for g in groups) + len(prompts) - len(groups)
        if hasattr(labeler, "prefetch"):
            labeler.prefetch([(p, r, f) for p, rs, frs, _, _ in chunks for r, f in zip(rs, frs)])
        rankings = []
        for p, rs, frs, key, c in tqdm(chunks, desc="label rank", unit="prompt", disable=not cfg.run.progress):
            r = labeler.rank(p, rs, rng_for(seed, "rank", key, c or 0), frs)
            if c is not None:
                r.id = f"{r.id}#{c}" if r.id else ""
                r.meta["part"] = c
            if any(f is not None for f in frs):  # the RM reads a cut-off response without EOS
                r.meta["finish_reasons"] = list(frs)
            rankings.append(r)
        write_jsonl(out / "rankings.jsonl", rankings)
        metrics.update(_ranking_metrics(rankings))
    else:
        demos, sources = [], Counter()
        for p in tqdm(prompts, desc="label demonstrate", unit="prompt", disable=not cfg.run.progress):
            key = p.id or _prompt_key(p.prompt)
            ss = samples[key]
            d = labeler.demonstrate(
                p,
                [s.response for s in ss],
                rng_for(seed, "demonstrate", key),
                [s.finish_reason for s in ss] if ss else None,
                use_reference=cfg.use_reference,
                min_quality=cfg.min_quality,
            )
            if d is None:
                sources["skipped"] += 1
                continue
            sources[d.meta["from"]] += 1
            demos.append(d)
        write_jsonl(out / "demonstrations.jsonl", demos)
        metrics.update(
            {
                "label/demonstrations": len(demos),
                "label/from_reference": sources["reference"],
                "label/best_of_n": sources["best_of_n"],
                "label/skipped_prompts": sources["skipped"],
            }
        )
    if cfg.labeler == "llm":
        metrics.update({"label/judge_requests": labeler.requests, "label/judge_unparsed": labeler.unparsed})
    MetricsLogger(out).log(0, metrics)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log.info(
        "label: %s",
        ", ".join(
            f"{k.split('/', 1)[1]}={v:.3f}" if isinstance(v, float) else f"{k.split('/', 1)[1]}={v}"
            for k, v in metrics.items()
        ),
    )
    return out


def _ranking_metrics(rankings: list) -> dict:
    from instructrl.label.panel import pair_verdicts

    n_resp = sum(len(r.responses) for r in rankings)
    likert = [x for r in rankings for x in (r.likert or []) if x is not None]
    flags = [f for r in rankings for f in (r.flags or [])]
    verdicts = [v for r in rankings for v in pair_verdicts(r.ranks).tolist()]
    m: dict[str, Any] = {
        "label/rankings": len(rankings),
        "label/responses": n_resp,
        "label/mean_k": n_resp / len(rankings) if rankings else 0.0,
        "label/tie_rate": sum(v == 0 for v in verdicts) / len(verdicts) if verdicts else 0.0,
    }
    if likert:
        m["label/likert_mean"] = sum(likert) / len(likert)
    for f in FLAGS:
        if flags:
            m[f"label/flag/{f}"] = sum(bool(x.get(f)) for x in flags) / len(flags)
    return m
