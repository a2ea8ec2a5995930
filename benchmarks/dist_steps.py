"""Wall time per optimizer step of ``instructrl sft`` and ``instructrl rm`` on one process (torch's threads on
every core) and on ``run.num_processes=N`` processes of one thread each (DDP over gloo), same global batch,
same model. Also checks that both runs logged the same losses. Prints a table and the ratios.

    .venv/bin/python benchmarks/dist_steps.py --model default --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(stage: str, args: list[str], out: Path, processes: int, threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "instructrl.cli", stage, *args, f"run.out_dir={out}", f"run.threads={threads}"]
    if processes > 1:
        command.append(f"run.num_processes={processes}")
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def step_times(out: Path, key: str) -> tuple[list[float], list[float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if key in r]
    times = [b["time"] - a["time"] for a, b in zip(train, train[1:])]  # steps after the first
    return times, [r[key] for r in train]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    a = parser.parse_args()
    stages = {
        "sft": (
            "sft/loss",
            [
                "--config",
                str(ROOT / "configs/tiny/sft.yaml"),
                f"model.name_or_path={a.model}",
                "model.dropout=0.0",
                "train.batch_size=4",
                f"train.grad_accum={a.processes}",
                f"train.max_steps={a.steps}",
                "train.save_every=0",
                "data.max_examples=200",
            ],
        ),
        "rm": (
            "rm/loss",
            [
                "--config",
                str(ROOT / "configs/tiny/rm.yaml"),
                f"model.name_or_path={a.model}",
                "model.dropout=0.0",
                "train.batch_size=4",
                "train.micro_batch_size=2",  # 8 sequences of K=4: activations of 8 x 256 tokens per process
                "data.max_normalize=8",
                f"train.max_steps={a.steps}",
                "train.save_every=0",
            ],
        ),
    }
    print(f"load before: {os.getloadavg()[0]:.2f}; model {a.model}; {a.cores} cores; {a.steps} steps")
    print(
        f"{'stage':6} {'1 process (s/step)':>20} {f'{a.processes} processes (s/step)':>22} {'speed-up':>9} {'max |d loss|':>13}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for stage, (key, args) in stages.items():
            run(stage, args, Path(tmp) / f"{stage}-1", 1, a.cores)
            run(stage, args, Path(tmp) / f"{stage}-n", a.processes, max(1, a.cores // a.processes))
            t1, l1 = step_times(Path(tmp) / f"{stage}-1", key)
            tn, ln = step_times(Path(tmp) / f"{stage}-n", key)
            s1, sn = sum(t1) / len(t1), sum(tn) / len(tn)
            gap = max(abs(x - y) for x, y in zip(l1, ln))
            print(f"{stage:6} {s1:>20.3f} {sn:>22.3f} {s1 / sn:>8.2f}x {gap:>13.2e}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
