"""Reward-model training on K-way rankings: instructrl's `rm` stage against TRL's RewardTrainer, in one run.

Two data sets: OpenAssistant's human rankings (../shared/data/oasst, K = 2..9, mostly 3) and a
synthetic set with K = 9 (the top-ranked OASST reply of each group, with 0%, 10%, ..., 80% of its
words replaced by words from other replies, ranked in that order). Each is split by conversation.

Both sides train the same model from the same initialization for one epoch over the same
comparisons, with the same token ids (prompt cut from the left to the same maximum length), the same
optimizer (AdamW, lr constant, betas 0.9/0.95, no weight decay, clip 1.0), the same number of
optimizer steps and bf16 autocast:

* ours: the `rm` stage; each prompt is one batch element, its K responses are forwarded once and
  all C(K,2) comparisons are formed from the K scores; by default the prompt itself is computed
  once for its K responses (KV cache), and `--no-share` runs the variant without that as well;
* TRL: RewardTrainer on the rankings expanded into chosen/rejected pairs, as its users do today:
  2 sequences per comparison, C(K,2) comparisons per prompt.

Printed: wall and CPU time of each training loop (CPU seconds of the process: the figure that
other jobs on a shared machine do not inflate), sequences and tokens forwarded, held-out pairwise
accuracy of each final model (the same evaluation function for both), and the time ratios.

    .venv/bin/python benchmarks/rm_kway.py [--layers 4] [--max-len 128] [--k9-train 48]

The model defaults to the default model (SmolLM2-135M-Instruct) cut to its first ``--layers``
decoder layers, so that the run fits a 2-core CPU; ``--layers 0`` keeps all 30.
Needs the ``bench`` extra (``pip install -e '.[bench]'``: trl, datasets).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
OASST = ROOT.parent / "shared" / "data" / "oasst" / "en_100_tree.jsonl"


def cut_model(name: str, layers: int, dest: Path) -> str:
    """The model with only its first ``layers`` decoder layers (0 keeps it whole), saved to ``dest``."""
    from instructrl.models.loading import load_model, load_tokenizer, resolve_model_path

    path = resolve_model_path(name)
    if not layers:
        return path
    tok = load_tokenizer(path)
    model = load_model(path, tokenizer=tok)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:layers]
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


def datasets_for(args) -> dict[str, tuple[list, list]]:
    from instructrl.records import Demonstration
    from instructrl.rm.data import split_by_conversation, synthetic_rankings
    from instructrl.rm.importers import load_rankings

    oasst = load_rankings(OASST).rankings
    train, held = split_by_conversation(oasst, 0.2, salt="bench")
    best = [
        Demonstration(
            prompt=r.prompt, response=r.responses[r.ranks.index(min(r.ranks))], id=r.meta["conversation"] + r.id
        )
        for r in oasst
    ]
    syn = synthetic_rankings(best, 9, seed=0)
    syn_train, syn_held = split_by_conversation(syn, 0.25, salt="bench")
    return {"oasst": (train, held), "synthetic_k9": (syn_train[: args.k9_train], syn_held[: args.k9_eval])}


def run_ours(model_path: str, train, held, work: Path, args, share: bool) -> dict:
    from instructrl.config import load_config
    from instructrl.records import write_jsonl
    from instructrl.rm.config import RMConfig
    from instructrl.rm.train import run
    from instructrl.utils.metrics import read_metrics

    write_jsonl(work / "train.jsonl", train)
    write_jsonl(work / "held.jsonl", held)
    out = work / ("ours" if share else "ours_noshare")
    cfg = load_config(
        RMConfig,
        None,
        [
            f"model.name_or_path={model_path}",
            f"model.max_seq_len={args.max_len}",
            f"run.out_dir={out}",
            "run.precision=bf16",
            "run.progress=false",
            "run.resume=false",
            f"data.train=[{work / 'train.jsonl'}]",
            f"data.eval=[{work / 'held.jsonl'}]",
            "data.demonstrations=[]",
            f"optim.lr={args.lr}",
            "optim.schedule=constant",
            "optim.warmup_ratio=0",
            "optim.weight_decay=0",
            "optim.betas=[0.9,0.95]",
            "optim.max_grad_norm=1.0",
            f"train.batch_size={args.prompts_per_step}",
            f"train.micro_batch_size={args.micro_prompts}",
            f"train.eval_batch_size={args.micro_prompts}",
            "train.save_every=0",
            f"train.share_prompt={share}",
            "train.epochs=1",
            f"run.seed={args.seed}",
        ],
    )
    run(cfg)
    rows = read_metrics(out)
    last = [r for r in rows if "rm/loss" in r][-1]
    ev = [r for r in rows if "rm/eval_accuracy" in r][-1]
    return {
        "wall_s": last["time"],
        "cpu_s": last["rm/cpu_s"],
        "steps": last["step"],
        "sequences": last["rm/sequences_seen"],
        "tokens": last["rm/tokens_seen"],
        "pairs": last["rm/pairs_seen"],
        "accuracy": ev["rm/eval_accuracy"],
        "forward_passes": math.ceil(len(train) / args.micro_prompts) * (2 if share else 1),
    }


def run_trl(model_path: str, train_ex, held_ex, steps: int, work: Path, args) -> dict:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from instructrl.models.loading import load_tokenizer
    from instructrl.models.scalar import init_reward_model
    from instructrl.rm.loss import ranking_pairs
    from instructrl.rm.score import evaluate

    chosen, rejected = [], []
    for ex in train_ex:  # the same token ids as ours: rankings expanded into pairs
        for winner, loser in ranking_pairs(ex.ranks):
            chosen.append(ex.prompt + ex.responses[winner])
            rejected.append(ex.prompt + ex.responses[loser])
    n_pairs = len(chosen)
    per_step = max(1, round(n_pairs / steps))  # the same number of optimizer steps as ours
    accum = math.ceil(per_step / args.trl_micro_pairs)
    per_device = math.ceil(per_step / accum)
    tok = load_tokenizer(model_path)
    torch.manual_seed(args.seed)
    rm = init_reward_model(model_path, tokenizer=tok)
    ds = Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    cfg = RewardConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        num_train_epochs=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=True,
        use_cpu=not torch.cuda.is_available(),
        max_length=None,
        save_strategy="no",
        report_to=[],
        logging_steps=10**6,
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model=rm.hf_model, args=cfg, train_dataset=ds, processing_class=tok)
    t0, cpu0 = time.time(), time.process_time()
    out = trainer.train()
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    device = next(rm.parameters()).device
    ev = evaluate(rm, held_ex, tok.pad_token_id, args.micro_prompts, device, torch.bfloat16)
    tokens = sum(len(s) for s in chosen) + sum(len(s) for s in rejected)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "steps": out.global_step,
        "sequences": 2 * n_pairs,
        "tokens": tokens,
        "pairs": n_pairs,
        "accuracy": ev["accuracy"],
        "forward_passes": math.ceil(n_pairs / per_device),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--layers", type=int, default=4, help="keep the first N decoder layers (0: all)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--micro-prompts", type=int, default=4, help="prompts per forward pass (ours)")
    ap.add_argument("--trl-micro-pairs", type=int, default=8, help="pairs per forward pass (TRL)")
    ap.add_argument("--k9-train", type=int, default=48)
    ap.add_argument("--k9-eval", type=int, default=16)
    ap.add_argument("--only", choices=["oasst", "synthetic_k9"], default=None)
    ap.add_argument("--no-share", action="store_true", help="also run ours without computing prompts once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    import torch

    from instructrl.models.loading import load_tokenizer
    from instructrl.rm.data import encode_rankings

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    work = Path(tempfile.mkdtemp(prefix="rm-bench-"))
    model_path = cut_model(args.model, args.layers, work / "model")
    tok = load_tokenizer(model_path)
    results = {}
    for name, (train, held) in datasets_for(args).items():
        if args.only and name != args.only:
            continue
        d = work / name
        d.mkdir()
        train_ex, _ = encode_rankings(tok, train, args.max_len)
        held_ex, _ = encode_rankings(tok, held, args.max_len)
        ks = sorted({ex.k for ex in train_ex})
        print(
            f"\n== {name}: {len(train_ex)} training prompts (K {ks[0]}..{ks[-1]}, "
            f"{sum(ex.n_pairs for ex in train_ex)} comparisons), {len(held_ex)} held-out prompts "
            f"({sum(ex.n_pairs for ex in held_ex)} comparisons); model {args.model} "
            f"{f'first {args.layers} layers' if args.layers else 'whole'}, max {args.max_len} tokens",
            flush=True,
        )
        res = {"ours": run_ours(model_path, train, held, d, args, share=True)}
        if args.no_share:
            res["ours_noshare"] = run_ours(model_path, train, held, d, args, share=False)
        res["trl"] = run_trl(model_path, train_ex, held_ex, res["ours"]["steps"], d, args)
        print(
            f"{'side':14s} {'wall s':>8s} {'CPU s':>8s} {'steps':>6s} {'pairs':>7s} {'sequences':>10s} {'tokens':>9s} "
            f"{'fwd passes':>10s} {'held-out acc':>12s}"
        )
        for side, r in res.items():
            print(
                f"{side:14s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['steps']:6d} {r['pairs']:7d} {r['sequences']:10d} {r['tokens']:9d} "
                f"{r['forward_passes']:10d} {r['accuracy']:12.4f}"
            )
        ratio = res["trl"]["wall_s"] / res["ours"]["wall_s"]
        cpu_ratio = res["trl"]["cpu_s"] / res["ours"]["cpu_s"]
        print(
            f"time ratio TRL / ours: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU; accuracy ours - TRL: "
            f"{100 * (res['ours']['accuracy'] - res['trl']['accuracy']):+.1f} points",
            flush=True,
        )
        if "ours_noshare" in res:
            print(
                f"time ratio TRL / ours without prompt sharing: {res['trl']['wall_s'] / res['ours_noshare']['wall_s']:.2f}x "
                f"wall, {res['trl']['cpu_s'] / res['ours_noshare']['cpu_s']:.2f}x CPU"
            )
        results[name] = res | {"ratio": ratio, "cpu_ratio": cpu_ratio}
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
