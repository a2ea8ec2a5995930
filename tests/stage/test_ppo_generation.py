"""The continuous-batching engine (CachedGenerator) against Hugging Face generate (HFGenerator) on
a tiny SFT model whose responses stop at different lengths: identical greedy outputs whatever the
batch size, stop strings, seeded sampling, nucleus sampling at a tiny top_p = greedy."""

import pytest
import torch

from instructrl.models.cached_generation import CachedGenerator
from instructrl.models.generation import HFGenerator
from instructrl.models.loading import load_model, load_tokenizer
from tests.stage.test_ppo import WORDS, one_thread, ppo_world  # noqa: F401  (shared fixtures)


@pytest.fixture(scope="module")
def sft(ppo_world):  # noqa: F811
    tok = load_tokenizer(str(ppo_world["sft"]))
    return load_model(str(ppo_world["sft"]), tokenizer=tok).eval(), tok


def prompts() -> list:
    out = [f"Count to {w}." for w in WORDS] + [f"Add {a} and {b}." for a, b in ((1, 2), (7, 8), (9, 9))]
    out += [f"Write {w} words about the sea." for w in WORDS[:6]]
    out += [
        [
            {"role": "user", "content": "Add 2 and 3."},
            {"role": "assistant", "content": "5"},
            {"role": "user", "content": "Count to five."},
        ]
    ]
    return out


@pytest.mark.parametrize("batch_size,trim", [(1, 64), (3, 64), (3, 1), (8, 2), (32, 64)])
def test_greedy_outputs_identical_to_hf_generate(sft, batch_size, trim):
    model, tok = sft
    ps = prompts()
    hf = HFGenerator(model, tok, batch_size).generate(ps, max_new_tokens=24, temperature=0)
    engine = CachedGenerator(model, tok, batch_size)
    engine.trim_min_cols = trim  # small values make the cache drop columns and grow again on the left often
    ours = engine.generate(ps, max_new_tokens=24, temperature=0)
    lengths = [len(g.token_ids) for g in hf]
    assert len(set(lengths)) >= 2 and {g.finish_reason for g in hf} == {"stop", "length"}  # natural stopping
    assert [g.token_ids for g in ours] == [g.token_ids for g in hf]
    assert [g.text for g in ours] == [g.text for g in hf]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in hf]


def test_stop_strings_and_max_new_tokens(sft):
    model, tok = sft
    ps = prompts()
    hf = HFGenerator(model, tok, 4).generate(ps, max_new_tokens=24, temperature=0, stop=[" three", "sea"])
    ours = CachedGenerator(model, tok, 4).generate(ps, max_new_tokens=24, temperature=0, stop=[" three", "sea"])
    assert [g.text for g in ours] == [g.text for g in hf]
    assert all(" three" not in g.text and "sea" not in g.text for g in ours)
    for n in (1, 2):
        short = CachedGenerator(model, tok, 4).generate(ps, max_new_tokens=n, temperature=0)
        assert [g.token_ids for g in short] == [
            g.token_ids for g in HFGenerator(model, tok, 4).generate(ps, max_new_tokens=n, temperature=0)
        ]
        assert all(len(g.token_ids) == n for g in short)


def test_sampling_is_seeded_and_tiny_top_p_is_greedy(sft):
    model, tok = sft
    ps = prompts()
    gen = CachedGenerator(model, tok, 4)
    a = gen.generate(ps, max_new_tokens=16, temperature=1.0, seed=7)
    b = gen.generate(ps, max_new_tokens=16, temperature=1.0, seed=7)
    c = gen.generate(ps, max_new_tokens=16, temperature=1.0, seed=8)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    greedy = gen.generate(ps, max_new_tokens=16, temperature=0)
    nucleus = gen.generate(ps, max_new_tokens=16, temperature=1.0, top_p=1e-6, seed=3)
    assert [g.token_ids for g in nucleus] == [g.token_ids for g in greedy]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    gen.generate(ps[:2], max_new_tokens=4, temperature=1.0, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # a seeded call leaves the global RNG alone
