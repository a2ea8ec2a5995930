import math
import random

import pytest
import torch

from instructrl.models.forward import masked_lm_loss, response_lm_loss
from instructrl.records import Demonstration
from instructrl.sft import data as sft_data
from instructrl.utils.optim import lr_lambda


def test_masked_lm_loss_hand_computed():
    # vocab 3, one sequence of 3 tokens; only token 2 (id 1) is a response token.
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [9.0, 9.0, 9.0]]])
    ids = torch.tensor([[2, 0, 1]])
    mask = torch.tensor([[False, False, True]])
    loss, n = masked_lm_loss(logits, ids, mask)
    # token 1 is predicted from position 1: -log softmax([2,0,0])[1] = log(e^2 + 2)
    assert n == 1
    assert float(loss) == pytest.approx(math.log(math.exp(2) + 2), abs=1e-6)
    mask = torch.tensor([[False, True, True]])
    loss, n = masked_lm_loss(logits, ids, mask)
    assert n == 2 and float(loss) == pytest.approx(math.log(3) + math.log(math.exp(2) + 2), abs=1e-6)


def test_response_only_projection_matches_full_logits(tiny_model_dir):
    from instructrl.models.loading import load_model

    model = load_model(str(tiny_model_dir))
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (3, 12))
    att = torch.ones_like(ids)
    att[1, 9:] = 0
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 6:] = True
    mask[1, 9:] = False
    full, n_full = masked_lm_loss(model(input_ids=ids, attention_mask=att).logits, ids, mask)
    fast, n_fast = response_lm_loss(model, ids, att, mask)
    assert n_full == n_fast == 6 + 3 + 6
    assert float(fast.detach()) == pytest.approx(float(full.detach()), rel=1e-5)


