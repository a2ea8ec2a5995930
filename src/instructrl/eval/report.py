"""``report.md`` and ``report.html`` of an ``instructrl run`` directory, with matplotlib figures.

Reads what the steps wrote: ``eval/results.json`` (win rates, Likert, flags, KL, lengths, examples,
and the LLM judge's win rates and agreement with the held-out panel where eval.judge is set),
``ppo/metrics.jsonl`` and ``ppo_ptx/metrics.jsonl`` (score and KL per PPO step, held-out
pretraining loss), ``rm/final/state.json`` (held-out accuracy on the training panel's rankings),
``rankings/metrics.json`` (the panels' measured agreement), the step markers and
``timings.json`` (run time of each step), and ``suite/task_results.json`` (the automatic
evaluations; figures and table by :mod:`instructrl.eval.task_figures`). Writes ``report/{report.md,
report.html, winrate.png, flags.png, ppo.png, overopt.png, rm_accuracy.png, truthfulqa.png,
toxicity.png, alignment_tax.png}``.

    python -m instructrl.eval.report runs/default
"""

from __future__ import annotations

import html
import json
import math
import sys
from pathlib import Path
from typing import Any

from instructrl.eval import task_figures

#: Display names of the pipeline's policies (others are shown as they are named).
LABELS = {"base": "base", "base_prompted": "base + few-shot prefix", "sft": "SFT", "ppo": "PPO", "ppo_ptx": "PPO-ptx"}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _label(name: str) -> str:
    return LABELS.get(name, name)


def collect(run_dir: Path) -> dict:
    """Everything the report shows, from the files of a run."""
    d: dict[str, Any] = {"run_dir": str(run_dir)}
    d["results"] = _read_json(run_dir / "eval" / "results.json")
    d["timings"] = _read_json(run_dir / "timings.json") or []
    d["config"] = None
    if (run_dir / "config.yaml").exists():
        import yaml

        d["config"] = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    d["ppo"] = {}
    for name in ("ppo", "ppo_ptx"):
        rows = _read_metrics(run_dir / name / "metrics.jsonl")
        train = [r for r in rows if "ppo/score" in r]
        ptx = [r for r in rows if "ppo/ptx_eval_loss" in r]
        d["ppo"][name] = {
            "steps": [r["step"] for r in train],
            "score": [r["ppo/score"] for r in train],
            "kl": [r["ppo/kl"] for r in train],
            "ptx_eval": [(r["step"], float(r["ppo/ptx_eval_loss"])) for r in ptx],
            "monitor": [r for r in rows if "monitor/kl" in r],
        }
    d["best_of_n"] = _read_json(run_dir / "best_of_n" / "best_of_n.json")
    # the suite step's results, unless this run left the step out (a folder of an earlier run's may remain)
    suite_ran = not d["timings"] or any(t["step"] == "suite" for t in d["timings"])
    d["tasks"] = _read_json(run_dir / "suite" / "task_results.json") if suite_ran else None
    rm_state = _read_json(run_dir / "rm" / "final" / "state.json") or {}
    d["rm_eval"] = rm_state.get("eval") or {}
    d["labels"] = _read_json(run_dir / "rankings" / "metrics.json") or {}
    d["steps"] = {}
    for t in d["timings"]:
        marker = _read_json(run_dir / t["step"] / "pipeline.json")
        if marker:
            d["steps"][t["step"]] = marker.get("info") or {}
    return d


# --------------------------------------------------------------------------- figures


