"""PPO throughput: instructrl's PPO loop and TRL's PPOTrainer side by side, on this machine.

    python benchmarks/ppo_throughput.py [--steps 2] [--batch 16] [--response-length 64] [--threads 1]

TRL removed PPO after 1.12.0, so its side runs in a separate virtual environment that this script
creates on first use (``python -m venv``; ``torch==2.13.0`` is installed first, then
``trl==1.12.0``) under ``~/.cache/instructrl/trl-1.12.0`` (``--trl-venv`` to move it), and uses
``trl.experimental.ppo.PPOTrainer``.

Both sides get the same work: the default model as the policy and its frozen copy as the
reference, one reward model (the default model's backbone with a seeded random scalar head: the
throughput does not depend on what the head has learned) that also initializes the value function,
the same OpenAssistant prompts (each used once), the same batch of episodes per PPO step, response
length cap (sampling at temperature 1 stops at EOS), PPO epochs, minibatches and micro-batches,
KL coefficient, learning rate and bf16 autocast. Reported for each: samples (episodes) per second
of the PPO loop (model loading excluded), the time split into generation / scoring (reward model) /
rollout forward passes (log-probs, reference, values) / training, the mean response length, and the
ratio of the two samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
PROMPTS = ROOT.parent / "shared" / "data" / "oasst" / "prompt_lottery_en_250_text.jsonl"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRL_DRIVER = r"""
import json, sys, time
import torch
spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
torch.manual_seed(spec["seed"])
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
import trl
from trl.experimental.ppo import PPOConfig, PPOTrainer
import trl.experimental.ppo.ppo_trainer as T

tok = AutoTokenizer.from_pretrained(spec["policy"])
tok.padding_side = "left"
policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
ref = AutoModelForCausalLM.from_pretrained(spec["policy"])
rm = AutoModelForSequenceClassification.from_pretrained(spec["rm"], num_labels=1)
value = AutoModelForSequenceClassification.from_pretrained(spec["rm"], num_labels=1)
ds = Dataset.from_dict({"input_ids": spec["prompt_ids"]})
args = PPOConfig(
    output_dir=spec["out"], report_to=[], save_strategy="no", logging_steps=1, num_sample_generations=0,
    per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=spec["minibatch"] // spec["micro_batch"],
    num_mini_batches=spec["batch"] // spec["minibatch"], num_ppo_epochs=spec["epochs"],
    total_episodes=spec["batch"] * spec["steps"], local_rollout_forward_batch_size=spec["forward_batch"],
    response_length=spec["response_length"], stop_token="eos", temperature=1.0, kl_coef=spec["kl_coef"],
    learning_rate=spec["lr"], bf16=spec["bf16"], use_cpu=True, seed=spec["seed"], dataloader_num_workers=0,
)
timers = {"generate": 0.0, "score": 0.0, "forward": 0.0}
lengths = []

def timed(fn, key_of):
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        timers[key_of(a)] += time.perf_counter() - t
        return out
    return wrapper

_gen = T.batch_generation
def gen_and_count(*a, **k):
    out = _gen(*a, **k)
    resp = out[0][:, a[1].shape[1]:]
    eos = (resp == tok.eos_token_id).int()
    n = torch.where(eos.any(1), eos.argmax(1) + 1, torch.full_like(eos[:, 0], resp.shape[1]))
    lengths.extend(n.tolist())
    return out
T.batch_generation = timed(gen_and_count, lambda a: "generate")
# rollout passes run without gradients; the training epochs' forward passes (with gradients) are
# part of training, which is the rest of the time
rollout = lambda key: (lambda a: key if not torch.is_grad_enabled() else "_train")
timers["_train"] = 0.0
T.get_reward = timed(T.get_reward, lambda a: "score" if a[0] is rm else rollout("forward")(a))
T.forward = timed(T.forward, rollout("forward"))
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=rm,
                     train_dataset=ds, value_model=value)
t0 = time.perf_counter()
trainer.train()
total = time.perf_counter() - t0
timers.pop("_train")
print("RESULT " + json.dumps({"total": total, "timers": timers, "episodes": spec["batch"] * spec["steps"],
                              "mean_response_len": sum(lengths) / max(1, len(lengths)),
                              "trl": trl.__version__}))
