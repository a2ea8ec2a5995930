"""Every ``builtin:`` name resolves to a packaged file that holds valid records; other specs are paths."""

from pathlib import Path

import pytest

from instructrl.builtin import BUILTIN, demonstration_text, load_demonstrations, resolve
from instructrl.records import Demonstration, RecordError, iter_json_lines


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_is_a_packaged_jsonl_file(name):
    path = resolve(name)
    assert path.is_file() and path.suffix == ".jsonl", path
    assert sum(1 for _ in iter_json_lines(path)) >= 5


def test_paths_pass_through_and_unknown_builtins_name_the_choices(tmp_path):
    assert resolve(str(tmp_path / "x.jsonl")) == tmp_path / "x.jsonl"
    with pytest.raises(RecordError, match="builtin:demo") as e:
        resolve("builtin:nope")
    assert e.value.where == "builtin:nope"


def test_demonstration_text_of_plain_and_few_shot():
    plain = Demonstration(prompt="Name a color.", response="Blue.")
    assert demonstration_text(plain) == "Name a color.\n\nBlue."
    few = Demonstration(
        instruction="Antonyms.", examples=[{"query": "hot", "response": "cold"}, {"query": "up", "response": "down"}]
    )
    assert demonstration_text(few) == "Antonyms.\n\nhot\ncold\n\nup\ndown"
    demos = load_demonstrations("builtin:demo")
    assert all(demonstration_text(d).strip() for d in demos) and Path(resolve("builtin:demo")).exists()
