"""``instructrl curate`` on the public OASST and Self-Instruct prompts (configs/tiny/curate.yaml)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("langid")
pytest.importorskip("pyap")

from instructrl.cli import main  # noqa: E402
from instructrl.records import Prompt, read_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_curate_real_prompt_sets(shared_data, tiny_model_dir, tmp_path):
    out = tmp_path / "curate"
    user_oriented = shared_data / "self_instruct/user_oriented_instructions.jsonl"
    # the tiny config reads ../shared/data relative to the repository root; point it at shared_data
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/tiny/curate.yaml").read_text())
    # a fourth input with real users: the app each user-oriented instruction was written for
    # (curated here only to exercise users with many prompts; it is evaluation data, never trained on)
    cfg["inputs"].append(
        {
            "path": str(user_oriented),
            "name": "user_oriented",
            "source": "labeler",
            "fields": {"text": "instruction", "input": "instances.0.input", "user_id": "motivation_app"},
        }
    )
    for i, path in enumerate(
        ["oasst/prompt_lottery_en_250_text.jsonl", "oasst/en_100_tree.jsonl", "self_instruct/seed_tasks.jsonl"]
    ):
        cfg["inputs"][i]["path"] = str(shared_data / path)
    cfg_path = tmp_path / "curate.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    args = [
        "curate",
        "--config",
        str(cfg_path),
        f"run.out_dir={out}",
        f"stats.tokenizer={tiny_model_dir}",
        "cap.max_per_user=5",
    ]
    assert main(args) == 0

    rep = json.loads((out / "report.json").read_text())
    apps = Counter(json.loads(line)["motivation_app"] for line in open(user_oriented))
    expected_capped = sum(max(0, n - 5) for n in apps.values())
    assert [i["read"] for i in rep["inputs"]] == [250, 100, 175, 252]
    assert rep["summary"]["bad"] == 0
    removed = {f["step"]: f["removed"] for f in rep["filters"]}
    # the user-oriented set was written by app; its users are capped at 5 prompts each
    assert removed["user_cap"] == expected_capped > 0
    assert rep["inputs"][3]["kept"] == sum(min(n, 5) for n in apps.values())  # no duplicates among them

    splits = {s: read_jsonl(out / f"{s}.jsonl", Prompt) for s in ("train", "valid", "test")}
    total = sum(len(v) for v in splits.values())
    assert total == rep["summary"]["kept"] == 777 - sum(removed.values())
    users = {s: {p.user_id for p in recs} for s, recs in splits.items()}
    assert (
        not (users["train"] & users["valid"])
        and not (users["train"] & users["test"])
        and not (users["valid"] & users["test"])
    )
    per_user = Counter(p.user_id for recs in splits.values() for p in recs)
    assert max(per_user.values()) == 5
    assert set(per_user) >= {f"{app}" for app in apps}
    # every split has prompts; train is the largest
    assert min(len(v) for v in splits.values()) > 0 and len(splits["train"]) > len(splits["valid"]) + len(
        splits["test"]
    )
    # the OASST trees carry a demonstration (the first reply) and the tiny tokenizer counted it
    assert rep["demonstration_tokens"]["all"]["count"] == 100 + 175
    assert rep["tokenizer"] == str(tiny_model_dir)
    langs = rep["languages"]
    assert langs["en"]["all"] >= 0.95 * total
    assert rep["check"]["ok"] and rep["check"]["prompts"] == {s: len(v) for s, v in splits.items()}
    # emails in Self-Instruct seed tasks are masked
    texts = [p.prompt for recs in splits.values() for p in recs if isinstance(p.prompt, str)]
    assert not any("@" in t and ".com" in t and "[EMAIL]" not in t for t in texts)
    assert rep["pii"]["records_by_entity"].get("email", 0) >= 2
