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
