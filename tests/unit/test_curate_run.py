"""``instructrl curate`` end to end on a hand-made log whose every count is known."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("langid")
pytest.importorskip("scipy")

from instructrl.config import load_config  # noqa: E402
from instructrl.data.config import CurateConfig  # noqa: E402
from instructrl.data.curate.run import run  # noqa: E402
from instructrl.data.curate.write import check_splits  # noqa: E402
from instructrl.records import Prompt, RecordError, from_dict, read_jsonl, to_dict  # noqa: E402

ROMAN = (
    "Write a detailed essay about the history of the Roman Empire, covering its rise, "
    "the emperors, the economy and its fall in the west."
)
assert len(ROMAN) > 100

ROWS = [
    {"id": "a1", "user_id": "alice", "timestamp": "2023-01-02T00:00:00Z", "prompt": "What is the capital of France?"},
    {"id": "b1", "user_id": "bob", "timestamp": "2023-01-01T00:00:00Z", "prompt": "what is the  capital of FRANCE?"},
    {"id": "a2", "user_id": "alice", "timestamp": "2023-01-03T00:00:00Z", "prompt": ROMAN},
    {"id": "c1", "user_id": "carol", "timestamp": "2023-01-04T00:00:00Z", "prompt": ROMAN + " Also mention Byzantium."},
    *[
        {
            "id": f"h{i}",
            "user_id": "heavy",
            "timestamp": f"2023-02-0{i}T00:00:00Z",
            "prompt": f"Tell me an interesting fact about the number {i}.",
        }
        for i in range(1, 8)
    ],
    {
        "id": "d1",
        "user_id": "dave",
        "timestamp": "2023-03-01T00:00:00Z",
        "prompt": "Please email me at dave.smith@example.com about the trip to Rome.",
    },
    {
        "id": "e1",
        "user_id": "erin",
        "timestamp": "2023-03-02T00:00:00Z",
        "prompt": "Bonjour, je voudrais réserver une table pour deux personnes ce soir.",
    },
    {"id": "f1", "timestamp": "2023-03-03T00:00:00Z", "prompt": "A prompt without a user id."},
    {
        "id": "g1",
        "user_id": "gina",
        "org_id": "acme",
        "timestamp": "2023-03-04T00:00:00Z",
        "prompt": "How do I bake sourdough bread at home?",
    },
    {
        "id": "k1",
        "user_id": "hank",
        "org_id": "acme",
        "timestamp": "2023-03-05T00:00:00Z",
        "prompt": "How can I explain photosynthesis to my young daughter?",
    },
]
BROKEN_LINE = 3  # the broken JSON line is written after the first 2 rows


def write_log(path: Path) -> Path:
    lines = [json.dumps(r) for r in ROWS]
    lines.insert(BROKEN_LINE - 1, '{"id": "x", "prompt": ')
    path.write_text("\n".join(lines) + "\n")
    return path


def make_cfg(tmp_path: Path, inputs: list[dict], *overrides: str) -> CurateConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp_path / "curate.yaml"
    import yaml

    cfg_path.write_text(
        yaml.safe_dump(
            {
                "run": {"out_dir": str(tmp_path / "out"), "seed": 0, "progress": False},
                "inputs": inputs,
                "on_error": "skip",
                "lang": {"keep": ["en"]},
                "cap": {"max_per_user": 5, "keep": "earliest"},
                "stats": {"tokenizer": "whitespace"},
            }
        )
    )
    return load_config(CurateConfig, cfg_path, list(overrides))


def read_out(out: Path) -> dict[str, list[Prompt]]:
    return {s: read_jsonl(out / f"{s}.jsonl", Prompt) for s in ("train", "valid", "test")}


def test_every_rule_with_known_counts(tmp_path):
    log = write_log(tmp_path / "log.jsonl")
    out = run(make_cfg(tmp_path, [{"path": str(log)}]))
    rep = json.loads((out / "report.json").read_text())
    removed = {f["step"]: f["removed"] for f in rep["filters"]}
    assert removed == {
        "bad input": 2,
        "too_short": 0,
        "too_long": 0,
        "pii": 0,
        "language": 1,
        "exact_duplicate": 1,
        "shared_prefix": 1,
        "user_cap": 2,
    }
    assert rep["inputs"][0]["bad"] == {"broken record": 1, "missing user id": 1}
    assert rep["summary"]["read"] == 17 and rep["summary"]["kept"] == 10 and rep["summary"]["users"] == 6

    splits = read_out(out)
    kept = {p.id: p for recs in splits.values() for p in recs}
    # the earlier copy survives: b1 (Jan 1) over a1 (Jan 2); a2 (Jan 3) over c1 (Jan 4)
    assert sorted(kept) == sorted(["b1", "a2", "h1", "h2", "h3", "h4", "h5", "d1", "g1", "k1"])
    assert kept["d1"].prompt == "Please email me at [EMAIL] about the trip to Rome."
    assert rep["pii"]["records_by_entity"] == {"email": 1} and rep["pii"]["records_masked"] == 1
    assert all(p.lang == "en" for p in kept.values())
    for name, recs in splits.items():
        assert all(p.split == name for p in recs)
    users = {name: {p.user_id for p in recs} for name, recs in splits.items()}
    assert (
        not users["train"] & users["valid"]
        and not users["train"] & users["test"]
        and not users["valid"] & users["test"]
    )
    assert sum(map(len, splits.values())) == 10
    assert rep["check"]["ok"] and rep["check"]["prompts"] == {k: len(v) for k, v in splits.items()}
    heavy = [s for s, recs in splits.items() if any(p.user_id == "heavy" for p in recs)]
    assert len(heavy) == 1 and rep["splits"][heavy[0]]["max_prompts_per_user"] == 5
    assert (out / "config.yaml").exists() and "## What each filter removed" in (out / "report.md").read_text()
    # the written lines are exactly what the shared record writer would write (no nulls, no empty meta)
    for s in ("train", "valid", "test"):
        for line in (out / f"{s}.jsonl").read_text().splitlines():
            obj = json.loads(line)
            assert obj == to_dict(from_dict(Prompt, obj))


def test_drop_policy_and_stop_policy(tmp_path):
    log = write_log(tmp_path / "log.jsonl")
    out = run(make_cfg(tmp_path, [{"path": str(log)}], "pii.action=drop"))
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["kept"] == 9 and rep["pii"]["records_dropped"] == 1
    assert "d1" not in {p.id for recs in read_out(out).values() for p in recs}
    with pytest.raises(RecordError, match=rf"log.jsonl:{BROKEN_LINE}: not valid JSON"):
        run(make_cfg(tmp_path, [{"path": str(log)}], "on_error=stop"))
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with pytest.raises(RecordError, match=r"clean.jsonl:14: field 'user_id': missing user id"):
        run(make_cfg(tmp_path, [{"path": str(clean)}], "on_error=stop"))


def test_unreadable_file_is_counted_or_stops(tmp_path):
    log = write_log(tmp_path / "log.jsonl")
    missing = tmp_path / "nope.jsonl"
    out = run(make_cfg(tmp_path, [{"path": str(log)}, {"path": str(missing)}]))
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"][1]["bad"] == {"unreadable file": 1} and rep["summary"]["kept"] == 10
    with pytest.raises(RecordError, match="nope.jsonl: file not found"):
        run(make_cfg(tmp_path, [{"path": str(missing)}], "on_error=stop"))


def test_truncated_file_keeps_what_was_read(tmp_path):
    import gzip

    rows = [
        {"id": f"t{i}", "user_id": f"u{i % 50}", "prompt": f"Question number {i}: why is the sky blue on planet {i}?"}
        for i in range(3000)
    ]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 3 // 4])  # the end of the stream is missing
    out = run(make_cfg(tmp_path, [{"path": str(path)}], "lang.keep=[]", "cap.max_per_user=0"))
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"][0]["bad"] == {"unreadable file": 1}
    assert 1000 < rep["summary"]["kept"] < 3000 and rep["summary"]["kept"] == rep["inputs"][0]["read"]
    with pytest.raises(RecordError, match="cut.jsonl.gz: cannot read"):
        run(make_cfg(tmp_path, [{"path": str(path)}], "on_error=stop"))


def test_same_seed_same_output_other_seed_other_split(tmp_path):
    log = write_log(tmp_path / "log.jsonl")
    a = run(make_cfg(tmp_path / "a", [{"path": str(log)}]))
    b = run(make_cfg(tmp_path / "b", [{"path": str(log)}]))
    for s in ("train", "valid", "test"):
        assert (a / f"{s}.jsonl").read_bytes() == (b / f"{s}.jsonl").read_bytes()
    assignments = set()
    for seed in range(6):
        out = run(make_cfg(tmp_path / f"s{seed}", [{"path": str(log)}], f"run.seed={seed}"))
        assignments.add(tuple(sorted((p.id, p.split) for recs in read_out(out).values() for p in recs)))
    assert len(assignments) > 1


def test_split_by_org_keeps_an_org_together(tmp_path):
    log = write_log(tmp_path / "log.jsonl")
    for seed in range(4):
        out = run(make_cfg(tmp_path / str(seed), [{"path": str(log)}], "split.by=org", f"run.seed={seed}"))
        where = {p.id: s for s, recs in read_out(out).items() for p in recs}
        assert where["g1"] == where["k1"]  # gina and hank share the organization acme
        assert check_splits(out, "org")["ok"]


def test_check_splits_catches_a_user_in_two_splits(tmp_path):
    from instructrl.data.curate.write import CurationError

    for name, user in (("train", "u1"), ("valid", "u2"), ("test", "u1")):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"prompt": "x", "user_id": user, "split": name}) + "\n")
    with pytest.raises(CurationError, match="train&test"):
        check_splits(tmp_path)


def _flat_rows() -> list[dict]:
    keys = ["id", "user_id", "org_id", "timestamp", "prompt"]
    return [{k: r.get(k) for k in keys} for r in ROWS]


def test_csv_parquet_and_hf_dataset_agree_with_jsonl(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    csv_path = tmp_path / "log.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(_flat_rows()[0]))
        w.writeheader()
        w.writerows(_flat_rows())
    pq_path = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pylist(_flat_rows()), pq_path)
    paths = {"jsonl": jsonl, "csv": csv_path, "parquet": pq_path}
    datasets = pytest.importorskip("datasets")
    hf_dir = tmp_path / "hf"
    datasets.Dataset.from_list(_flat_rows()).save_to_disk(str(hf_dir))
    paths["hf"] = hf_dir

    outputs = {}
    for fmt, path in paths.items():
        out = run(make_cfg(tmp_path / fmt, [{"path": str(path), "name": "log"}]))
        outputs[fmt] = {s: (out / f"{s}.jsonl").read_text() for s in ("train", "valid", "test")}
        rep = json.loads((out / "report.json").read_text())
        assert rep["summary"]["kept"] == 10 and rep["inputs"][0]["bad"] == {"missing user id": 1}, fmt
    assert outputs["csv"] == outputs["jsonl"]
    assert outputs["parquet"] == outputs["jsonl"]
    assert outputs["hf"] == outputs["jsonl"]


def test_chat_messages_and_field_paths(tmp_path):
    rows = [
        {
            "conv": {
                "turns": [
                    {"role": "user", "content": "hi there"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "call me at 415-555-2671 please"},
                ]
            },
            "who": {"name": "zed"},
        },
        {"conv": {"turns": [{"role": "assistant", "content": "hello"}]}, "who": {"name": "amy"}},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run(
        make_cfg(
            tmp_path, [{"path": str(path), "fields": {"messages": "conv.turns", "user_id": "who.name"}}], "lang.keep=[]"
        )
    )
    recs = [p for recs in read_out(out).values() for p in recs]
    assert len(recs) == 1 and recs[0].type == "chat" and recs[0].category == "chat"
    assert recs[0].prompt[-1]["content"] == "call me at [PHONE] please" and recs[0].user_id == "zed"
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"][0]["bad"] == {"bad field 'conv.turns'": 1}


def test_worker_processes_write_the_same_files(tmp_path):
    log = write_log(tmp_path / "log.jsonl")
    here = run(make_cfg(tmp_path / "here", [{"path": str(log)}], "batch_size=4"))
    pool = run(make_cfg(tmp_path / "pool", [{"path": str(log)}], "batch_size=4", "workers=2"))
    for s in ("train", "valid", "test"):
        assert (here / f"{s}.jsonl").read_bytes() == (pool / f"{s}.jsonl").read_bytes()
    a, b = (json.loads((d / "report.json").read_text()) for d in (here, pool))
    assert a["filters"] == b["filters"] and a["summary"] == b["summary"] and a["languages"] == b["languages"]
    with pytest.raises(RecordError, match=rf"log.jsonl:{BROKEN_LINE}: not valid JSON"):
        run(make_cfg(tmp_path / "stop", [{"path": str(log)}], "batch_size=4", "workers=2", "on_error=stop"))


def test_token_sample_counts_a_stable_subset(tmp_path):
    from instructrl.data.select import hash64

    rows = [
        {"id": f"s{i}", "user_id": f"u{i}", "prompt": f"Tell me something new about topic number {i} please"}
        for i in range(400)
    ]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run(make_cfg(tmp_path, [{"path": str(path)}], "lang.keep=[]", "stats.token_sample=0.25"))
    rep = json.loads((out / "report.json").read_text())
    expected = sum(hash64(r["prompt"]) < int(0.25 * 2**64) for r in rows)
    assert rep["prompt_tokens"]["all"]["count"] == expected and 60 < expected < 140
    assert rep["summary"]["kept"] == 400
    assert rep["prompt_tokens"]["all"]["min"] == rep["prompt_tokens"]["all"]["max"] == 9  # whitespace words


@pytest.mark.parametrize("workers", [0, 2])
def test_bom_is_accepted_and_invalid_utf8_is_named_by_line(tmp_path, workers):
    good = [json.dumps(r).encode() for r in ROWS[:4]]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b"\n".join(good) + b"\n")
    out = run(make_cfg(tmp_path / "a", [{"path": str(bom)}], f"workers={workers}"))
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["read"] == 4 and rep["inputs"][0]["bad"] == {}
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(
        b"\n".join(good[:2] + ['{"id": "z", "user_id": "zoe", "prompt": "caf\xe9"}'.encode("latin-1")] + good[2:])
        + b"\n"
    )
    with pytest.raises(RecordError, match=r"latin1\.jsonl:3: not valid UTF-8 .*save the file as UTF-8"):
        run(make_cfg(tmp_path / "b", [{"path": str(bad)}], "on_error=stop", f"workers={workers}"))
    out = run(make_cfg(tmp_path / "c", [{"path": str(bad)}], f"workers={workers}"))
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["read"] == 5 and rep["inputs"][0]["bad"] == {"broken record": 1}
