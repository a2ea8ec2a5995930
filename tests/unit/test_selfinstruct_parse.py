"""Reading model output: instruction lists (truncated last item), yes/no, instances, single-step tasks."""

from __future__ import annotations

from collections import Counter

from instructrl.data.selfinstruct.parse import (
    parse_input_first,
    parse_instruction_list,
    parse_output_first,
    parse_single_step,
    parse_yes_no,
)
from instructrl.data.selfinstruct.tasks import Instance


def test_raw_continuation_with_truncated_last_item():
    text = " Write a haiku about snow.\n10. Explain how a bicycle\n   gear works.\n11) Task: List three\n12. Name a"
    items, over = parse_instruction_list(text, start=9, truncated=True, max_items=8)
    assert [i.text for i in items] == [
        "Write a haiku about snow.",
        "Explain how a bicycle gear works.",
        "List three",
        "Name a",
    ]
    assert [i.truncated for i in items] == [False, False, False, True]
    assert over == 0


def test_complete_continuation_keeps_last_item_and_caps_count():
    text = " One task here.\n10. Two task here.\n11. Three task here."
    items, over = parse_instruction_list(text, start=9, truncated=False, max_items=2)
    assert [i.text for i in items] == ["One task here.", "Two task here."]
    assert not any(i.truncated for i in items) and over == 1


def test_chat_answer_drops_preamble():
    text = "Sure! Here are more tasks:\n\n9. Plan a picnic menu.\n10. Instruction: Rate the joke from 1 to 5.\n"
    items, _ = parse_instruction_list(text, start=None, truncated=False, max_items=8)
    assert [i.text for i in items] == ["Plan a picnic menu.", "Rate the joke from 1 to 5."]
    assert parse_instruction_list("no numbers at all", start=None, truncated=False, max_items=8) == ([], 0)


def test_yes_no():
    assert parse_yes_no(" Yes") is True
    assert parse_yes_no("no.") is False
    assert parse_yes_no("  YES, it is") is True
    assert parse_yes_no("Maybe") is None
    assert parse_yes_no("") is None


def test_input_first_examples():
    text = (
        " 25 degrees\nOutput: 77 degrees\nExample 2\nInput: none\nOutput: Hello\nthere\n"
        "Example 3\nInput: orphan input\nExample 4\nInput: x\nOutput: y"
    )
    instances, drops = parse_input_first(text, truncated=False)
    assert instances == [Instance("25 degrees", "77 degrees"), Instance("", "Hello\nthere"), Instance("x", "y")]
    assert drops == Counter(unparseable=1)


def test_input_first_truncated_drops_last_output():
    instances, drops = parse_input_first(" a\nOutput: b\nExample 2\nInput: c\nOutput: d is cut", truncated=True)
    assert instances == [Instance("a", "b")] and drops == Counter(truncated=1)
    instances, drops = parse_input_first(" a\nOutput: b\nExample 2\nInput: c is cut", truncated=True)
    assert instances == [Instance("a", "b")] and drops == Counter(truncated=1)


def test_input_first_without_prefix_and_without_markers():
    instances, _ = parse_input_first(
        "Input: 2 + 2\nOutput: 4\nInput: 3 + 3\nOutput: 6", truncated=False, prefixed=False
    )
    assert instances == [Instance("2 + 2", "4"), Instance("3 + 3", "6")]
    instances, drops = parse_input_first("just prose, no format", truncated=False, prefixed=False)
    assert instances == [] and drops == Counter(unparseable=1)


def test_output_first_classification():
    text = (
        " positive\nInput: Loved it.\nClass label: negative\nInput: Hated it.\n"
        "Class label: neutral\nClass label: mixed\nInput: Good food,\nbad service."
    )
    instances, drops = parse_output_first(text, truncated=False)
    assert instances == [
        Instance("Loved it.", "positive"),
        Instance("Hated it.", "negative"),
        Instance("Good food,\nbad service.", "mixed"),
    ]
    assert drops == Counter(unparseable=1)  # 'neutral' had no input
    instances, _ = parse_output_first(
        " no\nInput: The movie is a comedy.\nOutput: no\nClass label: yes\nInput: x", truncated=False
    )
    assert instances == [Instance("The movie is a comedy.", "no"), Instance("x", "yes")]
    instances, drops = parse_output_first(" yes\nInput: a\nClass label: no\nInput: b is cu", truncated=True)
    assert instances == [Instance("a", "yes")] and drops == Counter(truncated=1)


def test_single_step_tasks():
    text = (
        " Name the capital of the country.\nInput: Peru\nOutput: Lima\n\n### Task 5\nInstruction: Tell a joke.\n"
        "Input: none\nOutput: Why did the chicken cross the road?\n\n### Task 6\nInstruction: Broken task\n\n"
        "### Task 7\nInstruction: Last one\nInput: x\nOutput: y cut"
    )
    tasks, over = parse_single_step(text, start=4, truncated=True, max_items=8)
    assert [t.instruction for t in tasks] == [
        "Name the capital of the country.",
        "Tell a joke.",
        "Broken task",
        "Last one",
    ]
    assert tasks[0].instance == Instance("Peru", "Lima")
    assert tasks[1].instance == Instance("", "Why did the chicken cross the road?")
    assert tasks[2].instance is None
    assert [t.truncated for t in tasks] == [False, False, False, True] and over == 0
    tasks, over = parse_single_step(text, start=4, truncated=False, max_items=1)
    assert len(tasks) == 1 and over == 3
