"""The scalar-head reward model on the tiny model: pooling, padding, save/load with the bias, LoRA."""

import json

import pytest
import torch

from instructrl.config import LoraConfig
from instructrl.models.loading import load_tokenizer
from instructrl.models.lora import apply_lora
from instructrl.models.scalar import (
    REWARD_FILE,
    encode_for_reward,
    init_reward_model,
    load_reward_model,
    pad_batch,
    save_reward_info,
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture
def rm(tiny_model_dir, tok):
    torch.manual_seed(0)
    return init_reward_model(str(tiny_model_dir), tokenizer=tok).eval()


def _batch(tok, pairs, max_len=64):
    return pad_batch([encode_for_reward(tok, p, r, max_len)[0] for p, r in pairs], tok.pad_token_id)


PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("Write a poem", "The sea is blue and the sky is wide."),
    (
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "one two three"},
        ],
        "four",
    ),
]


def test_input_ends_with_eos_after_the_rendered_prompt(tok):
    ids, cut = encode_for_reward(tok, "What is the capital of France?", "Paris.", 64)
    text = tok.decode(ids)
    assert not cut and ids[-1] == tok.eos_token_id
    assert text.startswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert text.endswith("Paris.<|im_end|>")


def test_scores_agree_with_hf_sequence_classification_pooling(rm, tok):
    ids, mask = _batch(tok, PAIRS)
    ours = rm(ids, mask)
    hf = rm.hf_model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)  # pools at the last non-pad token
    assert ours.shape == (3,) and ours.dtype == torch.float32
    assert torch.allclose(ours, hf, atol=1e-5)


def test_padding_does_not_change_a_score(rm, tok):
    ids, mask = _batch(tok, PAIRS)
    for i, (p, r) in enumerate(PAIRS):
        alone_ids, alone_mask = _batch(tok, [(p, r)])
        with torch.no_grad():
            assert float(rm(alone_ids, alone_mask)) == pytest.approx(float(rm(ids, mask)[i]), abs=1e-5)


def test_bias_shifts_scores_not_differences(rm, tok):
    ids, mask = _batch(tok, PAIRS)
    before = rm(ids, mask)
    rm.bias = 2.5
    assert torch.allclose(rm(ids, mask), before + 2.5, atol=1e-6)


def test_save_and_load_with_bias(rm, tok, tmp_path):
    ids, mask = _batch(tok, PAIRS)
    raw = rm(ids, mask)
    rm.hf_model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    save_reward_info(tmp_path / "ckpt", -0.75, normalized_on=3)
    assert json.loads((tmp_path / "ckpt" / REWARD_FILE).read_text())["bias"] == -0.75
    loaded, tok2 = load_reward_model(tmp_path / "ckpt")
    assert torch.allclose(loaded(ids, mask), raw - 0.75, atol=1e-5)
    unnormalized, _ = load_reward_model(tmp_path / "ckpt", normalized=False)
    assert torch.allclose(unnormalized(ids, mask), raw, atol=1e-5)
    values = loaded.score_texts(tok2, [p for p, _ in PAIRS], [r for _, r in PAIRS], max_len=64, batch_size=2)
    assert values == pytest.approx((raw - 0.75).tolist(), abs=1e-5)


def test_a_causal_lm_is_not_a_reward_model(tiny_model_dir):
    with pytest.raises(ValueError, match="not a reward model"):
        load_reward_model(tiny_model_dir)


def test_freeze_lower_layers(rm):
    n = rm.freeze_lower_layers(1)
    trainable = {name for name, p in rm.named_parameters() if p.requires_grad}
    top_layer = {t for t in trainable if t.startswith("model.model.layers.1.")}
    assert top_layer and trainable - top_layer == {"model.model.norm.weight", "model.score.weight"}
    assert n == sum(p.numel() for name, p in rm.named_parameters() if name in trainable)


