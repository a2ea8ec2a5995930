"""Prompt building and the task format (seed loading, errors, demonstrations)."""

from __future__ import annotations

import json

import pytest

from instructrl.builtin import resolve
from instructrl.config import load_config
from instructrl.data.selfinstruct import prompts as templates
from instructrl.data.selfinstruct.config import SelfInstructConfig
from instructrl.data.selfinstruct.tasks import Instance, Task, load_tasks, to_demonstrations
from instructrl.records import RecordError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_instruction_prompt_numbers_and_ends_with_next_number():
    p = templates.instruction_prompt(["First task.", "Second\n task  with\nnewlines."])
    assert p.startswith(templates.INSTRUCTION_HEADER)
    assert p.endswith("\n1. First task.\n2. Second task with newlines.\n3.")
    assert templates.instruction_stop(8, 8) == ["\n\n", "\n17."]
    chat = templates.instruction_chat_prompt(["A.", "B."], 3)
    assert chat[0]["role"] == "user" and "1. A.\n2. B." in chat[0]["content"]
    assert "tasks 3 to 5" in chat[0]["content"]


def test_classification_and_instance_prompts():
    p = templates.classification_prompt("Is the review\npositive?")
    assert p.endswith("Task: Is the review positive?\nClassification task:")
    assert p.count("Classification task: Yes") == 6 and p.count("Classification task: No") == 6
    cls = templates.instance_prompt("Label the sentiment.", classification=True)
    gen = templates.instance_prompt("Write a poem.", classification=False)
    assert cls.startswith(templates.OUTPUT_FIRST_HEADER) and cls.endswith("Task: Label the sentiment.\nClass label:")
    assert gen.startswith(templates.INPUT_FIRST_HEADER) and gen.endswith("Task: Write a poem.\nExample 1\nInput:")


def test_single_step_prompt_and_chat_wrapping():
    tasks = [Task("Add the numbers.", [Instance("2, 3", "5")], False), Task("Say hi.", [Instance("", "Hi!")], False)]
    p = templates.single_step_prompt(tasks)
    assert "### Task 1\nInstruction: Add the numbers.\nInput: 2, 3\nOutput: 5\n\n" in p
    assert "### Task 2\nInstruction: Say hi.\nInput: none\nOutput: Hi!\n\n" in p
    assert p.endswith("### Task 3\nInstruction:")
    chat = templates.as_chat(p, prefix="### Task 3\nInstruction:")
    assert chat == [{"role": "user", "content": p[: -len("### Task 3\nInstruction:")].rstrip() + templates.CHAT_TAIL}]


def test_packaged_seeds_are_valid_and_mixed():
    tasks = load_tasks()
    assert resolve("builtin:seeds").name == "builtin_seeds.jsonl"
    assert len(tasks) == 35 and sum(t.is_classification for t in tasks) == 9
    assert len({t.id for t in tasks}) == 35
    # classification seeds have at least two different labels to show output-first generation
    assert all(len({i.output for i in t.instances}) >= 2 for t in tasks if t.is_classification)


def test_real_seed_tasks_load(shared_data):
    tasks = load_tasks(shared_data / "self_instruct/seed_tasks.jsonl")
    assert len(tasks) == 175 and sum(t.is_classification for t in tasks) == 26
    assert tasks[0].id == "seed_task_0" and tasks[0].name == "breakfast_suggestion"


@pytest.mark.parametrize(
    "line,field",
    [
        ({"instances": [{"input": "", "output": "x"}], "is_classification": False}, "instruction"),
        ({"instruction": "Do it.", "instances": [], "is_classification": False}, "instances"),
        (
            {"instruction": "Do it.", "instances": [{"input": 1, "output": "x"}], "is_classification": False},
            "instances[0]",
        ),
        (
            {"instruction": "Do it.", "instances": [{"input": "", "output": "x"}], "is_classification": "no"},
            "is_classification",
        ),
    ],
)
def test_bad_seed_file_names_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "seeds.jsonl"
    good = {"instruction": "Fine.", "instances": [{"input": "", "output": "ok"}], "is_classification": False}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(RecordError, match=rf"seeds.jsonl:2: field '{field.replace('[', '.').replace(']', '.')}'"):
        load_tasks(path)


def test_unknown_keys_go_to_meta_and_ids_default(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps(
            {
                "instruction": "Do it.",
                "instances": [{"input": "", "output": "ok"}],
                "is_classification": False,
                "motivation_app": "Gmail",
            }
        )
        + "\n"
    )
    (task,) = load_tasks(path)
    assert task.id == "seed_1" and task.meta == {"motivation_app": "Gmail"}


def test_demonstrations_from_tasks():
    task = Task("Label the sentiment.", [Instance("Great!", "positive"), Instance("", "negative")], True, id="t1")
    demos = to_demonstrations([task])
    assert [d.prompt for d in demos] == ["Label the sentiment.\n\nGreat!", "Label the sentiment."]
    assert [d.response for d in demos] == ["positive", "negative"]
    assert demos[0].id == "t1-0" and demos[0].source == "selfinstruct" and demos[0].category == "classification"
    for d in demos:
        d.validate()


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_configs_load(name):
    cfg = load_config(SelfInstructConfig, ROOT / "configs" / name / "selfinstruct.yaml")
    assert cfg.filters.max_rouge_l == 0.7 and cfg.generate.num_prompt_instructions == 8


def test_config_rejects_openai_without_model():
    from instructrl.config import ConfigError

    with pytest.raises(ConfigError, match="backend.model"):
        load_config(SelfInstructConfig, overrides=["backend.kind=openai"])
