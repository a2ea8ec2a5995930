"""Labelers and panels: Likert, ties, agreement on known cases, calibration, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from instructrl.label.labeler import (
    DEFAULT_WEIGHTS,
    FEATURES,
    OUTCOME_SCORE,
    Labeler,
    likert_of,
    outcome_of,
    rng_for,
    scores_to_ranks,
)
from instructrl.label.panel import Panel, make_labelers, make_panels, pair_verdicts, pairwise_agreement
from instructrl.label.rubric import FLAGS, Rubric
from instructrl.records import Prompt, from_dict, to_dict
from instructrl.records import Ranking as RankingRecord

TOPICS = ["honey bees", "volcanoes", "the moon", "coffee", "bicycles", "rain forests", "chess", "bread"]
FILLER = (
    "they are interesting because people study them closely and learn new facts about how they change "
    "over time in many places around the world"
).split()


def synthetic_groups(n: int, seed: int = 0) -> list:
    """Prompts with a word limit and a keyword, and 4-9 responses of graded quality each."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        limit = int(rng.integers(20, 60))
        kw = topic.split()[-1]
        p = Prompt(
            prompt=f"Write about {topic} in at most {limit} words and use the word {kw}.",
            id=f"s{i}",
            lang="en",
            constraints=[{"kind": "max_words", "value": limit}, {"kind": "include_keywords", "value": [kw]}],
        )
        k = int(rng.integers(4, 10))
        responses, frs = [], []
        for j in range(k):
            n_words = int(rng.integers(3, 2 * limit))
            body = [kw if rng.random() < 0.6 else "it"] + [FILLER[(j + t) % len(FILLER)] for t in range(n_words)]
            kind = rng.random()
            if kind < 0.15:
                body = ["stocks", "fell", "on", "monday", "as", "markets", "worried", "about", "rates"] * 2
            elif kind < 0.25:
                body = (body[:4] or ["again"]) * 6
            text = " ".join(body) + ("." if rng.random() < 0.8 else "")
            responses.append(text)
            frs.append("length" if rng.random() < 0.15 else "stop")
        groups.append((p, responses, frs))
    return groups


@pytest.fixture(scope="module")
def rubric():
    return Rubric(toxicity="lexicon")


# --------------------------------------------------------------------------- pure pieces


def test_likert_mapping():
    assert [likert_of(s) for s in (-0.5, 0.0, 0.08, 0.09, 0.5, 0.99, 1.0, 1.4)] == [1, 1, 1, 2, 4, 7, 7, 7]


def test_scores_to_ranks_ties():
    # buckets of width 0.1: 0.93 and 0.91 share floor 9; 0.55 -> 5; 0.41 and 0.45 -> 4
    assert scores_to_ranks([0.93, 0.55, 0.91, 0.41, 0.45], 0.1) == [1, 2, 1, 3, 3]
    assert scores_to_ranks([0.3, 0.1, 0.2], 0.0) == [1, 3, 2]
    assert outcome_of(0.93, 0.91, 0.1) == "tie" and outcome_of(0.93, 0.55, 0.1) == "win"
    assert outcome_of(0.2, 0.55, 0.1) == "loss"
    assert OUTCOME_SCORE == {"win": 1.0, "tie": 0.5, "loss": 0.0}


def test_pairwise_agreement_hand_computed():
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    a = [1, 2, 3, 4]  # verdicts +1 +1 +1 +1 +1 +1
    b = [2, 1, 3, 3]  # verdicts -1 +1 +1 +1 +1  0
    assert pair_verdicts(b).tolist() == [-1, 1, 1, 1, 1, 0]
    total, n = pairwise_agreement(a, b)
    assert n == 6 and total == pytest.approx(0 + 1 + 1 + 1 + 1 + 0.5)
    assert pairwise_agreement(a, a) == (6.0, 6)
    assert pairwise_agreement(a, a[::-1]) == (0.0, 6)
    with pytest.raises(ValueError, match="different lengths"):
        pairwise_agreement([1, 2], [1, 2, 3])


def test_rng_for_is_order_independent():
    assert rng_for(3, "a", 1).random() == rng_for(3, "a", 1).random()
    assert rng_for(3, "a", 1).random() != rng_for(3, "a", 2).random()
    assert rng_for(3, "a").random() != rng_for(4, "a").random()


# --------------------------------------------------------------------------- a labeler


