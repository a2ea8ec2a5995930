"""Streamed exports of the labeling workbench: fill a SQLite database with N rate-and-rank labels (a bulk insert
through SQLAlchemy core, not through the web app), then time ``instructrl label export`` in every format (the
records, the chosen/rejected pairs and the Hugging Face datasets) in a process of its own, and read that process's
peak resident memory from the kernel (``wait4``). An export that streams keeps its peak memory flat as the label
count grows; one that loads the project grows with it. Run it at two sizes and compare:

    .venv/bin/python benchmarks/workbench_export.py --labels 10000,100000
    .venv/bin/python benchmarks/workbench_export.py --labels 100000 --formats jsonl
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "the a river light model answer quick brown fox jumps over lazy dog because every prompt deserves a careful "
    "and honest reply written plainly with examples where they help and nothing made up"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def fill(db_url: str, labels: int, k: int, seed: int = 0) -> None:
    """One organization, 20 labelers, a project with ``labels`` rate-and-rank items of ``k`` responses, each
    labeled once (ranks drawn with ties now and then), written in chunks of 5,000 rows per statement."""
    from sqlalchemy import insert

    from instructrl.label.workbench.schema import FLAG_NAMES
    from instructrl.web.db import Database, utcnow
    from instructrl.web.migrate import upgrade
    from instructrl.web.models import Assignment, InstructionVersion, Label, Organization, Project, Task, User

    rng = random.Random(seed)
    db = Database(db_url)
    upgrade(db)
    now = utcnow()
    labelers = 20
    with db.write() as session:
        session.execute(insert(Organization), [{"id": 1, "name": "bench", "created_at": now}])
        session.execute(
            insert(User),
            [
                {"id": u, "org_id": 1, "username": f"labeler{u}", "display_name": "", "password_hash": "x"}
                | {"role": "labeler", "active": True, "created_at": now}
                for u in range(1, labelers + 1)
            ],
        )
        session.execute(insert(Project), [{"id": 1, "org_id": 1, "name": "bench", "description": ""}])
        session.execute(insert(InstructionVersion), [{"id": 1, "project_id": 1, "version": 1, "text": "Be helpful."}])
        chunk = 5_000
        for start in range(1, labels + 1, chunk):
            ids = range(start, min(start + chunk, labels + 1))
            tasks, assignments, rows = [], [], []
            for i in ids:
                user = 1 + i % labelers
                ranks = [rng.randint(1, k) for _ in range(k)]
                tasks.append(
                    {"id": i, "project_id": 1, "kind": "rank", "external_id": f"p{i}", "prompt": _text(rng, 20)}
                    | {
                        "responses": [
                            {"text": _text(rng, 40), "policy": f"policy-{j % 2}", "sample_id": f"p{i}-s{j}"}
                            for j in range(k)
                        ],
                        "meta": {},
                        "created_at": now,
                    }
                )
                assignments.append(
                    {"id": i, "task_id": i, "user_id": user, "status": "done", "order": list(range(k))}
                    | {"created_at": now, "done_at": now}
                )
                payload = {
                    "likert": [rng.randint(1, 7) for _ in range(k)],
                    "flags": [{name: rng.random() < 0.1 for name in FLAG_NAMES} for _ in range(k)],
                    "ranks": ranks,
                }
                rows.append(
                    {"id": i, "assignment_id": i, "task_id": i, "project_id": 1, "user_id": user, "kind": "rank"}
                    | {"payload": payload, "schema_version": 1, "instruction_version_id": 1, "skip_reason": None}
                    | {"opened_at": now, "created_at": now}
                )
            session.execute(insert(Task), tasks)
            session.execute(insert(Assignment), assignments)
            session.execute(insert(Label), rows)
    db.dispose()


def export(db_url: str, out_dir: Path, formats: str) -> tuple[float, float, int]:
    """Run ``instructrl label export`` in a child process: (seconds, peak RSS in MiB, exit status)."""
    exe = Path(sys.executable).parent / "instructrl"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "instructrl.cli"]
    command += ["label", "export", "project=bench", "org=bench", f"db_url={db_url}", f"out_dir={out_dir}"]
    command.append(f"formats={formats}")
    env = dict(os.environ, HF_DATASETS_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    errors = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(errors[-3000:], file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, code  # ru_maxrss is in KiB on Linux


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="10000,100000", help="comma-separated label counts")
    ap.add_argument("--k", type=int, default=4, help="responses per item")
    ap.add_argument("--formats", default="jsonl,pairs,hf")
    ap.add_argument("--keep", help="folder to keep the databases and exports in (default: a temporary one)")
    args = ap.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="workbench-export-") as tmp:
        base = Path(args.keep or tmp)
        for count in [int(n) for n in args.labels.split(",")]:
            folder = base / f"n{count}"
            folder.mkdir(parents=True, exist_ok=True)
            db_path = folder / "workbench.db"
            db_path.unlink(missing_ok=True)
            db_url = f"sqlite:///{db_path}"
            start = time.perf_counter()
            fill(db_url, count, args.k)
            filled = time.perf_counter() - start
            out = folder / "export"
            seconds, rss, code = export(db_url, out, args.formats)
            if code != 0:
                raise SystemExit(f"label export failed with exit status {code}")
            counts = {
                name: _lines(out / f"{name}.jsonl")
                for name in ("rankings", "pairs")
                if (out / f"{name}.jsonl").exists()
            }
            rows.append((count, filled, db_path.stat().st_size, seconds, rss, counts, _size(out)))
            print(f"{count} labels: filled in {filled:.1f} s, exported in {seconds:.1f} s, peak RSS {rss:.0f} MiB")

    print(f"\nformats={args.formats}, K={args.k}")
    print("| labels | database | export wall time | labels/s | peak RSS of the export | rankings | pairs | written |")
    print("|---|---|---|---|---|---|---|---|")
    for count, _, db_size, seconds, rss, counts, written in rows:
        print(
            f"| {count:,} | {db_size / 2**20:.0f} MiB | {seconds:.1f} s | {count / seconds:,.0f} | {rss:.0f} MiB "
            f"| {counts.get('rankings', '-'):,} | {counts.get('pairs', '-'):,} | {written / 2**20:.0f} MiB |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
