"""Rankings -> batch elements: truncation, conversation split, pair layout, batch order, baselines."""

import torch

from instructrl.models.scalar import last_token_index, pad_batch, truncate_group, truncate_pair
from instructrl.records import Demonstration, Ranking
from instructrl.rm.data import (
    RankedExample,
    collate,
    epoch_batches,
    length_rule_accuracy,
    micro_batches,
    split_by_conversation,
    synthetic_rankings,
)


def test_truncate_pair_fits_untouched():
    assert truncate_pair([1, 2, 3], [4, 5], 5) == ([1, 2, 3, 4, 5], False)


def test_truncate_pair_cuts_prompt_from_the_left_first():
    ids, cut = truncate_pair(list(range(10)), [100, 101, 102], 8)
    assert cut and ids == [5, 6, 7, 8, 9, 100, 101, 102]


def test_truncate_pair_keeps_a_quarter_for_the_prompt_then_cuts_the_response_end():
    # max_len 8: the prompt keeps its last 2 tokens, the response keeps its first 6
    ids, cut = truncate_pair(list(range(10)), list(range(100, 110)), 8)
    assert cut and ids == [8, 9, 100, 101, 102, 103, 104, 105]
    # a prompt shorter than the quarter is kept whole
    assert truncate_pair([7], list(range(100, 110)), 8)[0] == [7, 100, 101, 102, 103, 104, 105, 106]


def test_truncate_group_cuts_one_prompt_for_all_responses():
    assert truncate_group([1, 2], [[10], [11, 12]], 8) == ([1, 2], [[10], [11, 12]], False)
    # the longest response (3) leaves 5 prompt tokens; the others keep the same prompt
    assert truncate_group(list(range(10)), [[100, 101, 102], [103]], 8) == (
        [5, 6, 7, 8, 9],
        [[100, 101, 102], [103]],
        True,
    )
    # a very long response: the prompt keeps max_len // 4 = 2 tokens, responses are cut to 6
    p, rs, cut = truncate_group(list(range(10)), [list(range(100, 110)), [7, 8]], 8)
    assert (p, rs, cut) == ([8, 9], [list(range(100, 106)), [7, 8]], True)
    # for the longest response it is what truncate_pair gives
    assert p + rs[0] == truncate_pair(list(range(10)), list(range(100, 110)), 8)[0]


def test_last_token_index_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 4, 0]


def test_pad_batch():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def _r(prompt, conv, k=2, ds="d"):
    return Ranking(
        prompt=prompt,
        responses=[f"r{i}" for i in range(k)],
        ranks=list(range(1, k + 1)),
        meta={"conversation": conv, "dataset": ds},
    )


def test_split_by_conversation_keeps_conversations_together_and_is_stable():
    rankings = [_r(f"p{i}", f"c{i // 3}") for i in range(300)]  # 100 conversations of 3 rankings
    train, held = split_by_conversation(rankings, 0.3, salt="s")
    assert {r.meta["conversation"] for r in train}.isdisjoint({r.meta["conversation"] for r in held})
    assert 15 <= len({r.meta["conversation"] for r in held}) <= 45
    assert len(train) + len(held) == 300
    # same answer on a reordered subset: membership depends on the conversation only
    sub = list(reversed(rankings[:150]))
    train2, held2 = split_by_conversation(sub, 0.3, salt="s")
    assert {id(r) for r in held2} == {id(r) for r in held if r in sub}
    # another salt gives another split
    assert {r.meta["conversation"] for r in split_by_conversation(rankings, 0.3, salt="t")[1]} != {
        r.meta["conversation"] for r in held
    }


def test_split_key_defaults_to_first_user_turn():
    a = Ranking(
        prompt=[
            {"role": "user", "content": "same start"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "more"},
        ],
        responses=["a", "b"],
        ranks=[1, 2],
    )
    b = Ranking(prompt="same start", responses=["a", "b"], ranks=[1, 2])
    for salt in ("a", "b", "c", "d"):
        t, h = split_by_conversation([a, b], 0.5, salt=salt)
        assert len(t) in (0, 2)


