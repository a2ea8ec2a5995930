"""TruthfulQA generation: a greedy answer to each question, scored offline by its similarity to the
reference answers, as the original TruthfulQA code's BLEU and ROUGE metrics do (definitions in
:mod:`instructrl.eval.metrics`).

The question is asked as the multiple-choice task asks it (:func:`.truthful_qa.question_context`:
behind the QA primer by default), as raw text to continue; the greedy answer stops at a blank line,
as the original code and lm-evaluation-harness stop it, or where the model starts the next
``Q:`` line, and is stripped. The references are the data's true answers, with "I have no
comment." added where they lack it (as the original does for the generation task), and its false
answers; each reference gets a closing period where it has none (the original's
``split_multi_answer``). Per prompt mode, six rows: for BLEU and for ROUGE-L, ``max`` (the highest
similarity to a true answer, 0-100), ``diff`` (that minus the highest similarity to a false answer)
and ``acc`` (the share of questions whose ``diff`` is above 0). An empty answer is scored as it is
(similarity 0 to everything: ``diff`` 0, ``acc`` 0); the original code skips it.

Data: TruthfulQA's ``TruthfulQA.csv`` (columns ``Question``, ``Correct Answers`` and ``Incorrect
Answers``, the answers separated by ``;``), or a JSON list / JSONL in the Hugging Face copy's layout
(``question``, ``correct_answers`` and ``incorrect_answers`` as lists).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

from instructrl.eval.config import TruthfulQAGenConfig
from instructrl.eval.metrics import mean_interval, rouge_l, sentence_bleu, similarity_scores
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
from instructrl.eval.tasks.truthful_qa import question_context
from instructrl.records import RecordError, atomic_write_text

NO_COMMENT = "I have no comment."
STOP = ("\n\n", "\nQ:")

#: (name, scorer description, similarity)
SIMILARITIES = (
    ("bleu", "sentence BLEU (13a tokens, exp smoothing)", sentence_bleu),
    ("rougeL", "ROUGE-L F-measure (rouge-score)", rouge_l),
)
#: (statistic, what it is)
STATISTICS = (
    ("max", "highest similarity to a true answer, 0-100"),
    ("diff", "highest similarity to a true answer minus to a false one, points"),
    ("acc", "share of answers closer to a true answer than to any false one"),
)

CSV_COLUMNS = ("Question", "Correct Answers", "Incorrect Answers")


@dataclasses.dataclass
class GenQuestion:
    question: str
    true: list[str]  # "I have no comment." included
    false: list[str]


def closed(answers: list[str]) -> list[str]:
    """The answers stripped, each closed with a period, empty ones dropped."""
    return [a if a.endswith(".") else a + "." for a in (x.strip() for x in answers) if a]


def split_answers(text: str) -> list[str]:
    """The answers of a ``;``-separated cell (:func:`closed`)."""
    return closed(text.split(";"))


def make_question(question: str, true: list[str], false: list[str], where: str) -> GenQuestion:
    if not question.strip():
        raise RecordError(where, "question", "empty")
    if not true:
        raise RecordError(where, "correct answers", "no true answer")
    if not false:
        raise RecordError(where, "incorrect answers", "no false answer")
    if NO_COMMENT not in true:
        true = [*true, NO_COMMENT]
    return GenQuestion(question.strip(), true, false)


def read_csv(path: Path) -> list[GenQuestion]:
    """Questions of TruthfulQA.csv (RecordError naming file:line and column)."""
    out = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise RecordError(
                    f"{path}:1", None, f"missing column(s) {', '.join(missing)}; the header has {reader.fieldnames}"
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                cells = [row.get(c) for c in CSV_COLUMNS]
                if any(c is None for c in cells):
                    raise RecordError(where, None, f"fewer cells than the header's {len(reader.fieldnames or [])}")
                question, true, false = cells
                out.append(make_question(question, split_answers(true), split_answers(false), where))
    except UnicodeDecodeError:
        raise RecordError(str(path), None, "not valid UTF-8; save the file as UTF-8") from None
    except csv.Error as e:
        raise RecordError(str(path), None, f"not a valid CSV file ({e})") from None
    return out


def parse_item(item: dict, where: str) -> GenQuestion:
    """A question of the Hugging Face layout (question, correct_answers, incorrect_answers)."""
    question = field(item, "question", str, where)
    lists = []
    for name in ("correct_answers", "incorrect_answers"):
        answers = field(item, name, list, where)
        if not all(isinstance(a, str) for a in answers):
            raise RecordError(where, name, "expected a list of strings")
        lists.append(closed(answers))
    return make_question(question, lists[0], lists[1], where)


class TruthfulQAGenTask:
    """BLEU and ROUGE-L max, diff and acc of greedy answers, per prompt mode (bootstrap intervals over questions)."""

    name = "truthfulqa_gen"

    def __init__(self, cfg: TruthfulQAGenConfig, *, seed: int = 0, bootstrap: int = 2000, confidence: float = 0.95):
        self.cfg, self.seed, self.bootstrap, self.confidence = cfg, seed, bootstrap, confidence
        self.questions: list[GenQuestion] = []
        self.total = 0
        self.digest = ""

    def load(self) -> None:
        path = data_file(self.cfg.data, "truthfulqa_gen.data")
        if path.suffix.lower() == ".csv":
            questions = read_csv(path)
        else:
            questions = [parse_item(item, where) for where, item in json_items(path)]
        if not questions:
            raise RecordError(str(path), None, "no questions in the file")
        rouge_l("a", "a")  # rouge-score is importable: fail here, before any model loads
        self.total = len(questions)
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()
        questions = seeded_subset(questions, self.cfg.n, self.seed, self.name)
        self.questions = questions

    def settings(self) -> dict:
        return task_settings(self)

    def answers(self, lm: LanguageModel, mode: str, scratch: Path) -> list[str]:
        """The greedy answers in ``mode``, kept in ``scratch`` so that a killed evaluation reuses them."""
        path = scratch / f"answers-{mode}.json"
        if path.exists():
            try:
                kept = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(kept, list) and len(kept) == len(self.questions):
                    return kept
            except (OSError, json.JSONDecodeError):
                pass  # a damaged file: generate again
        texts = lm.generate(
            [question_context(q.question, mode) for q in self.questions],
            raw=True,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=0.0,
            stop=list(STOP),
            max_prompt_tokens=self.cfg.max_prompt_tokens,
        )
        answers = [t.strip() for t in texts]
        scratch.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(answers, ensure_ascii=False))
        return answers

    def evaluate(self, lm: LanguageModel, scratch: Path) -> list[Row]:
        rows = []
        sample = sample_note(len(self.questions), self.total, "a seeded random sample")
        for mode in self.cfg.prompt_modes:
            answers = self.answers(lm, mode, scratch)
            for sim_name, scorer, similarity in SIMILARITIES:
                scores = [similarity_scores(a, q.true, q.false, similarity) for a, q in zip(answers, self.questions)]
                for stat, what in STATISTICS:
                    value, low, high = mean_interval(
                        [s[stat] for s in scores], resamples=self.bootstrap, confidence=self.confidence, seed=self.seed
                    )
                    rows.append(
                        Row(
                            self.name,
                            f"{sim_name}_{stat}",
                            value,
                            low,
                            high,
                            len(self.questions),
                            self.total,
                            sample,
                            f"{scorer}: {what}",
                            mode,
                        )
                    )
        return rows

    def reference(self) -> list[Row]:
        return []
