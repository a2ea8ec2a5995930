"""Shared fixtures: a tiny model built offline once per session, paths to shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama + byte-level BPE tokenizer with ChatML template (about a second to build)."""
    from instructrl.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def shared_data() -> Path:
    """../shared/data; tests that need it skip with a clear message where it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"public data not found at {SHARED_DATA} (see the README: it sits beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")  # stateless: module-scoped fixtures may use it too
def sigkill_when():
    """``sigkill_when(cmd, path)``: start ``cmd`` (a stage run on the CLI) and SIGKILL it as soon as
    ``path`` exists; fails if the run ends first or nothing appears within two minutes."""
    import signal
    import subprocess
    import sys
    import time

    def kill(cmd: list[str], path: Path) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "instructrl.cli", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        deadline = time.time() + 120
        while not path.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, f"{path} did not appear within 2 minutes"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    return kill


@pytest.fixture(scope="session")
def tiny_panel_file(tmp_path_factory) -> Path:
    """panels.json of the tiny labeling preset (`instructrl label`): the held-out panel evaluations judge with."""
    from instructrl.cli import main

    out = tmp_path_factory.mktemp("label") / "label"
    assert main(["label", "--config", str(ROOT / "configs" / "tiny" / "label.yaml"), f"run.out_dir={out}"]) == 0
    return out / "panels.json"
