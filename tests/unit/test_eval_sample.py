"""Sampling records, response log-probs (against a direct computation) and the few-shot prefix."""

import pytest
import torch

from instructrl.eval.config import EvalConfig
from instructrl.eval.run import few_shot_prefix, with_prefix
from instructrl.eval.sample import load_policy, sample_prompts, sequence_logprobs
from instructrl.models.engines import make_generator
from instructrl.records import Demonstration, Prompt, write_jsonl


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return load_policy(str(tiny_model_dir), device="cpu", dtype="fp32")


def test_sequence_logprobs_match_a_direct_computation(policy):
    model, tok, _ = policy
    inputs = [
        "Write a short poem about the sea.",
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    ]
    responses = [[45, 120, 300, tok.eos_token_id], [7, 8]]
    got = sequence_logprobs(model, tok, inputs, responses, temperature=0.7, batch_size=2)
    from instructrl.models.loading import render_prompt

    for x, r, value in zip(inputs, responses, got):
        ids = tok(render_prompt(tok, x), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids + r])).logits[0] / 0.7
        logp = torch.log_softmax(logits.float(), -1)
        direct = sum(float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(r))
        assert value == pytest.approx(direct, abs=1e-4)
    assert sequence_logprobs(model, tok, inputs[:1], [[]]) == [0.0]


def test_sample_prompts_makes_linked_seeded_records(policy):
    model, tok, _ = policy
    gen = make_generator(model, tok, batch_size=4, progress=False)
    prompts = [Prompt(prompt="Write a haiku.", id="p1"), Prompt(prompt="Name a color.", id="p2")]
    a = sample_prompts(gen, prompts, n=2, policy="x", max_new_tokens=6, seed=3, keep_token_ids=True)
    b = sample_prompts(gen, prompts, n=2, policy="x", max_new_tokens=6, seed=3, keep_token_ids=True)
    assert [s.id for s in a] == ["p1#0", "p1#1", "p2#0", "p2#1"]
    assert [s.meta["prompt_id"] for s in a] == ["p1", "p1", "p2", "p2"]
    assert [s.response for s in a] == [s.response for s in b]
    assert all(1 <= s.meta["n_tokens"] == len(s.meta["token_ids"]) <= 6 for s in a)
    assert all(s.finish_reason in ("stop", "length") and s.policy == "x" for s in a)
    c = sample_prompts(gen, prompts, inputs=[with_prefix(p.prompt, []) for p in prompts], max_new_tokens=4, seed=3)
    assert [s.prompt for s in c] == ["Write a haiku.", "Name a color."] and [s.id for s in c] == ["p1", "p2"]
    with pytest.raises(ValueError, match="1 inputs for 2 prompts"):
        sample_prompts(gen, prompts, inputs=["x"])


def test_the_samplers_logprobs_equal_a_forward_pass(policy):
    """Two implementations: the log-probs CachedGenerator reports while it decodes (over a KV cache,
    rows joining and leaving) against sequence_logprobs' one forward pass over prompt + response."""
    model, tok, _ = policy
    gen = make_generator(model, tok, batch_size=3, progress=False)
    prompts = [
        Prompt(prompt=t, id=f"p{i}")
        for i, t in enumerate(
            [
                "Write a haiku.",
                "Name a color.",
                "Tell me a long story about a dragon and a knight.",
                "Hi",
                "Count to 5.",
            ]
        )
    ]
    for temperature, top_p in ((0.7, 1.0), (1.0, 0.9)):
        ss = sample_prompts(
            gen, prompts, n=2, max_new_tokens=12, temperature=temperature, top_p=top_p, seed=5, keep_token_ids=True
        )
        assert all(s.logprob is not None and s.logprob < 0 for s in ss)
        direct = sequence_logprobs(
            model, tok, [s.prompt for s in ss], [s.meta["token_ids"] for s in ss], temperature=temperature, batch_size=4
        )
        assert [s.logprob for s in ss] == pytest.approx(direct, abs=1e-3)


def test_few_shot_prefix_leaves_out_test_users_and_long_answers(tmp_path):
    demos = [
        Demonstration(prompt=f"q{i}", response="a short answer here", id=f"d{i}", user_id=f"u{i % 3}") for i in range(9)
    ]
    demos.append(Demonstration(prompt="long", response="word " * 80, id="long", user_id="u9"))
    demos.append(Demonstration(prompt="Same as a test prompt", response="fine answer ok", id="dup", user_id="u8"))
    path = write_jsonl(tmp_path / "d.jsonl", demos)
    test = [Prompt(prompt="same as a test prompt", id="t1", user_id="u0")]
    cfg = EvalConfig(few_shot_demos=[str(path)], few_shot_k=6, few_shot_max_words=40)
    shots = few_shot_prefix(cfg, test)
    assert len(shots) == 6 and {d.user_id for d in shots} == {"u1", "u2"}  # u0's, the long and the duplicate: out
    with pytest.raises(ValueError, match="only 6 demonstrations"):
        few_shot_prefix(EvalConfig(few_shot_demos=[str(path)], few_shot_k=7), test)
    chat = with_prefix("Q?", shots[:2])
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "user"]
    assert chat[1]["content"] == shots[0].response and chat[-1] == {"role": "user", "content": "Q?"}
