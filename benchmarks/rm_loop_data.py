"""How many ranked prompts the default loop's reward model needs: held-out agreement against rules.

Takes a finished `instructrl run` directory (default `runs/default`) and asks what its reward model
is missing. It samples K responses of the run's SFT model (the run's `rm_sampling` settings, 64-row
batches) for the first N training prompts (the RM prompts, then the PPO and SFT prompts; never a
test prompt), has the run's training panel rank them exactly as the `rankings` step does, trains a
reward model with the run's `rm` settings on the first 64, 128, ... of them, and scores every
reward model on the same held-out judgement: the held-out panel's ranking of the five policies'
responses to each test prompt (the run's `eval/samples`), as the report's "RM accuracy" does.

Beside them, on the same pairs: the rules "the response that was not cut off wins", "the shorter
response wins", and the ceiling: the training panel's mean noise-free quality (what a reward model
that learned the training panel perfectly would score).

    .venv/bin/python benchmarks/rm_loop_data.py [--run runs/default] [--prompts 64 128 210] [--k 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POLICIES = ["base", "base_prompted", "sft", "ppo", "ppo_ptx"]


def heldout_judgement(run: Path):
    """(test prompts, groups of the five policies' responses, the held-out panel's ranks)."""
    from instructrl.label.panel import Panel
    from instructrl.records import Prompt, Sample, read_jsonl

    prompts = read_jsonl(run / "curate/prompts/test.jsonl", Prompt)
    samples = {n: read_jsonl(run / f"eval/samples/{n}.jsonl", Sample) for n in POLICIES}
    groups = [
        (p, [samples[n][i].response for n in POLICIES], [samples[n][i].finish_reason for n in POLICIES])
        for i, p in enumerate(prompts)
    ]
    held = Panel.load(f"{run / 'rankings/panels.json'}#heldout")
    held.prefetch([(p, r, f) for p, rs, fs in groups for r, f in zip(rs, fs)])
    return prompts, groups, [r.ranks for r in held.rank_many(groups, seed=0)]


def ranked_training_data(run: Path, out: Path, n: int, k: int) -> Path:
    """K samples of the SFT model for the first n training prompts, ranked by the training panel."""
    import torch

    from instructrl.eval.sample import load_policy, sample_prompts
    from instructrl.label.labeler import rng_for
    from instructrl.label.panel import Panel
    from instructrl.models.engines import make_generator
    from instructrl.pipeline.config import SamplingConfig
    from instructrl.records import Prompt, read_jsonl, write_jsonl
    from instructrl.utils.device import autocast

    dest = out / f"rankings_{n}x{k}.jsonl"
    if dest.exists():
        return dest
    # only the sampling settings: a run's config.yaml from before run.threads replaced threads still reads
    sc = SamplingConfig(**yaml.safe_load((run / "config.yaml").read_text())["rm_sampling"])
    pool = [p for role in ("rm", "ppo", "sft") for p in read_jsonl(run / f"curate/prompts/{role}.jsonl", Prompt)]
    prompts = pool[:n]
    model, tok, device = load_policy(str(run / "sft/final"), device="cpu", dtype=sc.dtype)
    gen = make_generator(
        model, tok, engine=sc.engine, batch_size=64, max_prompt_tokens=sc.max_prompt_tokens, progress=True
    )
    t = time.perf_counter()
    samples = sample_prompts(
        gen,
        prompts,
        n=k,
        policy="scale",
        max_new_tokens=sc.max_new_tokens,
        temperature=sc.temperature,
        top_p=sc.top_p,
        seed=0,
        amp=autocast(device, torch.bfloat16),
    )
    print(f"sampled {len(samples)} responses in {time.perf_counter() - t:.0f} s")
    by = defaultdict(list)
    for s in samples:
        by[s.meta["prompt_id"]].append(s)
    train = Panel.load(f"{run / 'rankings/panels.json'}#train")
    rankings = []
    for p in prompts:
        ss = by[p.id]
        frs = [s.finish_reason for s in ss]
        r = train.rank(p, [s.response for s in ss], rng_for(0, "rank", p.id, 0), frs)
        r.meta["finish_reasons"] = frs
        rankings.append(r)
    write_jsonl(dest, rankings)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/default", help="a finished `instructrl run` directory")
    ap.add_argument("--prompts", type=int, nargs="+", default=[64, 128, 210], help="training prompts per reward model")
    ap.add_argument("--k", type=int, default=4, help="responses per prompt")
    ap.add_argument("--out", default=None, help="work folder (default: RUN/rm_data)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from instructrl.config import load_config
    from instructrl.eval.winrate import ranking_accuracy
    from instructrl.label.panel import Panel
    from instructrl.models.scalar import load_reward_model
    from instructrl.records import Ranking, read_jsonl, write_jsonl
    from instructrl.rm.config import RMConfig
    from instructrl.rm.train import run as rm_run

    run = Path(args.run)
    out = Path(args.out or run / "rm_data")
    out.mkdir(parents=True, exist_ok=True)
    prompts, groups, ranks = heldout_judgement(run)
    train_panel = Panel.load(f"{run / 'rankings/panels.json'}#train")
    rows = {}
    ceiling = [
        np.mean([lab.qualities(p, rs, fs) for lab in train_panel.labelers], axis=0).tolist() for p, rs, fs in groups
    ]
    rows["ceiling: training panel's mean quality"] = ranking_accuracy(ceiling, ranks)
    rows["rule: not cut off wins"] = ranking_accuracy(
        [[float(f != "length") for f in fs] for _, _, fs in groups], ranks
    )
    rows["rule: shorter wins"] = ranking_accuracy([[-len(r) for r in rs] for _, rs, _ in groups], ranks)

    def score(rm_dir: str) -> tuple[float, int]:
        rm, tok = load_reward_model(rm_dir)
        per = [
            rm.score_texts(
                tok,
                [p.prompt for p in prompts],
                [g[1][j] for g in groups],
                max_len=832,
                amp=torch.bfloat16,
                ended=[g[2][j] != "length" for g in groups],
            )
            for j in range(len(POLICIES))
        ]
        return ranking_accuracy([[per[j][i] for j in range(len(POLICIES))] for i in range(len(prompts))], ranks)

    rows["the run's reward model"] = score(str(run / "rm/final"))
    data = read_jsonl(ranked_training_data(run, out, max(args.prompts), args.k), Ranking)
    for n in args.prompts:
        part = out / f"rankings_first{n}.jsonl"
        write_jsonl(part, data[:n])
        rm_out = out / f"rm_{n}"
        cfg = load_config(
            RMConfig,
            run / "rm/config.yaml",
            [
                f"run.out_dir={rm_out}",
                f"data.train=[{part}]",
                "data.eval_fraction=0",
                "run.progress=false",
                "train.save_every=0",
            ],
        )
        t = time.perf_counter()
        rm_run(cfg)
        acc, pairs = score(str(rm_out / "final"))
        shutil.rmtree(rm_out)  # 0.5 GB each
        rows[f"reward model on {n} prompts x K={args.k} ({sum(len(r.responses) for r in data[:n])} responses)"] = (
            acc,
            pairs,
        )
        print(f"{n} prompts: trained in {time.perf_counter() - t:.0f} s, held-out agreement {acc:.3f}")
    print(f"\nagreement with the held-out panel's ranking of the 5 policies' responses ({len(prompts)} test prompts)")
    for name, (acc, pairs) in rows.items():
        print(f"  {name:60s} {acc:6.1%}  ({pairs} pairs)")
    (out / "results.json").write_text(
        json.dumps({k: {"accuracy": a, "pairs": n} for k, (a, n) in rows.items()}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
