"""`instructrl run` end to end on the tiny preset: killed in the middle and resumed, every output
checked, a re-run skips every step, a changed setting redoes only what depends on it, an
interrupted evaluation resumes without sampling again what it already has, and the automatic
evaluations (suite step, on a few items of ../shared/data) reach the report as figures and a table
that equals task_results.json."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from instructrl.config import load_config
from instructrl.eval.report import LABELS
from instructrl.eval.task_figures import TAX_METRICS
from instructrl.eval.winrate import preference_accuracy, ranking_accuracy
from instructrl.label.rubric import FLAGS
from instructrl.models.generation import ended_flags, is_cut
from instructrl.pipeline.config import PipelineConfig
from instructrl.pipeline.run import run
from instructrl.records import Demonstration, Prompt, Ranking, Sample, read_jsonl
from instructrl.utils.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "run" / "tiny.yaml"
DATA = ROOT.parent / "shared" / "data"
# the suite reads the public data sets by path (from the project's root in the preset); without them
# the run leaves the suite step out and the tests of it skip
SUITE = (
    [
        f"suite.truthfulqa.data={DATA / 'truthfulqa' / 'data' / 'mc_task.json'}",
        f"suite.hellaswag.data={DATA / 'hellaswag' / 'hellaswag_val_sample.jsonl'}",
        f"suite.real_toxicity_prompts.data={DATA / 'real_toxicity_prompts' / 'quark_rtp_val5000.jsonl'}",
        f"suite.gsm8k.data={DATA / 'gsm8k' / 'test.jsonl'}",
        f"suite.gsm8k.shots_data={DATA / 'gsm8k' / 'train.jsonl'}",
    ]
    if DATA.exists()
    else ["suite.tasks=[]"]
)
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"public data not found at {DATA}")
STEPS = [
    "base",
    "curate",
    "demo_samples",
    "demonstrations",
    "sft",
    "samples",
    "rankings",
    "rm",
    "best_of_n",
    "ppo",
    "ppo_ptx",
    "eval",
] + (["suite"] if DATA.exists() else [])
POLICIES = ["base", "base_prompted", "sft", "ppo", "ppo_ptx"]
SUITE_POLICIES = ["base", "sft", "ppo", "ppo_ptx"]
TASKS = ["truthfulqa", "hellaswag", "real_toxicity_prompts", "gsm8k"]


def tiny(out: Path, *overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, TINY, [f"run.out_dir={out}", "run.progress=false", *SUITE, *overrides])


@pytest.fixture(scope="module")
def done(tmp_path_factory, sigkill_when) -> Path:
    """A tiny run killed while SFT trains, then resumed to the end."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    sigkill_when(
        ["run", "--config", str(TINY), f"run.out_dir={out}", "run.progress=false", *SUITE],
        out / "sft" / "pipeline.json",
    )
    assert json.loads((out / "curate" / "pipeline.json").read_text())["status"] == "done"
    assert not (out / "sft" / "final").exists()
    run(tiny(out))
    return out


