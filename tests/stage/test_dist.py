"""Data parallel training on 2 CPU processes (gloo, one thread each), started by the CLI with
``run.num_processes=2``: SFT and the reward model take the same steps as one process with the same global
batch (losses step by step and the final weights, to float rounding), including accumulation groups that
leave a process without a micro-batch; and a 2-process run killed mid-way resumes in one process to the
same model as a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "instructrl.cli", *args], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(out: Path, key: str) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r[key]) for r in map(json.loads, lines) if key in r]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((out / "final").glob("*.safetensors"))))


def assert_same_run(one: Path, two: Path, keys: list[str]) -> None:
    for key in keys:
        a, b = rows(one, key), rows(two, key)
        assert [s for s, _ in a] == [s for s, _ in b] and a, key
        for (_, x), (_, y) in zip(a, b):
            assert abs(x - y) <= 1e-5 * max(1.0, abs(x)), (key, a, b)
    wa, wb = weights(one), weights(two)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst < 1e-5, worst


SFT = ["model.dropout=0.0", "train.batch_size=2", "train.save_every=0", "run.threads=1", "data.max_examples=40"]


@pytest.mark.parametrize("accum", [3, 1])  # 3: shares of 2 and 1; 1: the second process idles every step
def test_sft_on_two_processes_equals_one(tmp_path, tiny_model_dir, accum):
    base = ["sft", "--config", str(ROOT / "configs/tiny/sft.yaml"), f"model.name_or_path={tiny_model_dir}", *SFT]
    base += [f"train.grad_accum={accum}", "train.max_steps=4"]
    cli(*base, f"run.out_dir={tmp_path / 'one'}")
    cli(*base, f"run.out_dir={tmp_path / 'two'}", "run.num_processes=2")
    assert_same_run(tmp_path / "one", tmp_path / "two", ["sft/loss", "sft/val_loss", "sft/grad_norm", "sft/tokens"])


def test_rm_on_two_processes_equals_one(tmp_path, tiny_model_dir):
    base = ["rm", "--config", str(ROOT / "configs/tiny/rm.yaml"), f"model.name_or_path={tiny_model_dir}"]
    base += ["model.dropout=0.0", "train.max_steps=4", "train.save_every=0", "run.threads=1"]
    base += ["train.batch_size=6", "train.micro_batch_size=4"]  # 3 micro-batches per step: shares of 2 and 1
    cli(*base, f"run.out_dir={tmp_path / 'one'}")
    cli(*base, f"run.out_dir={tmp_path / 'two'}", "run.num_processes=2")
    keys = ["rm/loss", "rm/accuracy", "rm/grad_norm", "rm/eval_accuracy", "rm/pairs_seen"]
    assert_same_run(tmp_path / "one", tmp_path / "two", keys)
    assert json.loads((tmp_path / "two" / "final" / "state.json").read_text())["bias"] == pytest.approx(
        json.loads((tmp_path / "one" / "final" / "state.json").read_text())["bias"], abs=1e-5
    )


def test_a_killed_two_process_run_resumes_in_one(tmp_path, tiny_model_dir):
    base = ["sft", "--config", str(ROOT / "configs/tiny/sft.yaml"), f"model.name_or_path={tiny_model_dir}", *SFT]
    base = [a for a in base if a != "train.save_every=0"] + [
        "train.grad_accum=2",
        "train.max_steps=6",
        "train.save_every=2",
    ]
    cli(*base, f"run.out_dir={tmp_path / 'straight'}")
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "instructrl.cli", *base, f"run.out_dir={out}", "run.num_processes=2"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the launcher and both workers: one group to kill
    )
    deadline = time.monotonic() + 120
    while not (out / "step-000004" / "state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    cli(*base, f"run.out_dir={out}")  # one process takes over the checkpoint two processes wrote
    assert_same_run(tmp_path / "straight", out, ["sft/loss"])
