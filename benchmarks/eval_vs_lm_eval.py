"""TruthfulQA MC1/MC2 and HellaSwag acc/acc_norm: `instructrl eval` against EleutherAI's
lm-evaluation-harness, on the same local data files and the same model, one after the other.

Both sides read the same sample files written here (a seeded sample of ``--n`` items of
../shared/data/truthfulqa/data/mc_task.json, in the Hugging Face layout both read, and of
../shared/data/hellaswag/hellaswag_val_sample.jsonl). lm-evaluation-harness runs its own task
definitions (its installed ``truthfulqa_mc1/mc2.yaml`` and ``hellaswag.yaml``, with their 6-shot
QA primer, MC2 function and HellaSwag preprocessing), included from a task file that only points
``dataset_path`` at the local JSON file; instructrl runs ``instructrl eval
tasks=[truthfulqa|hellaswag]`` (prompt mode ``qa``, zero-shot). Both load the model in fp32, on the
CPU, with the same number of threads and the same batch size (continuations per forward pass), each
in its own process started by this script: the times are whole runs of each tool's command line,
model loading included, one task at a time.

Printed: each figure from both tools with the difference in points, each tool's time per task
(whole command, and less the same command on a 2-item sample: start-up, model and data loading), and
the ratios. With ``--check-items`` (default on), every per-choice log-likelihood that
lm-evaluation-harness logged is compared with ours for the same (context, continuation) (largest
absolute difference), and the per-item predictions are compared.

lm-evaluation-harness must live in its own virtual environment (it pins other versions than ours)::

    python -m venv .bench/lmeval-venv
    .bench/lmeval-venv/bin/pip install torch==2.13.0
    .bench/lmeval-venv/bin/pip install "lm-eval[hf]" transformers==<ours>

    flock /tmp/heavy.lock .venv/bin/python benchmarks/eval_vs_lm_eval.py --n 200 --threads 2
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TQA = DATA / "truthfulqa" / "data" / "mc_task.json"
HS = DATA / "hellaswag" / "hellaswag_val_sample.jsonl"


def write_samples(n: int, n_hellaswag: int, seed: int, out: Path) -> tuple[Path, Path, int]:
    """The two sample files; returns their paths and how many TruthfulQA items list a false MC2
    answer before a true one (lm-evaluation-harness before its MC2 v3.0 read labels by position)."""
    questions = json.loads(TQA.read_text(encoding="utf-8-sig"))
    rng = random.Random(seed)
    picked = sorted(rng.sample(range(len(questions)), min(n, len(questions))))
    tqa = out / "truthfulqa_sample.jsonl"
    unordered = 0
    with open(tqa, "w", encoding="utf-8") as fh:
        for i in picked:
            q = questions[i]
            row = {"question": q["question"]}
            for key in ("mc1_targets", "mc2_targets"):
                row[key] = {"choices": list(q[key]), "labels": list(q[key].values())}
            labels = row["mc2_targets"]["labels"]
            unordered += labels != sorted(labels, reverse=True)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    lines = HS.read_text(encoding="utf-8").splitlines()
    hs = out / "hellaswag_sample.jsonl"
    keep = sorted(rng.sample(range(len(lines)), min(n_hellaswag, len(lines))))
    hs.write_text("\n".join(lines[i] for i in keep) + "\n", encoding="utf-8")
    return tqa, hs, unordered


def lm_eval_tasks_dir(python: str) -> Path:
    code = "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"
    return Path(subprocess.check_output([python, "-c", code], text=True).strip()) / "tasks"


def write_lm_eval_tasks(tasks_dir: Path, tqa: Path, hs: Path, out: Path) -> dict[str, str]:
    """Task files that include lm-evaluation-harness's own definitions and read the local files."""
    local = {
        "bench_truthfulqa_mc1": (tasks_dir / "truthfulqa" / "truthfulqa_mc1.yaml", tqa),
        "bench_truthfulqa_mc2": (tasks_dir / "truthfulqa" / "truthfulqa_mc2.yaml", tqa),
        "bench_hellaswag": (tasks_dir / "hellaswag" / "hellaswag.yaml", hs),
    }
    for name, (base, data) in local.items():
        (out / f"{name}.yaml").write_text(
            f"include: {base}\n"
            f"task: {name}\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {data}\n"
            "training_split: null\n"
            "validation_split: validation\n"
            "test_split: null\n"
            "num_fewshot: 0\n"
        )
    return {name: str(out) for name in local}


