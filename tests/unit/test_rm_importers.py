"""Importers: HH-RLHF, OpenAssistant trees, instructrl records, HF datasets on disk; real files."""

import gzip
import json
from collections import Counter

import pytest

from instructrl.records import RecordError
from instructrl.rm.importers import detect_format, load_rankings, parse_hh_transcript, split_transcripts


def _write(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


H, A = "\n\nHuman: ", "\n\nAssistant: "


def test_parse_hh_transcript():
    assert parse_hh_transcript(f"{H}hi there{A}hello{H}how are you?{A} fine ") == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "fine"},
    ]
    with pytest.raises(ValueError):
        parse_hh_transcript("no turns at all")


def test_split_transcripts_cases():
    u = {"role": "user", "content": "q"}
    a = lambda t: {"role": "assistant", "content": t}  # noqa: E731
    assert split_transcripts([u, a("x")], [u, a("y")]) == ([u], "x", "y")
    assert split_transcripts([u, a("x")], [u, a("x")]) == "identical responses"
    assert split_transcripts([u, a("x")], [u, a("")]) == "empty response"
    # two assistant turns at the end are one response; a later user turn is not a response
    assert split_transcripts([u, a("x"), a("z")], [u, a("y")]) == ([u], "x\n\nz", "y")
    assert split_transcripts([u, a("x"), u], [u, a("y")]) == "response continues with a user turn"


def test_hh_file_with_skips_and_multiturn_prompt(tmp_path):
    rows = [
        {"chosen": f"{H}What is 2+2?{A}4", "rejected": f"{H}What is 2+2?{A}5"},
        {"chosen": f"{H}hi{A}hello{H}tell a joke{A}knock knock", "rejected": f"{H}hi{A}hello{H}tell a joke{A}no"},
        {"chosen": f"{H}same{A}same", "rejected": f"{H}same{A}same"},
        {"chosen": f"{H}empty{A}", "rejected": f"{H}empty{A}something"},
    ]
    res = load_rankings(_write(tmp_path / "helpful-base_test.jsonl.gz", rows, gz=True))
    assert res.fmt == "hh"
    assert [r.responses for r in res.rankings] == [["4", "5"], ["knock knock", "no"]]
    assert res.rankings[0].prompt == "What is 2+2?" and res.rankings[0].ranks == [1, 2]
    assert res.rankings[1].prompt == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "tell a joke"},
    ]
    assert res.rankings[0].meta["dataset"] == "helpful-base_test"
    assert res.rankings[0].id == "helpful-base_test:1"
    assert res.skipped == Counter({"identical responses": 1, "empty response": 1})
    assert "skipped 1 empty response, 1 identical responses" in res.summary()


@pytest.mark.parametrize(
    "row,field,reason",
    [
        ({"chosen": f"{H}q{A}a"}, "rejected", "missing"),
        ({"chosen": f"{H}q{A}a", "rejected": 3}, "rejected", "expected a transcript string"),
        ({"chosen": "plain text", "rejected": f"{H}q{A}a"}, "chosen", "transcript"),
    ],
)
def test_hh_malformed_names_file_line_and_field(tmp_path, row, field, reason):
    path = _write(tmp_path / "hh.jsonl", [{"chosen": f"{H}q{A}a", "rejected": f"{H}q{A}b"}, row])
    with pytest.raises(RecordError) as e:
        load_rankings(path, "hh")
    assert e.value.where == f"{path}:2" and e.value.field == field and reason in e.value.reason


def _msg(text, role, rank=None, replies=(), deleted=False, mid=""):
    return {
        "message_id": mid or text,
        "text": text,
        "role": role,
        "rank": rank,
        "deleted": deleted,
        "lang": "en",
        "replies": list(replies),
    }


def test_oasst_tree(tmp_path):
    tree = {
        "message_tree_id": "t1",
        "tree_state": "ready_for_export",
        "prompt": _msg(
            "root question",
            "prompter",
            replies=[
                _msg(
                    "ok answer",
                    "assistant",
                    rank=1,
                    replies=[
                        _msg(
                            "follow-up",
                            "prompter",
                            rank=0,
                            replies=[
                                _msg("deep best", "assistant", rank=0),
                                _msg("deep worst", "assistant", rank=1),
                                _msg("gone", "assistant", rank=2, deleted=True),
                            ],
                        ),
                        _msg("other follow-up", "prompter", rank=1),
                    ],
                ),
                _msg("best answer", "assistant", rank=0),
                _msg("worst answer", "assistant", rank=2),
                _msg("unranked answer", "assistant"),
            ],
        ),
    }
    single = {
        "message_tree_id": "t2",
        "prompt": _msg("lonely", "prompter", replies=[_msg("only", "assistant", rank=0)]),
    }
    res = load_rankings(_write(tmp_path / "trees.jsonl", [tree, single]))
    assert res.fmt == "oasst"
    by_prompt = {json.dumps(r.prompt): r for r in res.rankings}
    top = by_prompt[json.dumps("root question")]
    assert top.responses == ["ok answer", "best answer", "worst answer"] and top.ranks == [2, 1, 3]
    assert top.meta["conversation"] == "oasst:t1" and top.id == "root question"
    deep = by_prompt[
        json.dumps(
            [
                {"role": "user", "content": "root question"},
                {"role": "assistant", "content": "ok answer"},
                {"role": "user", "content": "follow-up"},
            ]
        )
    ]
    assert deep.responses == ["deep best", "deep worst"] and deep.ranks == [1, 2]
    assert len(res.rankings) == 2
    assert res.skipped == Counter(
        {
            "ranked user replies (not assistant responses)": 1,
            "deleted replies": 1,
            "unranked replies beside ranked ones": 1,
        }
    )


