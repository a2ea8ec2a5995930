"""Self-Instruct novelty filter: instructrl's NoveltyIndex against the reference approach.

The reference approach (as in the Self-Instruct code): tokenize the pool once with rouge_score's
default tokenizer, then for each candidate score it against every pool instruction with
``rouge_scorer._score_lcs`` in a ``multiprocessing.Pool`` (one worker per core) and drop it when
the best F1 reaches the threshold. Ours: ``instructrl.data.selfinstruct.novelty.NoveltyIndex``.

Both run here, on the same 50,000-instruction pool and the same candidates:

* ours decides every candidate (timed);
* the reference decides a stratified sample of the candidates (timed; its per-candidate time is
  extrapolated to all candidates, since scoring all of them would take hours on 2 cores);
* every decision of ours is checked against the reference on the sample (decisions and the best F1
  must be identical) and, on all candidates, against an unpruned exact scorer (rapidfuzz ``cdist``
  over the whole pool), which shows the pruning never changes a decision.

The pool is built from real instructions and questions in ../shared/data (Self-Instruct seeds and
user-oriented instructions, GSM8K questions, HH-RLHF first turns, OASST prompts, TruthfulQA
questions, HellaSwag contexts), topped up to 50,000 with variants of them (words replaced by words
from the same corpus). Candidates are a third near-copies of pool items (a few words edited, so
many land near the threshold), a third held-out real texts, a third fresh variants.

    nice -n 5 .venv/bin/python benchmarks/selfinstruct_novelty.py [--pool 50000] [--candidates 1500] [--ref-sample 15]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import random
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from rapidfuzz.distance import LCSseq  # noqa: E402
from rapidfuzz.process import cdist  # noqa: E402

from instructrl.data.selfinstruct.novelty import NoveltyIndex, rouge_tokens  # noqa: E402


def real_texts(data: Path) -> list[str]:
    texts: list[str] = []

    def jsonl(path: Path):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    texts += [r["instruction"] for r in jsonl(data / "self_instruct/seed_tasks.jsonl")]
    texts += [r["instruction"] for r in jsonl(data / "self_instruct/user_oriented_instructions.jsonl")]
    for split in ("train", "test"):
        texts += [r["question"] for r in jsonl(data / f"gsm8k/{split}.jsonl")]
    for name in ("helpful-base", "harmless-base", "helpful-rejection-sampled"):
        for r in jsonl(data / f"hh_rlhf/{name}_test.jsonl.gz"):
            first = r["chosen"].split("\n\nHuman: ", 1)[-1].split("\n\nAssistant:", 1)[0]
            texts.append(first)
    texts += [
        json.loads(line)
        for line in open(data / "oasst/prompt_lottery_en_250_text.jsonl", encoding="utf-8")
        if line.strip()
    ]
    import csv

    with open(data / "truthfulqa/TruthfulQA.csv", encoding="utf-8-sig", newline="") as fh:
        texts += [row["Question"] for row in csv.DictReader(fh)]
    texts += [r["ctx"] for r in jsonl(data / "hellaswag/hellaswag_val_sample.jsonl")]
    seen, out = set(), []
    for t in texts:
        t = " ".join(str(t).split())
        if t and t not in seen and 3 <= len(t.split()) <= 150:
            seen.add(t)
            out.append(t)
    return out


def variant(text: str, vocab: list[str], rng: random.Random, p: float) -> str:
    """Replace each word with probability p by a corpus word (drawn by frequency)."""
    return " ".join(rng.choice(vocab) if rng.random() < p else w for w in text.split())


def near_copy(text: str, vocab: list[str], rng: random.Random) -> str:
    words = text.split()
    for _ in range(rng.randint(1, max(1, len(words) // 3))):
        op = rng.random()
        k = rng.randrange(len(words))
        if op < 0.4:
            words[k] = rng.choice(vocab)
        elif op < 0.7 and len(words) > 3:
            del words[k]
        else:
            words.insert(k, rng.choice(vocab))
    return " ".join(words)


def build(pool_size: int, n_cand: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)
    real = real_texts(DATA)
    rng.shuffle(real)
    held_out, real = real[: n_cand // 3], real[n_cand // 3 :]
    vocab = [w for t in real for w in t.split()]
    pool = real[:pool_size]
    while len(pool) < pool_size:
        pool.append(variant(rng.choice(real), vocab, rng, rng.uniform(0.3, 0.7)))
    kinds, cands = [], []
    for i in range(n_cand):
        kind = ("near_copy", "held_out_real", "fresh_variant")[i % 3]
        if kind == "near_copy":
            cands.append(near_copy(rng.choice(pool), vocab, rng))
        elif kind == "held_out_real":
            cands.append(held_out[(i // 3) % len(held_out)])
        else:
            cands.append(variant(rng.choice(real), vocab, rng, 0.5))
        kinds.append(kind)
    return pool, cands, kinds


def unpruned_best(pool: list[str], cands: list[str], chunk: int = 50) -> list[float]:
    """The best ROUGE-L F1 of each candidate over the whole pool, every pair scored (rapidfuzz
    ``cdist`` on token ids, all cores), with the F1 computed as rouge_score does."""
    vocab: dict[str, int] = {}

    def ids(text: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab)) for w in rouge_tokens(text)]

    pool_ids = [ids(p) for p in pool]
    n = np.array([len(p) for p in pool_ids], dtype=np.float64)
    best = []
    for start in range(0, len(cands), chunk):
        cand_ids = [ids(c) for c in cands[start : start + chunk]]
        lcs = cdist(cand_ids, pool_ids, scorer=LCSseq.similarity, dtype=np.int32, workers=-1).astype(np.float64)
        for row, c in zip(lcs, cand_ids):
            m = len(c)
            with np.errstate(divide="ignore", invalid="ignore"):
                precision, recall = row / n, row / m
                f1 = np.where((row > 0) & (n > 0), 2 * precision * recall / (precision + recall), 0.0)
            best.append(float(f1.max()) if m else 0.0)
    return best


def reference_decide(pool_tokens: list[list[str]], candidates: list[str], threshold: float, procs: int):
    """The reference: rouge_score over the whole pool in a process pool, per candidate."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    best, seconds = [], []
    with mp.Pool(procs) as workers:
        for cand in candidates:
            t0 = time.perf_counter()
            tokens = scorer._tokenizer.tokenize(cand)
            scores = workers.map(partial(rouge_scorer._score_lcs, tokens), pool_tokens)
            best.append(max(s.fmeasure for s in scores))
            seconds.append(time.perf_counter() - t0)
    return best, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--candidates", type=int, default=1500)
    ap.add_argument("--ref-sample", type=int, default=15, help="candidates the reference scores (stratified)")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="reference worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"public data not found at {DATA}", file=sys.stderr)
        return 2
    t = args.threshold
    pool, cands, kinds = build(args.pool, args.candidates, args.seed)
    print(
        f"pool {len(pool)} instructions, {len(cands)} candidates ({', '.join(f'{k} {kinds.count(k)}' for k in sorted(set(kinds)))}); "
        f"threshold {t}; {os.cpu_count()} cores"
    )

    # ---- ours
    t0 = time.perf_counter()
    index = NoveltyIndex(pool, t)
    ours_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_hits = [index.scores_at_least(c) for c in cands]
    ours_query = time.perf_counter() - t0
    ours_drop = [bool(h) for h in ours_hits]

    # ---- unpruned exact check of every decision
    t0 = time.perf_counter()
    exact_best = unpruned_best(pool, cands)
    check_s = time.perf_counter() - t0
    mismatch_exact = sum((b >= t) != d for b, d in zip(exact_best, ours_drop))
    best_mismatch = sum(bool(h) and h[0][1] != b for h, b in zip(ours_hits, exact_best))

    # ---- reference on a stratified sample
    rng = random.Random(args.seed + 1)
    by_kind = {k: [i for i, kk in enumerate(kinds) if kk == k] for k in sorted(set(kinds))}
    sample: list[int] = []
    while len(sample) < min(args.ref_sample, len(cands)):
        for k in by_kind:
            rest = [i for i in by_kind[k] if i not in sample]
            if rest and len(sample) < args.ref_sample:
                sample.append(rng.choice(rest))
    from rouge_score import rouge_scorer

    t0 = time.perf_counter()
    tokenizer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer
    ref_pool_tokens = [tokenizer.tokenize(p) for p in pool]
    ref_build = time.perf_counter() - t0
    ref_best, ref_secs = reference_decide(ref_pool_tokens, [cands[i] for i in sample], t, args.procs)
    ref_drop = [b >= t for b in ref_best]
    mismatch_ref = sum(ref_drop[k] != ours_drop[i] for k, i in enumerate(sample))
    best_equal = sum(ref_best[k] == exact_best[i] for k, i in enumerate(sample))
    ours_sample_best = [(ours_hits[i][0][1] if ours_hits[i] else None) for i in sample]
    best_equal_pruned = sum(b is None or b == ref_best[k] for k, b in enumerate(ours_sample_best))

    ref_per = float(np.mean(ref_secs))
    ours_per = ours_query / len(cands)
    ratio = ref_per / ours_per
    total_ref = ref_build + ref_per * len(cands)
    total_ours = ours_build + ours_query
    print(f"decisions: ours drops {sum(ours_drop)}/{len(cands)}; reference sample drops {sum(ref_drop)}/{len(sample)}")
    print(
        f"agreement with the reference on its {len(sample)} candidates: {len(sample) - mismatch_ref}/{len(sample)} decisions, "
        f"best F1 bit-identical {best_equal}/{len(sample)} (pruned maxima identical {best_equal_pruned}/{len(sample)})"
    )
    print(
        f"agreement with the unpruned exact scorer on all {len(cands)} candidates: {len(cands) - mismatch_exact}/{len(cands)} "
        f"decisions, best F1 of dropped candidates identical: {sum(ours_drop) - best_mismatch}/{sum(ours_drop)}  ({check_s:.1f} s)"
    )
    print(
        f"reference ({args.procs} processes): pool tokenization {ref_build:.2f} s, {ref_per * 1000:.1f} ms per candidate "
        f"(mean of {len(sample)}, min {min(ref_secs) * 1000:.0f}, max {max(ref_secs) * 1000:.0f})"
    )
    print(
        f"ours (1 thread):        index build {ours_build:.2f} s, {ours_per * 1000:.3f} ms per candidate (all {len(cands)})"
    )
    print(f"per-candidate speed-up: {ratio:.0f}x")
    print(
        f"whole job ({len(cands)} candidates incl. tokenization/index build; reference extrapolated): "
        f"{total_ref:.0f} s vs {total_ours:.2f} s = {total_ref / total_ours:.0f}x"
    )
    ok = mismatch_ref == 0 and mismatch_exact == 0 and best_mismatch == 0 and best_equal == len(sample)
    print("ALL DECISIONS AGREE" if ok else "DECISIONS DIFFER")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "pool": len(pool),
                    "candidates": len(cands),
                    "ref_sample": len(sample),
                    "procs": args.procs,
                    "ref_ms_per_candidate": ref_per * 1000,
                    "ours_ms_per_candidate": ours_per * 1000,
                    "speedup": ratio,
                    "whole_job_speedup": total_ref / total_ours,
                    "agree": ok,
                },
                indent=2,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
