"""The curation decisions as pure numpy functions over compact per-prompt keys.

A million prompts become a few arrays of 64-bit hashes and numbers (tens of megabytes), so the
decisions that need the whole log at once (which duplicate survives, which prompts a capped user
keeps, which split a user lands in) run in memory however large the texts are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from instructrl.data.config import CurateConfig

SPLITS = ("train", "valid", "test")

#: status of a record that passed the per-record filters
KEPT, EXACT_DUP, PREFIX_DUP, USER_CAP = 0, 1, 2, 3
STATUS_NAMES = {EXACT_DUP: "exact_duplicate", PREFIX_DUP: "shared_prefix", USER_CAP: "user_cap"}


class KeyColumns(Protocol):
    """The compact per-record keys that :func:`decide` reads (``curate.columns.Columns``)."""

    def __len__(self) -> int: ...

    def np(self, name: str) -> np.ndarray: ...


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


def split_groups(user: np.ndarray, org: np.ndarray, by: str) -> np.ndarray:
    """The key each record is split by. ``user``: the user. ``org``: the connected component of
    users and organizations (users who share an organization, and organizations that share a
    user, stay together), so neither a user nor an organization can land in two splits."""
    if by == "user":
        return user
    users, u_idx = np.unique(user, return_inverse=True)
    has_org = org != 0
    orgs, o_idx = np.unique(org[has_org], return_inverse=True)
    parent = list(range(len(users) + len(orgs)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if has_org.any():
        pairs = np.unique(np.stack([u_idx[has_org], o_idx + len(users)], axis=1), axis=0)
    else:
        pairs = np.zeros((0, 2), int)
    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(len(users))], dtype=np.int64)
    # the component's key: the smallest user hash in it (stable, independent of input order)
    comp_key = np.full(len(parent), np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(comp_key, roots, users)
    return comp_key[roots][u_idx]


def decide(cfg: CurateConfig, cols: KeyColumns) -> tuple[np.ndarray, np.ndarray]:
    """``(status, split)`` per pass-1 record: status KEPT/EXACT_DUP/PREFIX_DUP/USER_CAP, split 0-2 or -1."""
    n = len(cols)
    exact = cols.np("exact")
    index = np.arange(n)
    if cfg.dedup.keep == "earliest":
        ts = cols.np("ts")
        ts = np.where(np.isnan(ts), np.inf, ts)
        order = np.lexsort((index, ts))
        preference = np.empty(n, dtype=np.int64)
        preference[order] = index
    else:
        preference = index
    status = np.zeros(n, dtype=np.uint8)
    alive = np.ones(n, dtype=bool)
    if cfg.dedup.exact:
        keep = first_per_key(exact, preference)
        status[~keep] = EXACT_DUP
        alive &= keep
    if cfg.dedup.prefix_chars:
        keep = first_per_key(cols.np("prefix"), preference, candidates=alive & (cols.np("has_prefix") == 1))
        status[alive & ~keep] = PREFIX_DUP
        alive &= keep
    user = cols.np("user")
    rank = mix64(exact, cfg.run.seed) if cfg.cap.keep == "random" else preference
    keep = cap_per_group(user, rank, cfg.cap.max_per_user, alive)
    status[alive & ~keep] = USER_CAP
    alive = keep
    split = np.full(n, -1, dtype=np.int8)
    if alive.any():
        groups = split_groups(user[alive], cols.np("org")[alive], cfg.split.by)
        uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        fr = (cfg.split.train, cfg.split.valid, cfg.split.test)
        split[alive] = assign_splits(uniq, sizes, fr, cfg.run.seed, cfg.split.method)[inverse]
    return status, split
