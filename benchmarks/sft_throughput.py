"""SFT throughput: instructrl's SFT loop and TRL's SFTTrainer side by side, in one run.

Same model (default: SmolLM2-135M-Instruct), same demonstrations (the built-in demo set, users
split 85/15 into train/held-out), same maximum length, batch size, optimizer (AdamW, betas
0.9/0.95, cosine decay with 5% warm-up, clip 1.0), one epoch, bf16 autocast on both. Reported:
real (non-pad) tokens per second of each training loop, the ratio, and the held-out loss of each
final model measured by the same function, which must agree within noise.

    .venv/bin/python benchmarks/sft_throughput.py [--model default] [--batch 8] [--max-len 512]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: trl, datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="builtin:demo")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training conversations (0 = all)")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0 = all cores); 1 is steadier on a busy machine"
    )
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    import torch

    from instructrl.config import load_config
    from instructrl.models.loading import load_model, load_tokenizer, resolve_model_path
    from instructrl.records import write_jsonl
    from instructrl.sft import data as sft_data
    from instructrl.sft.config import SFTConfig
    from instructrl.sft.train import evaluate, run
    from instructrl.utils.metrics import read_metrics

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    model_path = resolve_model_path(args.model)
    tok = load_tokenizer(model_path)
    demos = sft_data.load_demonstrations(args.data)
    train_demos, held_demos = sft_data.user_split(demos, 0.15, seed=0)
    train_convs = sft_data.to_conversations(train_demos, 2, 3, seed=0)
    if args.limit:
        train_convs = train_convs[: args.limit]
    held_ex, _ = sft_data.tokenize(tok, sft_data.to_conversations(held_demos, 2, 3, seed=0), args.max_len)
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    # train conversations as plain demonstrations (few-shot already expanded), identical for both
    from instructrl.records import Demonstration

    train_file = work / "train.jsonl"
    write_jsonl(train_file, [Demonstration(prompt=c[:-1], response=c[-1]["content"], user_id="u") for c in train_convs])
    device, amp = torch.device("cpu"), torch.bfloat16
    load_avg = os.getloadavg()[0]

    # ------------------------------------------------------------------ instructrl
    cfg = load_config(
        SFTConfig,
        None,
        [
            f"model.name_or_path={model_path}",
            f"data.train={train_file}",
            "data.valid_fraction=0",
            f"model.max_seq_len={args.max_len}",
            f"train.batch_size={args.batch}",
            "train.epochs=1",
            "train.save_every=0",
            "run.precision=bf16",
            f"optim.lr={args.lr}",
            "optim.warmup_ratio=0.05",
            "optim.min_lr_ratio=0",
            f"run.out_dir={work / 'ours'}",
            "run.progress=true",
        ],
    )
    final = run(cfg)
    rows = [r for r in read_metrics(work / "ours") if "sft/tokens" in r]
    ours_tokens = rows[-1]["sft/tokens"]
    ours_tps = rows[-1]["sft/tokens_per_s"]
    ours_time = ours_tokens / ours_tps
    m = load_model(str(final))
    ours_held = evaluate(m, held_ex, tok.pad_token_id, args.batch, device, amp)
    ours_final_loss = rows[-1]["sft/loss"]
    del m

    # ------------------------------------------------------------------ TRL SFTTrainer
    import trl
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    ds = Dataset.from_list([{"prompt": c[:-1], "completion": [c[-1]]} for c in train_convs])
    model = load_model(model_path, tokenizer=tok)
    targs = TRLConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=int(round(0.05 * -(-len(train_convs) // args.batch))),
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=True,
        use_cpu=True,
        max_length=args.max_len,
        packing=False,
        completion_only_loss=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = SFTTrainer(model=model, args=targs, train_dataset=ds, processing_class=tok)
    trl_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t = time.time()
    trainer.train()
    trl_time = time.time() - t
    trl_tps = trl_tokens / trl_time
    trl_held = evaluate(trainer.model, held_ex, tok.pad_token_id, args.batch, device, amp)
    trl_final_loss = [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]

    res = {
        "model": Path(model_path).name,
        "train_conversations": len(train_convs),
        "held_out_examples": len(held_ex),
        "batch": args.batch,
        "max_len": args.max_len,
        "load_average_at_start": load_avg,
        "torch_threads": torch.get_num_threads(),
        "trl_version": trl.__version__,
        "ours": {
            "tokens": ours_tokens,
            "seconds": round(ours_time, 1),
            "tokens_per_s": round(ours_tps, 1),
            "final_train_loss": round(ours_final_loss, 4),
            "held_out_loss": round(ours_held, 4),
        },
        "trl": {
            "tokens": trl_tokens,
            "seconds": round(trl_time, 1),
            "tokens_per_s": round(trl_tps, 1),
            "final_train_loss": round(trl_final_loss, 4),
            "held_out_loss": round(trl_held, 4),
        },
        "ratio_tokens_per_s": round(ours_tps / trl_tps, 2),
    }
    print(json.dumps(res, indent=2))
    print(
        f"\nSFT throughput: instructrl {ours_tps:.0f} tok/s, TRL {trl.__version__} SFTTrainer {trl_tps:.0f} tok/s "
        f"-> ratio {ours_tps / trl_tps:.2f}x; held-out loss {ours_held:.4f} vs {trl_held:.4f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
