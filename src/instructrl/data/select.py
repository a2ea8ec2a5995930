"""The curation decisions as pure numpy functions over compact per-prompt keys.

A million prompts become a few arrays of 64-bit hashes and numbers (tens of megabytes), so the
decisions that need the whole log at once (which duplicate survives, which prompts a capped user
keeps, which split a user lands in) run in memory however large the texts are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "valid", "test")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def hash64(text: str) -> int:
    """A stable 64-bit hash of a string (blake2b; Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def mix64(keys: np.ndarray, seed: int) -> np.ndarray:
    """Seeded splitmix64 finalizer: uniform, deterministic 64-bit values from 64-bit keys."""
    offset = np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & 0xFFFFFFFFFFFFFFFF)
    x = np.asarray(keys, dtype=np.uint64) + offset  # array arithmetic wraps modulo 2**64
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def unit_interval(keys: np.ndarray, seed: int) -> np.ndarray:
    """Seeded uniform values in [0, 1) from 64-bit keys."""
    return (mix64(keys, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def first_per_key(keys: np.ndarray, preference: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Mask of the elements that survive: per distinct key, the one with the smallest preference.

    ``candidates`` (bool) limits the rule to some elements; the others are neither compared nor
    removed. Ties in preference go to the smaller index.
    """
    n = len(keys)
    keep = np.ones(n, dtype=bool)
    idx = np.arange(n) if candidates is None else np.flatnonzero(candidates)
    if len(idx) < 2:
        return keep
    order = idx[np.lexsort((idx, preference[idx], keys[idx]))]
    k = keys[order]
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = k[1:] == k[:-1]
    keep[order[dup]] = False
    return keep


def cap_per_group(groups: np.ndarray, rank: np.ndarray, max_per_group: int, alive: np.ndarray) -> np.ndarray:
    """Mask of the alive elements that stay when each group keeps at most ``max_per_group`` of them,
    those with the smallest ``rank``. Elements that are not alive stay False."""
    keep = np.zeros(len(groups), dtype=bool)
    idx = np.flatnonzero(alive)
    if max_per_group <= 0:
        keep[idx] = True
        return keep
    order = idx[np.lexsort((idx, rank[idx], groups[idx]))]
    g = groups[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = g[1:] != g[:-1]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    within = np.arange(len(order)) - start_pos
    keep[order[within < max_per_group]] = True
    return keep


def assign_splits(
    group_keys: np.ndarray,
    sizes: np.ndarray,
    fractions: Sequence[float],
    seed: int,
    method: str = "hash",
) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) for each group.

    ``hash``: the seeded uniform value of the group key falls into the cumulative fractions, so a
    group's split depends only on its key and the seed (stable as the log grows).
    ``balanced``: groups in seeded random order each go to the split whose prompt count is
    furthest below its target share of the prompts assigned so far, which hits the prompt
    fractions closely even with a few very large groups.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    u = unit_interval(group_keys, seed)
    if method == "hash":
        cum = np.cumsum(fr)
        cum[-1] = 1.0
        return np.minimum(np.searchsorted(cum, u, side="right"), len(fr) - 1).astype(np.int8)
    if method != "balanced":
        raise ValueError(f"unknown split method {method!r}")
    out = np.empty(len(group_keys), dtype=np.int8)
    targets = [float(f) for f in fr]
    counts = [0.0] * len(targets)
    splits = [s for s, f in enumerate(targets) if f > 0]
    total = 0.0
    size_list = np.asarray(sizes, dtype=np.float64).tolist()
    for i in np.argsort(u, kind="stable").tolist():
        n = size_list[i]
        total += n
        best = max(splits, key=lambda s: (targets[s] * total - counts[s], -s))
        out[i] = best
        counts[best] += n
    return out


def disjoint_violations(keys_per_split: dict[str, np.ndarray]) -> dict[str, int]:
    """Number of distinct keys shared by each pair of splits (all zero when the split is clean)."""
    names = list(keys_per_split)
    uniq = {n: np.unique(keys_per_split[n]) for n in names}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"{a}&{b}"] = int(len(np.intersect1d(uniq[a], uniq[b], assume_unique=True)))
    return out
