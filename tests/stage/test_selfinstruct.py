"""The Self-Instruct stage end to end: scripted replies from a local OpenAI-compatible server (exact
expectations), the tiny model, chat and single-step variants, and resume after a kill."""

from __future__ import annotations

import json
import re
import zlib

import pytest

from instructrl.cli import main
from instructrl.config import load_config
from instructrl.data.selfinstruct import run as si_run
from instructrl.data.selfinstruct.config import SelfInstructConfig
from instructrl.records import Demonstration, read_jsonl
from tests.conftest import ROOT
from tests.openai_stub import OpenAIStub, by_prompt

INSTRUCTIONS = (
    " Explain the history of volcanoes to a curious teenager.\n"
    "10. Is this claim about volcanoes true or false?\n"
    "11. Describe the picture of a volcano in detail.\n"
    "12. Explain the history of volcanoes to a curious teenager!\n"
    "13. ?? What is this task about\n"
    "14. Hi there\n"
    "15. Write a short motto for a rowing club.\n"
    "16. Give a recipe that uses three kinds of"
)
INSTANCES = {
    "Explain the history of volcanoes to a curious teenager.": " none\nOutput: Volcanoes have shaped Earth for billions of years.\nExample 2\nInput: none\n"
    "Output: Volcanoes have shaped Earth for billions of years.\n",
    "Is this claim about volcanoes true or false?": " true\nInput: Volcanoes can form under the sea.\nClass label: false\nInput: Volcanoes are only found in Europe.\n"
    "Class label: true\nInput: Volcanoes are only found in Europe.",
    "Write a short motto for a rowing club.": " none\nOutput: \n",
}


def last_task(prompt: str) -> str:
    return re.findall(r"Task: (.*)\n", prompt)[-1]


def scripted_reply(prompt: str):
    if prompt.startswith("Here is a numbered list"):
        return INSTRUCTIONS, "length"
    if prompt.endswith("Classification task:"):
        return " Yes" if "true or false" in last_task(prompt) else " No"
    return INSTANCES[last_task(prompt)]


def config(tmp_path, base_url, *overrides):
    return load_config(
        SelfInstructConfig,
        ROOT / "configs/tiny/selfinstruct.yaml",
        [
            f"run.out_dir={tmp_path / 'out'}",
            "backend.kind=openai",
            f"backend.base_url={base_url}",
            "backend.model=stub",
            "backend.api_key_env=NO_SUCH_KEY_VAR",
            *overrides,
        ],
    )


def test_scripted_server_run_keeps_and_drops_exactly(tmp_path):
    with OpenAIStub(by_prompt(scripted_reply)) as server:
        cfg = config(
            tmp_path,
            server.base_url,
            "generate.target=2",
            "generate.prompts_per_step=1",
            "generate.max_new_instructions=8",
        )
        out = si_run.run(cfg)
        assert all("prompt" in r for r in server.requests)  # raw prompts go to /v1/completions
    tasks = [json.loads(line) for line in open(out / "tasks.jsonl")]
    assert [(t["id"], t["instruction"], t["instances"], t["is_classification"]) for t in tasks] == [
        (
            "si_00000_000",
            "Explain the history of volcanoes to a curious teenager.",
            [{"input": "", "output": "Volcanoes have shaped Earth for billions of years."}],
            False,
        ),
        (
            "si_00000_001",
            "Is this claim about volcanoes true or false?",
            [{"input": "Volcanoes can form under the sea.", "output": "true"}],
            True,
        ),
    ]
    assert tasks[0]["meta"]["source"] == "selfinstruct" and len(tasks[0]["meta"]["shown"]) == 8
    assert 0 < tasks[0]["meta"]["rouge_l_seed"] < 0.7
    report = json.loads((out / "report.json").read_text())
    assert report["generated_instructions"] == 8 and report["kept_tasks"] == 2
    assert report["dropped"] == {
        "banned_word": 1,
        "no_valid_instances": 1,
        "not_novel": 1,
        "starts_with_punctuation": 1,
        "too_short": 1,
        "truncated": 1,
    }
    assert report["instance_drops"] == {"conflicting_outputs": 2, "duplicate_instance": 1, "empty_output": 1}
    assert report["classification_share"] == 0.5 and report["instances"] == 2
    assert sum(report["rouge_l_seed"]["counts"]) == 2
    assert (out / "rouge_overlap.png").stat().st_size > 1000 and (out / "config.yaml").exists()
    demos = read_jsonl(out / "demonstrations.jsonl", Demonstration)
    assert [(d.prompt, d.response, d.category) for d in demos] == [
        (
            "Explain the history of volcanoes to a curious teenager.",
            "Volcanoes have shaped Earth for billions of years.",
            None,
        ),
        ("Is this claim about volcanoes true or false?\n\nVolcanoes can form under the sea.", "true", "classification"),
    ]
    step = json.loads((out / "log.jsonl").read_text())
    dropped = {c["instruction"]: c for c in step["candidates"] if "drop" in c}
    assert dropped["Explain the history of volcanoes to a curious teenager!"]["rouge_l"] == 1.0