def run_timed(cmd: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}), see {log}:\n  {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return seconds


def run_lm_eval(python: str, model: str, task: str, include: str, out: Path, args, env: dict) -> tuple[dict, float]:
    dest = out / f"lmeval-{task}"
    cmd = [
        python,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype=float32",
        "--tasks",
        task,
        "--include_path",
        include,
        "--device",
        "cpu",
        "--batch_size",
        str(args.batch_size),
        "--output_path",
        str(dest),
        "--log_samples",
        "--seed",
        str(args.seed),
    ]
    seconds = run_timed(cmd, env, out / f"lmeval-{task}.log")
    results = json.loads(Path(sorted(glob.glob(str(dest / "**" / "results_*.json"), recursive=True))[-1]).read_text())
    samples = sorted(glob.glob(str(dest / "**" / f"samples_{task}_*.jsonl"), recursive=True))[-1]
    docs = [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
    return {"metrics": results["results"][task], "samples": docs}, seconds


def run_ours(model: str, task: str, data: Path, out: Path, args, env: dict) -> tuple[list[dict], float]:
    dest = out / f"ours-{task}"
    cmd = [
        sys.executable,
        "-m",
        "instructrl.cli",
        "eval",
        f"run.out_dir={dest}",
        f"policies=[{{name: default, model: {model}}}]",
        f"tasks=[{task}]",
        "dtype=fp32",
        "run.precision=fp32",
        "run.device=cpu",
        f"run.threads={args.threads}",
        f"run.seed={args.seed}",
        "run.progress=false",
        f"forward_batch_size={args.batch_size}",
    ]
    if task == "truthfulqa":
        cmd += [f"truthfulqa.data={data}", "truthfulqa.prompt_modes=[qa]"]
    else:
        cmd += [f"hellaswag.data={data}", "hellaswag.shots=[0]"]
    seconds = run_timed(cmd, env, out / f"ours-{task}.log")
    return json.loads((dest / "task_results.json").read_text())["rows"], seconds


def check_items(model: str, lm_eval_docs: dict[str, list[dict]]) -> dict:
    """Our log-likelihood of every (context, continuation) lm-evaluation-harness logged, compared
    (each distinct continuation of a context computed once: MC1's choices are among MC2's)."""
    import numpy as np

    from instructrl.eval.tasks.lm import HFLanguageModel

    theirs: dict[str, list[tuple[str, list[str], list[float]]]] = {}
    wanted: dict[str, dict[str, None]] = {}
    for task, docs in lm_eval_docs.items():
        theirs[task] = []
        for d in docs:
            # logged as {"gen_args_i": {"arg_0": context, "arg_1": continuation}} and resps [[[loglik, greedy]]]
            pairs = [(a["arg_0"], a["arg_1"]) for a in d["arguments"].values()]
            if len({c for c, _ in pairs}) != 1:
                raise ValueError(f"{task}: doc {d['doc_id']} has more than one context")
            ctx, conts = pairs[0][0], [c for _, c in pairs]
            theirs[task].append((ctx, conts, [float(r[0][0]) for r in d["resps"]]))
            wanted.setdefault(ctx, {}).update(dict.fromkeys(conts))
    lm = HFLanguageModel.load(model, device="cpu", dtype="fp32", precision="fp32", forward_batch_size=32)
    requests = [(ctx, list(conts)) for ctx, conts in wanted.items()]
    ours = {
        (ctx, cont): x.logprob
        for (ctx, conts), group in zip(requests, lm.loglikelihoods(requests))
        for cont, x in zip(conts, group)
    }
    worst, disagree, total = 0.0, {}, {}
    for task, items in theirs.items():
        disagree[task] = 0
        for ctx, conts, lls in items:
            mine = np.asarray([ours[(ctx, c)] for c in conts])
            worst = max(worst, float(np.max(np.abs(mine - np.asarray(lls)))))
            disagree[task] += int(np.argmax(mine) != np.argmax(lls))
        total[task] = len(items)
    return {"max_abs_loglik_diff": worst, "argmax_disagreements": disagree, "items": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="TruthfulQA questions (a seeded sample)")
    ap.add_argument("--n-hellaswag", type=int, default=None, help="HellaSwag items (default: --n)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16, help="continuations per forward pass, both tools")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default", help="'default' or a local Hugging Face model directory")
    ap.add_argument("--lm-eval-python", default=str(ROOT / ".bench" / "lmeval-venv" / "bin" / "python"))
    ap.add_argument("--tasks", default="truthfulqa,hellaswag")
    ap.add_argument("--no-check-items", dest="check_items", action="store_false")
    args = ap.parse_args()

    if args.model == "default":
        from instructrl.models.default import default_model_dir

        model = str(default_model_dir())
    else:
        model = str(Path(args.model).resolve())
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT / "src"),
    }
    wanted = args.tasks.split(",")
    with tempfile.TemporaryDirectory(prefix="eval_vs_lm_eval_") as tmp:
        out = Path(tmp)
        tasks_dir = lm_eval_tasks_dir(args.lm_eval_python)
        figures: list[tuple[str, float, float]] = []
        times: dict[str, dict[int, tuple[float, float]]] = {}
        docs: dict[str, list[dict]] = {}
        # the same runs on 2 items first: what each command spends on start-up, model and data loading
        for n in (2, args.n):
            work = out / f"n{n}"
            work.mkdir()
            tqa, hs, unordered = write_samples(n, n if n == 2 else args.n_hellaswag or n, args.seed, work)
            include = write_lm_eval_tasks(tasks_dir, tqa, hs, work)
            if "truthfulqa" in wanted:
                rows, ours_s = run_ours(model, "truthfulqa", tqa, work, args, env)
                theirs_s = 0.0
                for metric in ("mc1", "mc2"):
                    task = f"bench_truthfulqa_{metric}"
                    got, seconds = run_lm_eval(args.lm_eval_python, model, task, include[task], work, args, env)
                    theirs_s += seconds
                    if n == args.n:
                        docs[task] = got["samples"]
                        ours = next(r["value"] for r in rows if r["metric"] == metric)
                        figures.append((f"TruthfulQA {metric.upper()}", ours, got["metrics"]["acc,none"]))
                times.setdefault("TruthfulQA MC1 + MC2", {})[n] = (ours_s, theirs_s)
            if "hellaswag" in wanted:
                rows, ours_s = run_ours(model, "hellaswag", hs, work, args, env)
                task = "bench_hellaswag"
                got, theirs_s = run_lm_eval(args.lm_eval_python, model, task, include[task], work, args, env)
                if n == args.n:
                    docs[task] = got["samples"]
                    for metric in ("acc", "acc_norm"):
                        ours = next(r["value"] for r in rows if r["metric"] == metric)
                        figures.append((f"HellaSwag {metric}", ours, got["metrics"][f"{metric},none"]))
                times.setdefault("HellaSwag", {})[n] = (ours_s, theirs_s)
        check = check_items(model, docs) if args.check_items else None

    print(
        f"\nmodel {model}, {args.n} TruthfulQA / {args.n_hellaswag or args.n} HellaSwag items (seed {args.seed}), fp32, CPU, "
        f"{args.threads} threads, batch {args.batch_size}"
    )
    if unordered:
        print(f"note: {unordered} TruthfulQA items list a false MC2 answer before a true one")
    print(f"\n{'figure':<22} {'instructrl':>11} {'lm-eval':>9} {'diff (points)':>14}")
    for name, ours, theirs in figures:
        print(f"{name:<22} {ours:>11.4f} {theirs:>9.4f} {100 * (ours - theirs):>14.2f}")
    print(f"\n{'seconds':<22} {'instructrl':>11} {'lm-eval':>9} {'ratio':>7}   whole command; (minus the 2-item run)")
    total = [0.0, 0.0, 0.0, 0.0]
    for name, by_n in times.items():
        (o2, t2), (o, t) = by_n[2], by_n[args.n]
        total = [total[0] + o, total[1] + t, total[2] + o - o2, total[3] + t - t2]
        print(
            f"{name:<22} {o:>11.1f} {t:>9.1f} {t / o:>6.2f}x   ({o - o2:.1f} s vs {t - t2:.1f} s: {(t - t2) / (o - o2):.2f}x)"
        )
    print(
        f"{'total':<22} {total[0]:>11.1f} {total[1]:>9.1f} {total[1] / total[0]:>6.2f}x   "
        f"({total[2]:.1f} s vs {total[3]:.1f} s: {total[3] / total[2]:.2f}x)"
    )
    if check:
        print(f"\nper item: largest |our log-likelihood - lm-eval's| = {check['max_abs_loglik_diff']:.2e} nats")
        print(f"items whose highest-likelihood choice differs: {check['argmax_disagreements']} of {check['items']}")


if __name__ == "__main__":
    main()
