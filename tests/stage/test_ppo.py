"""The PPO stage on a tiny SFT model with a known programmatic reward: the reward rises while the
KL stays bounded, PPO-ptx keeps the pretraining loss lower, ratio = 1 before the first update,
exact resume after SIGKILL, LoRA (reference = adapters off), a reward model as the reward and the
value's starting point, the NaN guard and the KL warning, the CLI."""

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instructrl.config import load_config
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.train import run
from instructrl.records import Demonstration, write_jsonl
from instructrl.utils.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
WORDS = "one two three four five six seven eight nine ten".split()
TARGETS = '[" one"," two"," three"," four"," five"," six"," eight"," yes"]'


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: on a shared 2-core machine threads only add waiting
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ppo_world(tiny_model_dir, tmp_path_factory) -> dict:
    """A tiny SFT model (the `sft` stage on counting/arithmetic/sea demonstrations, so that it
    writes varied responses and stops at EOS), prompts, and pretraining text."""
    from instructrl.sft.config import SFTConfig
    from instructrl.sft.train import run as sft_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("ppo_world")
    rng = random.Random(0)
    demos, texts = [], []
    for i in range(160):
        n = rng.randint(1, 9)
        kind = ("count", "sum", "sea")[i % 3]
        if kind == "count":
            prompt, response = f"Count to {WORDS[n - 1]}.", " ".join(WORDS[:n]) + "."
        elif kind == "sum":
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            prompt, response = f"Add {a} and {b}.", f"The sum of {a} and {b} is {a + b}."
        else:
            phrases = ["the sea is blue", "waves are great", "the water is deep", "good fish swim"]
            prompt = f"Write {WORDS[n - 1]} words about the sea."
            response = " ".join(rng.choice(phrases) for _ in range(n)) + "."
        demos.append(Demonstration(prompt=prompt, response=response, user_id=f"u{i % 10}"))
        texts.append(f"{prompt} {response}")
    write_jsonl(base / "demos.jsonl", demos)
    write_jsonl(base / "prompts.jsonl", [{"prompt": d.prompt} for d in demos[:48]])
    (base / "pretrain.txt").write_text("\n\n".join(" ".join(texts[i : i + 4]) for i in range(0, len(texts), 4)))
    sft = sft_run(
        load_config(
            SFTConfig,
            ROOT / "configs/tiny/sft.yaml",
            [
                f"model.name_or_path={tiny_model_dir}",
                f"data.train={base / 'demos.jsonl'}",
                f"run.out_dir={base / 'sft'}",
                "train.max_steps=60",
                "train.epochs=5",
                "data.valid_fraction=0.1",
                "train.save_every=0",
            ],
        )
    )
    torch.set_num_threads(threads)
    return {"sft": sft, "prompts": base / "prompts.jsonl", "pretrain": base / "pretrain.txt", "dir": base}


def ppo_args(world: dict, out: Path, *extra: str) -> list[str]:
    return [
        f"policy.name_or_path={world['sft']}",
        f"data.prompts=[{world['prompts']}]",
        f"run.out_dir={out}",
        f"reward.target_tokens={TARGETS}",
        *extra,
    ]


def ppo_cfg(world: dict, out: Path, *extra: str) -> PPOConfig:
    return load_config(PPOConfig, ROOT / "configs/tiny/ppo.yaml", ppo_args(world, out, *extra))


def series(out: Path, key: str) -> list[float]:
    return [r[key] for r in read_metrics(out) if key in r]


def is_finite_number(value) -> bool:
    """A logged metric that is a real number; MetricsLogger writes NaN and inf as the strings "nan", "inf"."""
    return isinstance(value, float) and math.isfinite(value)


def test_is_finite_number_rejects_what_the_logger_writes_for_nan_and_inf():
    assert is_finite_number(0.25) and is_finite_number(-3.0)
    assert not any(is_finite_number(v) for v in ("nan", "inf", "-inf", float("nan"), float("inf"), None, True))


