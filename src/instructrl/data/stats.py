"""The curation report: JSON for machines, Markdown for people, mirroring the InstructGPT paper's
appendix tables (prompts per split and source, prompts per user, prompt and demonstration lengths
per split and per category, languages, use-case categories) plus what each filter removed."""

from __future__ import annotations

from typing import Any

import numpy as np

from instructrl.data.select import SPLITS, STATUS_NAMES
from instructrl.records import CATEGORIES, SOURCES


def length_stats(values: np.ndarray) -> dict:
    """count, mean, std, min, 25%, 50%, 75%, max (numpy's linear-interpolation quantiles)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"count": 0}
    q = np.quantile(v, [0.25, 0.5, 0.75])
    return {
        "count": int(v.size),
        "mean": round(float(v.mean()), 2),
        "std": round(float(v.std()), 2),
        "min": int(v.min()),
        "25%": round(float(q[0]), 2),
        "50%": round(float(q[1]), 2),
        "75%": round(float(q[2]), 2),
        "max": int(v.max()),
    }


def _table(rows: dict[str, dict], cols: list[str]) -> dict[str, dict]:
    return {r: {c: int(v.get(c, 0)) for c in cols} for r, v in rows.items()}


def build_report(cfg: Any, names: list[str], reader: Any, status: np.ndarray, split: np.ndarray, check: dict) -> dict:
    cols = reader.cols
    kept = split >= 0
    sp = split[kept]
    user = cols.np("user")[kept]
    tokens = cols.np("tokens")[kept]
    ref = cols.np("ref_tokens")[kept]
    source = cols.np("source")[kept]
    lang = cols.np("lang")[kept]
    cat = cols.np("category")[kept]
    n_bad = sum(reader.bad.values())
    n_read = sum(reader.read.values())

    inputs = []
    for i, (inp, name) in enumerate(zip(cfg.inputs, names)):
        in_kept = cols.np("input")[kept] == i
        inputs.append(
            {
                "name": name,
                "path": inp.path,
                "read": int(reader.read[name]),
                "bad": {reason: int(n) for (nm, reason), n in sorted(reader.bad.items()) if nm == name},
                "kept": int(in_kept.sum()),
            }
        )

    filters = [{"step": "bad input", "removed": int(n_bad)}]
    for step in ("too_short", "too_long", "pii", "language"):
        filters.append({"step": step, "removed": int(reader.dropped.get(step, 0))})
    for code, step in STATUS_NAMES.items():
        filters.append({"step": step, "removed": int((status == code).sum())})

    splits = {}
    for s, name in enumerate(SPLITS):
        m = sp == s
        users, per_user = np.unique(user[m], return_counts=True)
        splits[name] = {
            "prompts": int(m.sum()),
            "users": int(len(users)),
            "avg_prompts_per_user": round(float(per_user.mean()), 2) if len(users) else 0.0,
            "max_prompts_per_user": int(per_user.max()) if len(users) else 0,
            "by_source": {SOURCES[k]: int(n) for k, n in zip(*np.unique(source[m], return_counts=True))},
        }

    counted = tokens >= 0  # -2: not in the token-count sample (stats.token_sample)
    prompt_tokens = {name: length_stats(tokens[counted & (sp == s)]) for s, name in enumerate(SPLITS)}
    prompt_tokens["all"] = length_stats(tokens[counted])
    by_category = {CATEGORIES[c]: length_stats(tokens[counted & (cat == c)]) for c in np.unique(cat).tolist()}
    has_ref = ref >= 0
    demo_tokens = {}
    if has_ref.any():
        demo_tokens = {name: length_stats(ref[has_ref & (sp == s)]) for s, name in enumerate(SPLITS)}
        demo_tokens["all"] = length_stats(ref[has_ref])

    def crosstab(codes: np.ndarray, labels: list[str]) -> dict[str, dict]:
        rows = {}
        for c in np.unique(codes).tolist():
            m = codes == c
            row = {name: int((m & (sp == s)).sum()) for s, name in enumerate(SPLITS)}
            row["all"] = int(m.sum())
            rows[labels[c]] = row
        return dict(sorted(rows.items(), key=lambda kv: -kv[1]["all"]))

    summary = {
        "read": int(n_read),
        "bad": int(n_bad),
        "kept": int(kept.sum()),
        **{name: splits[name]["prompts"] for name in SPLITS},
        "users": int(len(np.unique(user))),
        "pii_masked": int(reader.pii_masked_records),
        "pii_dropped": int(reader.pii_dropped_records),
    }
    return {
        "summary": summary,
        "inputs": inputs,
        "filters": filters,
        "pii": {
            "action": cfg.pii.action,
            "records_masked": int(reader.pii_masked_records),
            "records_dropped": int(reader.pii_dropped_records),
            "records_by_entity": dict(sorted((k, int(v)) for k, v in reader.pii_records.items())),
        },
        "splits": splits,
        "split_config": {
            "by": cfg.split.by,
            "method": cfg.split.method,
            "seed": cfg.run.seed,
            "targets": {"train": cfg.split.train, "valid": cfg.split.valid, "test": cfg.split.test},
        },
        "tokenizer": cfg.stats.tokenizer,
        "token_sample": cfg.stats.token_sample,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_by_category": by_category,
        "demonstration_tokens": demo_tokens,
        "languages": crosstab(lang, reader.langs),
        "categories": crosstab(cat, list(CATEGORIES)),
        "check": check,
        "errors": list(reader.errors),
    }


# --------------------------------------------------------------------------- Markdown


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


_STAT_COLS = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]


def _stat_rows(table: dict[str, dict]) -> list[list[Any]]:
    return [[k] + [v.get(c, "") for c in _STAT_COLS] for k, v in table.items() if v.get("count")]


def render_markdown(r: dict) -> str:
    s = r["summary"]
    out = [
        "# Prompt curation report",
        "",
        f"{s['read']} records read, {s['bad']} bad, {s['kept']} kept: "
        f"{s['train']} train / {s['valid']} valid / {s['test']} test from {s['users']} users "
        f"(split by {r['split_config']['by']}, method {r['split_config']['method']}, "
        f"seed {r['split_config']['seed']}).",
        "",
        "## Inputs",
        "",
    ]
    out += _md_table(
        ["input", "path", "read", "bad", "kept"],
        [
            [i["name"], i["path"], i["read"], ", ".join(f"{k}: {v}" for k, v in i["bad"].items()) or 0, i["kept"]]
            for i in r["inputs"]
        ],
    )
    out += ["## What each filter removed", "", "In pipeline order; each step sees what the previous ones left.", ""]
    out += _md_table(["step", "removed"], [[f["step"], f["removed"]] for f in r["filters"]])
    p = r["pii"]
    out += [
        f"## Personal data ({p['action']})",
        "",
        f"{p['records_masked']} records masked, {p['records_dropped']} dropped. Records per entity found:",
        "",
    ]
    out += _md_table(["entity", "records"], [[k, v] for k, v in p["records_by_entity"].items()] or [["(none)", 0]])
    out += ["## Prompts per split and source", ""]
    sources = sorted({src for v in r["splits"].values() for src in v["by_source"]})
    out += _md_table(
        ["split"] + sources + ["total"],
        [[name] + [v["by_source"].get(src, 0) for src in sources] + [v["prompts"]] for name, v in r["splits"].items()],
    )
    out += ["## Prompts per user", ""]
    out += _md_table(
        ["split", "users", "prompts", "average per user", "most by one user"],
        [
            [name, v["users"], v["prompts"], v["avg_prompts_per_user"], v["max_prompts_per_user"]]
            for name, v in r["splits"].items()
        ],
    )
    sample = "" if r["token_sample"] >= 1 else f"; counted on a {r['token_sample']:.0%} hash sample of the prompts"
    out += [f"## Prompt lengths in tokens ({r['tokenizer']}{sample}) per split", ""]
    out += _md_table(["split"] + _STAT_COLS, _stat_rows(r["prompt_tokens"]))
    out += ["## Prompt lengths in tokens per category", ""]
    out += _md_table(["category"] + _STAT_COLS, _stat_rows(r["prompt_tokens_by_category"]))
    if r["demonstration_tokens"]:
        out += ["## Demonstration lengths in tokens", ""]
        out += _md_table(["split"] + _STAT_COLS, _stat_rows(r["demonstration_tokens"]))
    out += ["## Languages (langid)", ""]
    out += _md_table(
        ["language", *SPLITS, "all"], [[k, *(v[x] for x in SPLITS), v["all"]] for k, v in r["languages"].items()]
    )
    out += ["## Use-case categories", ""]
    out += _md_table(
        ["category", *SPLITS, "all"], [[k, *(v[x] for x in SPLITS), v["all"]] for k, v in r["categories"].items()]
    )
    c = r["check"]
    shared = sum(c["users_shared"].values())
    out += [
        "## Check",
        "",
        f"Re-read the written files: {', '.join(f'{v} {k}' for k, v in c['prompts'].items())} prompts; "
        f"users shared between splits: {shared} "
        f"({'ok' if c['ok'] else 'FAILED'}).",
        "",
    ]
    if r["errors"]:
        out += ["## First bad records", ""] + [f"- {e}" for e in r["errors"]] + [""]
    return "\n".join(out)
