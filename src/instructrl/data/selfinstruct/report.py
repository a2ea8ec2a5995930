"""The Self-Instruct report: counts, drops by reason, classification share, and the distribution of
ROUGE-L overlap between each new instruction and its most similar seed (the paper's Figure 3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from instructrl.records import atomic_write_text

if TYPE_CHECKING:
    from instructrl.data.selfinstruct.config import SelfInstructConfig
    from instructrl.data.selfinstruct.state import State

BINS = np.round(np.linspace(0.0, 1.0, 11), 2)


def summarize(state: State, threshold: float) -> dict:
    kept = state.tasks
    n_cls = sum(t.is_classification for t in kept)
    overlaps = np.array([t.meta.get("rouge_l_seed", 0.0) for t in kept], dtype=float)
    hist, _ = np.histogram(overlaps, bins=BINS)
    dropped = {k.split("/", 1)[1]: v for k, v in sorted(state.counts.items()) if k.startswith("dropped/")}
    return {
        "steps": state.step,
        "seed_tasks": len(state.seeds),
        "seed_classification": sum(t.is_classification for t in state.seeds),
        "generated_instructions": state.counts["generated"],
        "kept_tasks": len(kept),
        "kept_rate": round(len(kept) / state.counts["generated"], 4) if state.counts["generated"] else 0.0,
        "dropped": dropped,
        "classification_tasks": n_cls,
        "classification_share": round(n_cls / len(kept), 4) if kept else 0.0,
        "classification_unparsed": state.counts["classification_unparsed"],
        "instances": sum(len(t.instances) for t in kept),
        "instances_with_input": sum(1 for t in kept for i in t.instances if i.input),
        "instance_drops": dict(sorted(state.instance_drops.items())),
        "rouge_l_seed": {
            "threshold": threshold,
            "mean": round(float(overlaps.mean()), 4) if len(overlaps) else None,
            "median": round(float(np.median(overlaps)), 4) if len(overlaps) else None,
            "bins": BINS.tolist(),
            "counts": hist.tolist(),
        },
    }


def plot_overlap(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = summary["rouge_l_seed"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.bar(r["bins"][:-1], r["counts"], width=0.1, align="edge", color="#4c72b0", edgecolor="white")
    ax.axvline(r["threshold"], color="#c44e52", linestyle="--", label=f"novelty threshold {r['threshold']}")
    ax.set_xlabel("ROUGE-L F1 with the most similar seed instruction")
    ax.set_ylabel("new instructions")
    ax.set_title(f"Overlap of {summary['kept_tasks']} new instructions with the seeds")
    ax.set_xlim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def to_markdown(s: dict) -> str:
    lines = [
        "# Self-Instruct report",
        "",
        "| | |",
        "|---|---|",
        f"| steps | {s['steps']} |",
        f"| seed tasks | {s['seed_tasks']} ({s['seed_classification']} classification) |",
        f"| generated instructions | {s['generated_instructions']} |",
        f"| kept tasks | {s['kept_tasks']} ({100 * s['kept_rate']:.1f}%) |",
        f"| classification share | {100 * s['classification_share']:.1f}% ({s['classification_tasks']}) |",
        f"| instances | {s['instances']} ({s['instances_with_input']} with input) |",
        f"| mean ROUGE-L with nearest seed | {s['rouge_l_seed']['mean']} |",
        "",
        "## Dropped instructions by reason",
        "",
        "| reason | count |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in s["dropped"].items()] or ["| (none) | 0 |"]
    lines += ["", "## Dropped instances by reason", "", "| reason | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["instance_drops"].items()] or ["| (none) | 0 |"]
    lines += ["", "![ROUGE-L overlap with the seeds](rouge_overlap.png)", ""]
    return "\n".join(lines)


def write_report(out: Path, state: State, cfg: SelfInstructConfig) -> dict:
    import json

    summary = summarize(state, cfg.filters.max_rouge_l)
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", to_markdown(summary))
    plot_overlap(summary, out / "rouge_overlap.png")
    return summary
