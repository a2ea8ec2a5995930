"""GSM8K: grade-school math word problems, solved in a chain of thought after k solved problems.

The k solved problems (8 by default, as chain-of-thought evaluations commonly run) are drawn once
with the run's seed from the training split; their reference solutions are the chains of thought,
with the calculator annotations removed and the final ``#### N`` written as "The answer is N."
(:func:`instructrl.eval.metrics.cot_solution`). Raw prompts lay them out as ``Question: ...`` /
``Answer: ...`` blocks separated by blank lines and end with the new question and ``Answer:``;
greedy decoding stops at the next ``Question:`` or blank line. Chat prompts give the solved
problems as earlier turns.

Two rows, as lm-evaluation-harness reports a strict and a flexible match: ``strict`` reads the
number after "The answer is", ``flexible`` the last number of the chain of thought; either is
compared with the number after ``####`` in the reference solution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

from instructrl.eval.config import GSM8KConfig
from instructrl.eval.metrics import answer_after_phrase, cot_solution, last_number, mean_interval, reference_answer
from instructrl.eval.tasks import (
    LanguageModel,
    Row,
    data_file,
    field,
    json_items,
    sample_note,
    seeded_subset,
    task_settings,
)
from instructrl.records import PromptText, RecordError
from instructrl.utils.seed import derive

STOP = ("Question:", "\n\n")

#: (metric, how the answer is read from a chain of thought)
EXTRACTORS = (
    ("exact_match_strict", "number after 'The answer is'", answer_after_phrase),
    ("exact_match_flexible", "last number", last_number),
)


@dataclasses.dataclass
class Problem:
    question: str
    solution: str
    answer: str  # the normalized number after ####


def parse_problem(item: dict, where: str) -> Problem:
    question, solution = field(item, "question", str, where), field(item, "answer", str, where)
    try:
        answer = reference_answer(solution)
    except ValueError as e:
        raise RecordError(where, "answer", str(e)) from None
    return Problem(question.strip(), solution, answer)


def build_prompt(question: str, shots: list[Problem], chat: bool) -> PromptText:
    """The few-shot chain-of-thought prompt of ``question`` (raw text, or chat turns)."""
    if chat:
        turns: list[dict] = []
        for s in shots:
            turns += [
                {"role": "user", "content": s.question},
                {"role": "assistant", "content": cot_solution(s.solution)},
            ]
        return turns + [{"role": "user", "content": question}]
    blocks = [f"Question: {s.question}\nAnswer: {cot_solution(s.solution)}" for s in shots]
    return "\n\n".join(blocks + [f"Question: {question}\nAnswer:"])


class GSM8KTask:
    """Exact-match accuracy of the extracted answer (bootstrap intervals over problems)."""

    name = "gsm8k"

    def __init__(self, cfg: GSM8KConfig, *, seed: int = 0, bootstrap: int = 2000, confidence: float = 0.95):
        self.cfg, self.seed, self.bootstrap, self.confidence = cfg, seed, bootstrap, confidence
        self.problems: list[Problem] = []
        self.shots: list[Problem] = []
        self.total = 0
        self.digest = ""

    def load(self) -> None:
        path = data_file(self.cfg.data, "gsm8k.data")
        problems = [parse_problem(item, where) for where, item in json_items(path)]
        if not problems:
            raise RecordError(str(path), None, "no problems in the file")
        digest = hashlib.sha256(Path(path).read_bytes())
        if self.cfg.shots:
            shots_path = data_file(self.cfg.shots_data, "gsm8k.shots_data")
            pool = [parse_problem(item, where) for where, item in json_items(shots_path)]
            if len(pool) < self.cfg.shots:
                raise RecordError(
                    str(shots_path), None, f"{len(pool)} problems, fewer than gsm8k.shots={self.cfg.shots}"
                )
            self.shots = random.Random(derive(self.seed, self.name, "shots")).sample(pool, self.cfg.shots)
            digest.update(shots_path.read_bytes())
        self.digest = digest.hexdigest()
        self.total = len(problems)
        problems = seeded_subset(problems, self.cfg.n, self.seed, self.name)
        self.problems = problems

    def settings(self) -> dict:
        return task_settings(self, ("data", "shots_data"))

    def evaluate(self, lm: LanguageModel, scratch: Path) -> list[Row]:
        cfg = self.cfg
        texts = lm.generate(
            [build_prompt(p.question, self.shots, cfg.chat) for p in self.problems],
            raw=not cfg.chat,
            max_new_tokens=cfg.max_new_tokens,
            temperature=0.0,
            stop=list(STOP) if not cfg.chat else ["Question:"],
            max_prompt_tokens=cfg.max_prompt_tokens,
        )
        mode = f"{cfg.shots}-shot chain of thought" + (", chat" if cfg.chat else "")
        sample = sample_note(len(self.problems), self.total, "a seeded random sample")
        rows = []
        for metric, scorer, extract in EXTRACTORS:
            hits = [1.0 if extract(t) == p.answer else 0.0 for t, p in zip(texts, self.problems)]
            value, low, high = mean_interval(hits, resamples=self.bootstrap, confidence=self.confidence, seed=self.seed)
            rows.append(Row(self.name, metric, value, low, high, len(hits), self.total, sample, scorer, mode))
        return rows

    def reference(self) -> list[Row]:
        return []
