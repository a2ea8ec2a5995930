"""The curation decisions on hand-made keys: dedup survivors, per-user cap, user-level splits."""

from __future__ import annotations

import numpy as np
import pytest

from instructrl.data import select
from instructrl.data.curate.clean import normalize
from instructrl.data.select import split_groups
from instructrl.text.category import tag


def test_normalize_and_hash_are_stable():
    assert normalize("  Hello\n\tWORLD  again ") == "hello world again"
    # blake2b-8 of a fixed string never changes between processes (Python's hash() would)
    assert select.hash64("abc") == int.from_bytes(
        __import__("hashlib").blake2b(b"abc", digest_size=8).digest(), "little"
    )
    assert select.hash64("abc") != select.hash64("abd")


def test_first_per_key_keeps_the_most_preferred_copy():
    keys = np.array([7, 3, 7, 3, 9, 7], dtype=np.uint64)
    pref = np.array([5, 1, 2, 0, 4, 2])  # for key 7: index 2 and 5 tie at 2 -> smaller index 2 wins
    assert select.first_per_key(keys, pref).tolist() == [False, False, True, True, True, False]


def test_first_per_key_only_among_candidates():
    keys = np.array([1, 1, 1, 2], dtype=np.uint64)
    cand = np.array([False, True, True, True])
    # index 0 is not a candidate: never removed, and it does not remove the others
    assert select.first_per_key(keys, np.arange(4), cand).tolist() == [True, True, False, True]


def test_cap_per_group_keeps_smallest_ranks():
    groups = np.array([1, 1, 1, 2, 1, 2], dtype=np.uint64)
    rank = np.array([40, 10, 30, 5, 20, 1])
    alive = np.array([True, True, True, True, True, False])
    # group 1 alive: idx 0 (40), 1 (10), 2 (30), 4 (20) -> keep 1 and 4; group 2 alive: idx 3 only
    assert select.cap_per_group(groups, rank, 2, alive).tolist() == [False, True, False, True, True, False]
    assert select.cap_per_group(groups, rank, 0, alive).tolist() == alive.tolist()


def test_mix64_matches_a_scalar_splitmix64():
    def ref(key: int, seed: int) -> int:
        mask = (1 << 64) - 1
        x = (key + 0x9E3779B97F4A7C15 * (seed + 1)) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    keys = [0, 1, 12345678901234567890, (1 << 64) - 1]
    got = select.mix64(np.array(keys, dtype=np.uint64), 3).tolist()
    assert got == [ref(k, 3) for k in keys]


def test_hash_split_follows_the_seeded_uniform_value():
    keys = np.arange(1, 2001, dtype=np.uint64)
    u = select.unit_interval(keys, 7)
    s = select.assign_splits(keys, np.ones(len(keys)), (0.8, 0.1, 0.1), seed=7, method="hash")
    expected = np.where(u < 0.8, 0, np.where(u < 0.9, 1, 2))
    assert (s == expected).all()
    # the same key gets the same split whatever else is in the log
    s_sub = select.assign_splits(keys[::3], np.ones(len(keys[::3])), (0.8, 0.1, 0.1), seed=7, method="hash")
    assert (s_sub == s[::3]).all()
    # 2,000 uniform draws: train share within 4 standard deviations (sd = sqrt(.8*.2/2000) = 0.009)
    assert abs((s == 0).mean() - 0.8) < 0.036


def test_balanced_split_hits_prompt_fractions_with_big_users():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([[200, 150, 120], rng.integers(1, 5, size=400)])
    keys = np.arange(len(sizes), dtype=np.uint64) + 100
    s = select.assign_splits(keys, sizes, (0.8, 0.1, 0.1), seed=0, method="balanced")
    total = sizes.sum()
    shares = [sizes[s == k].sum() / total for k in range(3)]
    # each group's size is at most 200 of ~1,470 prompts; greedy assignment stays within one group of the target
    assert all(abs(a - b) <= 200 / total for a, b in zip(shares, (0.8, 0.1, 0.1)))
    assert select.assign_splits(keys, sizes, (0.8, 0.1, 0.1), 0, "balanced").tolist() == s.tolist()
    assert (select.assign_splits(keys, sizes, (1.0, 0.0, 0.0), 0, "balanced") == 0).all()


def test_disjoint_violations_counts_shared_keys():
    v = select.disjoint_violations(
        {
            "train": np.array([1, 2, 2, 3], np.uint64),
            "valid": np.array([3, 4], np.uint64),
            "test": np.array([5], np.uint64),
        }
    )
    assert v == {"train&valid": 1, "train&test": 0, "valid&test": 0}


