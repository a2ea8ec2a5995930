"""HellaSwag: pick the ending of a described scene, scored three ways (acc, acc_norm, mean per token).

The context and the endings are prepared as lm-evaluation-harness prepares them
(``lm_eval/tasks/hellaswag/utils.py``): the context is ``activity_label + ": " + ctx_a + " " +
ctx_b.capitalize()``, and context and endings are cleaned (stripped; the WikiHow artefact
``" [title]"`` becomes ``". "``, other ``[...]`` markers are dropped, double spaces become single);
each ending is scored as the continuation ``" " + ending``. With k shots, k solved items (drawn once
with the run's seed and never evaluated) come first, each as ``context + " " + gold ending``,
separated by blank lines, as lm-evaluation-harness lays out few-shot examples.

The shared data holds a 1,000-item sample of the validation set (913 ActivityNet, 87 WikiHow items),
so the figures are not comparable with published HellaSwag scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from pathlib import Path

from instructrl.eval.config import HellaSwagConfig
from instructrl.eval.metrics import mean_interval, multiple_choice
from instructrl.eval.tasks import LanguageModel, Row, data_file, field, json_items, sample_note
from instructrl.records import RecordError
from instructrl.utils.seed import derive

_BRACKETS = re.compile(r"\[.*?\]")

#: (metric, scorer) of each row, in the order of the table
METRICS = (
    ("acc", "summed log-likelihood"),
    ("acc_norm", "log-likelihood per character (lm-evaluation-harness)"),
    ("acc_mean_token", "mean log-probability per token (InstructGPT)"),
)


def clean(text: str) -> str:
    """HellaSwag text as lm-evaluation-harness cleans it (see the module documentation)."""
    text = text.strip().replace(" [title]", ". ")
    return _BRACKETS.sub("", text).replace("  ", " ")


@dataclasses.dataclass
class Item:
    context: str
    endings: list[str]
    label: int


def parse_item(item: dict, where: str) -> Item:
    activity = field(item, "activity_label", str, where)
    ctx_a, ctx_b = field(item, "ctx_a", str, where), field(item, "ctx_b", str, where)
    endings = field(item, "endings", list, where)
    if len(endings) < 2 or not all(isinstance(e, str) and e.strip() for e in endings):
        raise RecordError(where, "endings", "expected a list of at least two non-empty strings")
    label = item.get("label")
    if isinstance(label, str) and label.isdigit():  # the Hugging Face copy stores labels as text
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(endings):
        raise RecordError(
            where, "label", f"expected the index of the gold ending (0-{len(endings) - 1}), got {label!r}"
        )
    return Item(clean(f"{activity}: {ctx_a} {ctx_b.capitalize()}"), [clean(e) for e in endings], label)


def few_shot_prefix(shots: list[Item]) -> str:
    """Solved items before the question, each ending in a blank line ("" without shots)."""
    return "".join(f"{s.context} {s.endings[s.label]}\n\n" for s in shots)


class HellaSwagTask:
    """acc, acc_norm and acc_mean_token per number of shots (bootstrap intervals over items)."""

    name = "hellaswag"

    def __init__(self, cfg: HellaSwagConfig, *, seed: int = 0, bootstrap: int = 2000, confidence: float = 0.95):
        self.cfg, self.seed, self.bootstrap, self.confidence = cfg, seed, bootstrap, confidence
        self.items: list[Item] = []
        self.shots: list[Item] = []
        self.total = 0
        self.digest = ""

    def load(self) -> None:
        path = data_file(self.cfg.data, "hellaswag.data")
        items = [parse_item(item, where) for where, item in json_items(path)]
        self.total = len(items)
        k = max(self.cfg.shots)
        if self.total <= k:
            raise RecordError(str(path), None, f"{self.total} items leave none to evaluate beside {k} shots")
        self.digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        order = list(range(self.total))
        random.Random(derive(self.seed, self.name)).shuffle(order)
        self.shots = [items[i] for i in order[:k]]
        rest = sorted(order[k:])
        if self.cfg.n is not None and self.cfg.n < len(rest):
            rest = sorted(random.Random(derive(self.seed, self.name, "sample")).sample(rest, self.cfg.n))
        self.items = [items[i] for i in rest]

    def settings(self) -> dict:
        return {
            "data_sha256": self.digest,
            "n": self.cfg.n,
            "shots": list(self.cfg.shots),
            "seed": self.seed,
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
        }

    def evaluate(self, lm: LanguageModel, scratch: Path) -> list[Row]:
        rows = []
        k = max(self.cfg.shots)
        how = "a seeded random sample" + (f", without the {k} few-shot items" if k else "")
        sample = sample_note(len(self.items), self.total, how)
        for shots in self.cfg.shots:
            prefix = few_shot_prefix(self.shots[:shots])
            lls = lm.loglikelihoods([(prefix + it.context, [" " + e for e in it.endings]) for it in self.items])
            per_item = [
                multiple_choice([x.logprob for x in ll], it.label, it.endings, [x.tokens for x in ll])
                for it, ll in zip(self.items, lls)
            ]
            mode = f"{shots}-shot"
            for metric, scorer in METRICS:
                value, low, high = mean_interval(
                    [s[metric] for s in per_item], resamples=self.bootstrap, confidence=self.confidence, seed=self.seed
                )
                rows.append(Row(self.name, metric, value, low, high, len(self.items), self.total, sample, scorer, mode))
        return rows

    def reference(self) -> list[Row]:
        return []