def test_packing_matches_separate_examples(tiny_model_dir):
    """A packed row gives every example exactly the loss it has alone: attention never crosses."""
    from instructrl.models.loading import load_model

    model = load_model(str(tiny_model_dir)).eval()
    rng = random.Random(0)
    exs = [
        sft_data.Example([rng.randrange(5, 200) for _ in range(n)], [False] * (n // 2) + [True] * (n - n // 2))
        for n in (7, 5, 9, 4)
    ]
    separate = sum(
        float(response_lm_loss(model, sft_data.collate([e], 0).input_ids, None, sft_data.collate([e], 0).mask)[0])
        for e in exs
    )
    packed = sft_data.pack(exs, max_len=16, pad_id=0, rows=4)
    assert sum(b.input_ids.shape[0] for b in packed) == 2  # 7+5+4 and 9 -> two rows of <= 16 tokens
    assert sum(b.n_tokens for b in packed) == 7 + 5 + 9 + 4  # the pad tail of the shorter row is not counted
    total = sum(float(response_lm_loss(model, b.input_ids, None, b.mask, b.position_ids)[0]) for b in packed)
    assert total == pytest.approx(separate, rel=1e-5)
    # without position ids restarting, attention would cross examples and the loss would differ
    b = packed[0]
    crossed = float(response_lm_loss(model, b.input_ids, torch.ones_like(b.input_ids), b.mask)[0])
    per_row = float(response_lm_loss(model, b.input_ids, None, b.mask, b.position_ids)[0])
    assert abs(crossed - per_row) > 1e-3


def test_encode_chat_masks_only_assistant_turns(tiny_model_dir):
    from instructrl.models.loading import encode_chat, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    conv = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four"},
    ]
    ids, mask = encode_chat(tok, conv, "last")
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "four<|im_end|>"
    ids_all, mask_all = encode_chat(tok, conv, "all")
    assert ids_all == ids
    assert tok.decode([i for i, m in zip(ids_all, mask_all) if m]) == "two<|im_end|>four<|im_end|>"
    # the ids are exactly the rendered conversation
    assert tok.decode(ids) == tok.apply_chat_template(conv, tokenize=False)


def test_fallback_template_for_tokenizers_without_one(tiny_model_dir):
    from instructrl.models.loading import FALLBACK_CHAT_TEMPLATE, encode_chat, load_tokenizer, normalize_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = None
    tok = normalize_tokenizer(tok)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert tok.apply_chat_template(conv, tokenize=False) == "<|user|>\nhi<|im_end|>\n<|assistant|>\nyo<|im_end|>\n"
    ids, mask = encode_chat(tok, conv)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "yo<|im_end|>"
    assert tok.pad_token_id != tok.eos_token_id


def test_few_shot_expansion():
    d = Demonstration(
        type="few-shot",
        instruction="Reverse the word.",
        examples=[{"query": q, "response": q[::-1]} for q in ("cat", "dog", "sun", "map", "pen")],
    )
    pts = sft_data.expand_few_shot(d, variants=2, k=3, rng=random.Random(0))
    assert len(pts) == 5 * 2
    for prompt, resp in pts:
        query = prompt.rsplit("Input: ", 1)[1].split("\n")[0]
        assert resp == query[::-1]
        assert prompt.startswith("Reverse the word.\n\n") and prompt.endswith("Output:")
        assert prompt.count("Input: ") == 4  # 3 shots + the query
        assert f"Input: {query}\nOutput: {resp}" not in prompt  # the target is never among its own shots
    # the two variants for one target use different shot subsets
    first = [p for p, r in pts if r == "tac"]
    assert len(set(first)) == 2


def test_user_split_keeps_users_apart():
    demos = [Demonstration(prompt=f"p{i}", response="r", user_id=f"u{i % 10}") for i in range(100)]
    train, valid = sft_data.user_split(demos, 0.2, seed=3)
    assert len(train) + len(valid) == 100
    assert {d.user_id for d in train}.isdisjoint({d.user_id for d in valid})
    assert len({d.user_id for d in valid}) == 2
    assert sft_data.user_split(demos, 0.2, seed=3) == (train, valid)


def test_epoch_batches_deterministic_and_complete():
    exs = [sft_data.Example(list(range(n + 2)), [False, True] + [True] * n) for n in range(40)]
    a = sft_data.epoch_batches(exs, batch_size=4, seed=1, epoch=0, pad_id=0)
    b = sft_data.epoch_batches(exs, batch_size=4, seed=1, epoch=0, pad_id=0)
    c = sft_data.epoch_batches(exs, batch_size=4, seed=1, epoch=1, pad_id=0)
    assert [x.input_ids.tolist() for x in a] == [x.input_ids.tolist() for x in b]
    assert [x.input_ids.tolist() for x in a] != [x.input_ids.tolist() for x in c]
    assert sum(int(x.attention_mask.sum()) for x in a) == sum(n + 2 for n in range(40))
    # length grouping: much less padding than random batches
    padded = sum(x.input_ids.numel() for x in a)
    rand = sum(
        x.input_ids.numel()
        for x in sft_data.epoch_batches(exs, batch_size=4, seed=1, epoch=0, pad_id=0, length_grouping=False)
    )
    assert padded < 0.8 * rand


def test_lr_schedule():
    assert lr_lambda(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_lambda(9, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_lambda(10, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_lambda(55, 100, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_lambda(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_lambda(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_lambda(70, 100, 10, "constant", 0.0) == 1.0


def test_build_optimizer_gives_named_parameters_their_own_peak_lr():
    from instructrl.config import OptimConfig
    from instructrl.utils.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    model[1].requires_grad_(False)
    cfg = OptimConfig(lr=1e-4, weight_decay=0.1, warmup_ratio=0.0, schedule="linear", min_lr_ratio=0.0)
    opt, sched = build_optimizer(model, cfg, total_steps=4, lr_for=lambda n: 1e-2 if n.startswith("2.") else None)
    groups = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    # body weights decay at 1e-4, body bias does not; head weight and bias at 1e-2; the frozen norm is left out
    assert groups == {(1e-4, 0.1): 12, (1e-4, 0.0): 4, (1e-2, 0.1): 4, (1e-2, 0.0): 1}
    opt.step()
    sched.step()
    sched.step()
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([5e-5, 5e-5, 5e-3, 5e-3])
