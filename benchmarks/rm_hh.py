"""Reward model on Anthropic HH-RLHF: held-out accuracy per split beside the length-only rules.

Trains (unless the run directory already holds a finished run) with
``configs/default/rm_hh.yaml``: the default model, helpful-base + harmless-base, 30% of the
conversations held out by a hash of the first user turn. Then prints, per split, the number of
held-out comparisons, the reward model's pairwise accuracy and the accuracy of "the longer response
wins" and "the shorter response wins" on exactly those comparisons, with the margin over the better
rule (target: at least +3 points on each split), plus the comparisons seen in training and the
wall time of the training loop.

    nice -n 5 .venv/bin/python benchmarks/rm_hh.py [--config configs/default/rm_hh.yaml] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/default/rm_hh.yaml"))
    ap.add_argument("--no-train", action="store_true", help="only report on the finished run in run.out_dir")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    args = ap.parse_args()

    from instructrl.config import load_config
    from instructrl.rm.config import RMConfig
    from instructrl.rm.data import length_rule_accuracy
    from instructrl.rm.train import load_data, run
    from instructrl.utils.metrics import read_metrics

    cfg = load_config(RMConfig, args.config, args.overrides)
    out = Path(cfg.run.out_dir)
    if not args.no_train:
        run(cfg)
    _, held = load_data(cfg)  # the same held-out split the run used
    rows = read_metrics(out)
    train_rows = [r for r in rows if "rm/loss" in r]
    ev = [r for r in rows if "rm/eval_accuracy" in r][-1]
    report = {
        "pairs_seen": train_rows[-1]["rm/pairs_seen"],
        "train_wall_s": train_rows[-1]["time"],
        "tokens_seen": train_rows[-1]["rm/tokens_seen"],
        "splits": {},
    }
    print(
        f"comparisons seen in training: {report['pairs_seen']}, training loop {report['train_wall_s'] / 60:.1f} min, "
        f"{report['tokens_seen']} tokens; whole run (incl. evaluation) {ev['time'] / 60:.1f} min"
    )
    print(f"{'split':22s} {'held-out':>8s} {'RM acc':>7s} {'longer':>7s} {'shorter':>7s} {'RM - best rule':>14s}")
    for ds in sorted({r.meta["dataset"] for r in held}):
        part = [r for r in held if r.meta["dataset"] == ds]
        acc = ev[f"rm/eval_accuracy@{ds}"]
        longer, shorter = length_rule_accuracy(part, True), length_rule_accuracy(part, False)
        gap = acc - max(longer, shorter)
        report["splits"][ds] = {
            "pairs": len(part),
            "accuracy": acc,
            "longer_wins": longer,
            "shorter_wins": shorter,
            "margin_over_best_rule": gap,
        }
        print(
            f"{ds:22s} {len(part):8d} {100 * acc:6.1f}% {100 * longer:6.1f}% {100 * shorter:6.1f}% {100 * gap:+13.1f}"
        )
    print(f"{'all':22s} {ev['rm/eval_pairs']:8d} {100 * ev['rm/eval_accuracy']:6.1f}%")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
