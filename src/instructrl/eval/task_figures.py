"""The automatic evaluations in a run's report: the paper's figures and a table, drawn from the rows of
``task_results.json`` (:mod:`instructrl.eval.tasks.suite`) as they are, nothing recomputed but the
alignment tax's differences.

- ``truthfulqa.png``: TruthfulQA MC1 and MC2 per policy, a bar per prompt mode;
- ``toxicity.png``: RealToxicityPrompts mean toxicity of the greedy continuation per policy, a bar per
  prefix (basic, respectful, biased), one panel per scorer;
- ``alignment_tax.png``: each capability score of each policy minus the base model's.

Every bar carries its bootstrap interval. A difference's interval combines the two intervals'
half-widths in quadrature (the rule for independent estimates; the policies answer the same items,
whose errors are mostly shared, so it is wider than a paired bootstrap's would be). Display names of
policies come from the caller (``label``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

#: The scores whose change from the base model is the alignment tax: TruthfulQA MC, HellaSwag
#: (acc_norm, lm-evaluation-harness's headline) and GSM8K (strict answer match).
TAX_METRICS = {"truthfulqa": ("mc1", "mc2"), "hellaswag": ("acc_norm",), "gsm8k": ("exact_match_strict",)}
TASK_NAMES = {
    "truthfulqa": "TruthfulQA",
    "truthfulqa_gen": "TruthfulQA generation",
    "hellaswag": "HellaSwag",
    "real_toxicity_prompts": "RealToxicityPrompts",
    "gsm8k": "GSM8K",
}
MODE_NAMES = {"qa": "QA primer", "instruction": "instruction", "instruction_qa": "instruction + QA primer"}
FIGURES = {"truthfulqa": "truthfulqa.png", "toxicity": "toxicity.png", "tax": "alignment_tax.png"}

Label = Callable[[str], str]


def _plain(name: str) -> str:
    return name


def policies(rows: list[dict]) -> list[str]:
    """The evaluated policies in the order of the rows (the data-only rows have none)."""
    return list(dict.fromkeys(r["policy"] for r in rows if r["policy"]))


def key(row: dict) -> tuple[str, str, str, str]:
    """What a row measures, apart from the policy."""
    return row["task"], row["metric"], row["scorer"], row["prompt_mode"]


def cell(value: float, low: float, high: float, signed: bool = False) -> str:
    """A value with its interval, as the report's tables show it."""
    sign = "+" if signed else ""
    return f"{value:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]"


def alignment_tax(rows: list[dict], base: str = "base") -> list[dict]:
    """For every score of :data:`TAX_METRICS` and every policy but ``base``: its value minus the base
    model's (``value``), with the interval [``low``, ``high``] (half-widths combined in quadrature)."""
    by = {(r["policy"], *key(r)): r for r in rows if r["policy"]}
    out = []
    for b in rows:
        if b["policy"] != base or b["metric"] not in TAX_METRICS.get(b["task"], ()):
            continue
        for policy in policies(rows):
            r = by.get((policy, *key(b)))
            if policy == base or r is None:
                continue
            diff = r["value"] - b["value"]
            below = math.hypot(r["value"] - r["low"], b["high"] - b["value"])
            above = math.hypot(r["high"] - r["value"], b["value"] - b["low"])
            out.append(
                {
                    "task": b["task"],
                    "metric": b["metric"],
                    "scorer": b["scorer"],
                    "prompt_mode": b["prompt_mode"],
                    "policy": policy,
                    "value": diff,
                    "low": diff - below,
                    "high": diff + above,
                    "n": r["n"],
                }
            )
    return out


# --------------------------------------------------------------------------- figures


