"""``instructrl rm``: setup -> loop -> evaluate -> normalize -> save.

Each optimizer step takes ``train.batch_size`` prompts; each prompt's K responses are forwarded once
(K sequences) and all its C(K,2) comparisons form one batch element of the K-way loss. Writes
``out_dir/{config.yaml, metrics.jsonl, step-NNNNNN/, final/}``; ``final/`` is a Hugging Face
sequence-classification checkpoint (LoRA merged) with ``reward.json`` (the normalization bias),
loaded by :func:`instructrl.models.scalar.load_reward_model`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from instructrl.builtin import load_demonstrations
from instructrl.models.checkpoint import load_checkpoint, save_checkpoint, save_final
from instructrl.models.loading import load_tokenizer
from instructrl.models.lora import apply_lora
from instructrl.models.scalar import ScalarRewardModel, init_reward_model, save_reward_info
from instructrl.records import Demonstration, Ranking, RecordError
from instructrl.rm import data as rm_data
from instructrl.rm.config import RMConfig
from instructrl.rm.importers import load_rankings
from instructrl.rm.loss import kway_loss, pair_stats
from instructrl.rm.score import BatchScorer, evaluate
from instructrl.utils.device import DTYPES, autocast, resolve_precision
from instructrl.utils.dist import Dist
from instructrl.utils.optim import build_optimizer
from instructrl.utils.run import latest_checkpoint, nonfinite_error, prune_checkpoints, start_run, step_dir

log = logging.getLogger(__name__)


def run(cfg: RMConfig) -> Path:
    dist = Dist.setup(cfg.run.device, cfg.run.num_processes)
    out, finished = start_run(cfg, "rm", main=dist.is_main)
    if finished is not None:
        return finished
    device = dist.device
    amp_dtype = resolve_precision(cfg.run.precision, device)

    # ---------------------------------------------------------------- setup: data
    tok = load_tokenizer(cfg.model.name_or_path)
    train_r, eval_r = load_data(cfg)
    demos = [d for spec in cfg.data.demonstrations for d in load_demonstrations(spec)]  # fail early if missing
    train_ex, st = rm_data.encode_rankings(tok, train_r, cfg.model.max_seq_len, progress=cfg.run.progress)
    eval_ex, st_eval = rm_data.encode_rankings(tok, eval_r, cfg.model.max_seq_len, progress=cfg.run.progress)
    if not train_ex:
        raise RecordError(
            ", ".join(cfg.data.train),
            None,
            "no training rankings with at least one comparison "
            "(every ranking has fewer than 2 distinct ranks, or the files are empty)",
        )
    n_pairs = sum(ex.n_pairs for ex in train_ex)
    log.info(
        "rm: %d training prompts (%d comparisons, K %d..%d), %d held-out prompts; %d of %d rankings cut to %d tokens",
        len(train_ex),
        n_pairs,
        min(e.k for e in train_ex),
        max(e.k for e in train_ex),
        len(eval_ex),
        st.truncated + st_eval.truncated,
        len(train_ex) + len(eval_ex),
        cfg.model.max_seq_len,
    )
    for why, n in (st.skipped + st_eval.skipped).items():
        log.info("rm: skipped %d %s", n, why)
    batches_for = lambda epoch: rm_data.epoch_batches(train_ex, cfg.train.batch_size, cfg.run.seed, epoch)  # noqa: E731
    total_steps = cfg.train.epochs * len(batches_for(0))
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)

    # ---------------------------------------------------------------- setup: model, optimizer, resume
    rm = init_reward_model(
        cfg.model.name_or_path, tokenizer=tok, dtype=DTYPES[cfg.model.dtype], dropout=cfg.model.dropout
    )
    if cfg.lora.enabled:
        rm.model = apply_lora(rm.model, cfg.lora, task_type="SEQ_CLS")
    elif cfg.train.trainable_layers:
        n_train = rm.freeze_lower_layers(cfg.train.trainable_layers)
        log.info(
            "rm: training the top %d layers, final norm and head (%.1fM parameters)",
            cfg.train.trainable_layers,
            n_train / 1e6,
        )
    if cfg.model.gradient_checkpointing:
        rm.hf_model.gradient_checkpointing_enable()
    rm.to(device)
    shared = cfg.train.share_prompt and not cfg.model.gradient_checkpointing
    head_params = {id(p) for p in rm.head.parameters()}
    head = {n for n, p in rm.named_parameters() if id(p) in head_params}
    opt, sched = build_optimizer(rm, cfg.optim, total_steps, lr_for=lambda n: cfg.train.head_lr if n in head else None)
    step, epoch0, pos0, seen = 0, 0, 0, {"prompts": 0, "pairs": 0, "sequences": 0, "tokens": 0}
    ckpt = dist.same_everywhere(latest_checkpoint(out) if cfg.run.resume else None)
    if ckpt is not None:  # written by any number of processes: the whole model and optimizer are in it
        state = load_checkpoint(ckpt, rm.model, opt, sched)
        step, epoch0, pos0, seen = state["step"], state["epoch"], state["position"], state["seen"]
        log.info("rm: resumed from %s (step %d, epoch %d, batch %d)", ckpt, step, epoch0, pos0)
    metrics = dist.metrics(out, resume_step=step if ckpt is not None else None)
    scorer = dist.wrap(BatchScorer(rm, device, shared))  # DDP across processes
    last_eval: dict = {}

    def evaluate_now(epoch: int) -> None:
        nonlocal last_eval
        if not eval_ex or not dist.is_main:  # for the log only: the main process evaluates, the others go on
            return
        last_eval = evaluate(
            rm,
            eval_ex,
            tok.pad_token_id,
            cfg.train.eval_batch_size,
            device,
            amp_dtype,
            progress=cfg.run.progress,
            shared=shared,
        )
        metrics.log(step, {f"rm/eval_{k}": v for k, v in last_eval.items()} | {"rm/epoch": epoch})
        log.info(
            "rm: step %d epoch %d held-out accuracy %.4f loss %.4f margin %.3f (%d comparisons)",
            step,
            epoch,
            last_eval["accuracy"],
            last_eval["loss"],
            last_eval["margin"],
            last_eval["pairs"],
        )

    # ---------------------------------------------------------------- loop
    bar = tqdm(
        total=total_steps, initial=step, desc="rm", disable=not (cfg.run.progress and dist.is_main), dynamic_ncols=True
    )
    t0, cpu0, tok0 = time.time(), time.process_time(), seen["tokens"]
    done = step >= total_steps
    rm.train()
    for epoch in range(epoch0, cfg.train.epochs):
        if done:
            break
        batches = batches_for(epoch)
        i = pos0 if epoch == epoch0 else 0
        while i < len(batches) and not done:
            idx = batches[i]
            loss_sum, correct, pairs, sequences, tokens = 0.0, 0.0, 0, 0, 0
            group = list(rm_data.micro_batches(idx, train_ex, cfg.train.micro_batch_size))
            mine = dist.share(group)
            # a process with no micro-batch left still joins the gradient exchange, with weight 0
            for k, mb in enumerate(mine or group[:1]):
                b = rm_data.collate(mb, tok.pad_token_id)
                with dist.no_sync(scorer, last=k == max(len(mine), 1) - 1):
                    with autocast(device, amp_dtype):
                        scores = scorer(b)
                    loss = kway_loss(scores, b.pairs.to(device), num_prompts=len(idx))
                    if not torch.isfinite(loss):
                        raise nonfinite_error("rm", step, out)
                    (loss * (dist.world if mine else 0.0)).backward()  # DDP averages over the processes
                if mine:
                    loss_sum += float(loss.detach())
                    correct += float(pair_stats(scores.detach(), b.pairs.to(device))["correct"].sum())
                    pairs += len(b.pair_dataset)
                    sequences += b.input_ids.shape[0]
                    tokens += b.n_tokens_shared if shared else b.n_tokens
            loss_sum, correct, pairs, sequences, tokens = dist.sum(loss_sum, correct, pairs, sequences, tokens)
            pairs = int(pairs)
            seen["sequences"] += int(sequences)
            seen["tokens"] += int(tokens)
            seen["prompts"] += len(idx)
            seen["pairs"] += pairs
            grad_norm = (
                torch.nn.utils.clip_grad_norm_([p for p in rm.parameters() if p.requires_grad], cfg.optim.max_grad_norm)
                if cfg.optim.max_grad_norm > 0
                else torch.tensor(0.0)
            )
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            i += 1
            done = step >= total_steps
            tps = (seen["tokens"] - tok0) / max(1e-9, time.time() - t0)
            if step % cfg.train.log_every == 0 or done:
                metrics.log(
                    step,
                    {
                        "rm/loss": loss_sum,
                        "rm/accuracy": correct / max(1, pairs),
                        "rm/lr": sched.get_last_lr()[0],
                        "rm/grad_norm": float(grad_norm),
                        "rm/tokens_per_s": tps,
                        "rm/cpu_s": time.process_time() - cpu0,
                        "rm/epoch": epoch,
                    }
                    | {f"rm/{k}_seen": v for k, v in seen.items()},
                )
            bar.set_postfix(loss=f"{loss_sum:.3f}", acc=f"{correct / max(1, pairs):.2f}", tok_s=f"{tps:.0f}")
            bar.update(1)
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and not done:
                evaluate_now(epoch)
            if cfg.train.save_every and step % cfg.train.save_every == 0 and not done:
                with dist.main_writes() as main:
                    if main:
                        save_checkpoint(
                            step_dir(out, step),
                            rm.model,
                            tok,
                            optimizer=opt,
                            scheduler=sched,
                            state={
                                "step": step,
                                "epoch": epoch,
                                "position": i,
                                "seen": seen,
                                "total_steps": total_steps,
                            },
                        )
                        prune_checkpoints(out, cfg.train.keep_checkpoints)
        if i >= len(batches) or done:
            evaluate_now(epoch)
    bar.close()

    # ---------------------------------------------------------------- normalize, save
    final = out / "final"
    bias = 0.0
    with dist.main_writes() as main:
        if main:
            bias, info = normalization_bias(rm, tok, demos, cfg, device, amp_dtype)
            final = save_final(
                out,
                rm.model,
                tok,
                state={"step": step, "seen": seen, "eval": last_eval, "bias": bias},
                extra=lambda partial: save_reward_info(partial, bias, **info),
            )
    log.info(
        "rm: done, %d steps, %d comparisons seen, held-out accuracy %s, bias %.4f; model in %s",
        step,
        seen["pairs"],
        f"{last_eval['accuracy']:.4f}" if last_eval else "n/a",
        bias,
        final,
    )
    return final


def load_data(cfg: RMConfig) -> tuple[list[Ranking], list[Ranking]]:
    """Training and held-out rankings from ``cfg.data`` (importers, synthetic data, conversation split)."""

    def read(sources: list[str]) -> list[Ranking]:
        rankings: list[Ranking] = []
        for src in sources:
            if src == "synthetic":
                demos = [d for spec in cfg.data.demonstrations for d in load_demonstrations(spec)]
                got = rm_data.synthetic_rankings(demos, cfg.data.synthetic_k, cfg.run.seed)
                log.info(
                    "rm: %d synthetic rankings of K=%d from %d demonstrations",
                    len(got),
                    cfg.data.synthetic_k,
                    len(demos),
                )
            else:
                res = load_rankings(src, cfg.data.format)
                log.info("rm: %s", res.summary())
                got = res.rankings
            rankings.extend(got)
        return rankings

    train = read(cfg.data.train)
    if cfg.data.eval:
        held = read(cfg.data.eval)
    else:
        train, held = rm_data.split_by_conversation(train, cfg.data.eval_fraction, cfg.data.split_salt)
    rng = random.Random(cfg.run.seed)
    if cfg.data.max_train is not None and len(train) > cfg.data.max_train:
        train = rng.sample(train, cfg.data.max_train)
    if cfg.data.max_eval is not None and len(held) > cfg.data.max_eval:
        held = rng.sample(held, cfg.data.max_eval)
    return train, held


def normalization_bias(
    rm: ScalarRewardModel, tok, demos: list[Demonstration], cfg: RMConfig, device: torch.device, amp_dtype: torch.dtype
) -> tuple[float, dict]:
    """The bias that gives the demonstrations' rewards mean 0 (InstructGPT's normalization)."""
    plain = [d for d in demos if d.prompt is not None and d.response]
    if len(plain) < len(demos):
        log.info(
            "rm: normalization skips %d few-shot demonstrations (no single prompt/response)", len(demos) - len(plain)
        )
    plain = plain[: cfg.data.max_normalize]
    if not plain:
        log.warning("rm: no demonstrations to normalize with (data.demonstrations=%s); bias 0", cfg.data.demonstrations)
        return 0.0, {"normalized_on": 0}
    raw = rm.score_texts(
        tok,
        [d.prompt for d in plain],
        [d.response for d in plain],
        max_len=cfg.model.max_seq_len,
        batch_size=cfg.train.eval_batch_size,
        device=device,
        amp_dtype=amp_dtype,
        progress=cfg.run.progress,
    )
    mean = sum(raw) / len(raw) - rm.bias
    std = math.sqrt(sum((r - rm.bias - mean) ** 2 for r in raw) / len(raw))
    log.info("rm: %d demonstrations: raw mean reward %.4f (std %.4f); bias %.4f", len(raw), mean, std, -mean)
    return -mean, {
        "normalized_on": len(raw),
        "raw_mean": mean,
        "raw_std": std,
        "demonstrations": list(cfg.data.demonstrations),
    }
