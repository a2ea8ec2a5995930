"""Rollout pieces on the tiny model: batches, log-probs and values against full forward passes,
ratio = 1 between rollout and recomputation, prompt order, prompt files, the programmatic reward."""

import json

import pytest
import torch

from instructrl.models.forward import collate, encode_prompts, response_logprobs
from instructrl.models.generation import HFGenerator
from instructrl.models.loading import load_model, load_tokenizer
from instructrl.models.scalar import ScalarRewardModel, init_reward_model
from instructrl.ppo.reward import TokenFractionReward, load_callable, single_token_id
from instructrl.ppo.rollout import collect, load_prompts, make_reference, prompt_batch, value_predictions
from instructrl.records import RecordError


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add synchronization
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    return load_model(str(tiny_model_dir), tokenizer=tok).eval(), tok, str(tiny_model_dir)


def test_collate_and_select_align_responses():
    b = collate([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert b.start.tolist() == [3, 1]
    assert b.tokens.tolist() == [[5, 6, 0], [7, 8, 9]]
    assert b.mask.tolist() == [[True, True, False], [True, True, True]]
    # the hidden state at position start + t - 1 predicts response token t
    assert b.positions().tolist() == [[2, 3, 4], [0, 1, 2]]
    s = b.select([0])
    assert s.input_ids.tolist() == [[1, 2, 3, 5, 6]] and s.tokens.tolist() == [[5, 6]]
    with pytest.raises(ValueError, match="at least one token"):
        collate([[1]], [[]], pad_id=0)


def test_logprobs_and_values_match_full_forward(tiny):
    model, tok, path = tiny
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 400, (n,), generator=g).tolist() for n in (7, 3, 11)]
    responses = [torch.randint(5, 400, (n,), generator=g).tolist() for n in (4, 9, 1)]
    b = collate(prompts, responses, tok.pad_token_id)
    with torch.no_grad():
        lp, ent = response_logprobs(model, b, temperature=0.7, with_entropy=True)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            logits = model(torch.tensor([p + r])).logits[0] / 0.7  # unpadded, one sequence at a time
            full = torch.log_softmax(logits, -1)
            for t, tok_id in enumerate(r):
                assert float(lp[i, t]) == pytest.approx(float(full[len(p) + t - 1, tok_id]), abs=1e-5)
                h = -(full[len(p) + t - 1].exp() * full[len(p) + t - 1]).sum()
                assert float(ent[i, t]) == pytest.approx(float(h), abs=1e-4)
    # values: the head at the state before each response token == the reward model's score of the prefix
    value = init_reward_model(path, tokenizer=tok)
    value.eval()
    with torch.no_grad():
        v = value_predictions(value, b)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            for t in range(len(r)):
                prefix = torch.tensor([p + r[:t]])
                assert float(v[i, t]) == pytest.approx(float(value(prefix, torch.ones_like(prefix))[0]), abs=1e-5)
    assert isinstance(value, ScalarRewardModel)


def test_rollout_logprobs_equal_recomputed_ones(tiny):
    """Ratio = 1: the log-probs gathered during the rollout (batched by length, no grad) equal
    those the first PPO epoch computes for shuffled minibatches before any update."""
    model, tok, path = tiny
    prompts = [f"Write {w} words about the sea." for w in ("three", "four", "many", "a few", "nine", "ten")]
    ids = encode_prompts(tok, prompts, 64)
    value = init_reward_model(path, tokenizer=tok).eval()
    ref = make_reference(model, model, 1.0, frozen_device=torch.device("cpu"), offload=False, chunk=4)
    ro = collect(
        prompts,
        ids,
        generator=HFGenerator(model, tok, 4),
        policy=model,
        reference=ref,
        value_model=value,
        reward=lambda p, r, i, f: [float(len(x)) for x in i],
        pad_id=tok.pad_token_id,
        device=torch.device("cpu"),
        autocast_ctx=torch.no_grad,
        max_new_tokens=10,
        temperature=1.0,
        top_p=1.0,
        seed=1,
        forward_batch_size=4,
    )
    assert ro.scores.tolist() == [float(m) for m in ro.batch.mask.sum(-1).tolist()]
    assert ro.batch.start.tolist() == [len(x) for x in ids]
    # the reference is the same model: KL exactly 0
    assert float(((ro.logprobs - ro.ref_logprobs).abs() * ro.batch.mask).max()) == 0.0
    for mb in (torch.tensor([5, 0, 3]), torch.tensor([1, 2, 4])):
        sub = ro.batch.select(mb)
        with torch.no_grad():
            lp, _ = response_logprobs(model, sub)
        r = sub.tokens.shape[1]
        ratio = torch.exp(lp - ro.logprobs[mb, :r])[sub.mask]
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)


def test_prompt_batches_cover_every_prompt_once_per_pass():
    seen = [i for step in range(5) for i in prompt_batch(10, step, 4, seed=3)]
    assert sorted(seen[:10]) == list(range(10))  # first pass
    assert sorted(seen[10:20]) == list(range(10))  # second pass, another order
    assert seen[:10] != seen[10:20]
    assert prompt_batch(10, 3, 4, seed=3) == seen[12:16]  # a pure function of (step, seed)


