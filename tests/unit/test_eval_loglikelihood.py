"""Multiple-choice log-likelihoods with each context forwarded once agree with one plain forward pass
per (context, continuation); the context/continuation split follows lm-evaluation-harness."""

from __future__ import annotations

import pytest
import torch

from instructrl.models.forward import encode_continuations, loglikelihoods, shared_context_logprobs
from instructrl.models.loading import load_model, load_tokenizer

REQUESTS = [
    (
        "Q: What is the capital of France?\nA:",
        [" Paris.", " The capital of France is Paris, of course.", " London", " I have no comment."],
    ),
    ("The quick brown fox", [" jumps", " jumps over the lazy dog."]),
    ("Write a short poem about the sea. ", ["Waves", "The sea is blue and wide, and the waves roll in."]),
    ("", ["hello world", "yes"]),
    ("one two three four five six seven eight nine ten. " * 3 + "Count:", [" eleven", " twelve thirteen"]),
]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    return load_model(str(tiny_model_dir), tokenizer=tok).eval(), tok


def naive_logprobs(model, context: list[int], continuation: list[int]) -> list[float]:
    """One forward pass of context + continuation, no padding, no cache."""
    with torch.no_grad():
        logits = model(torch.tensor([context + continuation])).logits[0].float()
    logp = torch.log_softmax(logits[len(context) - 1 : len(context) - 1 + len(continuation)], dim=-1)
    return logp.gather(-1, torch.tensor(continuation)[:, None]).squeeze(-1).tolist()


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_shared_context_agrees_with_a_forward_pass_per_choice(lm, batch_size):
    model, tok = lm
    groups = [encode_continuations(tok, c, conts) for c, conts in REQUESTS]
    got = shared_context_logprobs(model, groups, batch_size=batch_size, pad_id=tok.pad_token_id)
    assert [len(g) for g in got] == [len(conts) for _, conts in REQUESTS]
    for (ctx, conts), per_choice in zip(groups, got):
        for cont, lps in zip(conts, per_choice):
            assert len(lps) == len(cont)
            assert lps == pytest.approx(naive_logprobs(model, ctx, cont), abs=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_a_prefix_every_context_shares_is_computed_once_with_the_same_values(lm, batch_size):
    model, tok = lm
    primer = "Q: What is the capital of France?\nA: Paris is the capital of France.\n\n" * 2
    requests = [
        (primer + "Q: Write a short poem about the sea.\nA:", [" The sea is blue.", " Waves", " no"]),
        (primer + "Q: yes?\nA:", [" yes", " no, not at all"]),
        (primer + "Q: List three ideas for a birthday party with good friends.\nA:", [" cake", " one two three"]),
    ]
    groups = [encode_continuations(tok, c, conts) for c, conts in requests]
    common = next(i for i in range(100) if len({g[0][i] for g in groups}) > 1)
    assert common >= 16  # long enough to be shared
    got = shared_context_logprobs(model, groups, batch_size=batch_size, pad_id=tok.pad_token_id)
    alone = shared_context_logprobs(
        model, groups, batch_size=batch_size, pad_id=tok.pad_token_id, min_shared_prefix=10**6
    )
    for (ctx, conts), per_choice, plain in zip(groups, got, alone):
        for cont, lps, ref in zip(conts, per_choice, plain):
            assert lps == pytest.approx(naive_logprobs(model, ctx, cont), abs=1e-4)
            assert lps == pytest.approx(ref, abs=1e-4)


def test_eager_attention_reads_the_same_mask(tiny_model_dir, lm):
    from transformers import AutoModelForCausalLM

    _, tok = lm
    eager = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()
    groups = [encode_continuations(tok, c, conts) for c, conts in REQUESTS]
    got = shared_context_logprobs(eager, groups, batch_size=4, pad_id=tok.pad_token_id)
    for (ctx, conts), per_choice in zip(groups, got):
        for cont, lps in zip(conts, per_choice):
            assert lps == pytest.approx(naive_logprobs(eager, ctx, cont), abs=1e-4)


def test_loglikelihoods_sum_the_continuation_tokens(lm):
    model, tok = lm
    context, conts = REQUESTS[0]
    ctx, ids = encode_continuations(tok, context, conts)
    want = [sum(naive_logprobs(model, ctx, c)) for c in ids]
    assert loglikelihoods(model, tok, context, conts) == pytest.approx(want, abs=1e-4)
    assert all(x < 0 for x in want)


def test_max_length_keeps_the_end_of_the_context(lm):
    model, tok = lm
    ctx, conts = encode_continuations(tok, *REQUESTS[4])
    longest = max(len(c) for c in conts)
    (got,) = shared_context_logprobs(model, [(ctx, conts)], max_length=longest + 5, pad_id=tok.pad_token_id)
    for cont, lps in zip(conts, got):
        assert lps == pytest.approx(naive_logprobs(model, ctx[-5:], cont), abs=1e-4)
    with pytest.raises(ValueError, match="no room"):
        shared_context_logprobs(model, [(ctx, conts)], max_length=longest, pad_id=tok.pad_token_id)


def test_continuations_are_split_as_lm_eval_splits_them(lm):
    _, tok = lm
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # a context's trailing space moves to the continuation
    assert encode_continuations(tok, "A: ", ["Paris"]) == encode_continuations(tok, "A:", [" Paris"])
    ctx, (cont,) = encode_continuations(tok, "The quick brown", [" fox jumps"])
    assert ctx == encode("The quick brown") and ctx + cont == encode("The quick brown fox jumps")
    # an empty context: the EOS token, and the continuation encoded on its own
    assert encode_continuations(tok, "", ["hello world"]) == ([tok.eos_token_id], [encode("hello world")])
    with pytest.raises(ValueError, match="adds no token"):
        encode_continuations(tok, "abc", [""])