def test_collate_lays_out_each_prompt_and_its_pairs():
    exs = [RankedExample([9], [[1, 2], [3]], [2, 1], "x"), RankedExample([7, 7], [[4], [5, 6, 7], [8]], [1, 1, 2], "y")]
    b = collate(exs, pad_id=0)
    assert b.input_ids.tolist() == [[9, 1, 2, 0, 0], [9, 3, 0, 0, 0], [7, 7, 4, 0, 0], [7, 7, 5, 6, 7], [7, 7, 8, 0, 0]]
    assert b.attention_mask.sum(-1).tolist() == [3, 2, 3, 5, 3]
    assert b.prompt_ids.tolist() == [[0, 9], [7, 7]] and b.prompt_mask.tolist() == [[0, 1], [1, 1]]
    assert b.response_ids.tolist() == [[1, 2, 0], [3, 0, 0], [4, 0, 0], [5, 6, 7], [8, 0, 0]]
    assert b.owner.tolist() == [0, 0, 1, 1, 1]
    # prompt 0: response 1 beats 0; prompt 1 (offset 2): 0 and 1 tie, both beat 2
    assert list(zip(b.pairs.win.tolist(), b.pairs.lose.tolist())) == [(1, 0), (2, 4), (3, 4)]
    assert b.pairs.group.tolist() == [0, 1, 1]
    assert b.pair_k.tolist() == [2, 3, 3]
    assert b.pair_dataset == ["x", "y", "y"]
    assert (b.n_prompts, b.n_tokens, b.n_tokens_shared) == (2, 8 + 2 + 6, 8 + 1 + 2)


def test_epoch_batches_cover_everything_once_and_depend_on_seed_and_epoch_only():
    exs = [RankedExample([0], [[0] * (1 + i % 7), [0] * 3], [1, 2]) for i in range(50)]
    b0 = epoch_batches(exs, 8, seed=1, epoch=0)
    assert sorted(i for b in b0 for i in b) == list(range(50))
    assert all(len(b) <= 8 for b in b0)
    assert b0 == epoch_batches(exs, 8, seed=1, epoch=0)
    assert b0 != epoch_batches(exs, 8, seed=1, epoch=1)
    mbs = micro_batches(b0[0], exs, 3)
    assert [len(m) for m in mbs] == [3, 3, 2] and mbs[0][0] is exs[b0[0][0]]


def test_length_rules():
    rs = [
        Ranking(prompt="p", responses=["long answer", "short"], ranks=[1, 2]),
        Ranking(prompt="p", responses=["tiny", "much longer"], ranks=[1, 2]),
        Ranking(prompt="p", responses=["same", "size"], ranks=[1, 2]),
        Ranking(prompt="p", responses=["a", "bb", "ccc"], ranks=[1, 2, 3]),
    ]  # shorter always wins here
    # longer wins: 1 + 0 + 0.5 + 0 (3 pairs) over 6 pairs
    assert length_rule_accuracy(rs, True) == 1.5 / 6
    assert length_rule_accuracy(rs, False) == 4.5 / 6


def test_synthetic_rankings_order_by_noise():
    demos = [
        Demonstration(prompt=f"q{i}", response=" ".join(f"w{i}_{j}" for j in range(20)), id=f"d{i}") for i in range(6)
    ]
    rs = synthetic_rankings(demos, 5, seed=0)
    assert len(rs) == 6
    for r, d in zip(rs, demos):
        assert sorted(r.ranks) == [1, 2, 3, 4, 5]
        by_rank = [r.responses[r.ranks.index(k)] for k in range(1, 6)]
        assert by_rank[0] == d.response
        kept = [sum(a == b for a, b in zip(x.split(), d.response.split())) for x in by_rank]
        assert kept == sorted(kept, reverse=True) and kept[-1] <= 20 - 16 + 1  # 80% of the words replaced
