"""The SFT stage on the tiny model: learning, exact resume after SIGKILL, LoRA, packing, CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instructrl.builtin import load_demonstrations
from instructrl.config import load_config
from instructrl.records import Demonstration, write_jsonl
from instructrl.sft import data as sft_data
from instructrl.sft.config import SFTConfig
from instructrl.sft.train import run
from instructrl.utils.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Learnable demonstrations: arithmetic answers in a fixed format, 12 users, a few-shot and a chat."""
    import random

    rng = random.Random(0)
    rows = []
    for i in range(96):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append(
            Demonstration(
                prompt=f"Add {a} and {b}.",
                response=f"The sum of {a} and {b} is {a + b}.",
                id=f"d{i}",
                user_id=f"u{i % 12}",
                category="other",
            )
        )
    rows.append(
        Demonstration(
            type="few-shot",
            instruction="Reverse the word.",
            user_id="u1",
            examples=[{"query": w, "response": w[::-1]} for w in ("cat", "dog", "sun", "pen")],
        )
    )
    rows.append(
        Demonstration(
            prompt=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Add 2 and 2."},
            ],
            response="The sum of 2 and 2 is 4.",
            user_id="u2",
            category="chat",
        )
    )
    path = tmp_path_factory.mktemp("demos") / "demos.jsonl"
    write_jsonl(path, rows)
    return path


def cfg_for(tiny_model_dir, demos, out, *extra):
    return load_config(
        SFTConfig,
        ROOT / "configs/tiny/sft.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.train={demos}",
            f"run.out_dir={out}",
            "data.valid_fraction=0.2",
            *extra,
        ],
    )


def is_finite_number(value) -> bool:
    """A logged metric that is a real number; MetricsLogger writes NaN and inf as the strings "nan", "inf"."""
    return isinstance(value, float) and math.isfinite(value)


def test_sft_learns_and_writes_outputs(tiny_model_dir, demos, tmp_path):
    cfg = cfg_for(tiny_model_dir, demos, tmp_path / "sft", "train.epochs=3", "train.max_steps=null")
    final = run(cfg)
    assert (final / "config.json").exists() and (final / "state.json").exists()
    assert (tmp_path / "sft" / "config.yaml").exists()
    rows = read_metrics(tmp_path / "sft")
    val = [r["sft/val_loss"] for r in rows if "sft/val_loss" in r]
    assert len(val) == 4  # before training and after each epoch
    assert val[-1] < 0.5 * val[0], val  # held-out users' demonstrations get much more likely
    train = [r["sft/loss"] for r in rows if "sft/loss" in r]
    assert train[-1] < train[0]
    # final/ is the best epoch by validation loss
    assert json.loads((final / "state.json").read_text())["val_loss"] == pytest.approx(min(val[1:]))


def test_resume_after_sigkill_is_exact(tiny_model_dir, demos, tmp_path, sigkill_when):
    args = [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train={demos}",
        "data.valid_fraction=0.2",
        "train.max_steps=30",
        "train.save_every=3",
        "train.keep_checkpoints=0",
        "model.dropout=0.1",
    ]
    ref = run(load_config(SFTConfig, ROOT / "configs/tiny/sft.yaml", args + [f"run.out_dir={tmp_path / 'ref'}"]))

    out = tmp_path / "killed"
    sigkill_when(
        ["sft", "--config", str(ROOT / "configs/tiny/sft.yaml"), *args, f"run.out_dir={out}"],
        out / "step-000006" / "state.json",
    )
    assert not (out / "final").exists(), "the kill came too late to test anything"

    resumed = run(load_config(SFTConfig, ROOT / "configs/tiny/sft.yaml", args + [f"run.out_dir={out}"]))
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # the metrics log of the resumed run covers every step once
    steps = [r["step"] for r in read_metrics(out) if "sft/loss" in r]
    ref_rows = [r for r in read_metrics(tmp_path / "ref") if "sft/loss" in r]
    assert steps == [r["step"] for r in ref_rows] == list(range(1, len(ref_rows) + 1))
    assert len(steps) > 6
    resumed_rows = [r for r in read_metrics(out) if "sft/loss" in r]
    assert [r["sft/loss"] for r in resumed_rows] == pytest.approx([r["sft/loss"] for r in ref_rows], abs=1e-6)


def test_changed_config_refuses_to_resume(tiny_model_dir, demos, tmp_path):
    from instructrl.config import ConfigError

    run(cfg_for(tiny_model_dir, demos, tmp_path / "x", "train.max_steps=3"))
    with pytest.raises(ConfigError, match="different config"):
        run(cfg_for(tiny_model_dir, demos, tmp_path / "x", "train.max_steps=4", "optim.lr=0.1"))


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LoraConfig default


