"""The gold reward is the training panel's mean noise-free quality and never reads the held-out panel."""

from __future__ import annotations

import json

import pytest

from instructrl.label.gold import GoldReward
from instructrl.label.panel import make_panels
from instructrl.records import Prompt, write_jsonl

PROMPT = Prompt(
    prompt="Name three rivers in at most 12 words.", id="p1", constraints=[{"kind": "max_words", "value": 12}]
)
RESPONSES = [
    "The Nile, the Amazon and the Danube.",
    "Rivers are long bodies of water that flow across many countries and regions of the world, "
    "carrying water from mountains to the sea over thousands of kilometers.",
    "Nile",
]


@pytest.fixture
def panels_file(tmp_path):
    train, heldout = make_panels()
    path = tmp_path / "panels.json"
    path.write_text(json.dumps({"train": train.to_dict(), "heldout": heldout.to_dict()}))
    return path, train, heldout


def test_gold_is_the_training_panels_mean_quality_with_the_prompt_record(tmp_path, panels_file):
    path, train, heldout = panels_file
    write_jsonl(tmp_path / "prompts.jsonl", [PROMPT])
    gold = GoldReward(str(path), [str(tmp_path / "prompts.jsonl")])
    finish = ["stop", "stop", "length"]
    got = gold([PROMPT.prompt] * 3, RESPONSES, None, finish)
    # independently: every training labeler's noise-free quality of each response, averaged
    want = [
        sum(lab.qualities(PROMPT, [r], [f])[0] for lab in train.labelers) / len(train.labelers)
        for r, f in zip(RESPONSES, finish)
    ]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] > got[1] and got[0] > got[2]  # within the limit and complete beats too long and cut off
    # the prompt's constraint comes from its record: judged as plain text, the long answer loses less
    plain = GoldReward(str(path))([PROMPT.prompt] * 3, RESPONSES, None, finish)
    assert plain[1] > got[1]
    heldout_mean = [
        sum(lab.qualities(PROMPT, [r], [f])[0] for lab in heldout.labelers) / len(heldout.labelers)
        for r, f in zip(RESPONSES, finish)
    ]
    assert heldout_mean != pytest.approx(got, abs=1e-6)  # the two panels weigh differently: the test can tell


def test_gold_never_reads_the_heldout_panel(tmp_path, panels_file):
    path, train, _ = panels_file
    data = json.loads(path.read_text())
    before = GoldReward(str(path))([PROMPT.prompt] * 3, RESPONSES, None, ["stop"] * 3)
    data["heldout"] = {"labelers": "not a panel"}  # a broken held-out panel changes nothing
    path.write_text(json.dumps(data))
    assert GoldReward(str(path))([PROMPT.prompt] * 3, RESPONSES, None, ["stop"] * 3) == before
    del data["train"]  # and without a training panel there is no gold reward
    path.write_text(json.dumps(data))
    with pytest.raises(KeyError, match="no panel 'train'"):
        GoldReward(str(path))
