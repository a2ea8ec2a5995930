"""``instructrl curate``: the stage entry, :func:`run`."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from instructrl.config import save_config
from instructrl.data.config import CurateConfig, InputConfig
from instructrl.data.curate.read import Reader
from instructrl.data.curate.write import check_splits, write_splits
from instructrl.data.select import decide
from instructrl.data.stats import build_report, render_markdown
from instructrl.records import atomic_write_text
from instructrl.utils.metrics import MetricsLogger

log = logging.getLogger("instructrl.data.curate")


def _input_names(inputs: list[InputConfig]) -> list[str]:
    names, seen = [], Counter()
    for inp in inputs:
        base = inp.name or Path(inp.path).name.split(".")[0] or "input"
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}{seen[base]}")
    return names


def _check_dependencies(cfg: CurateConfig) -> None:
    needed = []
    if cfg.lang.detect:
        needed += ["langid", "scipy"]
    if cfg.pii.action != "off":
        needed += ["phonenumbers", "stdnum", "pyap"]
    missing = []
    for mod in needed:
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ImportError(f"curate needs {', '.join(missing)}: pip install 'instructrl[curate]'")


def run(cfg: CurateConfig) -> Path:
    """Curate ``cfg.inputs`` into ``cfg.run.out_dir``: the three split files, ``report.json``,
    ``report.md`` and ``metrics.jsonl``. Returns the output directory."""
    if not cfg.inputs:
        raise ValueError("curate: no inputs; set inputs: [{path: ...}] in the config")
    _check_dependencies(cfg)
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    names = _input_names(cfg.inputs)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    work = Path(tempfile.mkdtemp(prefix=".curate-", dir=out))
    try:
        spill = work / "spill.jsonl"
        reader = Reader(cfg, spill)
        phase("start")
        try:
            with tqdm(desc="curate", unit=" prompts", disable=not cfg.run.progress) as bar:
                for i, (inp, name) in enumerate(zip(cfg.inputs, names)):
                    reader.read_input(inp, name, i, bar)
        except BaseException:
            reader.close(terminate=True)
            raise
        reader.close()
        phase("read_and_clean")
        status, split = decide(cfg, reader.cols)
        phase("decide")
        write_splits(out, spill, split, cfg.run.progress)
        phase("write")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    check = check_splits(out, cfg.split.by)
    phase("check")
    report = build_report(cfg, names, reader, status, split, check)
    phase("report")
    timings["cpu_this_process"] = round(time.process_time(), 2)
    report["seconds"] = timings
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    MetricsLogger(out).log(0, {f"curate/{k}": v for k, v in report["summary"].items()})
    log.info("curate: %s", ", ".join(f"{k}={v}" for k, v in report["summary"].items()))
    return out