"""


def ensure_trl_venv(path: Path) -> Path:
    py = path / "bin" / "python"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", "import trl.experimental.ppo"], capture_output=True).returncode == 0
    ):
        return py
    print(f"creating {path} (torch==2.13.0, then trl==1.12.0) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "trl==1.12.0"], check=True)
    return py


def prepare(work: Path, n_prompts: int, seed: int) -> tuple[Path, Path, list[str]]:
    """The policy (default model + normalized tokenizer), a reward model from it, and prompts."""
    import torch

    from instructrl.models.loading import load_model, load_tokenizer
    from instructrl.models.scalar import init_reward_model, save_reward_info

    tok = load_tokenizer("default")
    policy_dir, rm_dir = work / "policy", work / "rm"
    if not (policy_dir / "config.json").exists():
        load_model("default", tokenizer=tok).save_pretrained(policy_dir)
        tok.save_pretrained(policy_dir)
    if not (rm_dir / "config.json").exists():
        torch.manual_seed(seed)
        rm = init_reward_model(str(policy_dir), tokenizer=tok)
        rm.model.save_pretrained(rm_dir)
        tok.save_pretrained(rm_dir)
        save_reward_info(rm_dir, 0.0)
    prompts = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [p for p in prompts if isinstance(p, str) and len(p) < 1000][:n_prompts]
    return policy_dir, rm_dir, prompts


def run_ours(args, policy_dir: Path, rm_dir: Path, prompts_file: Path, out: Path) -> dict:
    import torch

    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.train import run
    from instructrl.utils.metrics import read_metrics

    torch.set_num_threads(args.threads)
    cfg = load_config(
        PPOConfig,
        None,
        [
            f"run.out_dir={out}",
            f"run.seed={args.seed}",
            "run.precision=bf16",
            "run.resume=false",
            "run.progress=false",
            f"policy.name_or_path={policy_dir}",
            f"data.prompts=[{prompts_file}]",
            "data.max_prompt_tokens=256",
            "reward.kind=model",
            f"reward.model={rm_dir}",
            f"reward.batch_size={args.forward_batch}",
            f"rollout.engine={args.engine}",
            f"rollout.batch_size={args.batch}",
            f"rollout.max_new_tokens={args.response_length}",
            f"rollout.forward_batch_size={args.forward_batch}",
            f"ppo.steps={args.steps}",
            f"ppo.batch_size={args.batch}",
            f"ppo.minibatch_size={args.minibatch}",
            f"ppo.micro_batch_size={args.micro_batch}",
            f"ppo.epochs={args.epochs}",
            f"kl.coef={args.kl_coef}",
            f"optim.lr={args.lr}",
            "optim.schedule=constant",
            "optim.warmup_ratio=0",
            "train.save_every=0",
            "train.eval_every=0",
            "train.sample_every=0",
        ],
    )
    run(cfg)
    rows = [r for r in read_metrics(out) if "ppo/score" in r]
    step_time = [args.batch / r["ppo/samples_per_s"] for r in rows]
    split = {k: sum(r[f"ppo/time_{k}"] for r in rows) for k in ("generate", "score", "forward", "train")}
    return {
        "total": sum(step_time),
        "timers": split,
        "episodes": args.batch * len(rows),
        "mean_response_len": sum(r["ppo/response_len"] for r in rows) / len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="PPO steps (rollout + update) per side")
    ap.add_argument("--batch", type=int, default=16, help="episodes per PPO step")
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--forward-batch", type=int, default=8, help="sequences per no-grad rollout forward pass")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--response-length", type=int, default=64)
    ap.add_argument("--kl-coef", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--engine", default="cached", choices=["cached", "hf"], help="our rollout engine")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trl-venv", default=str(Path.home() / ".cache" / "instructrl" / "trl-1.12.0"))
    ap.add_argument("--skip-trl", action="store_true", help="measure only instructrl (no venv needed)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (models, prompts, outputs)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ppo_bench_"))
    try:
        measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def measure(args, work: Path) -> None:
    policy_dir, rm_dir, prompts = prepare(work, args.batch * args.steps, args.seed)
    prompts_file = work / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    print(
        f"default model, {args.steps} PPO steps x {args.batch} episodes, response <= {args.response_length} tokens, "
        f"minibatch {args.minibatch}, micro-batch {args.micro_batch}, {args.epochs} epoch(s), bf16 autocast, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    results = {}
    t = time.perf_counter()
    results["instructrl"] = run_ours(args, policy_dir, rm_dir, prompts_file, work / "ours")
    print(f"  instructrl done in {time.perf_counter() - t:.0f} s", flush=True)
    if not args.skip_trl:
        from instructrl.models.forward import encode_prompts
        from instructrl.models.loading import load_tokenizer

        py = ensure_trl_venv(Path(args.trl_venv))
        tok = load_tokenizer(str(policy_dir))
        spec = {
            "policy": str(policy_dir),
            "rm": str(rm_dir),
            "prompt_ids": encode_prompts(tok, prompts, 256),
            "threads": args.threads,
            "seed": args.seed,
            "out": str(work / "trl"),
            "batch": args.batch,
            "minibatch": args.minibatch,
            "micro_batch": args.micro_batch,
            "epochs": args.epochs,
            "steps": args.steps,
            "forward_batch": args.forward_batch,
            "response_length": args.response_length,
            "kl_coef": args.kl_coef,
            "lr": args.lr,
            "bf16": True,
        }
        (work / "spec.json").write_text(json.dumps(spec))
        (work / "trl_driver.py").write_text(TRL_DRIVER)
        t = time.perf_counter()
        proc = subprocess.run(
            [str(py), str(work / "trl_driver.py"), str(work / "spec.json")],
            capture_output=True,
            text=True,
            env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"},
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout[-3000:], proc.stderr[-5000:])
            raise SystemExit("the TRL run failed")
        results["trl"] = json.loads(line[len("RESULT ") :])
        print(f"  TRL done in {time.perf_counter() - t:.0f} s", flush=True)
    for name, r in results.items():
        sps = r["episodes"] / r["total"]
        r["samples_per_s"] = sps
        split = " / ".join(f"{k} {v:.1f} s" for k, v in r["timers"].items())
        rest = r["total"] - sum(v for k, v in r["timers"].items() if k != "train")
        print(
            f"{name:10s}: {sps:.3f} samples/s over {r['total']:.1f} s | {split} | training (the rest) "
            f"{rest:.1f} s | mean response {r['mean_response_len']:.1f} tokens"
        )
    if "trl" in results:
        ratio = results["instructrl"]["samples_per_s"] / results["trl"]["samples_per_s"]
        results["ratio"] = ratio
        print(f"ratio instructrl / TRL {results['trl'].get('trl', '')}: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