def test_quality_is_the_documented_weighted_mean(rubric):
    lab = Labeler("x", rubric, base_noise=0.0)
    p = Prompt(
        prompt="Describe a calm lake at dawn in at most 30 words.",
        lang="en",
        constraints=[{"kind": "max_words", "value": 30}],
    )
    resp = "A calm lake at dawn lies silver and still, mist drifting over the water while a heron waits on the shore."
    a = rubric.assess(p, resp, "stop")
    f = lab.features(p, a)
    assert f["constraints"] == 1.0 and f["complete"] == 1.0 and f["reference"] is None
    expected = sum(DEFAULT_WEIGHTS[k] * v for k, v in f.items() if v is not None) / sum(
        DEFAULT_WEIGHTS[k] for k, v in f.items() if v is not None
    )
    assert lab.quality(p, a) == pytest.approx(expected)
    # the penalties multiply: toxic, degenerate and failing keeps (1-0.6)(1-0.6)(1-0.4) of its mean
    rude = "you idiot " * 8
    b = rubric.assess(p, rude, "stop")
    assert b.flags()["toxic"] and b.flags()["fails_instruction"] and b.flags()["degenerate"]
    fb = lab.features(p, b)
    mean = sum(DEFAULT_WEIGHTS[k] * v for k, v in fb.items() if v is not None) / sum(
        DEFAULT_WEIGHTS[k] for k, v in fb.items() if v is not None
    )
    assert lab.quality(p, b) == pytest.approx(mean * 0.4 * 0.4 * 0.6)
    assert lab.quality(p, rubric.assess(p, "")) == 0.0


def test_noise_free_labeler_ranks_by_quality_and_ties_duplicates(rubric):
    lab = Labeler("x", rubric, base_noise=0.0, tie_margin=0.0)
    p = Prompt(
        prompt="List two fruits as bullet points.",
        lang="en",
        constraints=[{"kind": "exact_bullets", "value": 2}],
        id="q1",
        user_id="u9",
        category="brainstorming",
    )
    good, bad = "- Apple\n- Banana", "Apple and banana are both fruits that grow on trees."
    r = lab.rank(p, [bad, good, good, "apple " * 10], rng=0)
    assert r.ranks[1] == r.ranks[2] == 1 and r.ranks[0] == 2 and r.ranks[3] == 3
    assert r.labeler_id == "x" and r.id == "q1" and r.user_id == "u9" and r.category == "brainstorming"
    assert len(r.likert) == 4 and all(1 <= x <= 7 for x in r.likert) and r.likert[1] == 7
    assert all(set(f) == set(FLAGS) for f in r.flags) and r.flags[0]["violates_constraint"]
    from_dict(RankingRecord, to_dict(r))  # a valid record
    # identical texts share their noise draw, so they tie even for a noisy labeler
    noisy = Labeler("y", rubric, base_noise=0.5, tie_margin=0.0)
    for seed in range(5):
        rr = noisy.rank(p, [good, bad, good], rng=seed)
        assert rr.ranks[0] == rr.ranks[2]


def test_labeler_is_deterministic_given_a_seed(rubric):
    lab = Labeler("x", rubric, base_noise=0.3)
    p, rs, frs = synthetic_groups(1, seed=4)[0]
    a, b = lab.rank(p, rs, 7, frs), lab.rank(p, rs, 7, frs)
    assert a.ranks == b.ranks and a.likert == b.likert
    assert any(lab.rank(p, rs, s, frs).ranks != a.ranks for s in range(8, 20))
    j1, j2 = lab.judge(p, rs[0], 5), lab.judge(p, rs[0], 5)
    assert j1.score == j2.score and j1.likert == likert_of(j1.score)


def test_likert_tracks_quality(rubric):
    lab = Labeler("x", rubric, base_noise=0.05)
    p = Prompt(
        prompt="Explain what a rainbow is in two sentences.",
        lang="en",
        constraints=[{"kind": "max_sentences", "value": 2}],
    )
    good = (
        "A rainbow is an arc of colours that appears when sunlight is bent and reflected inside raindrops. "
        "Each colour leaves the drops at a slightly different angle."
    )
    js_good = [lab.judge(p, good, s, "stop").likert for s in range(30)]
    js_bad = [lab.judge(p, "rainbow rainbow rainbow " * 6, s, "stop").likert for s in range(30)]
    assert np.mean(js_good) >= 6.0 and np.mean(js_bad) <= 3.0


def test_compare(rubric):
    lab = Labeler("x", rubric, base_noise=0.0)
    p = Prompt(
        prompt="Write one sentence about owls, in lowercase.",
        lang="en",
        constraints=[{"kind": "all_lowercase", "value": True}],
    )
    a, b = "owls hunt silently at night with soft feathers.", "OWLS HUNT SILENTLY AT NIGHT WITH SOFT FEATHERS."
    assert lab.compare(p, a, b, 0) == "win" and lab.compare(p, b, a, 0) == "loss" and lab.compare(p, a, a, 0) == "tie"


