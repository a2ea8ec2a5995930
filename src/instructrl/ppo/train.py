"""``instructrl ppo``: setup -> loop (rollout -> shape rewards -> advantages -> PPO epochs) -> save.

Writes ``out_dir/{config.yaml, metrics.jsonl, step-NNNNNN/, final/}``. A step checkpoint holds the
policy (its LoRA adapter when LoRA is on), ``value/`` (the value function), both optimizers and
schedulers, the KL coefficient and the score statistics; resume is exact because every random
draw (prompt order, sampling, minibatch order, pretraining blocks) is a function of the seed and
the iteration. ``final/`` is the policy as a plain Hugging Face directory (LoRA merged).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from instructrl.models.checkpoint import load_checkpoint, load_weights, publish, save_checkpoint, save_final
from instructrl.models.engines import make_generator
from instructrl.models.forward import encode_prompts
from instructrl.models.generation import eos_ids_of, is_cut
from instructrl.models.loading import load_tokenizer
from instructrl.ppo.advantages import RunningMoments, Shaped, normalize_scores, sequence_kl, shape
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.kl_control import build_kl_controller
from instructrl.ppo.monitor import Monitor
from instructrl.ppo.ptx import PtxData
from instructrl.ppo.reward import build_reward
from instructrl.ppo.roles import Pair, PolicyAndValue, build_models, sampler_weights
from instructrl.ppo.rollout import Rollout, collect, load_prompts, make_reference, prompt_batch
from instructrl.ppo.update import Trainables, ppo_epochs
from instructrl.utils.device import DTYPES, autocast, resolve_device, resolve_precision
from instructrl.utils.masked import masked_mean
from instructrl.utils.metrics import MetricsLogger
from instructrl.utils.optim import build_optimizer
from instructrl.utils.run import latest_checkpoint, nonfinite_error, prune_checkpoints, start_run, step_dir
from instructrl.utils.seed import derive

log = logging.getLogger(__name__)


def run(cfg: PPOConfig) -> Path:
    out, finished = start_run(cfg, "ppo")
    if finished is not None:
        return finished
    device = resolve_device(cfg.run.device)
    amp_dtype = resolve_precision(cfg.run.precision, device)

    def autocast_ctx():
        return autocast(device, amp_dtype)

    frozen_device = device if cfg.memory.frozen_device == "same" else resolve_device(cfg.memory.frozen_device)

    # ---------------------------------------------------------------- setup: data
    tok = load_tokenizer(cfg.policy.name_or_path)
    prompts = load_prompts(cfg.data.prompts, cfg.data.max_prompts)
    prompt_ids = encode_prompts(tok, prompts, cfg.data.max_prompt_tokens)
    ptx = (
        PtxData(
            tok,
            cfg.ptx.data,
            text_field=cfg.ptx.text_field,
            block_size=cfg.ptx.block_size,
            eval_fraction=cfg.ptx.eval_fraction,
            seed=cfg.run.seed,
        )
        if cfg.ptx.data
        else None
    )
    log.info(
        "ppo: %d prompts%s",
        len(prompts),
        f", {len(ptx.train)} pretraining blocks (+{len(ptx.held_out)} held out)" if ptx else "",
    )

    # ---------------------------------------------------------------- setup: the four roles
    policy, ref_model, value = build_models(cfg, tok, device, frozen_device)
    reward = build_reward(
        cfg.reward,
        tok,
        device=frozen_device,
        amp_dtype=amp_dtype,
        dtype=DTYPES[cfg.memory.frozen_dtype],
        offload=cfg.memory.offload_frozen,
        eos_ids=eos_ids_of(policy, tok),
    )
    reference = make_reference(
        policy,
        ref_model,
        cfg.rollout.temperature,
        frozen_device=frozen_device,
        offload=cfg.memory.offload_frozen,
        chunk=cfg.rollout.forward_batch_size,
    )
    sampler = sampler_weights(cfg, policy, amp_dtype)
    generator = make_generator(
        sampler.model if sampler is not None else policy,
        tok,
        engine=cfg.rollout.engine,
        batch_size=cfg.rollout.batch_size,
        max_prompt_tokens=cfg.data.max_prompt_tokens,
    )
    total_updates = cfg.ppo.steps * cfg.ppo.epochs * math.ceil(cfg.ppo.batch_size / cfg.ppo.minibatch_size)
    opt, sched = build_optimizer(policy, cfg.optim, total_updates)
    vopt = vsched = None
    if value is not None:
        vopt, vsched = build_optimizer(
            value, dataclasses.replace(cfg.optim, lr=cfg.value.lr or cfg.optim.lr), total_updates
        )
    trainables = Trainables(policy, value, opt, sched, vopt, vsched)
    kl_ctl = build_kl_controller(cfg.kl.kind, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    moments = RunningMoments()

    step = 0
    ckpt = latest_checkpoint(out) if cfg.run.resume else None
    drop_stale_best(out, ckpt)
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy, Pair(opt, vopt), Pair(sched, vsched))
        if value is not None:
            load_weights(value.model, ckpt / "value")
        step = state["step"]
        kl_ctl.load_state({"coef": state["kl_coef"]})
        moments = RunningMoments(**state["score_moments"])
        log.info("ppo: resumed from %s (step %d, beta %.4g)", ckpt, step, kl_ctl.coef)
    metrics = MetricsLogger(out, resume_step=step if ckpt is not None else None)

    def save(path: Path) -> None:
        save_checkpoint(
            path,
            PolicyAndValue(policy, value),
            tok,
            optimizer=Pair(opt, vopt),
            scheduler=Pair(sched, vsched),
            state={
                "step": step,
                "kl_coef": kl_ctl.coef,
                "score_moments": moments.state(),
                "total_updates": total_updates,
            },
        )

    monitor = Monitor(
        cfg,
        tok,
        reward,
        generator=generator,
        policy=policy,
        reference=reference,
        device=device,
        frozen_device=frozen_device,
        amp_dtype=amp_dtype,
        autocast_ctx=autocast_ctx,
    )

    def log_monitor() -> None:
        if sampler is not None:
            sampler.refresh()  # the monitor samples with the policy as it is now
        scores = monitor()
        metrics.log(step, scores)
        if cfg.monitor.keep_best:
            keep_if_best(out, policy, tok, step, scores, cfg.monitor.keep_best)

    def eval_ptx() -> None:
        if ptx is not None and ptx.held_out:
            loss = ptx.evaluate(policy, device, cfg.ptx.eval_blocks, cfg.rollout.forward_batch_size, autocast_ctx)
            metrics.log(step, {"ppo/ptx_eval_loss": loss})

    # ---------------------------------------------------------------- loop
    bar = tqdm(total=cfg.ppo.steps, initial=step, desc="ppo", disable=not cfg.run.progress, dynamic_ncols=True)
    if step == 0:
        eval_ptx()  # the starting point: the alignment tax is measured from here
        if monitor.due(step):
            log_monitor()
    while step < cfg.ppo.steps:
        t0 = time.perf_counter()
        group = cfg.rollout.samples_per_prompt
        idx = prompt_batch(len(prompts), step, cfg.ppo.batch_size, cfg.run.seed, repeat=group)
        if sampler is not None:
            sampler.refresh()  # the sampler decodes with this iteration's policy
        rollout = collect(
            [prompts[i] for i in idx],
            [prompt_ids[i] for i in idx],
            generator=generator,
            policy=policy,
            reference=reference,
            value_model=value,
            reward=reward,
            pad_id=tok.pad_token_id,
            device=device,
            autocast_ctx=autocast_ctx,
            max_new_tokens=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            seed=derive(cfg.run.seed, "rollout", step),
            forward_batch_size=cfg.rollout.forward_batch_size,
        )
        if not torch.isfinite(rollout.scores).all():
            raise nonfinite_error("ppo (reward scores)", step, out)
        scores = normalize_scores(rollout.scores, cfg.ppo.score_norm, moments, cfg.ppo.score_clip)
        shaped = shape(
            scores,
            rollout.logprobs,
            rollout.ref_logprobs,
            rollout.values,
            rollout.batch.mask,
            kl_coef=kl_ctl.coef,
            gamma=cfg.ppo.gamma,
            lam=cfg.ppo.lam,
            whiten=cfg.ppo.whiten_advantages,
            cut=torch.tensor([is_cut(r) for r in rollout.finish_reasons]),
            missing_eos_penalty=cfg.reward.missing_eos_penalty,
            group_size=group if cfg.ppo.advantage == "group" else None,
        )
        t_train = time.perf_counter()
        stats = ppo_epochs(cfg, step, rollout, shaped, trainables, ptx, device, autocast_ctx, out)
        t_end = time.perf_counter()
        mean_kl = float(sequence_kl(shaped.log_ratio, rollout.batch.mask))
        beta = kl_ctl.coef
        kl_ctl.update(mean_kl, cfg.ppo.batch_size)
        step += 1

        row = (
            iteration_metrics(rollout, shaped, mean_kl, beta, group)
            | stats
            | {
                "ppo/lr": sched.get_last_lr()[0],
                "ppo/samples_per_s": cfg.ppo.batch_size / (t_end - t0),
                "ppo/time_train": t_end - t_train,
            }
        )
        if step % cfg.train.log_every == 0 or step == cfg.ppo.steps:
            metrics.log(step, row)
        if cfg.kl.warn_above is not None and mean_kl > cfg.kl.warn_above:
            log.warning(
                "ppo: step %d: KL to the reference is %.2f nats per response (> kl.warn_above = %.2f); the "
                "policy is drifting: raise kl.coef, use kl.kind=adaptive or lower optim.lr",
                step,
                mean_kl,
                cfg.kl.warn_above,
            )
        bar.set_postfix(
            score=f"{row['ppo/score']:.3f}",
            kl=f"{mean_kl:.3f}",
            clip=f"{stats['ppo/clipfrac']:.2f}",
            **({"vf": f"{stats['ppo/value_loss']:.3f}"} if "ppo/value_loss" in stats else {}),
            ent=f"{stats['ppo/entropy']:.2f}",
            len=f"{row['ppo/response_len']:.0f}",
            sps=f"{row['ppo/samples_per_s']:.2f}",
        )
        bar.update(1)
        if cfg.train.sample_every and step % cfg.train.sample_every == 0:
            print_samples(rollout, step, bar)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
            eval_ptx()
        if monitor.due(step):
            log_monitor()
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.ppo.steps:
            save(step_dir(out, step))
            prune_checkpoints(out, cfg.train.keep_checkpoints)
    bar.close()

    # ---------------------------------------------------------------- save
    if not (cfg.train.eval_every and step % cfg.train.eval_every == 0):
        eval_ptx()
    final = save_final(out, policy, tok, state={"step": step, "kl_coef": kl_ctl.coef})
    log.info("ppo: done, %d iterations; policy in %s", step, final)
    return final


def drop_stale_best(out: Path, ckpt: Path | None) -> None:
    """Remove a kept best policy that this run does not continue: any, on a fresh start; one from after
    the checkpoint it resumes from (the resumed run will meet that point again and judge it anew)."""
    kept = out / "best" / "state.json"
    if not kept.exists():
        return
    resumed = json.loads((ckpt / "state.json").read_text())["step"] if ckpt is not None else -1
    if json.loads(kept.read_text())["step"] > resumed:
        shutil.rmtree(out / "best")


def keep_if_best(out: Path, policy: Any, tok: Any, step: int, scores: dict, name: str) -> Path | None:
    """Write the policy to ``out/best`` when ``monitor/<name>`` beats the best kept so far (read from
    ``out/best/state.json``, so a resumed run compares with what it kept before the interruption)."""
    score = float(scores[f"monitor/{name}"])
    kept = out / "best" / "state.json"
    if kept.exists() and json.loads(kept.read_text())["score"] >= score:
        return None
    state = {"step": step, "reward": name, "score": score, "kl": float(scores["monitor/kl"])}
    partial = save_checkpoint(out / "best.partial", policy, tok, merge_lora=True, state=state)
    log.info("ppo: best %s so far (%.4f at iteration %d) kept in %s", name, score, step, out / "best")
    return publish(partial, out / "best")


def iteration_metrics(
    rollout: Rollout, shaped: Shaped, mean_kl: float, beta: float, group: int = 1
) -> dict[str, float]:
    """What one iteration's rollout and shaping look like, as ``ppo/*`` metrics. With several samples
    per prompt (``group``), ``ppo/score_std_within`` is the spread of the scores among one prompt's
    responses (what a group baseline learns from) beside ``ppo/score_std`` over the whole batch."""
    mask = rollout.batch.mask
    within = {}
    if group > 1:
        within["ppo/score_std_within"] = float(rollout.scores.view(-1, group).std(-1, unbiased=False).mean())
    return within | {
        "ppo/score": float(rollout.scores.mean()),
        "ppo/score_std": float(rollout.scores.std(unbiased=False)),
        "ppo/kl": mean_kl,
        "ppo/kl_coef": beta,
        "ppo/reward": float((shaped.rewards * mask).sum(-1).mean()),
        "ppo/response_len": float(mask.sum(-1).float().mean()),
        "ppo/stopped": sum(not is_cut(r) for r in rollout.finish_reasons) / len(rollout.finish_reasons),
        "ppo/advantages_mean": float(masked_mean(shaped.advantages, mask)),
        "ppo/values_mean": float(masked_mean(rollout.values, mask)),
        "ppo/time_generate": rollout.timings["generate"],
        "ppo/time_score": rollout.timings["score"],
        "ppo/time_forward": rollout.timings["forward"],
    }


def print_samples(ro: Rollout, step: int, bar: Any, n: int = 2) -> None:
    for i in range(min(n, len(ro.prompts))):
        p = ro.prompts[i] if isinstance(ro.prompts[i], str) else ro.prompts[i][-1]["content"]
        bar.write(f"[ppo step {step}] score {float(ro.scores[i]):+.3f} | {p[:200]!r} -> {ro.responses[i][:300]!r}")
