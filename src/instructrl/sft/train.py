"""``instructrl sft``: setup -> loop -> evaluate -> save.

Writes ``out_dir/{config.yaml, metrics.jsonl, step-NNNNNN/, best/, final/}``. ``final/`` is the
model selected by ``train.select_by`` (a plain Hugging Face directory; LoRA adapters are merged),
ready for the reward-model and PPO stages.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from instructrl.builtin import load_demonstrations
from instructrl.models.checkpoint import load_checkpoint, publish, save_checkpoint, save_final
from instructrl.models.forward import ResponseLMLoss, response_lm_loss
from instructrl.models.loading import load_model, load_tokenizer
from instructrl.models.lora import apply_lora
from instructrl.sft import data as sft_data
from instructrl.sft.config import SFTConfig
from instructrl.utils.device import DTYPES, autocast, resolve_precision
from instructrl.utils.dist import Dist
from instructrl.utils.optim import build_optimizer
from instructrl.utils.run import latest_checkpoint, nonfinite_error, prune_checkpoints, start_run, step_dir

log = logging.getLogger(__name__)


def run(cfg: SFTConfig) -> Path:
    dist = Dist.setup(cfg.run.device, cfg.run.num_processes)
    out, finished = start_run(cfg, "sft", main=dist.is_main)
    if finished is not None:
        return finished
    device = dist.device
    amp_dtype = resolve_precision(cfg.run.precision, device)

    # ---------------------------------------------------------------- setup: data
    tok = load_tokenizer(cfg.model.name_or_path)
    demos = load_demonstrations(cfg.data.train)
    if cfg.data.valid:
        train_demos, valid_demos = demos, load_demonstrations(cfg.data.valid)
    else:
        train_demos, valid_demos = sft_data.user_split(demos, cfg.data.valid_fraction, cfg.run.seed)
    conv = lambda ds: sft_data.to_conversations(ds, cfg.data.few_shot_variants, cfg.data.few_shot_k, cfg.run.seed)  # noqa: E731
    train_ex, n_trunc = sft_data.tokenize(tok, conv(train_demos), cfg.model.max_seq_len, cfg.data.train_on)
    valid_ex, _ = sft_data.tokenize(tok, conv(valid_demos), cfg.model.max_seq_len, cfg.data.train_on)
    if cfg.data.max_examples:
        train_ex = train_ex[: cfg.data.max_examples]
    if not train_ex:
        raise ValueError(f"sft: no training examples in {cfg.data.train}")
    log.info(
        "sft: %d demonstrations -> %d training examples (%d truncated to %d tokens), %d validation examples",
        len(train_demos),
        len(train_ex),
        n_trunc,
        cfg.model.max_seq_len,
        len(valid_ex),
    )
    batches_for = lambda epoch: sft_data.epoch_batches(  # noqa: E731
        train_ex,
        batch_size=cfg.train.batch_size,
        seed=cfg.run.seed,
        epoch=epoch,
        pad_id=tok.pad_token_id,
        length_grouping=cfg.data.length_grouping,
        packing=cfg.data.packing,
        max_len=cfg.model.max_seq_len,
    )
    steps_per_epoch = math.ceil(len(batches_for(0)) / cfg.train.grad_accum)
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)

    # ---------------------------------------------------------------- setup: model, optimizer, resume
    model = load_model(cfg.model.name_or_path, dtype=DTYPES[cfg.model.dtype], dropout=cfg.model.dropout, tokenizer=tok)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.to(device)
    opt, sched = build_optimizer(model, cfg.optim, total_steps)
    step, epoch0, pos0, best, tokens_seen = 0, 0, 0, None, 0
    ckpt = dist.same_everywhere(latest_checkpoint(out) if cfg.run.resume else None)
    if ckpt is not None:  # written by any number of processes: the whole model and optimizer are in it
        state = load_checkpoint(ckpt, model, opt, sched)
        step, epoch0, pos0 = state["step"], state["epoch"], state["position"]
        best, tokens_seen = state.get("best"), state.get("tokens_seen", 0)
        log.info("sft: resumed from %s (step %d, epoch %d, batch %d)", ckpt, step, epoch0, pos0)
    metrics = dist.metrics(out, resume_step=step if ckpt is not None else None)
    trained = dist.wrap(ResponseLMLoss(model))  # the loss the loop runs forward and backward (DDP across processes)

    rm = None
    if cfg.train.select_by == "rm_score":
        from instructrl.models.scalar import load_reward_model

        rm = load_reward_model(cfg.train.reward_model, device=device)
        rm_prompts = [c[:-1] for c in conv(valid_demos)][: cfg.train.rm_eval_prompts]
        if not rm_prompts:
            raise ValueError(
                "sft: train.select_by=rm_score needs validation prompts (data.valid or data.valid_fraction)"
            )

    def evaluate_and_select(epoch: int, select: bool = True) -> None:
        """Validation loss (and RM score); keep best/ by the selection rule (lower key is better)."""
        nonlocal best
        val = evaluate(model, valid_ex, tok.pad_token_id, cfg.train.batch_size, device, amp_dtype, dist)
        row = {"sft/val_loss": val, "sft/epoch": epoch}
        key = val
        if rm is not None:
            score = None
            if dist.is_main:  # sampled once, by the main process; every process takes its decision
                score = mean_rm_score(
                    model,
                    tok,
                    rm_prompts,
                    *rm,
                    cfg.train.rm_eval_max_new_tokens,
                    cfg.train.batch_size,
                    device,
                    amp_dtype,
                )
            row["sft/rm_score"] = dist.same_everywhere(score)
            key = -row["sft/rm_score"]
        metrics.log(step, row)
        log.info(
            "sft: step %d epoch %d %s",
            step,
            epoch,
            " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "sft/epoch"),
        )
        if select and valid_ex and (best is None or key < best):
            best = key
            with dist.main_writes() as main:
                if main:
                    save_checkpoint(
                        out / "best",
                        model,
                        tok,
                        merge_lora=True,
                        state={
                            "step": step,
                            "epoch": epoch,
                            "val_loss": val,
                            "rm_score": row.get("sft/rm_score"),
                            "selected_by": cfg.train.select_by,
                        },
                    )

    # ---------------------------------------------------------------- loop
    bar = tqdm(
        total=total_steps, initial=step, desc="sft", disable=not (cfg.run.progress and dist.is_main), dynamic_ncols=True
    )
    t0, tok0 = time.time(), tokens_seen
    done = step >= total_steps
    if step == 0 and valid_ex:
        evaluate_and_select(0, select=False)  # the starting point, for comparison
    for epoch in range(epoch0, cfg.train.epochs):
        if done:
            break
        batches = batches_for(epoch)
        i = pos0 if epoch == epoch0 else 0
        model.train()
        while i < len(batches) and not done:
            group = batches[i : i + cfg.train.grad_accum]
            n_targets = sum(b.n_targets for b in group)  # of the global batch: every process knows it
            mine = dist.share(group)
            loss_sum, my_tokens = 0.0, 0
            # a process with no micro-batch left still joins the gradient exchange, with weight 0
            for k, b in enumerate(mine or group[:1]):
                with dist.no_sync(trained, last=k == max(len(mine), 1) - 1), autocast(device, amp_dtype):
                    nll, _ = trained(
                        b.input_ids.to(device),
                        None if b.attention_mask is None else b.attention_mask.to(device),
                        b.mask.to(device),
                        None if b.position_ids is None else b.position_ids.to(device),
                    )
                    loss = nll / max(1, n_targets)
                    if not torch.isfinite(loss):
                        raise nonfinite_error("sft", step, out)
                    (loss * (dist.world if mine else 0.0)).backward()  # DDP averages over the processes
                if mine:
                    loss_sum += float(loss.detach())
                    my_tokens += b.n_tokens
            loss_sum, group_tokens = dist.sum(loss_sum, my_tokens)
            tokens_seen += int(group_tokens)
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                if cfg.optim.max_grad_norm > 0
                else torch.tensor(0.0)
            )
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            i += len(group)
            done = step >= total_steps
            tps = (tokens_seen - tok0) / max(1e-9, time.time() - t0)
            if step % cfg.train.log_every == 0 or done:
                metrics.log(
                    step,
                    {
                        "sft/loss": loss_sum,
                        "sft/lr": sched.get_last_lr()[0],
                        "sft/grad_norm": float(grad_norm),
                        "sft/tokens_per_s": tps,
                        "sft/tokens": tokens_seen,
                        "sft/epoch": epoch,
                    },
                )
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tps:.0f}", epoch=epoch)
            bar.update(1)
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and i < len(batches):
                evaluate_and_select(epoch)
                model.train()
            if cfg.train.save_every and step % cfg.train.save_every == 0 and not done:
                with dist.main_writes() as main:
                    if main:
                        save_checkpoint(
                            step_dir(out, step),
                            model,
                            tok,
                            optimizer=opt,
                            scheduler=sched,
                            state={
                                "step": step,
                                "epoch": epoch,
                                "position": i,
                                "best": best,
                                "tokens_seen": tokens_seen,
                                "total_steps": total_steps,
                            },
                        )
                        prune_checkpoints(out, cfg.train.keep_checkpoints)
        if i >= len(batches) or done:
            evaluate_and_select(epoch)
    bar.close()

    # ---------------------------------------------------------------- save
    with dist.main_writes() as main:
        if main:
            if (out / "best").exists():
                publish(out / "best", out / "final")
            else:
                save_final(out, model, tok, state={"step": step, "val_loss": None})
    final = out / "final"
    log.info("sft: done, %d steps, best validation loss %s; model in %s", step, best, final)
    return final


@torch.no_grad()
def mean_rm_score(
    model: torch.nn.Module,
    tok,
    prompts: list,
    rm: torch.nn.Module,
    rm_tok,
    max_new_tokens: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype,
) -> float:
    """Mean normalized reward of the model's greedy responses to ``prompts`` (the paper's SFT selection)."""
    from instructrl.models.generation import HFGenerator, ended_flags

    model.eval()
    with autocast(device, amp_dtype):
        gens = HFGenerator(model, tok, batch_size=batch_size).generate(
            prompts, max_new_tokens=max_new_tokens, temperature=0.0
        )
    scores = rm.score_texts(
        rm_tok,
        prompts,
        [g.text for g in gens],
        device=device,
        amp_dtype=amp_dtype,
        ended=ended_flags([g.finish_reason for g in gens], len(gens)),
    )
    return sum(scores) / len(scores)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    examples: list[sft_data.Example],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype,
    dist: Dist | None = None,
) -> float:
    """Token-mean NLL of the response tokens of ``examples`` (nan when there are none); with several
    processes, each scores its share of the batches and the sums are added up."""
    if not examples:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    starts = list(range(0, len(ordered), batch_size))
    for s in dist.share(starts) if dist else starts:
        b = sft_data.collate(ordered[s : s + batch_size], pad_id)
        with autocast(device, amp_dtype):
            nll, n = response_lm_loss(model, b.input_ids.to(device), b.attention_mask.to(device), b.mask.to(device))
        total += float(nll)
        count += n
    if dist:
        total, count = dist.sum(total, count)
    return total / max(1, count)