def test_lora_and_packing(tiny_model_dir, demos, tmp_path):
    rank = 4
    final = run(
        cfg_for(
            tiny_model_dir,
            demos,
            tmp_path / "lora",
            "lora.enabled=true",
            f"lora.r={rank}",
            "data.packing=true",
            "train.epochs=2",
            "train.max_steps=null",
            "optim.lr=1e-2",
        )
    )
    # final/ is a merged, plain model directory that loads without peft
    from instructrl.models.loading import load_model, load_tokenizer

    assert not (final / "adapter_config.json").exists()
    load_model(str(final))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    merged = load_file(str(final / "model.safetensors"))
    assert merged.keys() == base.keys()  # no adapter or base_layer tensors left
    targeted = [k for k in base if k.endswith(tuple(f"{m}.weight" for m in LORA_TARGETS))]
    assert len(targeted) == 2 * len(LORA_TARGETS)  # two decoder layers
    for k in targeted:
        # the adapters trained and were merged: W' - W = (alpha/r) B A, nonzero and of rank <= r
        singular = torch.linalg.svdvals(merged[k] - base[k])
        assert singular[0] > 1e-3, (k, singular[0])
        assert singular[rank] < 1e-4 * singular[0], (k, singular[: rank + 2])
    for k in set(base) - set(targeted):  # embeddings and norms: frozen under LoRA
        assert torch.equal(merged[k], base[k]), k
    rows = [r for r in read_metrics(tmp_path / "lora") if "sft/loss" in r]
    assert all(is_finite_number(r["sft/loss"]) for r in rows), rows

    # packing: an epoch takes fewer batches of 8 rows than the 8-example batches it would take unpacked.
    # First-fit packing opens a row only when no open row has room, so every row but the last holds at
    # least floor(256 / longest) examples; and the rows hold every token, so there are at least total / 256.
    tok = load_tokenizer(str(tiny_model_dir))
    train_demos, _ = sft_data.user_split(load_demonstrations(str(demos)), 0.2, seed=0)
    examples, _ = sft_data.tokenize(tok, sft_data.to_conversations(train_demos, 2, 3, seed=0), 256)
    lengths = [len(e.input_ids) for e in examples]
    fewest_rows = math.ceil(sum(lengths) / 256)
    most_rows = math.ceil(len(lengths) / (256 // max(lengths)))
    per_epoch = [sum(r["sft/epoch"] == epoch for r in rows) for epoch in (0, 1)]
    unpacked = math.ceil(len(lengths) / 8)
    assert per_epoch[0] == per_epoch[1], per_epoch
    assert math.ceil(fewest_rows / 8) <= per_epoch[0] <= math.ceil(most_rows / 8) < unpacked, (
        per_epoch,
        fewest_rows,
        most_rows,
        unpacked,
    )


def test_cli_help_lists_stages_and_fields():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "instructrl.cli", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "sft" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "instructrl.cli", "sft", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    for key in ("optim.lr", "train.epochs", "data.packing", "lora.r", "run.out_dir", "model.dropout"):
        assert key in out.stdout
    assert "Residual/attention dropout" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "instructrl.cli", "sft", "train.epochz=3"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "unknown key 'train.epochz'" in bad.stderr and "epochs" in bad.stderr


def test_select_by_reward_model_score(tiny_model_dir, demos, tmp_path):
    """final/ is the epoch whose greedy validation responses the reward model scores highest."""
    from instructrl.models.generation import HFGenerator
    from instructrl.models.loading import load_model, load_tokenizer
    from instructrl.models.scalar import init_reward_model, load_reward_model, save_reward_info

    tok = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(1)
    rm = init_reward_model(str(tiny_model_dir), tokenizer=tok)
    rm_dir = tmp_path / "rm"
    rm.model.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    save_reward_info(rm_dir, bias=0.25)

    final = run(
        cfg_for(
            tiny_model_dir,
            demos,
            tmp_path / "sel",
            "train.epochs=3",
            "train.max_steps=null",
            "train.select_by=rm_score",
            f"train.reward_model={rm_dir}",
            "train.rm_eval_prompts=6",
            "train.rm_eval_max_new_tokens=8",
        )
    )
    rows = [r for r in read_metrics(tmp_path / "sel") if "sft/rm_score" in r]
    assert len(rows) == 4  # before training and after each of 3 epochs
    state = json.loads((final / "state.json").read_text())
    assert state["selected_by"] == "rm_score"
    assert state["rm_score"] == pytest.approx(max(r["sft/rm_score"] for r in rows[1:]))

    # recompute the selected model's score independently
    _, valid = sft_data.user_split(load_demonstrations(str(demos)), 0.2, seed=0)
    prompts = [c[:-1] for c in sft_data.to_conversations(valid, 2, 3, seed=0)][:6]
    model = load_model(str(final)).eval()
    gens = HFGenerator(model, load_tokenizer(str(final)), batch_size=8).generate(
        prompts, max_new_tokens=8, temperature=0.0
    )
    rm2, rm_tok = load_reward_model(rm_dir)
    scores = rm2.score_texts(
        rm_tok, prompts, [g.text for g in gens], ended=[g.finish_reason != "length" for g in gens]
    )  # cut responses: no EOS
    assert sum(scores) / len(scores) == pytest.approx(state["rm_score"], abs=1e-3)
