"""Seeding, derived seeds and RNG state capture for exact resume."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def seed_everything(seed: int) -> None:
    import torch  # heavy: only the training stages need it, not the labelers that derive seeds

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive(seed: int, *keys: object) -> int:
    """A 64-bit seed that depends only on ``seed`` and ``keys`` (each key by its ``str``).

    Every random draw that must be reproducible on its own (a PPO iteration's sampling, one
    labeler's judgment of one prompt, a resumed run's next batch) takes its seed from here, so it
    does not depend on what was drawn before it."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(k) for k in keys)).encode()).digest()
    return int.from_bytes(h[:8], "little")


def unit(seed: int, *keys: object) -> float:
    """A number in [0, 1) that depends only on ``seed`` and ``keys``."""
    return derive(seed, *keys) / 2**64


def rng_state() -> dict:
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
