"""``instructrl label`` end to end on the built-in example, the shipped prompt set's constraints, the
LLM judge through a local stub server, and clear errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from instructrl.cli import main
from instructrl.config import load_config
from instructrl.label.config import LabelConfig
from instructrl.label.panel import Panel
from instructrl.label.rubric import FLAGS, Rubric
from instructrl.records import Demonstration, Prompt, Ranking, read_jsonl, write_jsonl
from instructrl.text.constraints import CONSTRAINT_KINDS, validate_constraint
from tests.openai_stub import OpenAIStub

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny" / "label.yaml"


def run_label(tmp_path: Path, name: str, *overrides: str) -> Path:
    out = tmp_path / name
    assert main(["label", "--config", str(TINY), f"run.out_dir={out}", *overrides]) == 0
    return out


def test_configs_load():
    for path in (TINY, ROOT / "configs" / "default" / "label.yaml"):
        cfg = load_config(LabelConfig, path)
        assert cfg.task == "rank" and 0 < cfg.panel.target_agreement < 1


def test_rank_the_builtin_example(tmp_path):
    out = run_label(tmp_path, "a")
    rankings = read_jsonl(out / "rankings.jsonl", Ranking)
    assert len(rankings) == 10 and all(len(r.responses) == 4 for r in rankings)
    assert {r.labeler_id for r in rankings} <= {"train-0", "train-1", "train-2"}
    assert all(len(r.likert) == 4 and all(set(f) == set(FLAGS) for f in r.flags) for r in rankings)
    metrics = json.loads((out / "metrics.json").read_text())
    # calibrated on these 40 responses: both panels land on their targets
    assert metrics["label/agreement/train"] == pytest.approx(0.73, abs=0.03)
    assert metrics["label/agreement/heldout"] == pytest.approx(0.77, abs=0.03)
    assert metrics["label/rankings"] == 10 and 0 <= metrics["label/tie_rate"] < 0.2
    by_id = {r.id: r for r in rankings}
    ex2 = by_id["ex-002"]  # three bullets asked
    assert ex2.flags[0]["violates_constraint"] is False and ex2.flags[2]["violates_constraint"] is True
    assert by_id["ex-004"].flags[3]["toxic"] and not by_id["ex-004"].flags[0]["toxic"]
    assert by_id["ex-010"].ranks[0] == by_id["ex-010"].ranks[3]  # identical responses tie
    assert by_id["ex-003"].flags[3]["truncated"]  # finish_reason "length"
    assert by_id["ex-003"].meta["finish_reasons"][3] == "length"  # kept for the RM (no EOS after a cut response)
    # calibrated to 73% agreement on this very spread-out set, the noise is large (sigma ~0.2 on a
    # 0-1 score), yet responses with a serious flag still score well below clean ones on average
    bad = {"toxic", "degenerate", "fails_instruction"}
    likert_bad = [x for r in rankings for x, f in zip(r.likert, r.flags) if any(f[k] for k in bad)]
    likert_ok = [x for r in rankings for x, f in zip(r.likert, r.flags) if not any(f.values())]
    assert len(likert_bad) >= 10 and len(likert_ok) >= 10
    assert sum(likert_ok) / len(likert_ok) - sum(likert_bad) / len(likert_bad) > 1.5
    # panels.json reloads as the two calibrated panels
    train = Panel.load(f"{out / 'panels.json'}#train")
    assert train.calibration.measured == pytest.approx(metrics["label/agreement/train"])
    assert (out / "config.yaml").exists() and (out / "metrics.jsonl").exists()


def test_labeling_is_deterministic_and_panels_reusable(tmp_path):
    a, b = run_label(tmp_path, "a"), run_label(tmp_path, "b")
    assert (a / "rankings.jsonl").read_text() == (b / "rankings.jsonl").read_text()
    c = run_label(tmp_path, "c", "run.seed=1")
    assert (a / "rankings.jsonl").read_text() != (c / "rankings.jsonl").read_text()
    # the held-out panel of run a labels the same data (no new calibration)
    h = run_label(tmp_path, "h", "labeler=heldout", f"panel_file={a / 'panels.json'}")
    assert {r.labeler_id for r in read_jsonl(h / "rankings.jsonl", Ranking)} <= {"heldout-0", "heldout-1"}
    assert "label/agreement/train" not in json.loads((h / "metrics.json").read_text())
    assert json.loads((h / "panels.json").read_text()) == json.loads((a / "panels.json").read_text())


def test_demonstrations(tmp_path):
    out = run_label(tmp_path, "d", "task=demonstrate")
    demos = {d.id: d for d in read_jsonl(out / "demonstrations.jsonl", Demonstration)}
    assert len(demos) == 10
    assert demos["ex-003"].meta["from"] == "reference" and demos["ex-003"].response.startswith("The capital")
    assert demos["ex-002"].response.count("\n- ") == 2  # the one with exactly three bullets
    assert demos["ex-001"].response.startswith("red leaves")  # all lowercase, as asked
    assert demos["ex-005"].response.startswith(("{", "```")) and '"year"' in demos["ex-005"].response
    assert demos["ex-007"].response.startswith("La mer scintille")
    m = json.loads((out / "metrics.json").read_text())
    assert m["label/from_reference"] == 1 and m["label/best_of_n"] == 9


def test_large_groups_are_split_and_small_ones_skipped(tmp_path):
    samples = [
        {"prompt": "Name a colour.", "response": f"Colour number {i} is nice.", "meta": {"prompt_id": "c"}}
        for i in range(12)
    ]
    samples.append({"prompt": "Lonely prompt?", "response": "Alone."})
    write_jsonl(tmp_path / "s.jsonl", samples)
    out = run_label(tmp_path, "k", f"samples={tmp_path / 's.jsonl'}", "max_k=5", "panel.calibrate=false")
    rankings = read_jsonl(out / "rankings.jsonl", Ranking)
    assert [len(r.responses) for r in rankings] == [4, 4, 4]
    assert [r.id for r in rankings] == ["c#0", "c#1", "c#2"]
    assert json.loads((out / "metrics.json").read_text())["label/skipped_prompts"] == 1


def test_bad_constraint_names_file_line_and_field(tmp_path, capsys):
    write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "Hi", "id": "a"}, {"prompt": "Hi", "id": "b", "constraints": [{"kind": "max_lines", "value": 2}]}],
    )
    write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Hi", "response": "Hello", "meta": {"prompt_id": "b"}}])
    args = [
        "label",
        "--config",
        str(TINY),
        f"run.out_dir={tmp_path / 'e'}",
        f"samples={tmp_path / 's.jsonl'}",
        f"prompts={tmp_path / 'p.jsonl'}",
    ]
    assert main(args) == 2
    assert re.search(r"p\.jsonl:2: field 'constraints': .*unknown constraint kind 'max_lines'", capsys.readouterr().err)
    assert main(["label", "--config", str(TINY), "labeler=person"]) == 2  # config error, exit code 2


def test_llm_judge_stage(tmp_path, monkeypatch):
    def judge(req):
        m = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nThink", req.text, re.DOTALL)
        if m:  # prefers the longer response
            la, lb = len(m.group(1)), len(m.group(2))
            return "Verdict: " + ("A" if la > lb else "B" if lb > la else "tie")
        return '{"likert": 5, "toxic": false}'

    with OpenAIStub(judge, api_key="k3y") as server:
        monkeypatch.setenv("JUDGE_KEY", "k3y")
        out = run_label(
            tmp_path,
            "llm",
            "labeler=llm",
            f"judge.base_url={server.base_url}",
            "judge.model=stub",
            "judge.api_key_env=JUDGE_KEY",
        )
        rankings = read_jsonl(out / "rankings.jsonl", Ranking)
    assert len(rankings) == 10 and {r.labeler_id for r in rankings} == {"llm:stub"}
    for r in rankings:
        lengths = [len(x) for x in r.responses]
        expected = [sorted(set(lengths), reverse=True).index(n) + 1 for n in lengths]
        assert r.ranks == expected and r.likert == [5, 5, 5, 5]
    m = json.loads((out / "metrics.json").read_text())
    assert m["label/judge_requests"] == 10 * (12 + 4) and m["label/judge_unparsed"] == 0
    assert not (out / "panels.json").exists()


def test_shipped_prompt_set_constraints_are_checkable():
    path = ROOT / "src" / "instructrl" / "data" / "prompts" / "prompts.jsonl"
    if not path.exists():
        pytest.skip("the built-in prompt set is not there")
    prompts = read_jsonl(path, Prompt)
    kinds = set()
    for p in prompts:
        for j, c in enumerate(p.constraints or []):
            kinds.add(validate_constraint(c, f"{p.id}: constraints[{j}]")[0])
    assert kinds <= set(CONSTRAINT_KINDS) and len(kinds) >= 10
    # every reference answer satisfies its own prompt's constraints, and raises no flag
    rubric = Rubric(toxicity="lexicon")
    refs = [p for p in prompts if p.reference]
    assessments = rubric.assess_many([(p, p.reference, "stop") for p in refs])
    assert [p.id for p, a in zip(refs, assessments) if a.constraints_satisfied < 1] == []
    assert [p.id for p, a in zip(refs, assessments) if any(a.flags().values())] == []
