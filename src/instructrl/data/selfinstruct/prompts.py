"""The prompts of Self-Instruct, written for instructrl.

Every builder returns text for a model to continue (``raw`` prompts, sent to a completion
endpoint); :func:`as_chat` turns one into a single user turn for chat-only models. The few-shot
examples are deliberately unlike the seed tasks, so they are not copied into the pool.
"""

from __future__ import annotations

from collections.abc import Sequence

from instructrl.data.selfinstruct.tasks import Task


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- instructions

INSTRUCTION_HEADER = (
    "Here is a numbered list of tasks that people ask a helpful assistant to do. The tasks are varied: "
    "questions, writing, rewriting, classification, reasoning, advice, coding and more. Each task in the "
    "list is different from the ones before it.\n\n"
)


def instruction_prompt(instructions: Sequence[str]) -> str:
    """A list of ``instructions`` numbered from 1, ending with the next number for the model to fill."""
    lines = [f"{i}. {one_line(inst)}" for i, inst in enumerate(instructions, 1)]
    return INSTRUCTION_HEADER + "\n".join(lines) + f"\n{len(instructions) + 1}."


def instruction_stop(shown: int, max_new: int) -> list[str]:
    """Stop at a blank line (the list is over) or before item ``shown + max_new + 1``."""
    return ["\n\n", f"\n{shown + max_new + 1}."]


def instruction_chat_prompt(instructions: Sequence[str], max_new: int) -> list[dict]:
    """The chat form: the list so far and a request for the next ``max_new`` items."""
    shown = len(instructions)
    lines = [f"{i}. {one_line(inst)}" for i, inst in enumerate(instructions, 1)]
    return [
        {
            "role": "user",
            "content": INSTRUCTION_HEADER
            + "\n".join(lines)
            + (
                f"\n\nContinue the list with tasks {shown + 1} to {shown + max_new}, one per line, "
                "numbered the same way. Answer with the new tasks only."
            ),
        }
    ]


# --------------------------------------------------------------------------- classification

_CLASSIFICATION_SHOTS = [
    ("Decide whether the movie review is positive or negative.", True),
    ("Write a limerick about a forgetful cat.", False),
    ("Tell me if the number is prime.", True),
    ("Explain why the sky looks blue during the day.", False),
    ("Label each email as urgent or not urgent.", True),
    ("Suggest a weekend plan for a family with small children.", False),
    ("Is the following sentence grammatically correct?", True),
    ("Translate the paragraph into Italian.", False),
    ("Given a word, say whether it is a noun, a verb, or an adjective.", True),
    ("Summarize the article in two sentences.", False),
    ("Assign the news story to one of these sections: world, sports, technology.", True),
    ("What are some ways to save money on groceries?", False),
]

CLASSIFICATION_HEADER = (
    "Some tasks ask for a label picked from a small, fixed set of options, such as yes or no, true or false, "
    "a sentiment, or a category. Those are classification tasks. For each task below, answer Yes if it is a "
    "classification task and No if it is not.\n\n"
)


def classification_prompt(instruction: str) -> str:
    shots = "".join(f"Task: {t}\nClassification task: {'Yes' if y else 'No'}\n\n" for t, y in _CLASSIFICATION_SHOTS)
    return CLASSIFICATION_HEADER + shots + f"Task: {one_line(instruction)}\nClassification task:"


CLASSIFICATION_STOP = ["\n"]

# --------------------------------------------------------------------------- instances

INPUT_FIRST_HEADER = (
    "Each task below comes with examples. An example gives an input for the task and then the correct output "
    'for that input. When the task needs no input, the input is "none".\n\n'
)

_INPUT_FIRST_SHOTS = """Task: Convert the temperature from Celsius to Fahrenheit.
Example 1
Input: 25 degrees Celsius
Output: 77 degrees Fahrenheit
Example 2
Input: -10 degrees Celsius
Output: 14 degrees Fahrenheit

Task: Suggest a name for a new bakery.
Example 1
Input: none
Output: The Rolling Pin

Task: Find the main verb in the sentence.
Example 1
Input: The children painted the fence on Sunday.
Output: painted
Example 2
Input: Our neighbors moved to Lisbon last spring.
Output: moved

Task: Give advice to someone who cannot fall asleep at night.
Example 1
Input: none
Output: Keep a regular bedtime, avoid screens and caffeine in the evening, and keep the bedroom cool and dark. If you are still awake after twenty minutes, get up and read something calm until you feel sleepy.

Task: Write a SQL query that answers the question about the table.
Example 1
Input: Table employees(name, department, salary). Question: Who earns more than 50000?
Output: SELECT name FROM employees WHERE salary > 50000;

"""