def test_oasst_malformed(tmp_path):
    bad = {"message_tree_id": "t", "prompt": _msg("q", "prompter", replies=[_msg("a", "robot", rank=0)])}
    with pytest.raises(RecordError) as e:
        load_rankings(_write(tmp_path / "t.jsonl", [bad]))
    assert e.value.where.endswith("t.jsonl:1") and e.value.field == "prompt.replies[0].role"


def test_own_records_ranking_and_comparison(tmp_path):
    rows = [
        {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 1, 2], "id": "r1"},
        {"prompt": "p2", "chosen": "good", "rejected": "bad"},
        {"prompt": "p3", "responses": ["a", "b"], "ranks": [1, 1]},
    ]
    res = load_rankings(_write(tmp_path / "mine.jsonl", rows))
    assert res.fmt == "ranking"
    assert [r.ranks for r in res.rankings] == [[1, 1, 2], [1, 2]]
    assert res.rankings[1].responses == ["good", "bad"]
    assert res.skipped == Counter({"rankings where every response ties": 1})
    bad = _write(tmp_path / "bad.jsonl", [rows[0], {"prompt": "p", "responses": ["a", "b"], "ranks": [1]}])
    with pytest.raises(RecordError) as e:
        load_rankings(bad)
    assert e.value.where.endswith("bad.jsonl:2") and e.value.field == "ranks"


def test_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(RecordError, match="cannot tell the format"):
        detect_format(_write(tmp_path / "x.jsonl", [{"text": "hello"}]))


def test_hf_dataset_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    pr = datasets.Dataset.from_dict({"prompt": ["q1", "q2"], "chosen": ["good", "same"], "rejected": ["bad", "same"]})
    conv = datasets.Dataset.from_dict(
        {
            "chosen": [[{"role": "user", "content": "hey"}, {"role": "assistant", "content": "hello!"}]],
            "rejected": [[{"role": "user", "content": "hey"}, {"role": "assistant", "content": "go away"}]],
        }
    )
    datasets.DatasetDict({"train": pr, "test": conv}).save_to_disk(str(tmp_path / "prefs"))
    res = load_rankings(tmp_path / "prefs")
    assert res.fmt == "hf"
    assert [(r.prompt, r.responses) for r in res.rankings] == [("q1", ["good", "bad"]), ("hey", ["hello!", "go away"])]
    assert res.skipped == Counter({"identical responses": 1})
    hh = datasets.Dataset.from_dict({"chosen": [f"{H}q{A}yes"], "rejected": [f"{H}q{A}no"]})
    hh.save_to_disk(str(tmp_path / "hh"))
    assert load_rankings(tmp_path / "hh").rankings[0].responses == ["yes", "no"]
    datasets.Dataset.from_dict({"chosen": ["a"], "other": ["b"]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(RecordError, match="rejected"):
        load_rankings(tmp_path / "bad")


def test_real_hh_rlhf(shared_data):
    helpful = load_rankings(shared_data / "hh_rlhf" / "helpful-base_test.jsonl.gz")
    harmless = load_rankings(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    # 2,354 and 2,312 lines; the skipped ones are counted, nothing disappears silently
    assert len(helpful.rankings) + sum(helpful.skipped.values()) == 2354
    assert len(harmless.rankings) + sum(harmless.skipped.values()) == 2312
    assert helpful.skipped == Counter({"empty response": 4, "identical responses": 2})
    assert harmless.skipped == Counter({"empty response": 4})
    assert all(r.ranks == [1, 2] and r.responses[0] != r.responses[1] for r in helpful.rankings)
    multi = [r for r in helpful.rankings if isinstance(r.prompt, list)]
    assert multi and all(r.prompt[-1]["role"] == "user" for r in multi)


def test_real_oasst_trees(shared_data):
    res = load_rankings(shared_data / "oasst" / "en_100_tree.jsonl")
    ks = Counter(len(r.responses) for r in res.rankings)
    assert len(res.rankings) == 212  # the README's 212 ranked groups of 2-9 sibling replies
    assert ks == Counter({3: 117, 2: 57, 4: 27, 6: 6, 5: 3, 9: 1, 8: 1})
    assert len({r.meta["conversation"] for r in res.rankings}) == 100
    assert all(sorted(r.ranks) == list(range(1, len(r.ranks) + 1)) for r in res.rankings)