def test_load_prompts_formats_and_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(
        "\n".join(
            [
                json.dumps("plain string"),
                json.dumps({"prompt": "from a record", "id": "x"}),
                json.dumps({"text": "from text"}),
                json.dumps({"prompt": [{"role": "user", "content": "chat"}]}),
                json.dumps({"instruction": "few-shot", "examples": []}),
            ]
        )
        + "\n"
    )
    got = load_prompts([str(p)])
    assert got == ["plain string", "from a record", "from text", [{"role": "user", "content": "chat"}]]
    assert load_prompts([str(p)], max_prompts=2) == got[:2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field 'prompt'"):
        load_prompts([str(bad)])
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": [{"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(RecordError, match=r"chat.jsonl:1: field 'prompt'.*user"):
        load_prompts([str(chat)])


def test_token_fraction_reward_and_callables(tiny):
    _, tok, _ = tiny
    r = TokenFractionReward([7, 9], eos_ids=[2])
    # EOS does not count: [7, 5, 9, 2] -> 2 of 3; [2] -> empty -> 0; [5, 5] -> 0; [9] -> 1
    assert r([], [], [[7, 5, 9, 2], [2], [5, 5], [9]]) == [pytest.approx(2 / 3), 0.0, 0.0, 1.0]
    assert single_token_id(tok, " the") == tok(" the", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(ValueError, match="exactly one token"):
        single_token_id(tok, " photosynthesis")
    # a named callable takes (prompts, responses, response_ids); the finish reasons are not passed on
    fn = load_callable("builtins:max")
    assert fn([1, 5], [3], [2], ["stop"]) == [3]
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_callable("math:no_such_function")


def test_sampler_copy_follows_the_policy_in_half_precision(tiny_model_dir):
    """rollout.weights: the sampler's bf16 copy keeps tied weights tied and buffers in their dtype,
    equals the policy's weights rounded to bf16 after each refresh, and tracks optimizer steps."""
    import copy as _copy

    from instructrl.config import load_config
    from instructrl.models.cached_generation import CachedGenerator
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.roles import SamplerCopy, sampler_weights

    tok = load_tokenizer(str(tiny_model_dir))
    policy = load_model(str(tiny_model_dir), tokenizer=tok)
    buffers = {n: b.dtype for n, b in policy.named_buffers()}
    s = SamplerCopy(policy, torch.bfloat16)
    m = s.model
    assert m.lm_head.weight is m.model.embed_tokens.weight  # tied, as in the policy
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in m.parameters())
    assert {n: b.dtype for n, b in m.named_buffers()} == buffers
    assert all(p.dtype == torch.float32 and p.requires_grad for p in policy.parameters())  # the policy is untouched

    before = _copy.deepcopy(m.state_dict())
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    policy(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # no refresh: unchanged
    s.refresh()
    changed = 0
    for (name, p), q in zip(policy.named_parameters(), m.parameters()):
        assert torch.equal(q, p.detach().to(torch.bfloat16)), name
        changed += not torch.equal(before[name], q)
    assert changed > 0

    # the copy decodes: greedy outputs of the bf16 copy equal those of a bf16 cast of the policy
    ref = _copy.deepcopy(policy).to(torch.bfloat16)
    for n, b in ref.named_buffers():
        b.data = dict(policy.named_buffers())[n].data.clone()
    prompts = ["count: one two", "the sea is", "hello"]
    a = CachedGenerator(m, tok, 2).generate(prompts, max_new_tokens=12, temperature=0.0)
    b = CachedGenerator(ref, tok, 2).generate(prompts, max_new_tokens=12, temperature=0.0)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]

    # with frozen lower layers only the trained weights are copied again, and the copy still equals the policy
    from instructrl.models.loading import freeze_lower_layers

    freeze_lower_layers(policy, 1)
    s2 = SamplerCopy(policy, torch.bfloat16)
    assert 0 < len(s2._pairs) < len(list(policy.parameters()))
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    policy(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    s2.refresh()
    for (name, p), q in zip(policy.named_parameters(), s2.model.parameters()):
        assert torch.equal(q, p.detach().to(torch.bfloat16)), name

    # 'auto': a copy for bf16 runs without LoRA, the policy itself otherwise; LoRA refuses an explicit copy
    cfg = load_config(PPOConfig, None, [])
    assert isinstance(sampler_weights(cfg, policy, torch.bfloat16), SamplerCopy)
    assert sampler_weights(cfg, policy, torch.float32) is None
    assert sampler_weights(load_config(PPOConfig, None, ["lora.enabled=true"]), policy, torch.bfloat16) is None
    assert sampler_weights(load_config(PPOConfig, None, ["rollout.weights=policy"]), policy, torch.bfloat16) is None
    assert sampler_weights(cfg, ref, torch.bfloat16) is None  # a bf16 policy needs no bf16 copy
    assert isinstance(
        sampler_weights(load_config(PPOConfig, None, ["rollout.weights=fp16"]), ref, torch.bfloat16), SamplerCopy
    )
    with pytest.raises(ValueError, match="LoRA"):
        sampler_weights(
            load_config(PPOConfig, None, ["lora.enabled=true", "rollout.weights=bf16"]), policy, torch.bfloat16
        )


def test_prompt_batch_lists_each_prompt_k_times_in_a_row():
    from instructrl.ppo.rollout import prompt_batch

    plain = prompt_batch(10, 3, 4, seed=7)
    grouped = prompt_batch(10, 3, 16, seed=7, repeat=4)
    assert grouped == [i for i in plain for _ in range(4)]
    with pytest.raises(ValueError, match="multiple of 3"):
        prompt_batch(10, 0, 8, seed=7, repeat=3)
