"""``instructrl eval`` with an LLM judge beside the held-out panel: the tiny model's policies are judged by a
stub OpenAI-compatible server whose verdicts follow a known rule, so that every stored verdict and every
figure of results.json can be recomputed here; a judge that does not answer stops the run before sampling."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from instructrl.cli import main
from instructrl.eval.winrate import OUTCOME_VALUE
from instructrl.records import Sample, read_jsonl

from ..eval_cli import preference_args
from ..openai_stub import OpenAIStub, by_prompt

ROOT = Path(__file__).resolve().parents[2]
PAIR = re.compile(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nThink briefly", re.DOTALL)


def unreadable(a: str, b: str) -> bool:
    """The stub's pairs it answers without a verdict (the same in both orders)."""
    return (len(a) + len(b)) % 3 == 0


def verdict(text: str) -> str:
    """The stub judge: the longer response wins, equal lengths tie; some pairs get no verdict."""
    m = PAIR.search(text)
    if m is None:
        return "OK"  # the evaluation's first request, which checks that the endpoint answers
    a, b = m.group(1), m.group(2)
    if unreadable(a, b):
        return "I cannot tell."
    return "Verdict: " + ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")


def expected(x: str, base: str) -> str:
    if unreadable(x, base) or len(x) == len(base):
        return "tie"
    return "win" if len(x) > len(base) else "loss"


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """Another tiny model (other random weights): its responses differ from the tiny model's."""
    from instructrl.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-b") / "model", seed=1)


def eval_args(out: Path, tiny: Path, other: Path, panel_file: Path, *extra: str) -> list[str]:
    policies = f"[{{name: base, model: {tiny}}}, {{name: prompted, model: {tiny}, few_shot: true}}, {{name: other, model: {other}}}]"
    return preference_args(out, panel_file, policies, "kl_reference=null", "few_shot_k=2", *extra)


def judged_run(out: Path, tiny: Path, other: Path, panel_file: Path) -> list[dict]:
    """``instructrl eval`` with the stub judge; the request bodies the judge received."""
    with OpenAIStub(by_prompt(verdict)) as server:
        args = eval_args(out, tiny, other, panel_file, f"judge.base_url={server.base_url}", "judge.model=stub")
        assert main(args) == 0
        return server.requests


def test_the_llm_judge_beside_the_panel(tmp_path, tiny_model_dir, other_model_dir, tiny_panel_file):
    out = tmp_path / "eval"
    bodies = judged_run(out, tiny_model_dir, other_model_dir, tiny_panel_file)
    results = json.loads((out / "results.json").read_text())
    samples = {n: read_jsonl(out / "samples" / f"{n}.jsonl", Sample) for n in ("base", "prompted", "other")}
    pairs = [json.loads(line) for line in (out / "comparisons.jsonl").read_text().splitlines()]
    assert len(pairs) == 2 * 10 and all(p["judge"] in ("win", "tie", "loss") for p in pairs)
    assert {"win", "loss"} <= {p["judge"] for p in pairs}  # the rule decides some pairs, and some it cannot

    # every stored verdict is the stub's rule applied to the two responses (both orders agreeing)
    for n in ("prompted", "other"):
        mine = [p for p in pairs if p["policy"] == n]
        assert [p["prompt_id"] for p in mine] == [s.meta["prompt_id"] for s in samples[n]]
        assert [p["judge"] for p in mine] == [
            expected(x.response, b.response) for x, b in zip(samples[n], samples["base"])
        ]
    # one request to check the endpoint, then both orders of every pair
    assert len(bodies) == 1 + 2 * 20 and results["judge"]["requests"] == 2 * 20
    assert all(b["messages"][0]["role"] == "system" for b in bodies[1:])

    # the figures, recomputed from the stored verdicts
    rows = {r["name"]: r for r in results["policies"]}
    assert rows["base"]["judge"] is None
    for n in ("prompted", "other"):
        mine = [p for p in pairs if p["policy"] == n]
        j = rows[n]["judge"]
        assert j["pairs"] == 10
        assert j["win_rate"] == pytest.approx(sum(OUTCOME_VALUE[p["judge"]] for p in mine) / 10)
        assert (j["wins"], j["ties"], j["losses"]) == tuple(
            sum(p["judge"] == o for p in mine) for o in ("win", "tie", "loss")
        )
        assert j["win_low"] <= j["win_rate"] <= j["win_high"]
        assert j["agreement"] == pytest.approx(sum(p["judge"] == p["outcome"] for p in mine) / 10)
        assert j["agreement_low"] <= j["agreement"] <= j["agreement_high"]
        decided = [p for p in mine if "tie" not in (p["judge"], p["outcome"])]
        assert j["decided_pairs"] == len(decided)
        if decided:
            assert j["agreement_decided"] == pytest.approx(
                sum(p["judge"] == p["outcome"] for p in decided) / len(decided)
            )
        # the panel's own figures are those of the stored panel outcomes, as before
        assert rows[n]["win_rate"] == pytest.approx(sum(OUTCOME_VALUE[p["outcome"]] for p in mine) / 10)
        silent = sum(unreadable(x.response, b.response) for x, b in zip(samples[n], samples["base"]))
        assert j["unparsed"] == 2 * silent
    pooled = results["judge"]["agreement"]
    assert pooled["n"] == 20 and pooled["rate"] == pytest.approx(sum(p["judge"] == p["outcome"] for p in pairs) / 20)
    assert results["judge"]["unparsed"] == rows["prompted"]["judge"]["unparsed"] + rows["other"]["judge"]["unparsed"]
    assert results["judge"]["model"] == "stub"
    assert 0 < results["judge"]["unparsed"] < 2 * 20
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["eval/other/judge_win_rate"] == rows["other"]["judge"]["win_rate"]

    # resumed: the kept verdicts are not asked again; a policy whose verdicts are gone is asked again alone
    (out / "judge" / "other.json").unlink()
    again = judged_run(out, tiny_model_dir, other_model_dir, tiny_panel_file)
    assert len(again) == 1 + 2 * 10  # the endpoint check, then both orders of other's 10 pairs only
    rerun = json.loads((out / "results.json").read_text())
    assert [r["judge"] for r in rerun["policies"]] == [r["judge"] for r in results["policies"]]


def test_a_judge_that_does_not_answer_stops_before_sampling(
    tmp_path, tiny_model_dir, other_model_dir, tiny_panel_file, capsys
):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    out = tmp_path / "eval"
    assert (
        main(
            eval_args(out, tiny_model_dir, other_model_dir, tiny_panel_file, f"judge.base_url={url}", "judge.timeout=5")
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"the LLM judge at {url}" in err and "does not answer" in err
    assert not (out / "samples").exists() and not (out / "results.json").exists()


def test_a_judge_that_fails_midway_stops_naming_the_endpoint(
    tmp_path, tiny_model_dir, other_model_dir, tiny_panel_file
):
    out = tmp_path / "eval"
    answers = iter(range(10_000))

    def flaky(text: str) -> str:
        if next(answers) >= 5:  # the check and a few verdicts, then the server breaks
            raise RuntimeError("down")
        return verdict(text)

    with OpenAIStub(by_prompt(flaky)) as server:
        args = eval_args(
            out,
            tiny_model_dir,
            other_model_dir,
            tiny_panel_file,
            f"judge.base_url={server.base_url}",
            "judge.model=stub",
            "judge.timeout=5",
        )
        with pytest.raises(RuntimeError, match=rf"LLM judge at {re.escape(server.base_url)} \(model 'stub'\) failed"):
            main(args)
    assert not (out / "results.json").exists() and not (out / "comparisons.jsonl").exists()
