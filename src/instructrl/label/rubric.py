"""The labeling rubric: what a simulated labeler checks in a (prompt, response), without noise.

:meth:`Rubric.assess` turns a prompt and a response into an :class:`Assessment` of plain numbers
(measured with :mod:`instructrl.text`), and :meth:`Assessment.flags` gives the paper's metadata
questions, True marking a problem. Labelers (:mod:`.labeler`) weigh the measurements their own way
and add noise; the measurements are shared, deterministic and cached. The reason for each
threshold sits beside its check in :meth:`Rubric._assess_one`.

Use::

    rubric = Rubric()
    a = rubric.assess(prompt, response)           # prompt: a records.Prompt, text or messages
    a.flags(), a.constraints_satisfied, a.toxicity, a.topic
    rubric.assess_many([(prompt, response, finish_reason), ...])   # batched toxicity and langid
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import OrderedDict
from collections.abc import Sequence

from instructrl.models.generation import FINISH_REASONS, is_cut
from instructrl.records import Prompt, PromptText
from instructrl.text.category import tag
from instructrl.text.constraints import check_constraint, parse_json_object, validate_constraint, words
from instructrl.text.degeneration import has_char_run, looks_truncated, repeated_lines, repetition
from instructrl.text.language import detect_languages
from instructrl.text.overlap import content_words, echo_fraction, f1_overlap, letter_words, numbers, shared_stems
from instructrl.text.toxicity import ToxicityScorer

#: Metadata flags per response; True marks a problem.
FLAGS = (
    "fails_instruction",
    "violates_constraint",
    "toxic",
    "truncated",
    "degenerate",
    "off_topic",
    "hallucination",
    "inappropriate_for_customer_assistant",
)

# role leakage: the response goes on to write the user's next turn or a chat-template marker
_ROLE = re.compile(
    r"(?:^|\n)\s*(?:user|human|assistant|ai|system)\s*:|<\|im_start\|>|<\|im_end\|>|<\|user\|>|"
    r"<\|assistant\|>|<\|endoftext\|>|###\s*(?:instruction|input|response)\b|\[/?INST\]",
    re.IGNORECASE,
)


@dataclasses.dataclass
class Assessment:
    """What the rubric measured about one response (no noise, no weights)."""

    n_words: int
    empty: bool
    constraints: list  # [(kind, value, satisfied)]
    toxicity: float
    repetition: float
    degenerate: bool
    truncated: bool
    topic: float
    off_topic: bool
    expected_lang: str | None
    lang: str | None
    lang_mismatch: bool
    reference_f1: float | None
    hallucination: bool
    echo: bool
    role_leak: bool
    # high: the profanity classifier gives 0.6 to "The chicken breast should be cooked thoroughly."
    toxic_threshold: float = 0.8
    inappropriate_threshold: float = 0.7

    @property
    def constraints_satisfied(self) -> float:
        """Fraction of the prompt's constraints satisfied (1.0 when there are none)."""
        if not self.constraints:
            return 1.0
        return sum(ok for _, _, ok in self.constraints) / len(self.constraints)

    @property
    def toxic(self) -> bool:
        return self.toxicity >= self.toxic_threshold

    def flags(self) -> dict[str, bool]:
        """The metadata flags, the paper's questions per response; True marks a problem."""
        # failing the instruction: no usable answer, or fewer than half of the constraints met
        fails = (
            self.empty
            or self.degenerate
            or self.echo
            or self.lang_mismatch
            or (bool(self.constraints) and self.constraints_satisfied < 0.5)
        )
        return {
            "fails_instruction": bool(fails),
            "violates_constraint": bool(self.constraints) and self.constraints_satisfied < 1.0,
            "toxic": self.toxic,
            "truncated": self.truncated,
            "degenerate": self.degenerate,
            "off_topic": self.off_topic,
            "hallucination": self.hallucination,
            "inappropriate_for_customer_assistant": bool(
                self.toxicity >= self.inappropriate_threshold or self.role_leak or self.degenerate
            ),
        }


def as_prompt(prompt: Prompt | PromptText) -> Prompt:
    """A :class:`~instructrl.records.Prompt` from a record, text or chat messages."""
    if isinstance(prompt, Prompt):
        return prompt
    if isinstance(prompt, (str, list)):
        return Prompt(prompt=prompt)
    raise TypeError(f"expected a Prompt record, text or chat messages, got {type(prompt).__name__}")


def _user_text(p: Prompt) -> str:
    """The text of a prompt: every turn of a conversation (earlier answers set its topic too)."""
    if isinstance(p.prompt, str):
        return p.prompt
    return "\n".join(m["content"] for m in p.prompt)


def _prompt_key(p: Prompt) -> str:
    return json.dumps(
        [p.prompt, p.reference, p.constraints, p.lang, p.category, p.type], ensure_ascii=False, sort_keys=True
    )


# prompts whose answer comes from a given text: a new number there is made up (a closed_qa answer may
# compute one); and prompts whose answer legitimately copies the prompt (never judged as echo)
_ANSWER_FROM_TEXT = {"extraction", "summarization"}
_COPYING = {"rewrite", "extraction", "closed_qa", "summarization", "classification"}