def test_lora_head_trains_and_merges_to_the_same_scores(rm, tok):
    rm.model = apply_lora(
        rm.model, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]), task_type="SEQ_CLS"
    )
    trainable = [n for n, p in rm.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    ids, mask = _batch(tok, PAIRS)
    opt = torch.optim.SGD([p for p in rm.parameters() if p.requires_grad], lr=0.5)
    rm.train()
    (rm(ids, mask)[0] - rm(ids, mask)[1]).backward()
    opt.step()
    rm.eval()
    with torch.no_grad():
        adapted = rm(ids, mask)
        merged = rm.merge_and_unload()
        assert not hasattr(merged.model, "peft_config")
        assert torch.allclose(merged(ids, mask), adapted, atol=1e-4)


def test_prompt_computed_once_gives_the_same_scores_and_gradients(rm, tok):
    from instructrl.rm.data import RankedExample, collate
    from instructrl.rm.score import score_batch

    exs = [
        RankedExample(
            tok("What is the capital of France?")["input_ids"], [[11, 12, 2], [13, 2], [14, 15, 16, 2]], [1, 2, 3]
        ),
        RankedExample(tok("hi")["input_ids"], [[20, 21, 22, 23, 2], [24, 2]], [2, 1]),
    ]
    b = collate(exs, tok.pad_token_id)
    rm.train()
    grads = []
    full = None  # the scores without the shared prefix, set by the first pass
    for shared in (False, True):
        rm.zero_grad()
        scores = score_batch(rm, b, torch.device("cpu"), shared=shared)
        (scores * torch.arange(1.0, 6.0)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None})
        if shared:
            assert torch.allclose(scores, full, atol=1e-5)
        full = scores.detach()
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


def test_a_cut_off_response_is_read_without_eos(rm, tok):
    from instructrl.models.generation import ended_flags
    from instructrl.ppo.reward import RewardModelReward

    ended_ids, _ = encode_for_reward(tok, "Write a poem", "The sea is blue and", 64)
    cut_ids, _ = encode_for_reward(tok, "Write a poem", "The sea is blue and", 64, ended=False)
    assert ended_ids == cut_ids + [tok.eos_token_id]
    assert ended_flags(["stop", "length", None], 3) == [True, False, True] and ended_flags(None, 2) == [True, True]
    with pytest.raises(ValueError, match="2 finish reasons for 3"):
        ended_flags(["stop", "length"], 3)
    prompts, texts = ["Write a poem"] * 2, ["The sea is blue and"] * 2
    with torch.no_grad():
        want = [float(rm(*pad_batch([s], tok.pad_token_id))) for s in (ended_ids, cut_ids)]
    got = rm.score_texts(tok, prompts, texts, max_len=64, ended=[True, False])
    assert got == pytest.approx(want, abs=1e-5) and abs(want[0] - want[1]) > 1e-4
    # PPO's reward reads the sampler's finish reasons: "length" means the sampler cut the response
    body = tok("The sea is blue and", add_special_tokens=False)["input_ids"]
    reward = RewardModelReward(rm, tok, device=torch.device("cpu"), amp_dtype=torch.float32, batch_size=2, max_len=64)
    assert reward(prompts, texts, [body + [tok.eos_token_id], body], ["stop", "length"]) == pytest.approx(
        want, abs=1e-5
    )


def test_rankings_with_finish_reasons_encode_cut_responses_without_eos(tok):
    from instructrl.records import Ranking
    from instructrl.rm.data import encode_rankings

    r = Ranking(
        prompt="Write a poem",
        responses=["Roses are red.", "The sea is blue and"],
        ranks=[1, 2],
        meta={"finish_reasons": ["stop", "length"]},
    )
    plain = Ranking(prompt="Write a poem", responses=["Roses are red.", "The sea is blue and"], ranks=[1, 2])
    (ex, ex_plain), _ = encode_rankings(tok, [r, plain], 64)
    assert ex.responses[0][-1] == tok.eos_token_id and ex.responses[1][-1] != tok.eos_token_id
    assert ex_plain.responses[1] == ex.responses[1] + [tok.eos_token_id]
