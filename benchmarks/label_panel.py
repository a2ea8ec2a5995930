"""Simulated labelers on real policy samples, and the rubric's batching against per-item scoring.

1. Samples K responses per prompt from the default model (SmolLM2-135M-Instruct) for a seeded
   subset of the built-in prompt set, then runs ``instructrl label`` on them: the calibrated
   agreement of the training and held-out panels, the noise they needed, tie rate, Likert mean and
   flag rates of the default model.
2. Times the rubric on those responses two ways in one run: ours (``Rubric.assess_many``: one
   batched toxicity call and one batched langid pass) against the plain per-response way a script
   would do it (``langid.classify`` and ``profanity_check.predict_prob`` for each response), and
   prints the ratio.

    .venv/bin/python benchmarks/label_panel.py --prompts 48 --k 4
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", default="runs/bench/label")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from instructrl.records import Prompt, Sample, read_jsonl, write_jsonl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = read_jsonl(ROOT / "src/instructrl/data/prompts/prompts.jsonl", Prompt)
    prompts = random.Random(args.seed).sample(prompts, min(args.prompts, len(prompts)))
    write_jsonl(out / "prompts.jsonl", prompts)
    samples_path = out / "samples.jsonl"
    if not samples_path.exists():
        from instructrl.models.generation import HFGenerator

        gen = HFGenerator.from_pretrained("default", batch_size=16, progress=True)
        t0 = time.time()
        batch = [p.prompt for p in prompts for _ in range(args.k)]
        gens = gen.generate(batch, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
        print(f"sampled {len(gens)} responses in {time.time() - t0:.0f} s")
        samples = [
            Sample(
                prompt=p.prompt,
                response=g.text,
                id=f"{p.id}-{i % args.k}",
                policy="default",
                finish_reason=g.finish_reason,
                meta={"prompt_id": p.id},
            )
            for i, (p, g) in enumerate(zip([p for p in prompts for _ in range(args.k)], gens))
        ]
        write_jsonl(samples_path, samples)
    samples = read_jsonl(samples_path, Sample)

    # 1. label
    from instructrl.config import load_config
    from instructrl.label.config import LabelConfig
    from instructrl.label.run import run

    cfg = load_config(
        LabelConfig,
        ROOT / "configs/default/label.yaml",
        [
            f"run.out_dir={out / 'label'}",
            f"samples={samples_path}",
            f"prompts={out / 'prompts.jsonl'}",
            "run.progress=false",
        ],
    )
    t0 = time.time()
    run(cfg)
    t_label = time.time() - t0
    metrics = json.loads((out / "label" / "metrics.json").read_text())
    print(f"labeled {len(samples)} responses ({len(prompts)} prompts) in {t_label:.1f} s, calibration included")
    for k, v in metrics.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")

    # 2. rubric batching vs per item (fresh caches on both sides; identifiers and models loaded first)
    import langid
    from profanity_check import predict_prob

    from instructrl.label.rubric import Rubric
    from instructrl.text.language import get_identifier

    by_id = {p.id: p for p in prompts}
    items = [(by_id[s.meta["prompt_id"]], s.response, s.finish_reason) for s in samples]
    get_identifier((), 1024)
    langid.classify("warm up")
    predict_prob(["warm up"])
    Rubric().assess_many(items[:2])
    t0 = time.time()
    Rubric().assess_many(items)
    t_ours = time.time() - t0
    t0 = time.time()
    for _, r, _ in items:  # the per-response way: one classifier call and one langid call each
        predict_prob([r])
        langid.classify(r)
    t_peer = time.time() - t0
    print(
        f"rubric on {len(items)} responses: ours (batched, all checks) {t_ours:.2f} s; per-response "
        f"toxicity + langid only {t_peer:.2f} s; ratio {t_peer / t_ours:.1f}x"
    )


if __name__ == "__main__":
    main()