def plot_winrate(policies: list[dict], path: Path, confidence: float) -> None:
    import matplotlib.pyplot as plt

    names = [_label(p["name"]) for p in policies]
    x = list(range(len(policies)))
    y = [p["win_rate"] for p in policies]
    err = [[p["win_rate"] - p["win_low"] for p in policies], [p["win_high"] - p["win_rate"] for p in policies]]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.axhline(0.5, color="0.6", linestyle="--", linewidth=1)
    judged = [(i, p["judge"]) for i, p in enumerate(policies) if p.get("judge")]
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=5, color="C0", label="held-out panel" if judged else None)
    for i, p in enumerate(policies):
        ax.annotate(f"{p['win_rate']:.2f}", (i, p["win_rate"]), textcoords="offset points", xytext=(8, 4), fontsize=8)
    if judged:  # the LLM judge beside the panel, shifted right
        ax.errorbar(
            [i + 0.2 for i, _ in judged],
            [j["win_rate"] for _, j in judged],
            yerr=[
                [j["win_rate"] - j["win_low"] for _, j in judged],
                [j["win_high"] - j["win_rate"] for _, j in judged],
            ],
            fmt="s",
            capsize=5,
            color="C1",
            label="LLM judge",
        )
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate against SFT")
    who = "Held-out panel" + (" and LLM judge" if judged else "")
    ax.set_title(f"{who} preference (ties half, {round(confidence * 100)}% bootstrap CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_flags(policies: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    flags = list(policies[0]["flags"])
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    width = 0.8 / len(policies)
    for j, p in enumerate(policies):
        xs = [i + (j - (len(policies) - 1) / 2) * width for i in range(len(flags))]
        ax.bar(xs, [p["flags"][f] for f in flags], width, label=_label(p["name"]))
    ax.set_xticks(range(len(flags)), [f.replace("_", " ") for f in flags], rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("rate")
    ax.set_title("Metadata flags by the held-out panel", fontsize=10)
    ax.legend(fontsize=7, ncol=len(policies), loc="upper center", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ppo(ppo: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for name, m in ppo.items():
        if m["steps"]:
            a1.plot(m["steps"], m["score"], marker=".", label=_label(name))
            a2.plot(m["steps"], m["kl"], marker=".", label=_label(name))
    a1.set_xlabel("PPO step")
    a1.set_ylabel("reward-model score")
    a2.set_xlabel("PPO step")
    a2.set_ylabel("KL to SFT (nats / response)")
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overopt(best_of_n: dict | None, ppo: dict, path: Path) -> None:
    """Proxy (left) and gold (right) score against sqrt(KL to SFT): best-of-n of SFT and PPO's monitor points."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for ax, key, title in (
        (axes[0], "proxy", "proxy: learned reward model"),
        (axes[1], "gold", "gold: training panel"),
    ):
        if best_of_n:
            curve = best_of_n["curve"]
            ax.plot([c["sqrt_kl"] for c in curve], [c[key] for c in curve], marker="o", label="best-of-n (SFT)")
            for c in curve:
                ax.annotate(
                    f"n={c['n']}", (c["sqrt_kl"], c[key]), fontsize=6, xytext=(2, 2), textcoords="offset points"
                )
        for name, m in ppo.items():
            pts = [r for r in m.get("monitor", []) if f"monitor/{key}" in r]
            if pts:
                ax.plot(
                    [r["monitor/sqrt_kl"] for r in pts],
                    [r[f"monitor/{key}"] for r in pts],
                    marker=".",
                    label=_label(name),
                )
        ax.set_xlabel("sqrt(KL to SFT), sqrt(nats)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rm(bars: list[tuple[str, float, int]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color="C2")
    for i, (_, acc, n) in enumerate(bars):
        ax.text(acc + 0.01, i, f"{acc:.3f} ({n} pairs)", va="center", fontsize=8)
    ax.axvline(0.5, color="0.6", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("reward-model accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- text


def targets(policies: dict[str, dict], ppo: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's targets: (what, measured, met) — met is None where it cannot be checked."""
    out: list[tuple[str, str, bool | None]] = []
    p = policies.get("ppo")
    if p:
        out.append(
            (
                "PPO win rate against SFT >= 60% with the interval above 50%",
                f"{p['win_rate']:.3f} [{p['win_low']:.3f}, {p['win_high']:.3f}]",
                p["win_rate"] >= 0.6 and p["win_low"] > 0.5,
            )
        )
    q = policies.get("ppo_ptx")
    if p and q:
        gap = q["win_rate"] - p["win_rate"]
        out.append(("PPO-ptx within 5 points of PPO", f"{gap * 100:+.1f} points", abs(gap) <= 0.05 or gap > 0))
    lp, lq = ppo.get("ppo", {}).get("ptx_eval"), ppo.get("ppo_ptx", {}).get("ptx_eval")
    if lp and lq:
        out.append(
            (
                "PPO-ptx's held-out pretraining loss lower than PPO's",
                f"{lq[-1][1]:.4f} vs {lp[-1][1]:.4f} (SFT: {lp[0][1]:.4f})",
                lq[-1][1] < lp[-1][1],
            )
        )
    return out


def _md_cell(text: Any, limit: int = 400) -> str:
    if isinstance(text, list):  # chat messages
        text = " / ".join(f"{m['role']}: {m['content']}" for m in text)
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|") or "(empty)"


def judge_lines(r: dict) -> list[str]:
    """The LLM judge's part of the win-rate section (none where the evaluation had no judge)."""
    j = r.get("judge")
    if not j:
        return []
    a = j["agreement"]
    lines = [
        f"### LLM judge ({j['model']})",
        "",
        f"The LLM judge `{j['model']}` at {j['base_url']} compared every policy's response with SFT's on the same "
        f"test prompts, each pair asked in both orders (a win or loss only when both orders agree, else a tie): "
        f"{j['requests']} requests, {j['unparsed']} answers without a verdict (a pair with one is a tie). "
        f"Agreement with the held-out panel on the same pairs: {a['rate']:.3f} [{a['low']:.3f}, {a['high']:.3f}] "
        f"over {a['n']} pairs (a tie is a verdict of its own); over the {a['n_decided']} pairs neither called a "
        f"tie: {_fmt(a['decided'])}.",
        "",
        "| policy | judge win rate | interval | wins / ties / losses | agreement with the panel | interval | "
        "agreement without ties (pairs) | unparsed answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in r["policies"]:
        q = p.get("judge")
        if not q:
            continue
        lines.append(
            f"| {_label(p['name'])} | {q['win_rate']:.3f} | [{q['win_low']:.3f}, {q['win_high']:.3f}] | "
            f"{q['wins']} / {q['ties']} / {q['losses']} | {q['agreement']:.3f} | "
            f"[{q['agreement_low']:.3f}, {q['agreement_high']:.3f}] | {_fmt(q['agreement_decided'])} "
            f"({q['decided_pairs']}) | {q['unparsed']} |"
        )
    lines.append("")
    return lines


def render_markdown(d: dict, figures: dict[str, str]) -> str:
    r = d["results"]
    lines = [f"# instructrl run: {Path(d['run_dir']).name}", ""]
    cfg = d["config"] or {}
    prompts = d["steps"].get("curate", {}).get("prompts", {})
    labels = d["labels"]
    total = sum(t["seconds"] for t in d["timings"])
    lines += [
        f"Base model `{cfg.get('model', '?')}`; prompts: "
        + ", ".join(f"{k} {v}" for k, v in prompts.items())
        + f". Run time of all steps: {total / 60:.1f} min.",
        "",
    ]
    if labels:
        lines += [
            f"Simulated labelers: training panel agreement {_fmt(labels.get('label/agreement/train'))}, "
            f"held-out panel agreement {_fmt(labels.get('label/agreement/heldout'))}, between the panels "
            f"{_fmt(labels.get('label/agreement/train_vs_heldout'))} (pairwise, ties half; InstructGPT: 72.6% "
            "and 77.3%).",
            "",
        ]
    if r:
        pol = r["policies"]
        lines += [
            f"## Win rate against SFT ({r['prompts']} test prompts, users unseen in training)",
            "",
            f"![win rate]({figures['winrate']})",
            "",
            "| policy | win rate | interval | wins / ties / losses | Likert (1-7) | RM score | KL to SFT | "
            "words | tokens | cut |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in pol:
            lines.append(
                f"| {_label(p['name'])} | {p['win_rate']:.3f} | [{p['win_low']:.3f}, {p['win_high']:.3f}] | "
                f"{p['wins']} / {p['ties']} / {p['losses']} | {p['likert']:.2f} [{p['likert_low']:.2f}, "
                f"{p['likert_high']:.2f}] | {_fmt(p['rm_score'])} | {_fmt(p['kl'])} | {p['words']:.1f} | "
                f"{p['tokens']:.1f} | {p['cut']:.2f} |"
            )
        lines += [
            "",
            f"Sampling temperature {r['temperature']}, at most {r['max_new_tokens']} new tokens; KL is "
            "nats per response between the sampling distributions; 'cut' is the share of responses that hit "
            "the token limit.",
            "",
        ]
        lines += judge_lines(r)
        tg = targets({p["name"]: p for p in pol}, d["ppo"])
        if tg:
            lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
            lines += [f"| {w} | {m} | {'yes' if ok else 'no'} |" for w, m, ok in tg]
            lines.append("")
        flags = list(pol[0]["flags"])
        lines += [
            "## Metadata",
            "",
            f"![metadata flags]({figures['flags']})",
            "",
            "| policy | " + " | ".join(f.replace("_", " ") for f in flags) + " |",
            "|---|" + "---|" * len(flags),
        ]
        lines += [f"| {_label(p['name'])} | " + " | ".join(f"{p['flags'][f]:.2f}" for f in flags) + " |" for p in pol]
        lines.append("")
    if d.get("tasks") and d["tasks"]["rows"]:
        lines += task_figures.render_markdown(d["tasks"], figures, _label)
    if "ppo" in figures:
        lines += ["## PPO", "", f"![PPO reward and KL]({figures['ppo']})", ""]
        rows = [(n, m["ptx_eval"]) for n, m in d["ppo"].items() if m["ptx_eval"]]
        if rows:
            lines += [
                "Held-out pretraining loss (nats per token):",
                "",
                "| run | at the start (SFT) | at the end |",
                "|---|---|---|",
            ]
            lines += [f"| {_label(n)} | {pe[0][1]:.4f} | {pe[-1][1]:.4f} |" for n, pe in rows]
            lines.append("")
    if "overopt" in figures:
        bon = d.get("best_of_n") or {}
        lines += [
            "## Over-optimization",
            "",
            f"![proxy and gold score against KL]({figures['overopt']})",
            "",
            "The learned reward model (proxy) and the training panel's noise-free judgment (gold) on the "
            f"same {bon.get('prompts', '?')} held-out SFT prompts, against the square root of the KL to SFT: "
            f"best-of-n of {bon.get('samples_per_prompt', '?')} SFT samples (KL = log n - (n-1)/n) and PPO "
            "every few iterations. Where the proxy rises and gold does not, PPO exploits the reward model.",
            "",
        ]
    if "rm" in figures:
        lines += [
            "## Reward model",
            "",
            f"![reward model accuracy]({figures['rm']})",
            "",
            "Accuracy is the share of a labeler's non-tied preferences the reward model agrees with (equal "
            "scores half).",
            "",
        ]
    if r and r.get("examples"):
        names = [p["name"] for p in r["policies"]]
        lines += [
            "## Examples",
            "",
            "| prompt | " + " | ".join(_label(n) for n in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for ex in r["examples"]:
            lines.append(
                f"| {_md_cell(ex['prompt'], 300)} | " + " | ".join(_md_cell(ex["responses"][n]) for n in names) + " |"
            )
        lines.append("")
    if d["timings"]:
        lines += ["## Run time", "", "| step | seconds | |", "|---|---|---|"]
        lines += [
            f"| {t['step']} | {t['seconds']:.1f} | {'done in an earlier run' if t['skipped'] else ''} |"
            for t in d["timings"]
        ]
        lines += [f"| total | {total:.1f} | |", ""]
    return "\n".join(lines)


def render_html(markdown: str, title: str) -> str:
    """A small self-contained HTML page from the report's Markdown (headings, tables, images,
    paragraphs, inline code: the subset :func:`render_markdown` writes)."""
    import re

    def inline(s: str) -> str:
        s = html.escape(s, quote=False)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return s

    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 6px;"
        "vertical-align:top;text-align:left}img{max-width:100%}code{background:#f3f3f3}</style></head><body>"
    ]
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            m = re.match(r"!\[(.*)\]\((.*)\)", line)
            out.append(f"<p><img alt='{html.escape(m.group(1))}' src='{html.escape(m.group(2))}'></p>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells[0]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in cells[2:]]
            out.append("</table>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report/{report.md, report.html, *.png}``; returns the path of report.md."""
    import matplotlib

    matplotlib.use("Agg")
    from instructrl.records import atomic_write_text

    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    d = collect(run_dir)
    figures: dict[str, str] = {}
    r = d["results"]
    if r:
        plot_winrate(r["policies"], out / "winrate.png", r.get("confidence", 0.95))
        plot_flags(r["policies"], out / "flags.png")
        figures.update(winrate="winrate.png", flags="flags.png")
    if d["tasks"] and d["tasks"]["rows"]:
        figures.update(task_figures.write_figures(d["tasks"], out, _label))
    if any(m["steps"] for m in d["ppo"].values()):
        plot_ppo(d["ppo"], out / "ppo.png")
        figures["ppo"] = "ppo.png"
    if d["best_of_n"] or any(m["monitor"] for m in d["ppo"].values()):
        plot_overopt(d["best_of_n"], d["ppo"], out / "overopt.png")
        figures["overopt"] = "overopt.png"
    bars = []
    if d["rm_eval"].get("pairs"):
        bars.append(("training panel,\nheld-out rankings", d["rm_eval"]["accuracy"], d["rm_eval"]["pairs"]))
    for key, what in (
        ("heldout_rankings", "held-out panel,\ntest responses"),
        ("vs_baseline", "held-out panel,\nvs SFT"),
    ):
        v = (r or {}).get("rm_accuracy", {}).get(key)
        if v and v["pairs"]:
            bars.append((what, v["accuracy"], v["pairs"]))
    if bars:
        plot_rm(bars, out / "rm_accuracy.png")
        figures["rm"] = "rm_accuracy.png"
    md = render_markdown(d, figures)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", render_html(md, f"instructrl run: {run_dir.name}"))
    return out / "report.md"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m instructrl.eval.report RUN_DIR")
    print(write_report(sys.argv[1]))