def chat_reply(prompt: str):
    if prompt.startswith("Here is a numbered list"):
        return "Sure! Here are new tasks:\n\n9. Name two rivers that flow through Germany.\n10. Is the river longer than 1000 km?"
    if "Is the last task a classification task?" in prompt:
        return "Yes." if "1000 km" in prompt.split("Task: ")[-1] else "No."
    if "Name two rivers" in prompt.split("Task: ")[-1]:
        return "Example 1\nInput: none\nOutput: The Rhine and the Elbe."
    return "Class label: yes\nInput: The Nile\nClass label: no\nInput: The Thames"


def test_chat_format_uses_chat_endpoint(tmp_path):
    with OpenAIStub(by_prompt(chat_reply)) as server:
        out = si_run.run(
            config(
                tmp_path,
                server.base_url,
                "backend.prompt_format=chat",
                "generate.target=2",
                "generate.prompts_per_step=1",
            )
        )
        assert all("messages" in r and "prompt" not in r for r in server.requests)
    tasks = [json.loads(line) for line in open(out / "tasks.jsonl")]
    assert [(t["instruction"], t["instances"], t["is_classification"]) for t in tasks] == [
        ("Name two rivers that flow through Germany.", [{"input": "", "output": "The Rhine and the Elbe."}], False),
        (
            "Is the river longer than 1000 km?",
            [{"input": "The Nile", "output": "yes"}, {"input": "The Thames", "output": "no"}],
            True,
        ),
    ]


def single_step_reply(prompt: str):
    if prompt.endswith("Classification task:"):
        return " Yes" if "even or odd" in last_task(prompt) else " No"
    assert prompt.endswith("Instruction:")
    return (
        " Name a fruit that is yellow when ripe.\nInput: none\nOutput: Banana\n\n### Task 5\n"
        "Instruction: Say whether the number is even or odd.\nInput: 7\nOutput: odd\n\n### Task 6\nInstruction: Oops"
    )


def test_single_step_mode(tmp_path):
    with OpenAIStub(by_prompt(single_step_reply)) as server:
        out = si_run.run(
            config(
                tmp_path,
                server.base_url,
                "generate.mode=single_step",
                "generate.target=2",
                "generate.prompts_per_step=1",
                "generate.single_step_shots=3",
            )
        )
    tasks = [json.loads(line) for line in open(out / "tasks.jsonl")]
    assert [(t["instruction"], t["instances"], t["is_classification"]) for t in tasks] == [
        ("Name a fruit that is yellow when ripe.", [{"input": "", "output": "Banana"}], False),
        ("Say whether the number is even or odd.", [{"input": "7", "output": "odd"}], True),
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"] == {"too_short": 1}  # "Oops" (the stub's reply ended with a stop, so not truncated)


WORDS = [
    "rivers",
    "volcanoes",
    "chess",
    "bread",
    "taxes",
    "solar panels",
    "jazz",
    "knitting",
    "birds",
    "parks",
    "trains",
    "coffee",
    "glaciers",
    "poetry",
    "robots",
    "gardens",
    "tea",
    "bridges",
    "owls",
    "cheese",
]
VERBS = ["Explain", "Summarize", "Compare", "Praise", "Criticize", "Describe"]


def hashed_reply(prompt: str):
    """Deterministic replies that depend on the prompt only (so runs can be compared)."""
    h = zlib.crc32(prompt.encode())
    if prompt.startswith("Here is a numbered list"):
        items = [
            f"{VERBS[(h >> k) % 6]} {WORDS[(h >> (k + 3)) % 20]} and {WORDS[(h >> (k + 7)) % 20]} for a "
            f"{['child', 'chef', 'pilot'][(h >> k) % 3]} in {k + 2} sentences."
            for k in range(4)
        ]
        return " " + "\n".join(f"{9 + k}. {t}" if k else t for k, t in enumerate(items)), "stop"
    if prompt.endswith("Classification task:"):
        return " No"
    return f" none\nOutput: Answer {h % 97}."


class KillInStep:
    """Wraps a generator; raises at the first generate() call of step ``step`` (a kill in the middle of a
    run: the steps before it are logged, that one is not)."""

    def __init__(self, inner, step, current):
        self.inner, self.step, self.current = inner, step, current

    def generate(self, prompts, **kw):
        if self.current["step"] == self.step:
            raise KeyboardInterrupt("killed")
        return self.inner.generate(prompts, **kw)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch):
    args = ["generate.target=9", "generate.prompts_per_step=2", "generate.max_steps=12"]
    with OpenAIStub(by_prompt(hashed_reply)) as server:
        full = si_run.run(config(tmp_path / "a", server.base_url, *args))
        expected_log = (full / "log.jsonl").read_text().splitlines()
        assert len(expected_log) >= 3
        make, step_init, current = si_run.make_generator, si_run.Step.__init__, {"step": None}

        def init(self, cfg, state, generator):
            current["step"] = state.step
            step_init(self, cfg, state, generator)

        monkeypatch.setattr(si_run.Step, "__init__", init)
        monkeypatch.setattr(si_run, "make_generator", lambda cfg: KillInStep(make(cfg), 1, current))
        cfg = config(tmp_path / "b", server.base_url, *args)
        with pytest.raises(KeyboardInterrupt):
            si_run.run(cfg)
        log_path = tmp_path / "b" / "out" / "log.jsonl"
        assert log_path.read_text().splitlines() == expected_log[:1]
        with open(log_path, "a") as fh:  # a kill in the middle of writing a line
            fh.write(expected_log[1][:40])
        monkeypatch.setattr(si_run, "make_generator", make)
        resumed = si_run.run(cfg)
    assert (resumed / "log.jsonl").read_text().splitlines() == expected_log
    assert (resumed / "tasks.jsonl").read_text() == (full / "tasks.jsonl").read_text()
    assert json.loads((resumed / "report.json").read_text()) == json.loads((full / "report.json").read_text())
    ids = [json.loads(line)["id"] for line in open(resumed / "tasks.jsonl")]
    assert len(ids) == len(set(ids)) >= 9