def test_reward_rises_while_kl_stays_bounded(ppo_world, tmp_path):
    out = tmp_path / "ppo"
    # the monitor scores the same prompts every 10 iterations with the training reward and a second one
    other = "[{name: other, factory: 'instructrl.ppo.reward:TokenFractionReward', factory_args: {token_ids: [5]}}]"
    monitor = (
        "monitor.every=10",
        f"monitor.prompts=[{ppo_world['prompts']}]",
        "monitor.max_prompts=8",
        "monitor.samples_per_prompt=2",
        "monitor.keep_best=other",
    )
    final = run(ppo_cfg(ppo_world, out, "ppo.steps=30", *monitor, f"monitor.rewards={other}"))
    assert (final / "config.json").exists() and (out / "config.yaml").exists()
    score, kl = series(out, "ppo/score"), series(out, "ppo/kl")
    assert len(score) == 30
    first, last = sum(score[:5]) / 5, sum(score[-5:]) / 5
    assert last > first + 0.1 and last > 1.5 * first, (first, last, score)
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert max(kl) < 20.0, kl
    # ratio = 1: the first minibatch of every iteration (no update yet) recomputes the rollout's log-probs
    assert max(series(out, "ppo/first_ratio_error")) < 1e-4
    rows = read_metrics(out)
    for key in (
        "ppo/clipfrac",
        "ppo/value_loss",
        "ppo/entropy",
        "ppo/response_len",
        "ppo/samples_per_s",
        "ppo/time_generate",
        "ppo/time_train",
        "ppo/kl_coef",
        "ppo/approx_kl",
    ):
        assert key in [r for r in rows if "ppo/score" in r][-1], key
    not_finite = [
        (r["step"], k, v) for r in rows for k, v in r.items() if k.startswith("ppo/") and not is_finite_number(v)
    ]
    assert not not_finite, not_finite
    watched = [r for r in rows if "monitor/kl" in r]
    assert [r["step"] for r in watched] == [0, 10, 20, 30]
    assert watched[0]["monitor/kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is still the reference
    assert watched[-1]["monitor/kl"] > 0.01 and watched[-1]["monitor/sqrt_kl"] == pytest.approx(
        math.sqrt(watched[-1]["monitor/kl"])
    )
    # the training reward on the held-out monitor prompts rises as it does on the training batches
    assert watched[-1]["monitor/reward"] > watched[0]["monitor/reward"] + 0.05, watched
    assert all(0.0 <= r["monitor/other"] <= 1.0 and 0.0 <= r["monitor/reward"] <= 1.0 for r in watched)
    # the policy at the monitor point with the best "other" score is kept (the earliest, on a tie)
    best = max(watched, key=lambda r: (r["monitor/other"], -r["step"]))
    kept = json.loads((out / "best" / "state.json").read_text())
    assert (kept["step"], kept["reward"]) == (best["step"], "other")
    assert kept["score"] == pytest.approx(best["monitor/other"]) and kept["kl"] == pytest.approx(best["monitor/kl"])
    assert (out / "best" / "model.safetensors").exists() and not (out / "best.partial").exists()


def test_ptx_keeps_pretraining_loss_lower(ppo_world, tmp_path):
    common = (
        "ppo.steps=20",
        f"ptx.data=[{ppo_world['pretrain']}]",
        "ptx.block_size=48",
        "ptx.batch_size=4",
        "ptx.eval_fraction=0.25",
        "train.eval_every=10",
    )
    plain = tmp_path / "plain"
    run(ppo_cfg(ppo_world, plain, *common, "ptx.coef=0"))
    mixed = tmp_path / "ptx"
    run(ppo_cfg(ppo_world, mixed, *common, "ptx.coef=1.0"))
    held_plain, held_ptx = series(plain, "ppo/ptx_eval_loss"), series(mixed, "ppo/ptx_eval_loss")
    assert len(held_plain) == len(held_ptx) == 3  # before, after 10 and after 20 iterations
    assert held_plain[0] == pytest.approx(held_ptx[0], abs=1e-6)  # same starting point
    assert held_plain[-1] > held_plain[0], held_plain  # plain PPO pays an alignment tax ...
    assert held_ptx[-1] < held_plain[-1] - 0.05, (held_ptx, held_plain)  # ... that the ptx term pays back
    assert all(v > 0 for v in series(mixed, "ppo/ptx_loss"))


def test_resume_after_sigkill_is_exact(ppo_world, tmp_path):
    args = ppo_args(
        ppo_world,
        tmp_path / "ref",
        "ppo.steps=8",
        "train.save_every=2",
        "train.keep_checkpoints=0",
        "ppo.score_norm=running",
        "kl.kind=adaptive",
        "kl.target=1.0",
        "kl.horizon=200",
    )
    ref = run(load_config(PPOConfig, ROOT / "configs/tiny/ppo.yaml", args))

    out = tmp_path / "killed"
    args = [a if not a.startswith("run.out_dir=") else f"run.out_dir={out}" for a in args]
    cmd = [sys.executable, "-m", "instructrl.cli", "ppo", "--config", str(ROOT / "configs/tiny/ppo.yaml"), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 300
    while not (out / "step-000004" / "state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists(), "the kill came too late to test anything"

    resumed = run(load_config(PPOConfig, ROOT / "configs/tiny/ppo.yaml", args))
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ref_rows = [r for r in read_metrics(tmp_path / "ref") if "ppo/score" in r]
    rows = [r for r in read_metrics(out) if "ppo/score" in r]
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == list(range(1, 9))
    for key in ("ppo/score", "ppo/kl", "ppo/kl_coef", "ppo/value_loss"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref_rows], abs=1e-6), key


def test_group_baseline_trains_without_a_value_function_and_resumes(ppo_world, tmp_path, caplog):
    """ppo.advantage=group: 4 prompts x 4 samples per iteration, the leave-one-out baseline, no value
    model anywhere (not in the checkpoints, no value metrics); the reward rises and a resumed run
    (from the step checkpoint, as after a crash) ends with the same weights as one uninterrupted run."""
    group = ("rollout.samples_per_prompt=4", "ppo.advantage=group")
    out = tmp_path / "group"
    final = run(ppo_cfg(ppo_world, out, "ppo.steps=24", "train.save_every=12", "train.keep_checkpoints=0", *group))
    rows = [r for r in read_metrics(out) if "ppo/score" in r]
    score = [r["ppo/score"] for r in rows]
    assert len(score) == 24
    first, last = sum(score[:5]) / 5, sum(score[-5:]) / 5
    assert last > first + 0.1 and last > 1.5 * first, (first, last, score)
    assert all("ppo/value_loss" not in r and "ppo/score_std_within" in r for r in rows)
    assert all(0 <= r["ppo/score_std_within"] <= r["ppo/score_std"] + 1e-6 for r in rows)
    assert max(series(out, "ppo/first_ratio_error")) < 1e-4
    assert (out / "step-000012" / "model.safetensors").exists() and not (out / "step-000012" / "value").exists()

    # resume: a copy of the run cut back to its step-12 checkpoint finishes like the uninterrupted run
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(out, cut, ignore=shutil.ignore_patterns("final", "step-000024"))
    (cut / "config.yaml").write_text((out / "config.yaml").read_text().replace(str(out), str(cut)))
    (cut / "metrics.jsonl").write_text(
        "".join(
            line + "\n" for line in (out / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 12
        )
    )
    with caplog.at_level(logging.INFO, logger="instructrl.ppo.train"):
        resumed = run(
            ppo_cfg(ppo_world, cut, "ppo.steps=24", "train.save_every=12", "train.keep_checkpoints=0", *group)
        )
    assert "resumed from" in caplog.text and "step 12" in caplog.text
    assert [r["step"] for r in read_metrics(cut) if "ppo/score" in r] == list(range(1, 25))
    a, b = load_file(str(final / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_group_advantage_needs_several_samples_per_prompt(ppo_world, tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        ppo_cfg(ppo_world, tmp_path / "x", "ppo.advantage=group")
    with pytest.raises(ValueError, match="multiple of rollout.samples_per_prompt"):
        ppo_cfg(ppo_world, tmp_path / "x", "rollout.samples_per_prompt=3")


def test_lora_reference_is_the_policy_without_adapters(ppo_world, tmp_path):
    out = tmp_path / "lora"
    final = run(
        ppo_cfg(ppo_world, out, "ppo.steps=4", "lora.enabled=true", "lora.r=4", "optim.lr=1e-2", "train.save_every=2")
    )
    kl = series(out, "ppo/kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and max(abs(k) for k in kl[1:]) > 0
    assert (out / "step-000002" / "adapter_model.safetensors").exists()
    assert (out / "step-000002" / "value" / "adapter_model.safetensors").exists()
    assert not (final / "adapter_config.json").exists()  # final/ is merged, a plain model directory


def reward_model_score(hf_rm, tok, bias: float, prompt: str, response: str, finish_reason: str) -> float:
    """A reward model's score of one pair, computed without instructrl: the head on the backbone's last
    hidden state of chat-templated prompt + response (+ EOS unless the sampler cut it off), plus the
    normalization bias of reward.json."""
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"]
    if finish_reason != "length":
        ids.append(tok.eos_token_id)
    with torch.no_grad():
        hidden = hf_rm.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        return float(hf_rm.score(hidden)) + bias


def test_reward_model_as_reward_and_value_init(ppo_world, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from instructrl.models.loading import load_tokenizer
    from instructrl.models.scalar import init_reward_model, save_reward_info
    from instructrl.ppo.reward import RewardModelReward

    tok = load_tokenizer(str(ppo_world["sft"]))
    torch.manual_seed(1)
    rm = init_reward_model(str(ppo_world["sft"]), tokenizer=tok)
    rm_dir = tmp_path / "rm"
    rm.model.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    save_reward_info(rm_dir, bias=0.5)
    # record what each rollout's reward was asked to score, to score it again below
    scored: list[tuple[list, list, list]] = []
    reward_call = RewardModelReward.__call__

    def recording_call(self, prompts, responses, response_ids, finish_reasons):
        scored.append((list(prompts), list(responses), list(finish_reasons)))
        return reward_call(self, prompts, responses, response_ids, finish_reasons)

    monkeypatch.setattr(RewardModelReward, "__call__", recording_call)
    out = tmp_path / "ppo_rm"
    run(
        ppo_cfg(
            ppo_world,
            out,
            "ppo.steps=2",
            "train.save_every=1",
            "value.lr=1e-12",
            "reward.kind=model",
            f"reward.model={rm_dir}",
        )
    )
    rows = [r for r in read_metrics(out) if "ppo/score" in r]
    assert len(rows) == 2 and len(scored) == 2, (rows, len(scored))
    # ppo/score is the mean reward-model score of the iteration's samples, bias included
    hf_rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    rm_tok = AutoTokenizer.from_pretrained(rm_dir)
    bias = json.loads((rm_dir / "reward.json").read_text())["bias"]
    assert bias == 0.5
    for row, (prompts, responses, reasons) in zip(rows, scored):
        assert len(responses) == 16 and any(r != "length" for r in reasons)
        expected = [reward_model_score(hf_rm, rm_tok, bias, p, r, fr) for p, r, fr in zip(prompts, responses, reasons)]
        assert max(expected) - min(expected) > 1e-3, expected  # the samples score differently: a real check
        assert row["ppo/score"] == pytest.approx(sum(expected) / len(expected), abs=1e-4), (row, expected)
        assert row["ppo/score_std"] == pytest.approx(torch.tensor(expected).std(unbiased=False).item(), abs=1e-4)
    # the value function starts as the reward model, head included (one update at lr 1e-12 later)
    rm_weights = load_file(str(rm_dir / "model.safetensors"))
    value_weights = load_file(str(out / "step-000001" / "value" / "model.safetensors"))
    assert any("score" in k for k in value_weights)
    for k, w in rm_weights.items():
        torch.testing.assert_close(value_weights[k], w, rtol=0, atol=1e-6)


def test_trainable_layers_freeze_the_lower_layers_of_policy_and_value(ppo_world, tmp_path):
    out = tmp_path / "ppo_top"
    run(
        ppo_cfg(
            ppo_world,
            out,
            "ppo.steps=3",
            "train.save_every=2",
            "ppo.trainable_layers=1",
            "value.trainable_layers=1",
            "optim.lr=1e-3",
            "value.lr=1e-3",
        )
    )
    sft = load_file(str(Path(ppo_world["sft"]) / "model.safetensors"))
    policy = load_file(str(out / "final" / "model.safetensors"))
    moved = {k for k, w in sft.items() if not torch.equal(policy[k], w)}
    assert moved and all(k.startswith(("model.layers.1.", "model.norm.")) for k in moved), sorted(moved)
    assert any(k.startswith("model.layers.1.") for k in moved)
    value = load_file(str(out / "step-000002" / "value" / "model.safetensors"))
    value_moved = {k for k, w in value.items() if k in sft and not torch.equal(w, sft[k])}
    assert all(k.startswith(("model.layers.1.", "model.norm.")) for k in value_moved), sorted(value_moved)
    with pytest.raises(ValueError, match="not both"):
        ppo_cfg(ppo_world, out, "lora.enabled=true", "ppo.trainable_layers=1")


def test_nan_reward_stops_with_a_clear_message(ppo_world, tmp_path):
    out = tmp_path / "nan"
    cfg = ppo_cfg(
        ppo_world,
        out,
        "ppo.steps=6",
        "train.save_every=2",
        "reward.kind=function",
        "reward.function=tests.stage.test_ppo:nan_after_two_calls",
    )
    NAN_CALLS.clear()
    with pytest.raises(FloatingPointError, match=r"NaN/inf at step 3.*step-000002"):
        run(cfg)


NAN_CALLS: list[int] = []


def nan_after_two_calls(prompts, responses, response_ids):
    NAN_CALLS.append(1)
    return [float("nan") if len(NAN_CALLS) > 2 else 0.0 for _ in prompts]


def test_kl_warning_and_offloaded_bf16_reference(ppo_world, tmp_path, caplog):
    out = tmp_path / "klw"
    with caplog.at_level(logging.WARNING, logger="instructrl.ppo.train"):
        run(
            ppo_cfg(
                ppo_world,
                out,
                "ppo.steps=3",
                "kl.warn_above=1e-9",
                "optim.lr=1e-2",
                "memory.offload_frozen=true",
                "memory.frozen_dtype=bf16",
                "rollout.engine=hf",
            )
        )
    assert any("kl.warn_above" in r.message for r in caplog.records)
    kl = series(out, "ppo/kl")
    assert 0 < abs(kl[0]) < 0.5  # a bf16 copy of the reference: not exactly the fp32 policy, but close


def test_cli_help_and_config_errors():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "instructrl.cli", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ppo" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "instructrl.cli", "ppo", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    for key in ("kl.coef", "ptx.coef", "ppo.lam", "value.cliprange", "rollout.engine", "memory.offload_frozen"):
        assert key in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "instructrl.cli", "ppo", "reward.kind=function"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "reward.kind=function needs reward.function" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "instructrl.cli", "ppo", "reward.kind=rm"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "'target_tokens'" in bad.stderr


def test_every_ppo_yaml_loads():
    for path in sorted((ROOT / "configs").glob("*/ppo*.yaml")):
        load_config(PPOConfig, path)
    assert (ROOT / "configs/tiny/ppo.yaml").exists() and (ROOT / "configs/default/ppo.yaml").exists()
