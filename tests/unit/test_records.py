import gzip
import json

import pytest

from instructrl.records import Comparison, Demonstration, Prompt, Ranking, RecordError, read_jsonl, write_jsonl


def test_roundtrip_and_gzip(tmp_path):
    recs = [
        Prompt(prompt="Hello", id="p1", user_id="u1", category="chat"),
        Prompt(prompt=[{"role": "user", "content": "Hi"}], id="p2", user_id="u2", source="playground"),
    ]
    for name in ("p.jsonl", "p.jsonl.gz"):
        write_jsonl(tmp_path / name, recs)
        assert read_jsonl(tmp_path / name, Prompt) == recs
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away
    with gzip.open(tmp_path / "p.jsonl.gz", "rt") as fh:
        assert json.loads(fh.readline())["id"] == "p1"


def bad(tmp_path, obj_or_text, cls):
    p = tmp_path / "bad.jsonl"
    good = json.dumps(
        {
            Demonstration: {"prompt": "fine", "response": "ok"},
            Prompt: {"prompt": "fine"},
            Ranking: {"prompt": "q", "responses": ["a", "b"], "ranks": [1, 2]},
            Comparison: {"prompt": "q", "chosen": "a", "rejected": "b"},
        }[cls]
    )
    line = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    p.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(RecordError) as e:
        read_jsonl(p, cls)
    return str(e.value)


def test_errors_name_file_line_and_field(tmp_path):
    msg = bad(tmp_path, '{"prompt": "x", ', Prompt)
    assert msg.startswith(f"{tmp_path}/bad.jsonl:3: not valid JSON")
    msg = bad(tmp_path, {"prompt": "x", "source": "forum"}, Prompt)
    assert ":3: field 'source': 'forum' is not one of labeler" in msg
    msg = bad(tmp_path, {"prompt": "x", "colour": 1}, Prompt)
    assert "field 'colour': unknown field for Prompt" in msg
    msg = bad(tmp_path, {"prompt": "x"}, Demonstration)
    assert "field 'response'" in msg
    msg = bad(
        tmp_path,
        {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "response": "c"},
        Demonstration,
    )
    assert "field 'prompt': the last message must be a user turn" in msg
    msg = bad(tmp_path, {"prompt": "x", "responses": ["a", "b", "c"], "ranks": [1, 2]}, Ranking)
    assert "field 'ranks': expected 3 ranks" in msg
    msg = bad(tmp_path, {"prompt": "x", "responses": ["a", "b"], "ranks": [1, 1], "likert": [8, 3]}, Ranking)
    assert "field 'likert': Likert scores are integers from 1 to 7" in msg
    msg = bad(tmp_path, {"prompt": "x", "chosen": 3, "rejected": "b"}, Comparison)
    assert "field 'chosen': expected" in msg


def test_ranking_ties_and_comparison_as_ranking():
    r = Ranking(prompt="p", responses=["a", "b", "c"], ranks=[1, 1, 2])
    r.validate()
    c = Comparison(prompt="p", chosen="good", rejected="bad").to_ranking()
    assert c.responses == ["good", "bad"] and c.ranks == [1, 2]


def test_few_shot_demonstration_validation(tmp_path):
    ok = {
        "type": "few-shot",
        "instruction": "Reverse.",
        "examples": [{"query": "ab", "response": "ba"}, {"query": "cd", "response": "dc"}],
    }
    p = tmp_path / "fs.jsonl"
    p.write_text(json.dumps(ok) + "\n")
    assert read_jsonl(p, Demonstration)[0].instruction == "Reverse."
    msg = bad(
        tmp_path, {"type": "few-shot", "instruction": "x", "examples": [{"query": "a"}, {"query": "b"}]}, Demonstration
    )
    assert "field 'examples[0]'" in msg
