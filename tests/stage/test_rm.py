"""The reward-model stage on the tiny model: learning a preference, normalization, exact resume after
SIGKILL, LoRA, `rm score` from the CLI."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instructrl.config import load_config
from instructrl.models.loading import load_tokenizer
from instructrl.models.scalar import REWARD_FILE, init_reward_model, load_reward_model
from instructrl.records import Demonstration, Ranking, read_jsonl, write_jsonl
from instructrl.rm.config import RMConfig
from instructrl.rm.data import encode_rankings, split_by_conversation
from instructrl.rm.score import evaluate
from instructrl.rm.train import run
from instructrl.utils.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/tiny/rm.yaml"
WORDS = "the quick brown fox jumps over lazy dog paris france sea poem".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """A learnable preference: the more 'great' (and the fewer 'awful', same length) words a response
    has, the better; K = 2..4 with some ties. And a few demonstrations for normalization."""
    rng = random.Random(0)
    rows = []
    for i in range(160):
        k = rng.choice([2, 3, 4])
        goods = rng.sample(range(5), k)
        responses = []
        for g in goods:
            toks = ["great"] * g + ["awful"] * (4 - g) + [rng.choice(WORDS) for _ in range(2)]
            rng.shuffle(toks)
            responses.append(" ".join(toks))
        ranks = [sorted(goods, reverse=True).index(g) + 1 for g in goods]
        if i % 10 == 0 and k > 2:  # a tie: the labeler could not separate the two worst
            worst = max(ranks)
            ranks = [worst - 1 if r == worst else r for r in ranks]
        rows.append(
            Ranking(
                prompt=" ".join(rng.choice(WORDS) for _ in range(5)),
                responses=responses,
                ranks=ranks,
                id=f"r{i}",
                meta={"conversation": f"c{i // 2}"},
            )
        )
    d = tmp_path_factory.mktemp("rmdata")
    write_jsonl(d / "rankings.jsonl", rows)
    write_jsonl(
        d / "demos.jsonl",
        [Demonstration(prompt=f"say {w}", response=f"{w} great {w}", id=f"d{i}") for i, w in enumerate(WORDS)],
    )
    return d / "rankings.jsonl", d / "demos.jsonl"


def args_for(tiny_model_dir, data, out, *extra):
    rankings, demos = data
    return [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train=[{rankings}]",
        f"data.demonstrations=[{demos}]",
        f"run.out_dir={out}",
        *extra,
    ]


def test_rm_learns_the_preference_and_normalizes(tiny_model_dir, data, tmp_path):
    cfg = load_config(
        RMConfig, CONFIG, args_for(tiny_model_dir, data, tmp_path / "rm", "train.max_steps=null", "train.epochs=2")
    )
    # held-out accuracy of the untrained model, on the same split the stage makes
    tok = load_tokenizer(str(tiny_model_dir))
    held = split_by_conversation(read_jsonl(data[0], Ranking), cfg.data.eval_fraction, cfg.data.split_salt)[1]
    held_ex, _ = encode_rankings(tok, held, cfg.model.max_seq_len)
    torch.manual_seed(cfg.run.seed)
    before = evaluate(
        init_reward_model(str(tiny_model_dir), tokenizer=tok),
        held_ex,
        tok.pad_token_id,
        8,
        torch.device("cpu"),
        torch.float32,
    )

    final = run(cfg)
    rows = read_metrics(tmp_path / "rm")
    evals = [r for r in rows if "rm/eval_accuracy" in r]
    assert len(evals) == 2  # one per epoch
    after = evals[-1]
    assert after["rm/eval_pairs"] == before["pairs"] > 60
    assert before["accuracy"] < 0.75
    assert after["rm/eval_accuracy"] >= 0.9 and after["rm/eval_accuracy"] > before["accuracy"] + 0.2
    assert after["rm/eval_loss"] < before["loss"] - 0.2
    assert {"rm/eval_accuracy_k2", "rm/eval_accuracy_k3", "rm/eval_accuracy_k4", "rm/eval_margin"} <= set(after)
    train = [r for r in rows if "rm/loss" in r]
    assert train[-1]["rm/pairs_seen"] > train[-1]["rm/prompts_seen"]  # K > 2 prompts bring several pairs

    # final/ is a sequence-classification checkpoint with the normalization bias beside it
    info = json.loads((final / REWARD_FILE).read_text())
    assert info["normalized_on"] == len(WORDS) and info["bias"] == pytest.approx(-info["raw_mean"])
    rm, tok2 = load_reward_model(tmp_path / "rm")  # a run directory resolves to final/
    demos = read_jsonl(data[1], Demonstration)
    scores = rm.score_texts(tok2, [d.prompt for d in demos], [d.response for d in demos], max_len=256)
    assert sum(scores) / len(scores) == pytest.approx(0.0, abs=1e-4)
    # the loaded model ranks like the trained one: a 'great' response beats an 'awful' one
    good, bad = rm.score_texts(
        tok2, ["sea poem"] * 2, ["great great great great fox dog", "awful awful awful awful fox dog"]
    )
    assert good > bad

    # running again finds final/ and does nothing
    assert run(cfg) == final


def test_resume_after_sigkill_is_exact(tiny_model_dir, data, tmp_path, sigkill_when):
    args = args_for(
        tiny_model_dir,
        data,
        tmp_path / "ref",
        "train.max_steps=16",
        "train.save_every=3",
        "train.keep_checkpoints=0",
        "train.batch_size=6",
    )
    ref = run(load_config(RMConfig, CONFIG, args))
    out = tmp_path / "killed"
    args = [a for a in args if not a.startswith("run.out_dir=")] + [f"run.out_dir={out}"]
    sigkill_when(["rm", "--config", str(CONFIG), *args], out / "step-000006" / "state.json")
    assert not (out / "final").exists(), "the kill came too late to test anything"

    resumed = run(load_config(RMConfig, CONFIG, args))
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and any("score" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ref_rows = [r for r in read_metrics(tmp_path / "ref") if "rm/loss" in r]
    rows = [r for r in read_metrics(out) if "rm/loss" in r]
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == list(range(1, 17))
    assert [r["rm/loss"] for r in rows] == pytest.approx([r["rm/loss"] for r in ref_rows], abs=1e-6)
    assert rows[-1]["rm/pairs_seen"] == ref_rows[-1]["rm/pairs_seen"]
    assert json.loads((resumed / REWARD_FILE).read_text())["bias"] == pytest.approx(
        json.loads((ref / REWARD_FILE).read_text())["bias"], abs=1e-6
    )


def test_lora_and_top_layers(tiny_model_dir, data, tmp_path):
    final = run(
        load_config(
            RMConfig,
            CONFIG,
            args_for(
                tiny_model_dir,
                data,
                tmp_path / "lora",
                "lora.enabled=true",
                "lora.r=4",
                "train.max_steps=4",
                "optim.lr=1e-2",
            ),
        )
    )
    assert not (final / "adapter_config.json").exists()  # merged
    rm, _ = load_reward_model(final)
    assert not hasattr(rm.model, "peft_config")
    out = tmp_path / "top"
    run(
        load_config(
            RMConfig,
            CONFIG,
            args_for(tiny_model_dir, data, out, "train.trainable_layers=1", "train.max_steps=3", "train.save_every=0"),
        )
    )
    init = load_file(str(tiny_model_dir / "model.safetensors"))
    trained = load_file(str(out / "final" / "model.safetensors"))
    frozen = [k for k in trained if k.startswith("model.layers.0.") or k.startswith("model.embed")]
    assert frozen and all(torch.equal(trained[k], init[k]) for k in frozen)
    assert not torch.equal(trained["model.layers.1.mlp.up_proj.weight"], init["model.layers.1.mlp.up_proj.weight"])


def test_train_on_builtin_data_then_score_from_the_cli(tiny_model_dir, data, tmp_path, caplog):
    from instructrl.records import RecordError
    from instructrl.rm.config import RMScoreConfig
    from instructrl.rm.score import run as score

    out = tmp_path / "builtin"
    # the tiny config's default data: synthetic rankings from the built-in demonstrations
    with caplog.at_level("INFO"):
        run(
            load_config(
                RMConfig, CONFIG, [f"model.name_or_path={tiny_model_dir}", f"run.out_dir={out}", "train.max_steps=3"]
            )
        )
    assert "synthetic rankings of K=4" in caplog.text
    rows = [
        {"prompt": "say sea", "response": "sea great sea", "policy": "x"},
        {"prompt": [{"role": "user", "content": "hi"}], "response": "hello"},
    ]
    write_jsonl(tmp_path / "samples.jsonl", rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructrl.cli",
            "rm",
            "score",
            f"model={out}",
            f"input={tmp_path / 'samples.jsonl'}",
            f"run.out_dir={tmp_path / 'scored'}",
            "run.precision=fp32",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    scored = [json.loads(ln) for ln in (tmp_path / "scored" / "scores.jsonl").read_text().splitlines()]
    assert [s["policy"] for s in scored[:1]] == ["x"] and all(isinstance(s["score"], float) for s in scored)
    rm, tok = load_reward_model(out)
    assert scored[1]["score"] == pytest.approx(rm.score_texts(tok, [rows[1]["prompt"]], ["hello"])[0], abs=1e-4)
    # preference data: every response scored, accuracy and the length rules reported
    score(load_config(RMScoreConfig, None, [f"model={out}", f"input={data[0]}", f"run.out_dir={tmp_path / 'acc'}"]))
    m = json.loads((tmp_path / "acc" / "metrics.json").read_text())
    assert m["prompts"] == 160 and 0.0 <= m["accuracy"] <= 1.0 and m["longer_wins"] == pytest.approx(0.5, abs=0.1)
    ranked = read_jsonl(tmp_path / "acc" / "scores.jsonl", Ranking)
    assert len(ranked) == 160 and all(len(r.meta["scores"]) == len(r.responses) for r in ranked)
    # a bad record names file, line and field
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "response": "r"}\n{"prompt": "", "response": "r"}\n')
    with pytest.raises(RecordError, match="bad.jsonl:2: field 'prompt'"):
        score(
            load_config(
                RMScoreConfig,
                None,
                [f"model={out}", f"input={tmp_path / 'bad.jsonl'}", f"run.out_dir={tmp_path / 'bad'}"],
            )
        )