def _bars(ax, groups: list[str], series: dict[str, list[dict | None]], label: Label = _plain) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series, each with its interval."""
    width = 0.8 / max(len(series), 1)
    for j, (name, points) in enumerate(series.items()):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(points):
            if p is None:
                continue
            xs.append(i + (j - (len(series) - 1) / 2) * width)
            ys.append(p["value"])
            lo.append(max(p["value"] - p["low"], 0.0))
            hi.append(max(p["high"] - p["value"], 0.0))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=label(name), error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(groups)), groups, fontsize=8)


def _series(rows: list[dict], names: list[str], by: str) -> dict[str, list[dict | None]]:
    """Rows as series over ``names`` (policies), one series per value of the field ``by``."""
    out: dict[str, list[dict | None]] = {}
    for r in rows:
        out.setdefault(r[by], [None] * len(names))[names.index(r["policy"])] = r
    return out


def plot_truthfulqa(rows: list[dict], path: Path, confidence: float, label: Label = _plain) -> None:
    import matplotlib.pyplot as plt

    tq = [r for r in rows if r["task"] == "truthfulqa" and r["policy"]]
    names = policies(tq)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    for ax, metric in zip(axes, ("mc1", "mc2")):
        _bars(
            ax,
            [label(n) for n in names],
            _series([r for r in tq if r["metric"] == metric], names, "prompt_mode"),
            lambda m: MODE_NAMES.get(m, m),
        )
        ax.set_title(metric.upper(), fontsize=9)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("score")
    axes[0].legend(fontsize=7, loc="upper left", frameon=False)
    fig.suptitle(f"TruthfulQA multiple choice ({round(confidence * 100)}% bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_toxicity(rows: list[dict], path: Path, confidence: float, label: Label = _plain) -> None:
    import matplotlib.pyplot as plt

    tox = [r for r in rows if r["task"] == "real_toxicity_prompts" and r["metric"] == "mean_toxicity" and r["policy"]]
    names, scorers = policies(tox), list(dict.fromkeys(r["scorer"] for r in tox))
    fig, axes = plt.subplots(1, len(scorers), figsize=(max(6.0, 4.6 * len(scorers)), 3.4), squeeze=False)
    for ax, scorer in zip(axes[0], scorers):
        mine = [r for r in tox if r["scorer"] == scorer]
        _bars(ax, [label(n) for n in names], _series(mine, names, "prompt_mode"), lambda p: f"{p} prefix")
        ax.set_ylim(0, max(0.05, 1.25 * max(r["high"] for r in mine)))
        ax.set_title(scorer, fontsize=8)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    axes[0][0].set_ylabel("mean toxicity, greedy continuation")
    fig.suptitle(f"RealToxicityPrompts ({round(confidence * 100)}% bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tax_group(row: dict) -> str:
    """A score of the alignment tax, as its figure and table name it."""
    mode = MODE_NAMES.get(row["prompt_mode"], row["prompt_mode"])
    return f"{TASK_NAMES.get(row['task'], row['task'])} {row['metric']}\n({mode})"


def plot_alignment_tax(tax: list[dict], path: Path, confidence: float, label: Label = _plain) -> None:
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(tax_group(t) for t in tax))
    series: dict[str, list[dict | None]] = {}
    for t in tax:
        series.setdefault(t["policy"], [None] * len(groups))[groups.index(tax_group(t))] = t
    fig, ax = plt.subplots(figsize=(max(6.4, 1.3 * len(groups) + 2), 3.8))
    ax.axhline(0, color="0.5", linewidth=0.8)
    _bars(ax, groups, series, label)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("score minus the base model's")
    ax.set_title(f"Alignment tax ({round(confidence * 100)}% intervals; below 0: a tax)", fontsize=10)
    ax.legend(fontsize=7, ncol=len(series), loc="best", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(results: dict, out: Path, label: Label = _plain) -> dict[str, str]:
    """The figures the results allow, written to ``out``; returns {figure: file name}."""
    rows, confidence = results["rows"], results.get("confidence", 0.95)
    made = {}
    if any(r["task"] == "truthfulqa" and r["policy"] for r in rows):
        plot_truthfulqa(rows, out / FIGURES["truthfulqa"], confidence, label)
        made["truthfulqa"] = FIGURES["truthfulqa"]
    if any(r["task"] == "real_toxicity_prompts" and r["metric"] == "mean_toxicity" and r["policy"] for r in rows):
        plot_toxicity(rows, out / FIGURES["toxicity"], confidence, label)
        made["toxicity"] = FIGURES["toxicity"]
    tax = alignment_tax(rows)
    if tax:
        plot_alignment_tax(tax, out / FIGURES["tax"], confidence, label)
        made["tax"] = FIGURES["tax"]
    return made


# --------------------------------------------------------------------------- text


def _escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_markdown(results: dict, figures: dict[str, str], label: Label = _plain) -> list[str]:
    """The report's section of the automatic evaluations (Markdown lines)."""
    rows, confidence = results["rows"], results.get("confidence", 0.95)
    names = policies(rows)
    pct = f"{round(confidence * 100)}%"
    sizes = {}
    for r in rows:
        if r["policy"]:
            sizes.setdefault(r["task"], r["sample"] if r["sample"] != "all" else f"all {r['total']}")
    lines = [
        "## Automatic evaluations: truthfulness, toxicity and the alignment tax",
        "",
        f"{', '.join(label(n) for n in names)} on samples of the public data sets (`suite/task_results.json`, "
        f"instructrl eval's tasks), with {pct} bootstrap intervals over items. Items: "
        + "; ".join(f"{TASK_NAMES.get(t, t)} {s}" for t, s in sizes.items())
        + ". The base model with the few-shot prefix is the base model here: these tasks bring their own "
        "prompts (TruthfulQA's QA primer and instruction, the respectful prefix, few-shot HellaSwag and GSM8K).",
        "",
    ]
    if "truthfulqa" in figures:
        lines += [
            "### TruthfulQA",
            "",
            f"![TruthfulQA MC1 and MC2]({figures['truthfulqa']})",
            "",
            "MC1: the share of questions whose one correct answer has the highest summed log-likelihood; MC2: the "
            "normalized probability mass of the true answers. Prompt modes: the TruthfulQA paper's QA primer, "
            "InstructGPT's instruction sentence, or both.",
            "",
        ]
    if "toxicity" in figures:
        lines += [
            "### Toxicity",
            "",
            f"![RealToxicityPrompts mean toxicity]({figures['toxicity']})",
            "",
            "Mean toxicity of the greedy continuation of prompts drawn uniformly over prompt toxicity, with no "
            "instruction (basic) and behind InstructGPT's respectful one (\"Complete the following sentence in a "
            'polite, respectful, and unbiased manner:").',
            "",
        ]
    tax = alignment_tax(rows)
    if "tax" in figures and tax:
        others = [n for n in names if any(t["policy"] == n for t in tax)]
        groups = list(dict.fromkeys(tax_group(t) for t in tax))
        by = {(tax_group(t), t["policy"]): t for t in tax}
        lines += [
            "### Alignment tax",
            "",
            f"![alignment tax]({figures['tax']})",
            "",
            "Each score minus the base model's (below 0: the policy pays a tax). Intervals: the two "
            f"{pct} intervals' half-widths combined in quadrature, wider than a paired bootstrap's would be.",
            "",
            "| score | " + " | ".join(label(n) for n in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for g in groups:
            got = [by.get((g, n)) for n in others]
            lines.append(
                f"| {_escape(g)} | "
                + " | ".join(cell(t["value"], t["low"], t["high"], signed=True) if t else "" for t in got)
                + " |"
            )
        lines.append("")
    index = {(r["policy"], *key(r)): r for r in rows if r["policy"]}
    keys = list(dict.fromkeys(key(r) for r in rows if r["policy"]))
    lines += [
        "### All results",
        "",
        "| task | metric | scorer | prompt mode | items | " + " | ".join(label(n) for n in names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for k in keys:
        got = [index.get((n, *k)) for n in names]
        first = next(r for r in got if r)
        items = f"{first['n']} of {first['total']}"
        lines.append(
            f"| {k[0]} | {k[1]} | {_escape(k[2])} | {_escape(k[3])} | {items} | "
            + " | ".join(cell(r["value"], r["low"], r["high"]) if r else "" for r in got)
            + " |"
        )
    lines.append("")
    for r in rows:
        if not r["policy"] and r["metric"] == "spearman_vs_perspective":
            lines += [
                f"{_escape(r['scorer'])}: Spearman correlation with the Perspective scores stored in the data "
                f"{cell(r['value'], r['low'], r['high'])} ({_escape(r['sample'])}).",
                "",
            ]
    return lines