def test_demonstrations(rubric):
    lab = Labeler("x", rubric, base_noise=0.5)
    ref = Prompt(prompt="What is 2 + 2?", reference="2 + 2 = 4.", id="r1", type="few-shot")
    d = lab.demonstrate(ref, ["5", "four"])
    assert d.response == "2 + 2 = 4." and d.meta["from"] == "reference" and d.source == "simulated"
    assert d.type == "few-shot" and d.id == "r1"
    assert lab.demonstrate(ref, ["4", "5"], use_reference=False).meta["from"] == "best_of_n"
    p = Prompt(
        prompt="Name three colours as a numbered list.", lang="en", constraints=[{"kind": "numbered_items", "value": 3}]
    )
    cands = ["red, green", "1. Red\n2. Green\n3. Blue", "1. Red\n2. Green"]
    d = lab.demonstrate(p, cands)
    assert d.response == cands[1] and d.meta["n"] == 3  # noise-free: the best by the rubric, whatever the noise
    assert lab.demonstrate(p, []) is None
    assert lab.demonstrate(p, ["blue blue blue blue blue blue blue blue blue"], min_quality=0.9) is None


def test_labeler_validation(rubric):
    with pytest.raises(ValueError, match="unknown rubric features"):
        Labeler("x", rubric, weights={"kindness": 1.0})
    with pytest.raises(ValueError, match="penalties name unknown flags"):
        Labeler("x", rubric, penalties={"rude": 0.5})
    with pytest.raises(ValueError, match="at least 2 responses"):
        Labeler("x", rubric).rank("hi", ["only one"])
    assert set(Labeler("x", rubric).weights) == set(FEATURES)


# --------------------------------------------------------------------------- panels


def _fixed(lab_id, rubric, scores_by_text):
    """A labeler whose quality is a fixed table of texts (no noise): a case with known agreement."""
    lab = Labeler(lab_id, rubric, base_noise=0.0, tie_margin=0.0)
    lab.quality = lambda prompt, a, _t=scores_by_text: 0.0  # replaced per response below
    lab.qualities = lambda prompt, responses, finish_reasons=None, _t=scores_by_text: [_t[r] for r in responses]

    def judge_all(prompt, responses, rng=None, finish_reasons=None, _t=scores_by_text):
        from instructrl.label.labeler import Judgement

        return [Judgement(likert_of(_t[r]), {}, _t[r], _t[r], lab_id) for r in responses]

    lab.judge_all = judge_all
    return lab


def test_panel_agreement_on_a_known_case(rubric):
    # labeler A: a > b > c > d; labeler B: b > a > c = d. Pairs: ab opposite (0), ac, ad, bc, bd agree
    # (1 each), cd one tie (1/2) -> 4.5 / 6 per prompt
    a = _fixed("A", rubric, {"a": 0.9, "b": 0.7, "c": 0.5, "d": 0.3})
    b = _fixed("B", rubric, {"a": 0.7, "b": 0.9, "c": 0.4, "d": 0.4})
    panel = Panel([a, b], name="t")
    groups = [(Prompt(prompt=f"p{i}", lang="en"), ["a", "b", "c", "d"]) for i in range(3)]
    assert panel.agreement(groups) == pytest.approx(4.5 / 6)
    c = _fixed("C", rubric, {"a": 0.9, "b": 0.7, "c": 0.5, "d": 0.3})
    # pairs A-B 4.5/6, A-C 6/6, B-C 4.5/6
    assert Panel([a, b, c]).agreement(groups) == pytest.approx((4.5 + 6 + 4.5) / 18)
    assert panel.agreement(groups, other=Panel([c], name="o")) == pytest.approx((6 + 4.5) / 12)


@pytest.fixture(scope="module")
def groups():
    return synthetic_groups(120, seed=1)


def test_make_panels_are_disjoint_and_reproducible(rubric):
    from instructrl.label.config import PanelConfig

    train, held = make_panels(PanelConfig(labelers=4, heldout_labelers=3, seed=5), rubric)
    assert [x.id for x in train.labelers] == ["train-0", "train-1", "train-2", "train-3"]
    assert [x.id for x in held.labelers] == ["heldout-0", "heldout-1", "heldout-2"]
    assert train.rubric is held.rubric is rubric
    again, _ = make_panels(PanelConfig(labelers=4, heldout_labelers=3, seed=5), rubric)
    assert [x.weights for x in again.labelers] == [x.weights for x in train.labelers]
    other, _ = make_panels(PanelConfig(labelers=4, heldout_labelers=3, seed=6), rubric)
    assert other.labelers[0].weights != train.labelers[0].weights
    assert len({round(x.weights["constraints"], 6) for x in train.labelers}) == 4