def test_resume_refuses_a_changed_config_but_extends_the_target(tmp_path):
    from instructrl.config import ConfigError

    with OpenAIStub(by_prompt(hashed_reply)) as server:
        first = si_run.run(config(tmp_path, server.base_url, "generate.target=3", "generate.prompts_per_step=1"))
        n_steps = len((first / "log.jsonl").read_text().splitlines())
        with pytest.raises(ConfigError, match=r"filters.max_rouge_l: 0.7 -> 0.5"):
            si_run.run(
                config(
                    tmp_path,
                    server.base_url,
                    "generate.target=3",
                    "generate.prompts_per_step=1",
                    "filters.max_rouge_l=0.5",
                )
            )
        more = si_run.run(
            config(
                tmp_path, server.base_url, "generate.target=6", "generate.prompts_per_step=1", "generate.max_steps=30"
            )
        )
        assert len((more / "log.jsonl").read_text().splitlines()) > n_steps
        assert len((more / "tasks.jsonl").read_text().splitlines()) >= 6
        fresh = si_run.run(
            config(
                tmp_path,
                server.base_url,
                "generate.target=1",
                "generate.prompts_per_step=1",
                "filters.max_rouge_l=0.5",
                "run.resume=false",
            )
        )
        assert len((fresh / "log.jsonl").read_text().splitlines()) == 1


def test_damaged_log_is_an_error_with_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 0, "candidates": []}\n{not json}\n')
    cfg = load_config(SelfInstructConfig, ROOT / "configs/tiny/selfinstruct.yaml", [f"run.out_dir={out}"])
    with pytest.raises(Exception, match=r"log.jsonl:2"):
        si_run.run(cfg)


def test_tiny_model_runs_through_the_cli(tmp_path, tiny_model_dir):
    out = tmp_path / "tiny"
    rc = main(
        [
            "selfinstruct",
            "--config",
            str(ROOT / "configs/tiny/selfinstruct.yaml"),
            f"backend.name_or_path={tiny_model_dir}",
            f"run.out_dir={out}",
            "generate.target=50",
        ]
    )
    assert rc == 0
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in records] == [0, 1]  # max_steps=2 in the tiny config
    report = json.loads((out / "report.json").read_text())
    n = sum(len(r["candidates"]) + sum(r["extra_drops"].values()) for r in records)
    assert report["generated_instructions"] == n
    assert report["kept_tasks"] + sum(report["dropped"].values()) == n
    assert report["kept_tasks"] == len((out / "tasks.jsonl").read_text().splitlines())
    assert (out / "metrics.jsonl").exists() and (out / "report.md").exists()
