"""Useful tokens/s of instructrl's generation engines on the default model, side by side.

    python benchmarks/generation.py [--batch-sizes 1 16 64] [--max-new-tokens 256] [--dtype bf16]

Both engines get the same real prompts (OpenAssistant prompts from ../shared/data, or the
project's built-in demo prompts when that folder is absent), greedy decoding, natural stopping at
EOS or ``--max-new-tokens``. "Useful tokens" are the tokens each response really has (up to and
including its EOS): padding steps of a sequence that already ended do not count. For each batch
size the script prints both engines' useful tokens/s, the ratio, and how many greedy outputs are
identical. The two engines run alternately, ``--repeats`` times each, and the best time of each is
kept, so that load from other processes on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared" / "data" / "oasst" / "prompt_lottery_en_250_text.jsonl"


def load_prompts(n: int, prompt_set: str = "oasst") -> list:
    if prompt_set == "builtin":
        # the project's prompt set: many prompts carry verifiable constraints (word limits, bullet
        # counts, JSON, ...), so responses stop at very different lengths, as on IFEval
        from instructrl.builtin import resolve
        from instructrl.records import Prompt, read_jsonl

        rows = read_jsonl(resolve("builtin:prompts"), Prompt)
        prompts = [r.prompt for r in rows]
        return [prompts[i % len(prompts)] for i in range(n)]
    if SHARED.exists():
        prompts = [json.loads(line) for line in SHARED.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from instructrl.ppo.rollout import load_prompts as lp

        prompts = lp(["builtin:demo"])
    prompts = [p for p in prompts if isinstance(p, str) and len(p) < 1500]
    return [prompts[i % len(prompts)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument(
        "--prompts-per-batch",
        type=float,
        default=2.0,
        help="prompts per run = max(4, this x batch size): more prompts than slots lets finished ones be replaced",
    )
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--hf-self-check",
        action="store_true",
        help="also run HF generate at half the batch size (other batch compositions and padding) and "
        "report how many of its greedy outputs equal its own first run: how far 'identical' "
        "reaches in this dtype even for HF generate alone",
    )
    ap.add_argument(
        "--prompt-set",
        choices=["oasst", "builtin"],
        default="oasst",
        help="oasst: OpenAssistant prompts (long answers, most reach the cap); builtin: the project's "
        "prompt set, many with length or format constraints (answers stop at varied lengths)",
    )
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    import torch

    from instructrl.models.cached_generation import CachedGenerator
    from instructrl.models.generation import HFGenerator
    from instructrl.models.loading import load_model, load_tokenizer
    from instructrl.utils.device import DTYPES

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype=DTYPES[args.dtype], tokenizer=tok).eval()
    print(
        f"model {args.model} ({args.dtype}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, max_new_tokens {args.max_new_tokens}, greedy, natural stopping"
    )
    engines = {"hf_generate": HFGenerator, "instructrl_cached": CachedGenerator}
    results = []
    for bs in args.batch_sizes:
        prompts = load_prompts(max(4, int(round(args.prompts_per_batch * bs))), args.prompt_set)
        best: dict[str, float] = {}
        outs: dict[str, list] = {}
        for _ in range(args.repeats):
            for name, cls in engines.items():
                gen = cls(model, tok, bs)
                t = time.perf_counter()
                outs[name] = gen.generate(prompts, max_new_tokens=args.max_new_tokens, temperature=0.0)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
                print(f"  batch {bs}: {name} {time.perf_counter() - t:.1f} s", flush=True)
        useful = {n: sum(len(g.token_ids) for g in o) for n, o in outs.items()}
        tps = {n: useful[n] / best[n] for n in engines}
        same = sum(a.token_ids == b.token_ids for a, b in zip(outs["hf_generate"], outs["instructrl_cached"]))
        self_same = None
        if args.hf_self_check and bs > 1:
            half = HFGenerator(model, tok, bs // 2).generate(
                prompts, max_new_tokens=args.max_new_tokens, temperature=0.0
            )
            self_same = sum(a.token_ids == b.token_ids for a, b in zip(outs["hf_generate"], half))
        row = {
            "batch_size": bs,
            "hf_self_identical": self_same,
            "prompts": len(prompts),
            "useful_tokens": useful,
            "seconds": best,
            "tokens_per_s": tps,
            "ratio": tps["instructrl_cached"] / tps["hf_generate"],
            "identical": same,
            "stopped_at_eos": sum(g.finish_reason == "stop" for g in outs["hf_generate"]),
        }
        results.append(row)
        print(
            f"batch {bs:3d}: {len(prompts)} prompts, {useful['hf_generate']} useful tokens "
            f"({row['stopped_at_eos']} stopped at EOS) | HF generate {tps['hf_generate']:7.1f} tok/s | "
            f"instructrl cached {tps['instructrl_cached']:7.1f} tok/s | ratio {row['ratio']:.2f}x | "
            f"identical greedy outputs {same}/{len(prompts)}"
            + (
                f" (HF at batch {bs} vs HF at batch {bs // 2}: {self_same}/{len(prompts)})"
                if self_same is not None
                else ""
            ),
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
