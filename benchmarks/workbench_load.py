"""Labeling workbench under load: N labelers (HTTP clients, one thread and one keep-alive connection each) submit
M rate-and-rank labels at once to a real ``instructrl label serve``, on the SQLite default and on a PostgreSQL
server this script starts (initdb/pg_ctl from Debian's ``postgresql``; fsync on, as a team's server runs).
It prints labels per second, p50 and p99 latency of a submit, and checks that no label was lost or changed.

The load is the one tests/web/test_load.py runs (tests/web/load.py); clients and server share this machine,
so the figures are for the pair of them.

    .venv/bin/python benchmarks/workbench_load.py --labelers 50 --labels 2000
    .venv/bin/python benchmarks/workbench_load.py --backends sqlite --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/web/load.py and servers.py: the same load as the test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelers", type=int, default=50)
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--k", type=int, default=4, help="outputs per item")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--workers", type=int, default=1, help="label serve workers=N")
    args = ap.parse_args()

    from instructrl.web.db import Database
    from instructrl.web.migrate import upgrade
    from tests.web import load
    from tests.web.servers import launch, postgres_server

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    rows = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="workbench-load-") as tmp, contextlib.ExitStack() as stack:
            folder = Path(tmp)
            if backend == "sqlite":
                db_url = f"sqlite:///{folder / 'load.db'}"
            elif backend == "postgresql":
                db_url = stack.enter_context(postgres_server(fsync=True))
            else:
                raise SystemExit(f"unknown backend {backend!r}: sqlite or postgresql")
            db = Database(db_url)
            upgrade(db)
            plan = load.setup(db, f"bench-{backend}", args.labelers, args.labels, args.k)
            server = launch(db_url, folder, [f"workers={args.workers}"])
            try:
                outcome = load.run([server.url], plan)
            finally:
                server.stop()
            problems, stored = load.check(db, plan, outcome.acked)
            db.dispose()
        rate = len(outcome.latencies) / outcome.seconds
        p50, p99 = statistics.median(outcome.latencies) * 1000, outcome.percentile(0.99) * 1000
        rows.append((backend, stored, rate, p50, p99, dict(outcome.statuses), len(problems)))
        print(outcome.summary(f"{backend}, {args.labelers} labelers, workers={args.workers}"))
        for problem in problems[:10]:
            print("  PROBLEM:", problem)

    print("\n| backend | labelers | labels stored | labels/s | p50 ms | p99 ms | statuses | problems |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, stored, rate, p50, p99, statuses, problems in rows:
        print(
            f"| {backend} | {args.labelers} | {stored} | {rate:.0f} | {p50:.0f} | {p99:.0f} | {statuses} | {problems} |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