def test_split_groups_by_org_joins_users_and_orgs():
    # users 1,2 share org 10; user 2 is also in org 11, which user 3 has; user 4 has no org
    user = np.array([1, 2, 2, 3, 4], dtype=np.uint64)
    org = np.array([10, 10, 11, 11, 0], dtype=np.uint64)
    g = split_groups(user, org, "org")
    assert g[0] == g[1] == g[2] == g[3] == 1  # one component, keyed by its smallest user hash
    assert g[4] == 4
    assert (split_groups(user, org, "user") == user).all()


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("Summarize this article in three sentences: ...", "summarization"),
        ("Based on the passage above, who won?", "closed_qa"),
        ("Classify the sentiment of this review.", "classification"),
        ("Extract the dates from the text below.", "extraction"),
        ("Please rewrite this paragraph to sound formal.", "rewrite"),
        ("Brainstorm names for a coffee shop.", "brainstorming"),
        ("Write a poem about the sea.", "generation"),
        ("Why is the sky blue?", "open_qa"),
        ("python vs julia", "other"),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "tell me more"},
            ],
            "chat",
        ),
    ],
)
def test_category_rules(prompt, expected):
    assert tag(prompt) == expected


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("Can you edit the write-up I attached? It is too long", "rewrite"),
        ("Here is my write-up on birds", "other"),
        ("I want you to act as a travel guide", "generation"),
        ("list 5 ways to save money", "brainstorming"),
        ("Please pull out all the phone numbers from this text", "extraction"),
        ("Give me a recipe for pancakes", "generation"),
    ],
)
def test_category_clause_starts(prompt, expected):
    assert tag(prompt) == expected


def test_top_level_fields_agree_with_json():
    import json

    from instructrl.data.curate.write import _top_level

    records = [
        {"prompt": 'say "user_id": "mallory" please', "user_id": "alice", "split": "train"},
        {"prompt": "x", "user_id": 'bo"b\\o', "org_id": "ünï", "split": "test"},
        {"prompt": [{"role": "user", "content": ', "org_id": "fake"'}], "id": "1", "user_id": "u", "split": "valid"},
        {"prompt": "x", "user_id": "u", "org_id": 7, "split": "train"},
    ]
    for rec in records:
        for ascii_only in (True, False):
            line = json.dumps(rec, ensure_ascii=ascii_only) + "\n"
            want = [rec.get(k) if isinstance(rec.get(k), str) else None for k in ("split", "user_id", "org_id")]
            assert _top_level(line, ("split", "user_id", "org_id")) == want


def test_decide_agrees_with_a_plain_python_reference():
    """Dedup (exact, then shared prefix; the earliest survives) and the per-user cap, computed by
    numpy sorts in ``decide`` and by a straightforward loop, must agree on a random log."""
    import math
    import random

    from instructrl.config import load_config
    from instructrl.data.config import CurateConfig
    from instructrl.data.curate.columns import Columns
    from instructrl.data.select import EXACT_DUP, KEPT, PREFIX_DUP, USER_CAP, decide

    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta"]
    heads = [" ".join(rng.choice(words) for _ in range(5)) for _ in range(4)]  # 4 shared 10+ char heads
    texts, users, times = [], [], []
    for _ in range(600):
        tail = " ".join(rng.choice(words + ["x", "yy", "zzz", "w"]) for _ in range(rng.randrange(0, 5)))
        text = rng.choice(heads) + (" " + tail if tail else "")
        texts.append(text.upper() if rng.random() < 0.2 else text)
        users.append(f"u{rng.randrange(12)}")
        times.append(float("nan") if rng.random() < 0.3 else float(rng.randrange(50)))
    cfg = load_config(CurateConfig, None, ["dedup.prefix_chars=31", "cap.max_per_user=4", "cap.keep=earliest"])
    cols = Columns()
    for text, user, ts in zip(texts, users, times):
        norm = normalize(text)
        cols.exact.append(select.hash64(norm))
        long_enough = len(norm) >= 31
        cols.prefix.append(select.hash64(norm[:31]) if long_enough else 0)
        cols.has_prefix.append(int(long_enough))
        cols.user.append(select.hash64(user))
        cols.org.append(0)
        cols.ts.append(ts)
    status, split = decide(cfg, cols)

    order = sorted(range(600), key=lambda i: (math.inf if math.isnan(times[i]) else times[i], i))
    expected = [KEPT] * 600
    seen = set()
    for i in order:
        key = normalize(texts[i])
        if key in seen:
            expected[i] = EXACT_DUP
        seen.add(key)
    seen = set()
    for i in order:
        norm = normalize(texts[i])
        if expected[i] == KEPT and len(norm) >= 31:
            if norm[:31] in seen:
                expected[i] = PREFIX_DUP
            seen.add(norm[:31])
    per_user: dict = {}
    for i in order:
        if expected[i] == KEPT:
            per_user[users[i]] = per_user.get(users[i], 0) + 1
            if per_user[users[i]] > 4:
                expected[i] = USER_CAP
    assert status.tolist() == expected
    assert {EXACT_DUP, PREFIX_DUP, USER_CAP} <= set(expected)  # the log exercises every rule
    assert ((split >= 0) == (status == KEPT)).all()
