"""The novelty filter takes exactly rouge_score's decisions (two implementations that must agree)."""

from __future__ import annotations

import json
import random

import pytest
from rouge_score import rouge_scorer

from instructrl.data.selfinstruct.novelty import NoveltyIndex, max_f1_brute_force, rouge_f1, rouge_l, rouge_tokens
from instructrl.data.selfinstruct.tasks import load_tasks

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref_f1(a: str, b: str) -> float:
    return SCORER.score(a, b)["rougeL"].fmeasure


def test_tokens_match_rouge_score_on_awkward_text():
    texts = [
        "Hello, World! It's 2024...",
        "naïve café — Ünïcödé",
        "C++ & C# / Java_8",
        "",
        "   ",
        "KELVIN \u212a sign",
        "İstanbul",
        "tabs\tand\nnewlines",
        "a-b-c 1.5 x",
        "日本語のテキスト mixed with English",
        "don't won't can't",
    ]
    for t in texts:
        assert rouge_tokens(t) == SCORER._tokenizer.tokenize(t), t


def test_hand_computed_score():
    # the cat sat on the mat (6) vs the cat on a mat (5): LCS the-cat-on-mat = 4, F1 = 8/11
    assert rouge_l("The cat sat on the mat.", "the cat on a mat") == pytest.approx(8 / 11, abs=1e-15)
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("same words here", "Same, words; here!") == 1.0
    assert rouge_f1(0, 3, 4) == 0.0


def test_scores_equal_rouge_score_bit_for_bit():
    rng = random.Random(0)
    words = "the a of write give poem list sea sky cat dog three five explain why how is are to".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 14))) for _ in range(300)]
    for _ in range(2000):
        a, b = rng.choice(texts), rng.choice(texts)
        assert rouge_l(a, b) == ref_f1(a, b)


def _pool_and_candidates(n_pool=200, n_cand=80, seed=1):
    rng = random.Random(seed)
    base = [t.instruction for t in load_tasks()]
    vocab = [w for t in base for w in t.split()]
    pool = list(base)
    while len(pool) < n_pool:
        words = rng.choice(base).split()
        pool.append(" ".join(rng.choice(vocab) if rng.random() < 0.4 else w for w in words))
    cands = []
    for _ in range(n_cand):
        words = rng.choice(pool).split()
        for _ in range(rng.randint(0, 4)):
            k = rng.randrange(len(words))
            if rng.random() < 0.5:
                words[k] = rng.choice(vocab)
            else:
                words.insert(k, rng.choice(vocab))
        cands.append(" ".join(words))
    # scores that are exactly 0.7 in exact arithmetic (LCS 7, 10 + 10 tokens) and just around it
    ten = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    pool.append(ten)
    cands += [
        "w0 w1 w2 w3 w4 w5 w6 x7 x8 x9",
        "w0 w1 w2 w3 w4 w5 x6 x7 x8 x9",
        "w0 w1 w2 w3 w4 w5 w6 w7 x8 x9",
        "w0 w1 w2 w3 w4 w5 w6 x7 x8",
        "",
        "zzz unknown tokens only",
    ]
    return pool, cands


@pytest.fixture(scope="module")
def scored():
    pool, cands = _pool_and_candidates()
    return pool, cands, [[ref_f1(p, c) for p in pool] for c in cands]


@pytest.mark.parametrize("floor", [0.3, 0.5, 0.7])
def test_index_lists_exactly_the_pairs_at_or_above_floor(scored, floor):
    pool, cands, refs = scored
    index = NoveltyIndex(pool, threshold=0.7)
    for c, ref in zip(cands, refs):
        expected = sorted(((j, f) for j, f in enumerate(ref) if f >= floor), key=lambda x: (-x[1], x[0]))
        assert index.scores_at_least(c, floor) == expected, c


def test_decisions_equal_rouge_score_decisions_and_nearest_is_exact():
    pool, cands = _pool_and_candidates(seed=2)
    index = NoveltyIndex(pool, threshold=0.7)
    decisions = {True: 0, False: 0}
    for c in cands:
        ref = [ref_f1(p, c) for p in pool]
        novel = max(ref) < 0.7
        assert index.is_novel(c) == novel, c
        decisions[novel] += 1
        j, f = index.nearest(c)
        assert f == max(ref) and ref[j] == f
    assert decisions[True] >= 5 and decisions[False] >= 5  # both kinds of decision were exercised


def test_exact_threshold_tie_is_decided_like_rouge_score():
    index = NoveltyIndex(["w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"], threshold=0.7)
    cand = "w0 w1 w2 w3 w4 w5 w6 x7 x8 x9"  # LCS 7 of 10 and 10: F1 = 0.7 exactly in exact arithmetic
    f = ref_f1("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9", cand)
    assert f == pytest.approx(0.7, abs=1e-15)
    assert index.is_novel(cand) == (f < 0.7)


def test_incremental_adds_and_edge_cases():
    index = NoveltyIndex(threshold=0.7)
    assert index.is_novel("anything at all") and index.nearest("x") == (-1, 0.0)
    assert index.add("Write a poem about the sea.") == 0
    assert not index.is_novel("write a poem about the sea")
    assert index.is_novel("Compose a poem about winter in the mountains.")  # LCS 4 of 6 and 8: F1 8/14
    assert index.is_novel("")  # no tokens: F1 is 0 with everything
    index.add("!!!")  # an entry without tokens never matches
    assert index.scores_at_least("!!!", 0.0001) == []
    with pytest.raises(ValueError):
        NoveltyIndex(threshold=0.0)


def test_repeated_tokens_bound_is_exact():
    # repeated words: bag overlap counts min(count) per word, LCS may be lower; compare with rouge_score
    pool = ["a a a b b c", "b a b a b a", "c c c c", "a b c a b c a b c"]
    index = NoveltyIndex(pool, threshold=0.7)
    for cand in ["a a b b c c", "a b a b", "c c a", "a b c", "b b b b b b"]:
        expected = sorted(
            ((j, ref_f1(p, cand)) for j, p in enumerate(pool) if ref_f1(p, cand) >= 0.4), key=lambda x: (-x[1], x[0])
        )
        assert index.scores_at_least(cand, 0.4) == expected


def test_brute_force_matches_reference(shared_data):
    seeds = [json.loads(line)["instruction"] for line in open(shared_data / "self_instruct/seed_tasks.jsonl")]
    toks = [rouge_tokens(s) for s in seeds]
    for cand in seeds[:20]:
        scores = max_f1_brute_force(rouge_tokens(cand + " please"), toks)
        assert scores.tolist() == [ref_f1(s, cand + " please") for s in seeds]
