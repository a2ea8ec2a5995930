"""Curate a million-prompt synthetic log: wall time and peak memory, against a naive in-memory
pandas pipeline, plus langid's own classify against the batched identifier.

    .venv/bin/python benchmarks/curate_scale.py                 # 1,000,000 prompts
    .venv/bin/python benchmarks/curate_scale.py --prompts 100000

The log is generated in a temporary folder (never committed) and looks like an API log: about
125k users whose prompt counts follow a Zipf law (exponent 0.8: a few hundred users above the 200 cap),
organizations, ISO timestamps, 12 use-case templates with varied vocabulary and lengths, ~6%
resubmitted exact duplicates (case/whitespace changed), ~4% long few-shot prompts that share a
100+ character prefix, ~2% with personal data (emails, phones, cards, IPs, addresses), ~5% in
French, German or Spanish, and a few broken lines and records without a user id.

Figures:
  ours   ``instructrl curate`` (default tokenizer, PII masking, langid, categories) in a child
         process: wall seconds and peak RSS (``getrusage`` of the child).
  peer   pandas, everything in memory: read_json(lines=True), normalize, drop_duplicates (exact
         and first-100-characters), sort+groupby cap, hashed user split, write JSONL. No PII, no
         language id, no tokens (it would take hours with langid.classify at ~ms per prompt).
  langid ``langid.classify`` per prompt vs ``BatchLangId`` on the same 5,000 prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = [
    "the French Revolution",
    "photosynthesis",
    "black holes",
    "the stock market",
    "machine learning",
    "climate change",
    "the Roman Empire",
    "quantum computing",
    "healthy sleep",
    "compound interest",
    "the immune system",
    "volcanoes",
    "the printing press",
    "renewable energy",
    "jazz music",
    "chess openings",
    "sourdough bread",
    "marathon training",
    "the water cycle",
    "supply chains",
    "electric cars",
    "honey bees",
    "the Silk Road",
    "plate tectonics",
    "vaccines",
    "cryptography",
    "the Renaissance",
    "coral reefs",
]
AUDIENCES = [
    "a five-year-old",
    "a high school student",
    "my grandmother",
    "a software engineer",
    "a new employee",
    "a room of investors",
    "my book club",
    "a beginner",
    "an expert",
    "my team",
]
TONES = ["formal", "friendly", "funny", "concise", "persuasive", "poetic", "neutral", "enthusiastic"]
FORMS = [
    "poem",
    "short story",
    "haiku",
    "blog post",
    "tweet",
    "cover letter",
    "speech",
    "limerick",
    "product description",
]
TEMPLATES = [
    "Explain {s} to {a}.",
    "What is the most important thing to know about {s}?",
    "Write a {t} {f} about {s}.",
    "Summarize the following notes about {s} in three bullet points:\n{body}",
    "Brainstorm {n} ideas for a {t} presentation on {s} for {a}.",
    "Rewrite this paragraph in a {t} tone:\n{body}",
    'Classify the sentiment of this review about {s}: "{body}"',
    "Extract all the dates and names from this text:\n{body}",
    "Based on the passage below, why does {s} matter?\n{body}",
    "Why do people disagree about {s}? Give {n} reasons.",
    "Help me plan a {t} weekend around {s}, I have {n} hours.",
    "Tell me a {t} story where {s} plays a role and the hero is {a}.",
]
WORDS = (
    "the of and to in is was for on that with as by at from it this an be are or which have not had but "
    "were they their has one been more all would there when can who will also into other some time than only "
    "its most after new two first over such then these many about may years people could way even because "
    "world both used between each under while during research history since without development power water "
    "system number form city energy country market study public health change light space data"
).split()
FOREIGN = [
    "Pouvez-vous m'expliquer {s} simplement, avec des exemples concrets et une petite conclusion ?",
    "Kannst du mir bitte erklären, warum {s} so wichtig ist und was ich darüber wissen sollte?",
    "¿Me puedes explicar qué es {s} y por qué es importante para la vida diaria de las personas?",
]
FEWSHOT_HEAD = (
    "You are a helpful assistant for a customer support team. Answer the customer's question politely, "
    "in at most three sentences, and never promise refunds. Here are some examples.\n"
    "Q: Where is my order?\nA: I am sorry for the wait; let me check the tracking number for you.\n"
)


def _body(rng: random.Random) -> str:
    n = int(rng.lognormvariate(3.2, 0.8)) + 5
    return " ".join(rng.choice(WORDS) for _ in range(min(n, 600))).capitalize() + "."


def _pii(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f" You can email me at user{rng.randrange(10**6)}@example.com."
    if kind == 1:
        return f" Call me at 415-555-{rng.randrange(1000, 9999)}."
    if kind == 2:
        return " My card is 4111 1111 1111 1111."
    if kind == 3:
        return f" The server is at 8.8.{rng.randrange(256)}.{rng.randrange(1, 255)}."
    return f" Ship it to {rng.randrange(1, 999)} Fifth Avenue, New York, NY 10118."


def generate(path: Path, n: int, seed: int = 0) -> dict:
    """Write an ``n``-line JSONL log; returns what was planted."""
    rng = random.Random(seed)
    n_users = max(10, n // 8)
    weights = [1.0 / (k + 1) ** 0.8 for k in range(n_users)]
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    import bisect

    planted = {"broken": 0, "no_user": 0, "exact_dup": 0, "prefix": 0, "pii": 0, "foreign": 0}
    recent: list[str] = []
    t0 = 1_672_531_200  # 2023-01-01
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            r = rng.random()
            if r < 0.0001:
                fh.write('{"id": "broken", "prompt": "half a line\n')
                planted["broken"] += 1
                continue
            u = bisect.bisect_left(cum, rng.random() * acc)
            rec = {
                "id": f"p{i}",
                "user_id": f"user-{u}",
                "org_id": f"org-{u % (n_users // 6 + 1)}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + i * 7 + rng.randrange(5))),
                "source": "api",
            }
            r = rng.random()
            if r < 0.06 and recent:
                text = rng.choice(recent)
                text = text.upper() if rng.random() < 0.3 else "  " + text.replace(" ", "  ", 2)
                planted["exact_dup"] += 1
            elif r < 0.10:
                text = (
                    FEWSHOT_HEAD
                    + f"Q: {rng.choice(TEMPLATES).format(s=rng.choice(SUBJECTS), a=rng.choice(AUDIENCES), t=rng.choice(TONES), f=rng.choice(FORMS), n=rng.randrange(2, 12), body='...')}\nA:"
                )
                planted["prefix"] += 1
            elif r < 0.15:
                text = rng.choice(FOREIGN).format(s=rng.choice(SUBJECTS))
                planted["foreign"] += 1
            else:
                template = rng.choice(TEMPLATES)
                text = template.format(
                    s=rng.choice(SUBJECTS),
                    a=rng.choice(AUDIENCES),
                    t=rng.choice(TONES),
                    f=rng.choice(FORMS),
                    n=rng.randrange(2, 12),
                    body=_body(rng),
                )
                if "{body}" not in template and rng.random() < 0.8:
                    text += " Context: " + _body(rng)  # what the user adds makes most prompts distinct
                if rng.random() < 0.01:
                    text += f" My order number is {rng.randrange(10**7, 10**8)}."
            if rng.random() < 0.02:
                text += _pii(rng)
                planted["pii"] += 1
            rec["prompt"] = text
            if rng.random() < 0.0001:
                del rec["user_id"]
                planted["no_user"] += 1
            if len(recent) < 5000:
                recent.append(text)
            elif rng.random() < 0.05:
                recent[rng.randrange(5000)] = text
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return planted


def run_child(cmd: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, peak memory (MiB) and CPU seconds of a child process and its workers.

    Memory is the peak of the summed RSS of the process tree, sampled every 50 ms with psutil
    (``getrusage`` only knows the largest single process, not a parent plus its workers)."""
    import threading

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = [0]

    def sample() -> None:
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while proc.poll() is None:
            total = 0
            try:
                for p in [parent, *parent.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak[0] = max(peak[0], total)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_mib = max(peak[0] / 2**20, after.ru_maxrss / 1024 if after.ru_maxrss > before.ru_maxrss else 0)
    return wall, peak_mib, cpu, stdout + stderr


PEER = r"""
import hashlib, json, sys
import numpy as np, pandas as pd
src, out = sys.argv[1], sys.argv[2]
rows = []
with open(src, encoding="utf-8") as fh:
    for line in fh:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
df = pd.DataFrame(rows)
df = df[df["user_id"].notna()]
df["norm"] = df["prompt"].str.lower().str.split().str.join(" ")
df["ts"] = pd.to_datetime(df["timestamp"])
df = df.sort_values(["ts"], kind="stable")
df = df.drop_duplicates("norm")
df["pre"] = np.where(df["norm"].str.len() >= 100, df["norm"].str[:100], df["norm"] + "\x00" + df.index.astype(str))
df = df.drop_duplicates("pre")
df["r"] = df["norm"].map(lambda s: hashlib.blake2b(s.encode(), digest_size=8).hexdigest())
df = df.sort_values(["user_id", "r"]).groupby("user_id").head(200)
u = df["user_id"].map(lambda s: int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") / 2**64)
df["split"] = np.where(u < 0.8, "train", np.where(u < 0.9, "valid", "test"))
for name, part in df.groupby("split"):
    part.drop(columns=["norm", "ts", "pre", "r"]).to_json(f"{out}/{name}.jsonl", orient="records", lines=True, force_ascii=False)
print(len(df))
"""


def langid_comparison(log: Path) -> None:
    """langid.classify per prompt vs BatchLangId on the same 5,000 prompts of the log."""
    import langid

    from instructrl.text.language import get_identifier

    sample = []
    with open(log, encoding="utf-8") as fh:
        for line in fh:
            try:
                sample.append(json.loads(line)["prompt"])
            except (json.JSONDecodeError, KeyError):
                continue
            if len(sample) == 5000:
                break
    langid.classify("warm up")
    ident = get_identifier()
    t = time.perf_counter()
    ref = [langid.classify(x)[0] for x in sample]
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    ours = ident.classify(sample)
    t_ours = time.perf_counter() - t
    agree = sum(a == b for a, b in zip(ours, ref))
    print(
        f"langid: classify {t_ref / len(sample) * 1e6:.0f} us/prompt, batched {t_ours / len(sample) * 1e6:.1f} us/prompt, "
        f"speed-up {t_ref / t_ours:.0f}x, agreement {agree}/{len(sample)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-langid", action="store_true", help="leave out the langid.classify comparison")
    ap.add_argument("--workers", type=int, default=2, help="curate's worker processes (the default config uses 2)")
    ap.add_argument("--keep", help="keep the generated log and outputs in this folder")
    ap.add_argument("--log", help="reuse a log written by an earlier --keep run instead of generating one")
    ap.add_argument(
        "--token-sample", type=float, default=1.0, help="stats.token_sample for our run (1.0: count every prompt)"
    )
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="curate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.log:
        log = Path(args.log)
        args.prompts = sum(1 for _ in open(log, encoding="utf-8"))
        print(f"reusing {log}: {args.prompts:,} lines ({log.stat().st_size / 2**20:.0f} MiB)")
    else:
        log = work / "log.jsonl"
        t = time.perf_counter()
        planted = generate(log, args.prompts)
        size_mb = log.stat().st_size / 2**20
        print(f"generated {args.prompts:,} lines ({size_mb:.0f} MiB) in {time.perf_counter() - t:.0f} s: {planted}")

    out = work / "ours"
    cmd = [
        sys.executable,
        "-m",
        "instructrl.cli",
        "curate",
        "--config",
        "configs/default/curate.yaml",
        f"run.out_dir={out}",
        "run.progress=false",
        "on_error=skip",
        f"workers={args.workers}",
        f"stats.token_sample={args.token_sample}",
        "inputs=[{path: " + str(log) + ", source: api}]",
    ]
    print(f"machine load average (1 min) before our run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    wall, peak, cpu, _ = run_child(cmd)
    rep = json.loads((out / "report.json").read_text())
    print(
        f"ours (workers={args.workers}, token_sample={args.token_sample}): {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MiB (all processes), "
        f"{args.prompts / wall:,.0f} prompts/s; summary {rep['summary']}"
    )
    print(f"  phases (s): {rep['seconds']}")
    print("  removed: " + ", ".join(f"{f['step']} {f['removed']}" for f in rep["filters"]))
    print(f"  pii by entity {rep['pii']['records_by_entity']}; check ok={rep['check']['ok']}")

    if not args.skip_peer:
        peer_out = work / "peer"
        peer_out.mkdir(exist_ok=True)
        script = work / "peer.py"
        script.write_text(PEER)
        p_wall, p_peak, p_cpu, p_stdout = run_child([sys.executable, str(script), str(log), str(peer_out)])
        print(
            f"peer (pandas in memory; no PII, no langid, no tokens): {p_wall:.1f} s wall, {p_cpu:.1f} s CPU, "
            f"peak RSS {p_peak:.0f} MiB, kept {p_stdout.strip()}"
        )
        print(f"ratio: time ours/peer {wall / p_wall:.2f}x, peak memory ours/peer {peak / p_peak:.2f}x")

    # langid: per-prompt classify vs the batched identifier, same 5,000 prompts
    if not args.skip_langid:
        langid_comparison(log)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