OUTPUT_FIRST_HEADER = (
    "Each classification task below lists a possible class label and then an input that belongs to that "
    "class, once for each class label, so that every class is covered.\n\n"
)

_OUTPUT_FIRST_SHOTS = """Task: Decide whether the movie review is positive or negative.
Class label: positive
Input: A warm, funny film with a cast that clearly enjoyed making it.
Class label: negative
Input: Two hours of my life I will never get back.

Task: Is the number even or odd?
Class label: even
Input: 148
Class label: odd
Input: 73

Task: On which continent is the country?
Class label: Asia
Input: Vietnam
Class label: South America
Input: Chile
Class label: Africa
Input: Ghana

Task: Does the sentence use the word "bank" for the side of a river or for a place that keeps money?
Class label: side of a river
Input: We had a picnic on the bank and watched the boats go by.
Class label: place that keeps money
Input: She went to the bank to open a savings account.

Task: Is the claim supported by the passage? Answer yes or no.
Class label: yes
Input: Passage: The museum opens at 9 am and closes at 5 pm. Claim: The museum is open at noon.
Class label: no
Input: Passage: The museum opens at 9 am and closes at 5 pm. Claim: The museum is open at 8 pm.

"""

INSTANCE_STOP = ["\nTask:", "\n\nTask"]
INPUT_FIRST_PREFIX = "Example 1\nInput:"
OUTPUT_FIRST_PREFIX = "Class label:"


def instance_prompt(instruction: str, classification: bool) -> str:
    """Output-first (class label, then input) for classification tasks, input-first otherwise. The
    prompt ends with the start of the first example, :data:`OUTPUT_FIRST_PREFIX` or
    :data:`INPUT_FIRST_PREFIX`."""
    if classification:
        return OUTPUT_FIRST_HEADER + _OUTPUT_FIRST_SHOTS + f"Task: {one_line(instruction)}\n{OUTPUT_FIRST_PREFIX}"
    return INPUT_FIRST_HEADER + _INPUT_FIRST_SHOTS + f"Task: {one_line(instruction)}\n{INPUT_FIRST_PREFIX}"


# --------------------------------------------------------------------------- single step

SINGLE_STEP_HEADER = (
    'Below are tasks for a helpful assistant. Each task has an instruction, an input ("none" when the '
    "instruction says everything), and the correct output. Every task is different from the others.\n\n"
)


def single_step_prompt(tasks: Sequence[Task]) -> str:
    """Complete tasks (their first instance) numbered from 1; ends with the next task's header."""
    parts = []
    for i, task in enumerate(tasks, 1):
        inst = task.instances[0]
        parts.append(
            f"### Task {i}\nInstruction: {one_line(task.instruction)}\n"
            f"Input: {inst.input.strip() or 'none'}\nOutput: {inst.output.strip()}\n\n"
        )
    return SINGLE_STEP_HEADER + "".join(parts) + f"### Task {len(tasks) + 1}\nInstruction:"


def single_step_stop(shown: int, max_new: int) -> list[str]:
    return [f"### Task {shown + max_new + 1}"]


# --------------------------------------------------------------------------- chat


CHAT_TAIL = "\n\nContinue the text above in the same format. Answer with the continuation only."
CLASSIFICATION_CHAT_TAIL = " Answer Yes or No."


def as_chat(raw_prompt: str, prefix: str = "", tail: str = CHAT_TAIL) -> list[dict]:
    """A raw prompt as one user turn for chat models: ``prefix`` (the start of the answer that a raw
    prompt writes for the model) is taken off its end and a request to continue is added."""
    if prefix and raw_prompt.endswith(prefix):
        raw_prompt = raw_prompt[: -len(prefix)].rstrip()
    return [{"role": "user", "content": raw_prompt + tail}]
