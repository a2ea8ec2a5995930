"""``instructrl ppo``: setup -> loop (rollout -> shape rewards -> advantages -> PPO epochs) -> save.

Writes ``out_dir/{config.yaml, metrics.jsonl, step-NNNNNN/, final/}``. A step checkpoint holds the
policy (its LoRA adapter when LoRA is on), ``value/`` (the value function), both optimizers and
schedulers, the KL coefficient and the score statistics; resume is exact because every random
draw (prompt order, sampling, minibatch order, pretraining blocks) is a function of the seed and
the iteration. ``final/`` is the policy as a plain Hugging Face directory (LoRA merged).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from instructrl.models.checkpoint import latest_checkpoint, load_checkpoint, load_weights, prune_checkpoints, \
    save_checkpoint, step_dir
from instructrl.models.loading import load_model, load_tokenizer
from instructrl.ppo import advantages as A
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.kl_control import build_kl_controller
from instructrl.ppo.loss import policy_loss, value_loss
from instructrl.ppo.ptx import PtxData, ptx_nll
from instructrl.ppo.reward import build_reward
from instructrl.ppo.rollout import Rollout, collect, encode_prompts, load_prompts, make_reference, policy_logprobs, \
    prompt_batch, value_predictions
from instructrl.utils.device import DTYPES, autocast, resolve_device, resolve_precision
from instructrl.utils.masked import masked_mean, masked_whiten
from instructrl.utils.metrics import MetricsLogger
from instructrl.utils.optim import build_optimizer
from instructrl.utils.run import nonfinite_error, start_run

log = logging.getLogger(__name__)


def run(cfg: PPOConfig) -> Path:
    out, finished = start_run(cfg, "ppo")
    if finished is not None:
        return finished
    device = resolve_device(cfg.run.device)
    amp = resolve_precision(cfg.run.precision, device)
    amp_ctx = lambda: autocast(device, amp)  # noqa: E731
    frozen_device = device if cfg.memory.frozen_device == "same" else resolve_device(cfg.memory.frozen_device)

    # ---------------------------------------------------------------- setup: data
    tok = load_tokenizer(cfg.policy.name_or_path)
    prompts = load_prompts(cfg.data.prompts, cfg.data.max_prompts)
    prompt_ids = encode_prompts(tok, prompts, cfg.data.max_prompt_tokens)
    ptx = (PtxData(tok, cfg.ptx.data, text_field=cfg.ptx.text_field, block_size=cfg.ptx.block_size,
                   eval_fraction=cfg.ptx.eval_fraction, seed=cfg.run.seed) if cfg.ptx.data else None)
    log.info("ppo: %d prompts%s", len(prompts),
             f", {len(ptx.train)} pretraining blocks (+{len(ptx.held_out)} held out)" if ptx else "")

    # ---------------------------------------------------------------- setup: the four roles
    policy, ref_model, value = build_models(cfg, tok, device, frozen_device)
    from instructrl.models.generation import _eos_ids

    eos_ids = _eos_ids(policy, tok)
    reward = build_reward(cfg.reward, tok, device=frozen_device, amp=amp, dtype=DTYPES[cfg.memory.frozen_dtype],
                          offload=cfg.memory.offload_frozen, eos_ids=eos_ids)
    reference = make_reference(policy, ref_model, cfg.rollout.temperature, frozen_device=frozen_device,
                               offload=cfg.memory.offload_frozen, chunk=cfg.rollout.forward_batch_size)
    sampler = sampler_weights(cfg, policy, amp)
    generator = build_generator(cfg, sampler.model if sampler is not None else policy, tok)
    n_minibatches = math.ceil(cfg.ppo.batch_size / cfg.ppo.minibatch_size)
    total_updates = cfg.ppo.steps * cfg.ppo.epochs * n_minibatches
    opt, sched = build_optimizer(policy, cfg.optim, total_updates)
    vopt, vsched = build_optimizer(value, dataclasses.replace(cfg.optim, lr=cfg.value.lr or cfg.optim.lr), total_updates)
    kl_ctl = build_kl_controller(cfg.kl.kind, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    moments = A.RunningMoments()

    step = 0
    ckpt = latest_checkpoint(out) if cfg.run.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy, Pair(opt, vopt), Pair(sched, vsched))
        load_weights(value.model, ckpt / "value")
        step, kl_ctl.value = state["step"], state["kl_coef"]
        moments = A.RunningMoments(**state["score_moments"])
        log.info("ppo: resumed from %s (step %d, beta %.4g)", ckpt, step, kl_ctl.value)
    metrics = MetricsLogger(out, resume_step=step if ckpt is not None else None)

    def save(path: Path) -> None:
        save_checkpoint(path, PolicyAndValue(policy, value), tok, optimizer=Pair(opt, vopt),
                        scheduler=Pair(sched, vsched),
                        state={"step": step, "kl_coef": kl_ctl.value, "score_moments": moments.state(),
                               "total_updates": total_updates})

    def eval_ptx() -> None:
        if ptx is not None and ptx.held_out:
            loss = ptx.evaluate(policy, device, cfg.ptx.eval_blocks, cfg.rollout.forward_batch_size, amp_ctx)
            metrics.log(step, {"ppo/ptx_eval_loss": loss})

    # ---------------------------------------------------------------- loop
    bar = tqdm(total=cfg.ppo.steps, initial=step, desc="ppo", disable=not cfg.run.progress, dynamic_ncols=True)
    if step == 0:
        eval_ptx()  # the starting point: the alignment tax is measured from here
    while step < cfg.ppo.steps:
        t0 = time.perf_counter()
        idx = prompt_batch(len(prompts), step, cfg.ppo.batch_size, cfg.run.seed)
        if sampler is not None:
            sampler.refresh()  # the sampler decodes with this iteration's policy
        ro = collect([prompts[i] for i in idx], [prompt_ids[i] for i in idx], generator=generator, policy=policy,
                     reference=reference, value_model=value, reward=reward, pad_id=tok.pad_token_id, device=device,
                     amp_ctx=amp_ctx, max_new_tokens=cfg.rollout.max_new_tokens,
                     temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                     seed=cfg.run.seed * 1_000_003 + step, forward_batch_size=cfg.rollout.forward_batch_size)
        if not torch.isfinite(ro.scores).all():
            raise nonfinite_error("ppo (reward scores)", step, out)
        mask = ro.batch.mask

        # shape rewards -> advantages
        scores = A.normalize_scores(ro.scores, cfg.ppo.score_norm, moments, cfg.ppo.score_clip)
        if cfg.reward.missing_eos_penalty is not None:
            cut = torch.tensor([r == "length" for r in ro.finish_reasons])
            scores = scores - cfg.reward.missing_eos_penalty * cut.float()
        rewards, kl = A.shape_rewards(scores, ro.logprobs, ro.ref_logprobs, mask, kl_ctl.value)
        advantages, returns = A.gae(rewards, ro.values, mask, cfg.ppo.gamma, cfg.ppo.lam)
        if cfg.ppo.whiten_advantages:
            advantages = masked_whiten(advantages, mask) * mask

        # PPO epochs
        t_train = time.perf_counter()
        stats = ppo_epochs(cfg, step, ro, advantages, returns, policy, value, opt, sched, vopt, vsched, ptx, device,
                           amp_ctx, out)
        t_end = time.perf_counter()
        mean_kl = float(A.sequence_kl(kl, mask))
        beta = kl_ctl.value
        kl_ctl.update(mean_kl, cfg.ppo.batch_size)
        step += 1

        row = {"ppo/score": float(ro.scores.mean()), "ppo/score_std": float(ro.scores.std(unbiased=False)),
               "ppo/kl": mean_kl, "ppo/kl_coef": beta,
               "ppo/reward": float((rewards * mask).sum(-1).mean()),
               "ppo/response_len": float(mask.sum(-1).float().mean()),
               "ppo/stopped": sum(r == "stop" for r in ro.finish_reasons) / len(ro.finish_reasons),
               "ppo/advantages_mean": float(masked_mean(advantages, mask)),
               "ppo/values_mean": float(masked_mean(ro.values, mask)),
               "ppo/lr": sched.get_last_lr()[0], "ppo/samples_per_s": cfg.ppo.batch_size / (t_end - t0),
               "ppo/time_generate": ro.timings["generate"], "ppo/time_score": ro.timings["score"],
               "ppo/time_forward": ro.timings["forward"], "ppo/time_train": t_end - t_train} | stats
        if step % cfg.train.log_every == 0 or step == cfg.ppo.steps:
            metrics.log(step, row)
        if cfg.kl.warn_above is not None and mean_kl > cfg.kl.warn_above:
            log.warning("ppo: step %d: KL to the reference is %.2f nats per response (> kl.warn_above = %.2f); the "
                        "policy is drifting: raise kl.coef, use kl.kind=adaptive or lower optim.lr",
                        step, mean_kl, cfg.kl.warn_above)
        bar.set_postfix(score=f"{row['ppo/score']:.3f}", kl=f"{mean_kl:.3f}", clip=f"{stats['ppo/clipfrac']:.2f}",
                        vf=f"{stats['ppo/value_loss']:.3f}", ent=f"{stats['ppo/entropy']:.2f}",
                        len=f"{row['ppo/response_len']:.0f}", sps=f"{row['ppo/samples_per_s']:.2f}")
        bar.update(1)
        if cfg.train.sample_every and step % cfg.train.sample_every == 0:
            print_samples(ro, step, bar)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
            eval_ptx()
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.ppo.steps:
            save(step_dir(out, step))
            prune_checkpoints(out, cfg.train.keep_checkpoints)
    bar.close()

    # ---------------------------------------------------------------- save
    if not (cfg.train.eval_every and step % cfg.train.eval_every == 0):
        eval_ptx()
    final = out / "final"
    partial = save_checkpoint(out / "final.partial", policy, tok, merge_lora=True,
                              state={"step": step, "kl_coef": kl_ctl.value})
    if final.exists():
        import shutil

        shutil.rmtree(final)
    partial.rename(final)
    log.info("ppo: done, %d iterations; policy in %s", step, final)
    return final


def ppo_epochs(cfg: PPOConfig, step: int, ro: Rollout, advantages: torch.Tensor, returns: torch.Tensor,
               policy: torch.nn.Module, value: torch.nn.Module, opt, sched, vopt, vsched, ptx: PtxData | None,
               device: torch.device, amp_ctx, out: Path) -> dict[str, float]:
    """``ppo.epochs`` passes over the rollout in shuffled minibatches; one optimizer step of policy
    and value per minibatch (micro-batches accumulate). Losses are token means over the minibatch."""
    batch, mask = ro.batch, ro.batch.mask
    sums: dict[str, float] = {}
    n_terms = 0
    first_ratio_error = 0.0
    g = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + step)
    policy.train()
    value.train()
    for epoch in range(cfg.ppo.epochs):
        perm = torch.randperm(len(batch), generator=g)
        for m, s in enumerate(range(0, len(batch), cfg.ppo.minibatch_size)):
            mb = perm[s : s + cfg.ppo.minibatch_size]
            mb_tokens = mask[mb].sum().clamp(min=1)
            for micro in mb.split(cfg.ppo.micro_batch_size):
                sub = batch.select(micro).to(device)
                r = sub.tokens.shape[1]
                w = float(mask[micro].sum() / mb_tokens)
                cut = lambda t: t[micro, :r].to(device)  # noqa: E731
                with amp_ctx():
                    logprobs, entropy = policy_logprobs(policy, sub, cfg.rollout.temperature, with_entropy=True)
                    pl, pst = policy_loss(logprobs, cut(ro.logprobs), cut(advantages), sub.mask, cfg.ppo.cliprange)
                    values = value_predictions(value, sub)
                    vl, vst = value_loss(values, cut(ro.values), cut(returns), sub.mask, cfg.value.cliprange)
                if not (torch.isfinite(pl) and torch.isfinite(vl)):
                    raise nonfinite_error("ppo", step, out)
                (pl * w).backward()
                (vl * w).backward()
                if epoch == 0 and m == 0:  # no update yet: the ratio must be 1
                    diff = (logprobs.detach() - cut(ro.logprobs)).abs() * sub.mask
                    first_ratio_error = max(first_ratio_error, float(diff.max()))
                for k, v in (("policy_loss", pl), ("value_loss", vl), ("clipfrac", pst["clipfrac"]),
                             ("approx_kl", pst["approx_kl"]), ("ratio", pst["ratio"]),
                             ("value_clipfrac", vst["clipfrac"]), ("entropy", masked_mean(entropy, sub.mask))):
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * w
            if ptx is not None and cfg.ptx.coef > 0:
                ids, pmask = ptx.batch(step, epoch * 10_000 + m, cfg.ptx.batch_size)
                with amp_ctx():
                    nll = ptx_nll(policy, ids.to(device), pmask.to(device))
                if not torch.isfinite(nll):
                    raise nonfinite_error("ppo (ptx loss)", step, out)
                (cfg.ptx.coef * nll).backward()
                sums["ptx_loss"] = sums.get("ptx_loss", 0.0) + float(nll.detach())
            gn = clip_and_step(policy, opt, sched, cfg.optim.max_grad_norm)
            vgn = clip_and_step(value, vopt, vsched, cfg.optim.max_grad_norm)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + gn
            sums["value_grad_norm"] = sums.get("value_grad_norm", 0.0) + vgn
            n_terms += 1
    policy.eval()
    value.eval()
    stats = {f"ppo/{k}": v / n_terms for k, v in sums.items()}
    stats["ppo/first_ratio_error"] = first_ratio_error
    return stats


def clip_and_step(model: torch.nn.Module, opt, sched, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if max_norm > 0 else 0.0
    if not math.isfinite(norm):
        raise FloatingPointError("ppo: the gradient norm is NaN/inf")
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return norm


def build_models(cfg: PPOConfig, tok: Any, device: torch.device, frozen_device: torch.device):
    """(policy, separate reference or None when LoRA provides it, value). Dropout is 0 in all of
    them so that rollout and training see the same function (ratio 1 before an update)."""
    from instructrl.models.loading import freeze_lower_layers
    from instructrl.models.lora import apply_lora
    from instructrl.models.scalar import init_reward_model

    pc = cfg.policy
    policy = load_model(pc.name_or_path, dtype=DTYPES[pc.dtype], dropout=0.0, tokenizer=tok)
    ref_model = None
    if cfg.lora.enabled:
        policy = apply_lora(policy, cfg.lora)
    else:
        ref_model = load_model(pc.name_or_path, dtype=DTYPES[cfg.memory.frozen_dtype], dropout=0.0, tokenizer=tok,
                               device="cpu" if cfg.memory.offload_frozen else frozen_device)
        ref_model.requires_grad_(False).eval()
    value_init = cfg.value.init or (cfg.reward.model if cfg.reward.kind == "model" else pc.name_or_path)
    value = init_reward_model(value_init, tokenizer=tok,
                              dtype=DTYPES[pc.dtype], dropout=0.0)
    if cfg.lora.enabled:
        value.model = apply_lora(value.model, cfg.lora, task_type="SEQ_CLS")
    if cfg.ppo.trainable_layers:
        n = freeze_lower_layers(policy, cfg.ppo.trainable_layers)
        log.info("ppo: training the policy's top %d layers and final norm (%.1fM parameters)",
                 cfg.ppo.trainable_layers, n / 1e6)
    if cfg.value.trainable_layers:
        n = value.freeze_lower_layers(cfg.value.trainable_layers)
        log.info("ppo: training the value function's top %d layers, final norm and head (%.1fM parameters)",
                 cfg.value.trainable_layers, n / 1e6)
    if pc.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        value.hf_model.gradient_checkpointing_enable()
    return policy.to(device).eval(), ref_model, value.to(device).eval()


class SamplerCopy:
    """A half-precision copy of the policy for the sampler, refreshed from the policy before each rollout.

    Under autocast every decode step casts each fp32 weight to bf16 again (the whole model, for one
    token per row); the copy is cast once per rollout instead. Buffers (rotary frequencies) keep
    their dtype; tied weights stay tied (the copy is a deep copy)."""

    def __init__(self, policy: torch.nn.Module, dtype: torch.dtype):
        self.model = copy.deepcopy(policy)
        for p in self.model.parameters():
            p.requires_grad_(False)
            p.data = p.data.to(dtype)
        self.model.eval()
        # frozen weights (ppo.trainable_layers) never change: only the trained ones are copied again
        self._pairs = [(src, dst) for src, dst in zip(policy.parameters(), self.model.parameters())
                       if src.requires_grad]

    @torch.no_grad()
    def refresh(self) -> None:
        for src, dst in self._pairs:
            dst.copy_(src)


def sampler_weights(cfg: PPOConfig, policy: torch.nn.Module, amp: torch.dtype) -> SamplerCopy | None:
    """The copy the sampler decodes with (``rollout.weights``), or None to decode with the policy itself."""
    kind = cfg.rollout.weights
    if kind == "auto":
        kind = "bf16" if amp == torch.bfloat16 and not cfg.lora.enabled else "policy"
    if kind == "policy":
        return None
    if cfg.lora.enabled:
        raise ValueError(f"rollout.weights={kind} needs a policy without LoRA adapters; use 'policy' or 'auto'")
    if all(p.dtype == DTYPES[kind] for p in policy.parameters()):
        return None  # the policy is held in that dtype already (policy.dtype): a copy would only cost memory
    return SamplerCopy(policy, DTYPES[kind])


def build_generator(cfg: PPOConfig, policy: torch.nn.Module, tok: Any):
    if cfg.rollout.engine == "hf":
        from instructrl.models.generation import HFGenerator

        return HFGenerator(policy, tok, cfg.rollout.batch_size, max_prompt_tokens=cfg.data.max_prompt_tokens)
    from instructrl.models.fast_generation import CachedGenerator

    return CachedGenerator(policy, tok, cfg.rollout.batch_size, max_prompt_tokens=cfg.data.max_prompt_tokens)


class PolicyAndValue:
    """Saves the policy into a checkpoint directory and the value function into its ``value/``."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module):
        self.policy, self.value = policy, value

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        self.policy.save_pretrained(path, **kwargs)
        self.value.model.save_pretrained(Path(path) / "value", **kwargs)


class Pair:
    """Two optimizers (or schedulers) saved and restored as one."""

    def __init__(self, policy: Any, value: Any):
        self.policy, self.value = policy, value

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "value": self.value.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])


def print_samples(ro: Rollout, step: int, bar: Any, n: int = 2) -> None:
    for i in range(min(n, len(ro.prompts))):
        p = ro.prompts[i] if isinstance(ro.prompts[i], str) else ro.prompts[i][-1]["content"]
        bar.write(f"[ppo step {step}] score {float(ro.scores[i]):+.3f} | {p[:200]!r} -> {ro.responses[i][:300]!r}")