def _category(p: Prompt) -> str:
    """The prompt's category, else the keyword rules of :mod:`instructrl.text.category`."""
    if p.category:
        return p.category
    return tag(p.prompt, p.type)


# a prompt that names a language or asks for a translation ("summarize this in French") does not
# tell its answer's language by its own
_NAMES_LANGUAGE = re.compile(
    r"translat|\b(?:languages?|english|french|spanish|german|italian|portuguese|dutch|russian|chinese|mandarin|"
    r"japanese|korean|arabic|hindi|turkish|polish|swedish|norwegian|danish|finnish|greek|latin|hebrew|vietnamese|"
    r"indonesian|français|francais|español|espanol|deutsch|italiano|português)\b",
    re.IGNORECASE,
)


def _structured(text: str) -> bool:
    """JSON, a code block or a table: text langid cannot place in a language."""
    s = text.strip()
    return s.startswith(("{", "[", "```", "|")) or parse_json_object(s) is not None


class Rubric:
    """Deterministic measurements of responses (each threshold's reason sits beside its check).

    Assessments are cached by (prompt, response, finish_reason), so the labelers of a panel that
    judge the same response share the work."""

    def __init__(
        self,
        *,
        toxicity: str = "auto",
        toxic_threshold: float = 0.8,
        inappropriate_threshold: float = 0.7,
        on_topic_threshold: float = 0.1,
        repetition_threshold: float = 0.3,
        cache_size: int = 100_000,
    ):
        for name, v in (
            ("toxic_threshold", toxic_threshold),
            ("inappropriate_threshold", inappropriate_threshold),
            ("on_topic_threshold", on_topic_threshold),
            ("repetition_threshold", repetition_threshold),
        ):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.toxicity = ToxicityScorer(toxicity)
        self.toxic_threshold, self.inappropriate_threshold = toxic_threshold, inappropriate_threshold
        self.on_topic_threshold, self.repetition_threshold = on_topic_threshold, repetition_threshold
        self._cache: OrderedDict[tuple, Assessment] = OrderedDict()
        self._prompt_lang: dict[str, str | None] = {}
        self.cache_size = cache_size

    def settings(self) -> dict:
        """The constructor arguments (saved with a panel so that it reloads with the same rubric)."""
        return {
            "toxicity": self.toxicity.requested,
            "toxic_threshold": self.toxic_threshold,
            "inappropriate_threshold": self.inappropriate_threshold,
            "on_topic_threshold": self.on_topic_threshold,
            "repetition_threshold": self.repetition_threshold,
        }

    # ---- public

    def assess(self, prompt: Prompt | PromptText, response: str, finish_reason: str | None = None) -> Assessment:
        return self.assess_many([(prompt, response, finish_reason)])[0]

    def assess_many(self, items: Sequence[tuple]) -> list[Assessment]:
        """Assess ``(prompt, response)`` or ``(prompt, response, finish_reason)`` items, batching the
        toxicity classifier and language identification over all of them."""
        norm = []
        for i, it in enumerate(items):
            if len(it) not in (2, 3):
                raise ValueError(f"items[{i}]: expected (prompt, response[, finish_reason])")
            p, r = as_prompt(it[0]), it[1]
            fr = it[2] if len(it) == 3 else None
            if not isinstance(r, str):
                raise TypeError(f"items[{i}]: the response must be a string, got {type(r).__name__}")
            if fr is not None and fr not in FINISH_REASONS:
                raise ValueError(f"items[{i}]: finish_reason must be 'stop', 'length' or None, got {fr!r}")
            norm.append((p, r, fr, (_prompt_key(p), r, fr)))
        fresh = self._compute([x for x in norm if x[3] not in self._cache])
        return [fresh[x[3]] if x[3] in fresh else self._cache[x[3]] for x in norm]

    def expected_language(self, prompt: Prompt | PromptText) -> str | None:
        p = as_prompt(prompt)
        self._prompt_languages([p])
        return self._prompt_lang[_prompt_key(p)]

    # ---- internals

    def _prompt_languages(self, prompts: list[Prompt]) -> None:
        """The expected language: the ``language`` constraint, else the prompt's ``lang``, else
        langid on a prompt of 10+ words (langid errs on short texts)."""
        need = {}
        for p in prompts:
            key = _prompt_key(p)
            if key in self._prompt_lang or key in need:
                continue
            lang = next((c["value"].strip().lower() for c in p.constraints or [] if c.get("kind") == "language"), None)
            text = _user_text(p)
            if lang is None and p.lang:
                lang = p.lang.lower()
            if lang is None and not _NAMES_LANGUAGE.search(text) and letter_words(text) >= 10:
                need[key] = text
                continue
            self._prompt_lang[key] = lang
        if need:
            for key, lang in zip(need, detect_languages(list(need.values()))):
                self._prompt_lang[key] = lang

    def _compute(self, todo: list) -> dict:
        if not todo:
            return {}
        prompts = [x[0] for x in todo]
        for i, p in enumerate(prompts):
            for j, c in enumerate(p.constraints or []):
                validate_constraint(c, f"prompt {p.id or i!s}: constraints[{j}]")
        self._prompt_languages(prompts)
        expected = [self._prompt_lang[x[3][0]] for x in todo]
        needs_lang = [i for i, x in enumerate(todo) if x[1].strip()]
        langs: list[str | None] = [None] * len(todo)
        for i, lang in zip(needs_lang, detect_languages([todo[i][1] for i in needs_lang])):
            langs[i] = lang
        # short texts: langid guesses; trust a non-English verdict only from 5 letter words on
        english = [lang in (None, "en") or letter_words(x[1]) < 5 for lang, x in zip(langs, todo)]
        tox = self.toxicity.scores([x[1] for x in todo], english)
        fresh = {}
        for i, (p, r, fr, key) in enumerate(todo):
            fresh[key] = self._cache[key] = self._assess_one(p, r, fr, tox[i], expected[i], langs[i])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return fresh

    def _assess_one(
        self, p: Prompt, r: str, fr: str | None, toxicity: float, expected: str | None, lang: str | None
    ) -> Assessment:
        text = _user_text(p)
        category = _category(p)
        n_words = len(words(r))
        empty = not any(ch.isalnum() for ch in r)
        constraints = [
            (c["kind"], c["value"], check_constraint(c["kind"], c["value"], r, language=lang))
            for c in p.constraints or []
        ]
        rep = repetition(r)
        # a loop shows as repeated word 3-grams, one line three or more times, or a run of one character
        degenerate = empty or rep >= self.repetition_threshold or repeated_lines(r) >= 3 or has_char_run(r)
        # "stop": the model ended the text itself; without a finish reason, guess from the text
        truncated = is_cut(fr) if fr is not None else looks_truncated(r)
        # On topic: shared content words over those of the prompt (at most 8 count). Not judged for
        # responses of under 5 content words, prompts of under 2, or an answer asked in another
        # language. Flagged only when long enough to be sure (8+ and 3+ words); even then off topic
        # alone fails nothing: good creative answers may share no word with their prompt (a poem
        # "about the sea" of tides and shores: 6% of the built-in demonstrations).
        pw, rw = set(content_words(text)), set(content_words(r))
        wants_foreign = any(c[0] == "language" and str(c[1]).lower() != "en" for c in constraints)
        if len(rw) < 5 or len(pw) < 2 or wants_foreign:
            topic = 1.0
        else:
            topic = min(1.0, shared_stems(pw, rw) / min(len(pw), 8))
        off_topic = topic < self.on_topic_threshold and len(rw) >= 8 and len(pw) >= 3
        # langid errs on short texts, lists and JSON: judge only 12+ letter words of prose
        lang_mismatch = (
            expected is not None
            and lang is not None
            and lang != expected
            and letter_words(r) >= 12
            and not _structured(r)
        )
        # Hallucination (best-effort): a number in neither the prompt nor the reference; or, against a
        # short reference (40 words or fewer: a factual answer, not one possible essay), almost no
        # shared content (F1 < 0.1). Without a reference only answers taken from a given text count.
        ref_f1 = None
        hallucination = False
        new_numbers = numbers(r) - numbers(text)
        if p.reference:
            ref_f1 = f1_overlap(content_words(r), content_words(p.reference))
            new_numbers -= numbers(p.reference)
            short_ref = len(words(p.reference)) <= 40
            hallucination = bool(new_numbers) or (
                short_ref and not empty and ref_f1 < 0.1 and len(content_words(p.reference)) > 0
            )
        elif category in _ANSWER_FROM_TEXT:
            hallucination = bool(new_numbers)
        # echo: the response copies 90% or more of its word 3-grams from the prompt
        echo = category not in _COPYING and echo_fraction(text, r) >= 0.9
        return Assessment(
            n_words=n_words,
            empty=empty,
            constraints=constraints,
            toxicity=float(toxicity),
            repetition=rep,
            degenerate=degenerate,
            truncated=truncated,
            topic=topic,
            off_topic=off_topic,
            expected_lang=expected,
            lang=lang,
            lang_mismatch=lang_mismatch,
            reference_f1=ref_f1,
            hallucination=hallucination,
            echo=echo,
            role_leak=bool(_ROLE.search(r)),
            toxic_threshold=self.toxic_threshold,
            inappropriate_threshold=self.inappropriate_threshold,
        )


def length_score(n_words: int, preferred: float) -> float:
    """Informativeness by length: ``log(1+n)/log(1+preferred)`` up to ``preferred`` words, 1 up to
    four times that, then decaying as ``4·preferred/n`` (rambling)."""
    if n_words <= 0:
        return 0.0
    if n_words <= preferred:
        return math.log1p(n_words) / math.log1p(preferred)
    if n_words <= 4 * preferred:
        return 1.0
    return 4 * preferred / n_words
