"""``instructrl rm score``: normalized rewards for a JSONL of prompt/response, and held-out evaluation.

Input is either objects with ``prompt`` and ``response`` (Sample or Demonstration records, or any
JSONL with those two fields; other fields are kept; a ``finish_reason`` of ``"length"`` marks a
response that was cut off, read without EOS), written back with a ``score`` field, or
preference data in any format ``instructrl rm`` reads; then every response gets a score, the
output records are Rankings with ``meta.scores``, and the pairwise accuracy is reported in
``metrics.json``. Writes ``out_dir/{config.yaml, scores.jsonl, metrics.json}``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from instructrl.config import save_config
from instructrl.models.generation import ended_flags
from instructrl.models.scalar import load_reward_model
from instructrl.records import (
    RecordError,
    Sample,
    atomic_write_text,
    from_dict,
    iter_json_lines,
    require_records,
    write_jsonl,
)
from instructrl.rm.config import RMScoreConfig
from instructrl.rm.data import RankedExample, RMBatch, collate, encode_rankings, length_rule_accuracy
from instructrl.rm.importers import load_rankings
from instructrl.rm.loss import pair_stats, per_prompt_loss
from instructrl.utils.device import autocast, resolve_device, resolve_precision

log = logging.getLogger(__name__)


def score_batch(rm: torch.nn.Module, b: RMBatch, device: torch.device, shared: bool = True) -> torch.Tensor:
    """[sum K] scores of a batch: each prompt computed once (``shared``), or K full sequences."""
    if shared:
        return rm.forward_shared(
            b.prompt_ids.to(device),
            b.prompt_mask.to(device),
            b.response_ids.to(device),
            b.response_mask.to(device),
            b.owner.to(device),
        )
    return rm(b.input_ids.to(device), b.attention_mask.to(device))


class BatchScorer(torch.nn.Module):
    """:func:`score_batch` as a module over the reward model's parameters, so that a data-parallel wrapper
    (DDP) runs it as its forward and exchanges the gradients of its backward."""

    def __init__(self, rm: torch.nn.Module, device: torch.device, shared: bool):
        super().__init__()
        self.rm, self.device, self.shared = rm, device, shared

    def forward(self, b: RMBatch) -> torch.Tensor:
        return score_batch(self.rm, b, self.device, self.shared)


@torch.no_grad()
def evaluate(
    rm: torch.nn.Module,
    examples: list[RankedExample],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype,
    progress: bool = False,
    desc: str = "rm eval",
    return_scores: bool = False,
    shared: bool = True,
) -> dict[str, Any]:
    """Held-out metrics: loss (K-way, mean over prompts), pairwise accuracy, mean margin, accuracy per
    K and per dataset, counts. ``return_scores`` adds ``scores``: the K scores of every example."""
    if not examples:
        return {}
    was_training = rm.training
    rm.eval()
    order = sorted(range(len(examples)), key=lambda i: examples[i].longest)
    loss_sum, correct, margin, n_pairs = 0.0, 0.0, 0.0, 0
    by_k: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    by_ds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    scores_out: list[list[float]] = [[] for _ in examples]
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, dynamic_ncols=True, leave=False):
        idx = order[s : s + batch_size]
        b = collate([examples[i] for i in idx], pad_id)
        with autocast(device, amp_dtype):
            scores = score_batch(rm, b, device, shared).float().cpu()
        loss_sum += float(per_prompt_loss(scores, b.pairs).sum())
        st = pair_stats(scores, b.pairs)
        correct += float(st["correct"].sum())
        margin += float(st["margin"].sum())
        n_pairs += len(b.pair_dataset)
        for c, k, ds in zip(st["correct"].tolist(), b.pair_k.tolist(), b.pair_dataset):
            by_k[k][0] += c
            by_k[k][1] += 1
            by_ds[ds][0] += c
            by_ds[ds][1] += 1
        if return_scores:
            off = 0
            for i in idx:
                scores_out[i] = scores[off : off + examples[i].k].tolist()
                off += examples[i].k
    rm.train(was_training)
    out: dict[str, Any] = {
        "loss": loss_sum / len(examples),
        "accuracy": correct / max(1, n_pairs),
        "margin": margin / max(1, n_pairs),
        "pairs": n_pairs,
        "prompts": len(examples),
    }
    for k in sorted(by_k):
        out[f"accuracy_k{k}"] = by_k[k][0] / by_k[k][1]
    if len(by_ds) > 1 or (by_ds and next(iter(by_ds))):
        for ds in sorted(by_ds):
            out[f"accuracy@{ds}"] = by_ds[ds][0] / by_ds[ds][1]
    if return_scores:
        out["scores"] = scores_out
    return out


def _read_prompt_responses(path: str) -> list[dict]:
    rows = []
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise RecordError(where, None, f"expected a JSON object, got {type(obj).__name__}")
        # validate the two fields that matter like a Sample record (other fields are kept as they are)
        from_dict(Sample, {k: obj[k] for k in ("prompt", "response") if k in obj}, where)
        rows.append(obj)
    return require_records(rows, path, "prompt/response lines")


def _is_preference_file(path: str) -> bool:
    p = Path(path)
    if p.is_dir():
        return True
    for _, obj in iter_json_lines(p):
        return isinstance(obj, dict) and ("response" not in obj or "responses" in obj)
    return False


def run(cfg: RMScoreConfig) -> Path:

    if not cfg.input:
        raise ValueError("rm score: set input=<file.jsonl> (prompt/response records or preference data)")
    out = Path(cfg.run.out_dir)
    save_config(cfg, out)
    device = resolve_device(cfg.run.device)
    amp_dtype = resolve_precision(cfg.run.precision, device)
    rm, tok = load_reward_model(cfg.model, device=device, normalized=not cfg.raw)
    dest = out / "scores.jsonl"
    if _is_preference_file(cfg.input):
        res = load_rankings(cfg.input, cfg.format)
        log.info("rm score: %s", res.summary())
        examples, stats = encode_rankings(tok, res.rankings, cfg.max_seq_len)
        kept = [r for r in res.rankings if len(set(r.ranks)) > 1]
        # one ranking per forward pass group; batch_size counts sequences, so divide by the mean K
        mean_k = max(1, round(sum(len(r.responses) for r in kept) / max(1, len(kept))))
        m = evaluate(
            rm,
            examples,
            tok.pad_token_id,
            max(1, cfg.batch_size // mean_k),
            device,
            amp_dtype,
            progress=cfg.run.progress,
            desc="rm score",
            return_scores=True,
        )
        scores = m.pop("scores", [])
        for r, sc in zip(kept, scores):
            r.meta = {**r.meta, "scores": sc}
        write_jsonl(dest, kept)
        m["longer_wins"] = length_rule_accuracy(kept, True)
        m["shorter_wins"] = length_rule_accuracy(kept, False)
        m["truncated"] = stats.truncated
        m["skipped"] = dict(res.skipped)
        atomic_write_text(out / "metrics.json", json.dumps(m, indent=2) + "\n")
        log.info(
            "rm score: %d comparisons, accuracy %.4f (longer wins %.4f, shorter wins %.4f); %s",
            m.get("pairs", 0),
            m.get("accuracy", float("nan")),
            m["longer_wins"],
            m["shorter_wins"],
            dest,
        )
        return dest
    rows = _read_prompt_responses(cfg.input)
    values = rm.score_texts(
        tok,
        [r["prompt"] for r in rows],
        [r["response"] for r in rows],
        max_len=cfg.max_seq_len,
        batch_size=cfg.batch_size,
        device=device,
        amp_dtype=amp_dtype,
        progress=cfg.run.progress,
        ended=ended_flags([r.get("finish_reason") for r in rows], len(rows)),
    )
    for r, v in zip(rows, values):
        r["score"] = v
    write_jsonl(dest, rows)
    mean = sum(values) / max(1, len(values))
    atomic_write_text(out / "metrics.json", json.dumps({"count": len(values), "mean_score": mean}, indent=2) + "\n")
    log.info("rm score: %d responses scored, mean %.4f; %s", len(values), mean, dest)
    return dest