@pytest.mark.parametrize("target", [0.73, 0.65])
def test_calibration_reaches_the_target(rubric, groups, target):
    panel = Panel(make_labelers(5, rubric, seed=2, prefix="train"), name="train")
    cal = panel.calibrate(groups, target=target, seed=0)
    assert cal.ceiling > target
    assert cal.fitted == pytest.approx(target, abs=0.005)
    # measured by ranking the data again with fresh noise (the other implementation)
    assert cal.measured == pytest.approx(target, abs=0.02) and cal.reached
    assert all(x.noise_scale == cal.noise_scale for x in panel.labelers)
    # and on new data from the same distribution
    assert panel.agreement(synthetic_groups(120, seed=9), seed=11, repeats=3) == pytest.approx(target, abs=0.03)


def test_more_noise_less_agreement(rubric, groups):
    panel = Panel(make_labelers(3, rubric, seed=2), name="p")
    values = []
    for c in (0.0, 1.0, 3.0, 10.0):
        for x in panel.labelers:
            x.noise_scale = c
        values.append(panel.agreement(groups[:60], seed=1))
    assert values == sorted(values, reverse=True) and values[0] > 0.85 and values[-1] < 0.65


def test_calibration_reports_an_unreachable_target(rubric, groups):
    # labelers whose weights differ a lot disagree even without noise: 0.97 is out of reach
    panel = Panel(make_labelers(3, rubric, seed=2, weight_jitter=1.5, length_jitter=1.0), name="p")
    cal = panel.calibrate(groups[:40], target=0.97, seed=0)
    assert cal.noise_scale == 0.0 and cal.ceiling < 0.95 and not cal.reached
    assert cal.measured == pytest.approx(cal.ceiling)
    # identical labelers agree fully without noise
    same = Panel(make_labelers(3, rubric, seed=2, weight_jitter=0.0, length_jitter=0.0), name="q")
    assert same.calibrate(groups[:40], target=0.9, seed=0).ceiling == 1.0


def test_panel_determinism_and_batched_calls(rubric, groups):
    train = Panel(make_labelers(4, rubric, seed=3), name="train")
    r1 = train.rank_many(groups[:10], seed=4)
    r2 = train.rank_many(groups[:10], seed=4)
    assert [r.ranks for r in r1] == [r.ranks for r in r2] and [r.labeler_id for r in r1] == [r.labeler_id for r in r2]
    # the item's noise depends on its index and the seed only, not on what else is in the batch
    assert train.rank_many(groups[:3], seed=4)[2].ranks == r1[2].ranks
    assert len({r.labeler_id for r in train.rank_many(groups[:40], seed=4)}) == 4  # items spread over labelers
    p, rs, _ = groups[0]
    outs = train.compare_many([p] * 6, rs[:1] * 6, rs[1:2] * 6, seed=1)
    assert outs == train.compare_many([p] * 6, rs[:1] * 6, rs[1:2] * 6, seed=1) and set(outs) <= set(OUTCOME_SCORE)
    js = train.judge_many([p, p], rs[:2], seed=2)
    assert [j.likert for j in js] == [j.likert for j in train.judge_many([p, p], rs[:2], seed=2)]


def test_panel_save_load_round_trip(rubric, groups, tmp_path):
    panel = Panel(make_labelers(3, rubric, seed=3), name="train")
    panel.calibrate(groups[:30], target=0.7, seed=0)
    path = panel.save(tmp_path / "panel.json")
    back = Panel.load(path)
    assert back.name == "train" and back.calibration.noise_scale == panel.calibration.noise_scale
    assert back.rubric.settings() == rubric.settings()
    assert [x.to_dict() for x in back.labelers] == [x.to_dict() for x in panel.labelers]
    assert back.rank_many(groups[:5], seed=1)[3].ranks == panel.rank_many(groups[:5], seed=1)[3].ranks
    with pytest.raises(FileNotFoundError, match="panel file not found"):
        Panel.load(tmp_path / "missing.json")
    (tmp_path / "both.json").write_text('{"train": ' + (tmp_path / "panel.json").read_text() + "}")
    assert Panel.load(f"{tmp_path / 'both.json'}#train").name == "train"
    with pytest.raises(KeyError, match="no panel 'heldout'"):
        Panel.load(f"{tmp_path / 'both.json'}#heldout")