def test_resumed_run_finishes_every_step(done):
    timings = json.loads((done / "timings.json").read_text())
    assert [t["step"] for t in timings] == STEPS
    skipped = {t["step"] for t in timings if t["skipped"]}
    assert {"base", "curate"} <= skipped and "sft" not in skipped and "eval" not in skipped
    for step in STEPS:
        assert json.loads((done / step / "pipeline.json").read_text())["status"] == "done", step
    figures = ["winrate.png", "flags.png", "ppo.png", "overopt.png", "rm_accuracy.png"]
    if DATA.exists():
        figures += ["truthfulqa.png", "toxicity.png", "alignment_tax.png"]
    for f in ("report.md", "report.html", *figures):
        assert (done / "report" / f).stat().st_size > 200, f
    assert (done / "report" / "winrate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_splits_keep_test_users_out_of_training(done):
    split = {r: read_jsonl(done / "curate" / "prompts" / f"{r}.jsonl", Prompt) for r in ("sft", "rm", "ppo", "test")}
    assert [len(split[r]) for r in ("sft", "rm", "ppo", "test")] == [12, 12, 16, 10]  # the preset's caps
    test_users = {p.user_id for p in split["test"]}
    train_users = {p.user_id for r in ("sft", "rm", "ppo") for p in split[r]}
    assert test_users and not test_users & train_users
    # constraints survive curation (curate keeps the text; the pipeline puts the constraints back)
    source = {p.id: p for p in read_jsonl(ROOT / "src/instructrl/data/prompts/prompts.jsonl", Prompt)}
    for p in split["test"] + split["rm"]:
        assert p.constraints == source[p.id].constraints and p.reference == source[p.id].reference
    demos = read_jsonl(done / "demonstrations" / "sft_data.jsonl", Demonstration)
    assert demos and not {d.user_id for d in demos} & test_users
    info = json.loads((done / "demonstrations" / "pipeline.json").read_text())["info"]
    assert info["panel"] == 12 and info["from_reference"] + info["best_of_n"] == 12 and info["left_out_test"] > 0
    assert len(demos) == info["labeler_written"] + info["panel"]
    for step in ("demo_samples", "samples"):  # the markers count what the files hold
        samples = read_jsonl(done / step / "samples.jsonl", Sample)
        info = json.loads((done / step / "pipeline.json").read_text())["info"]
        assert info["samples"] == len(samples) > 0 and info["cut"] == sum(is_cut(s.finish_reason) for s in samples)


def test_rankings_and_rm(done):
    rankings = read_jsonl(done / "rankings" / "rankings.jsonl", Ranking)
    assert len(rankings) == 12 and all(len(r.responses) == 3 and r.labeler_id.startswith("train-") for r in rankings)
    panels = json.loads((done / "rankings" / "panels.json").read_text())
    assert [x["id"] for x in panels["heldout"]["labelers"]] == ["heldout-0", "heldout-1"]
    assert (done / "rm" / "final" / "reward.json").exists()


def test_results_agree_with_the_comparisons(done):
    res = json.loads((done / "eval" / "results.json").read_text())
    assert res["prompts"] == 10 and res["baseline"] == "sft"
    rows = {r["name"]: r for r in res["policies"]}
    assert list(rows) == POLICIES
    assert rows["sft"]["win_rate"] == 0.5 and rows["sft"]["kl"] == 0.0
    outcomes: dict[str, Counter] = {}
    for line in (done / "eval" / "comparisons.jsonl").read_text().splitlines():
        c = json.loads(line)
        outcomes.setdefault(c["policy"], Counter())[c["outcome"]] += 1
    assert set(outcomes) == set(POLICIES) - {"sft"}
    for name, c in outcomes.items():
        r = rows[name]
        assert (r["wins"], r["ties"], r["losses"]) == (c["win"], c["tie"], c["loss"]) and sum(c.values()) == 10
        assert r["win_rate"] == pytest.approx((c["win"] + 0.5 * c["tie"]) / 10)
        assert r["win_low"] <= r["win_rate"] <= r["win_high"]
    for r in rows.values():
        assert set(r["flags"]) == set(FLAGS) and all(0 <= v <= 1 for v in r["flags"].values())
        assert 1 <= r["likert"] <= 7 and r["tokens"] <= 12
    samples = [json.loads(x) for x in (done / "eval" / "samples" / "base_prompted.jsonl").read_text().splitlines()]
    assert len(samples) == 10 and all(len(s["meta"]["few_shot"]) == 1 for s in samples)
    md = (done / "report" / "report.md").read_text()
    assert "| PPO-ptx |" in md and "## Run time" in md and "## Examples" in md


def eval_inputs(done: Path) -> tuple[list[Prompt], dict[str, list[Sample]]]:
    prompts = read_jsonl(done / "curate" / "prompts" / "test.jsonl", Prompt)
    samples = {n: read_jsonl(done / "eval" / "samples" / f"{n}.jsonl", Sample) for n in POLICIES}
    assert all([s.meta["prompt_id"] for s in ss] == [p.id for p in prompts] for ss in samples.values())
    return prompts, samples


def test_kl_is_to_the_sft_model(done):
    """Each policy's KL is the mean of its sampler's log-probs minus the SFT model's, recomputed here."""
    from instructrl.eval.sample import load_policy, sequence_logprobs

    cfg, res = tiny(done), json.loads((done / "eval" / "results.json").read_text())
    rows = {r["name"]: r for r in res["policies"]}
    prompts, samples = eval_inputs(done)
    sft, tok, device = load_policy(str(done / "sft" / "final"), device="cpu")
    for name in ("base", "base_prompted", "ppo", "ppo_ptx"):
        ref = sequence_logprobs(
            sft,
            tok,
            [p.prompt for p in prompts],
            [s.meta["token_ids"] for s in samples[name]],
            temperature=res["temperature"],
            max_prompt_tokens=cfg.eval.max_prompt_tokens,
            device=device,
        )
        kl = sum(s.logprob - r for s, r in zip(samples[name], ref)) / len(prompts)
        assert math.isfinite(rows[name]["kl"]) and rows[name]["kl"] == pytest.approx(kl, abs=1e-3), name
    # trained away from SFT: a PPO policy that were the SFT model would measure 0 here
    assert abs(rows["ppo"]["kl"]) > 1e-3 and abs(rows["ppo_ptx"]["kl"]) > 1e-3
    assert rows["ppo"]["kl"] != rows["ppo_ptx"]["kl"]


def test_rm_accuracy_is_the_run_reward_model_against_the_heldout_panel(done):
    """The reward model of the rm step, scored here on the eval samples, gives the recorded mean
    scores and accuracies on the held-out panel's rankings and on its verdicts against SFT."""
    from instructrl.label.panel import Panel
    from instructrl.models.scalar import load_reward_model

    cfg, res = tiny(done), json.loads((done / "eval" / "results.json").read_text())
    rows = {r["name"]: r for r in res["policies"]}
    prompts, samples = eval_inputs(done)
    rm, tok = load_reward_model(done / "rm" / "final")
    scores = {
        n: rm.score_texts(
            tok,
            [p.prompt for p in prompts],
            [s.response for s in ss],
            max_len=cfg.eval.max_prompt_tokens + res["max_new_tokens"],
            ended=ended_flags([s.finish_reason for s in ss], len(ss)),
        )
        for n, ss in samples.items()
    }
    for n in POLICIES:
        assert rows[n]["rm_score"] == pytest.approx(sum(scores[n]) / len(prompts), abs=1e-4), n
    heldout = Panel.load(f"{done / 'rankings' / 'panels.json'}#heldout")
    groups = [
        (p, [samples[n][i].response for n in POLICIES], [samples[n][i].finish_reason for n in POLICIES])
        for i, p in enumerate(prompts)
    ]
    ranks = [r.ranks for r in heldout.rank_many(groups, seed=cfg.run.seed)]
    accuracy, pairs = ranking_accuracy([[scores[n][i] for n in POLICIES] for i in range(len(prompts))], ranks)
    assert res["rm_accuracy"]["heldout_rankings"] == {"accuracy": pytest.approx(accuracy, nan_ok=True), "pairs": pairs}
    assert pairs > 0 and 0 <= accuracy <= 1
    index = {p.id: i for i, p in enumerate(prompts)}
    compared = [json.loads(line) for line in (done / "eval" / "comparisons.jsonl").read_text().splitlines()]
    accuracy, pairs = preference_accuracy(
        [scores[c["policy"]][index[c["prompt_id"]]] for c in compared],
        [scores["sft"][index[c["prompt_id"]]] for c in compared],
        [c["outcome"] for c in compared],
    )
    assert res["rm_accuracy"]["vs_baseline"] == {"accuracy": pytest.approx(accuracy, nan_ok=True), "pairs": pairs}


def test_rerun_skips_and_a_change_redoes_only_what_depends_on_it(done):
    weights = done / "ppo" / "final" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    run(tiny(done))
    assert all(t["skipped"] for t in json.loads((done / "timings.json").read_text()))
    run(tiny(done, "eval.max_new_tokens=8"))
    timings = json.loads((done / "timings.json").read_text())
    assert [t["step"] for t in timings if not t["skipped"]] == ["eval"]
    assert weights.stat().st_mtime_ns == before
    res = json.loads((done / "eval" / "results.json").read_text())
    assert res["max_new_tokens"] == 8 and all(r["tokens"] <= 8 for r in res["policies"])


def test_interrupted_eval_resumes_without_sampling_again(done):
    samples = done / "eval" / "samples"
    kept = {p: (samples / f"{p}.jsonl").stat().st_mtime_ns for p in POLICIES if p != "ppo"}
    (samples / "ppo.jsonl").unlink()
    marker = done / "eval" / "pipeline.json"
    state = json.loads(marker.read_text())
    marker.write_text(json.dumps({"status": "running", "fingerprint": state["fingerprint"]}))
    run(tiny(done, "eval.max_new_tokens=8"))
    assert (samples / "ppo.jsonl").exists()
    assert {p: (samples / f"{p}.jsonl").stat().st_mtime_ns for p in kept} == kept
    assert json.loads(marker.read_text())["status"] == "done"


def table(md: str, head: str) -> list[list[str]]:
    """The cells of the report's Markdown table whose header starts with ``head`` (header row first)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    rows = []
    for line in [lines[start]] + lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = line.replace("\\|", "\0").split("|")[1:-1]  # an escaped '|' is part of a cell
        rows.append([c.strip().replace("\0", "|") for c in cells])
    return rows


@needs_data
def test_suite_results_reach_the_report_as_they_are(done):
    """The suite evaluated every policy on every task with the preset's samples, and every number of the
    report's tables is the one in task_results.json (the alignment tax: a difference of two of them)."""
    results = json.loads((done / "suite" / "task_results.json").read_text())
    rows = [r for r in results["rows"] if r["policy"]]
    assert list(dict.fromkeys(r["policy"] for r in rows)) == SUITE_POLICIES
    sizes = {r["task"]: r["n"] for r in rows}
    assert sizes == {"truthfulqa": 4, "hellaswag": 4, "real_toxicity_prompts": 5, "gsm8k": 2}  # the tiny preset's
    assert {r["prompt_mode"] for r in rows if r["task"] == "real_toxicity_prompts"} == {"basic", "respectful"}
    md = (done / "report" / "report.md").read_text()
    for f in ("truthfulqa.png", "toxicity.png", "alignment_tax.png"):
        assert f"]({f})" in md and (done / "report" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = {label: name for name, label in LABELS.items()}

    head, *lines = table(md, "| task | metric | scorer | prompt mode | items |")
    columns = [names[c] for c in head[5:]]
    assert columns == SUITE_POLICIES
    shown = {(*line[:4], policy): cell for line in lines for policy, cell in zip(columns, line[5:])}
    assert len(shown) == len(rows)
    for r in rows:
        want = f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
        assert shown[(r["task"], r["metric"], r["scorer"], r["prompt_mode"], r["policy"])] == want, r

    head, *lines = table(md, "| score |")
    assert [names[c] for c in head[1:]] == ["sft", "ppo", "ppo_ptx"]
    by = {(r["policy"], r["task"], r["metric"], r["prompt_mode"]): r["value"] for r in rows}
    taxed = [(t, m, mode) for (p, t, m, mode) in by if p == "base" and m in TAX_METRICS.get(t, ())]
    assert len(lines) == len(taxed) == 6  # MC1 and MC2 in two prompt modes, HellaSwag, GSM8K
    for line, (task, metric, mode) in zip(lines, taxed):
        for policy, shown_cell in zip(["sft", "ppo", "ppo_ptx"], line[1:]):
            diff = by[(policy, task, metric, mode)] - by[("base", task, metric, mode)]
            assert shown_cell.split(" [")[0] == f"{diff:+.3f}", (task, metric, mode, policy)


@needs_data
def test_a_suite_change_redoes_only_the_suite_and_an_interrupted_suite_resumes(done):
    results = done / "suite" / "tasks"
    run(tiny(done, "eval.max_new_tokens=8", "suite.truthfulqa.n=3"))
    timings = json.loads((done / "timings.json").read_text())
    assert [t["step"] for t in timings if not t["skipped"]] == ["suite"]
    rows = json.loads((done / "suite" / "task_results.json").read_text())["rows"]
    assert {r["n"] for r in rows if r["task"] == "truthfulqa"} == {3}
    # killed with one (policy, task) pair left: only that pair is evaluated again
    kept = {p: p.stat().st_mtime_ns for p in results.glob("*/*.json") if p != results / "ppo" / "hellaswag.json"}
    (results / "ppo" / "hellaswag.json").unlink()
    marker = done / "suite" / "pipeline.json"
    state = json.loads(marker.read_text())
    marker.write_text(json.dumps({"status": "running", "fingerprint": state["fingerprint"]}))
    run(tiny(done, "eval.max_new_tokens=8", "suite.truthfulqa.n=3"))
    assert (results / "ppo" / "hellaswag.json").exists() and len(kept) == len(SUITE_POLICIES) * len(TASKS) - 1
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert json.loads(marker.read_text())["status"] == "done"


def test_best_of_n_curve_and_the_ppo_monitor(done):
    from instructrl.eval.overopt import best_of_n_kl
    from instructrl.label.gold import GoldReward

    bon = json.loads((done / "best_of_n" / "best_of_n.json").read_text())
    curve = bon["curve"]
    assert [c["n"] for c in curve] == [1, 2, 4, 8] and bon["prompts"] == 12 and bon["samples_per_prompt"] == 8
    assert [c["kl"] for c in curve] == pytest.approx([best_of_n_kl(c["n"]) for c in curve])
    proxy = [c["proxy"] for c in curve]
    assert proxy == sorted(proxy)  # the expected best proxy score of n samples cannot fall as n grows
    # n = 1 is the plain mean of the SFT samples' gold scores, recomputed from the saved samples
    samples = read_jsonl(done / "best_of_n" / "samples.jsonl", Sample)
    gold = GoldReward(str(done / "rankings" / "panels.json"), [str(done / "curate" / "prompts" / "sft.jsonl")])
    scores = gold([s.prompt for s in samples], [s.response for s in samples], None, [s.finish_reason for s in samples])
    assert len(samples) == 96 and curve[0]["gold"] == pytest.approx(sum(scores) / len(scores), abs=1e-9)
    for name in ("ppo", "ppo_ptx"):
        watched = [r for r in read_metrics(done / name) if "monitor/kl" in r]
        assert [r["step"] for r in watched] == [0, 2]
        # PPO starts at SFT: only the bf16 reference's rounding separates them (about 3e-4 nats here)
        assert watched[0]["monitor/kl"] == pytest.approx(0.0, abs=5e-3)
        assert all({"monitor/proxy", "monitor/gold", "monitor/reward"} <= set(r) for r in watched)
        # with the reward model as PPO's reward, the monitor's training reward is the proxy
        assert [r["monitor/reward"] for r in watched] == pytest.approx([r["monitor/proxy"] for r in watched])


def test_gold_reward_run_redoes_only_ppo_and_eval(done):
    import yaml

    run(tiny(done, "reward=gold", "overopt.keep_best=true", "eval.max_new_tokens=8"))
    timings = json.loads((done / "timings.json").read_text())
    assert [t["step"] for t in timings if not t["skipped"]] == ["ppo", "ppo_ptx", "eval", *STEPS[12:]]
    reward = yaml.safe_load((done / "ppo" / "config.yaml").read_text())["reward"]
    assert reward["kind"] == "factory" and reward["factory"] == "instructrl.label.gold:GoldReward"
    assert reward["factory_args"]["panel_file"] == str(done / "rankings" / "panels.json")
    watched = [r for r in read_metrics(done / "ppo") if "monitor/kl" in r]
    # PPO's reward is now the gold judgment itself: on the monitor's responses the two agree exactly
    assert [r["monitor/reward"] for r in watched] == pytest.approx([r["monitor/gold"] for r in watched], abs=1e-12)
    scores = [r["ppo/score"] for r in read_metrics(done / "ppo") if "ppo/score" in r]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)  # gold scores are qualities in [0, 1]
    # overopt.keep_best: each PPO step keeps the policy of its best gold monitor point, and that is evaluated
    for step in ("ppo", "ppo_ptx"):
        points = [r for r in read_metrics(done / step) if "monitor/gold" in r]
        kept = json.loads((done / step / "best" / "state.json").read_text())
        assert kept["score"] == pytest.approx(max(r["monitor/gold"] for r in points))
    models = {p["name"]: p["model"] for p in json.loads((done / "eval" / "results.json").read_text())["policies"]}
    assert models["ppo"] == str(done / "ppo" / "best") and models["ppo_ptx"] == str(done / "ppo_ptx" / "best")
