"""The labeling rubric: what a simulated labeler checks in a (prompt, response), without noise.

A :class:`Rubric` turns a prompt and a response into an :class:`Assessment`: the measurements a
labeler following instructions would make, each in plain numbers. Labelers (:mod:`.labeler`) weigh
them differently and add noise; the measurements themselves are shared, deterministic and cached.

Checks
------
* **Verifiable constraints** (:data:`CONSTRAINT_KINDS`): a prompt's ``constraints`` field lists
  ``{"kind", "value"}`` objects; :func:`check_constraint` decides each one exactly as the schema
  says (word/sentence/bullet/numbered-item/paragraph counts, required and forbidden words as whole
  words ignoring case, language by ``langid``, a JSON object with given keys — optionally inside a
  ``` fence —, given start or end, letter case, no commas, wrapped in double quotes).
* **Toxicity**: probability that the response is offensive, from ``alt-profanity-check`` (a
  linear model over character/word n-grams that ships inside the PyPI package, so it runs offline).
  Where that package is missing, ``toxicity="auto"`` falls back to a small built-in lexicon of
  profanity and insults (with a warning): cruder, but the pipeline still runs. The classifier is
  a profanity model and errs on short texts (0.6 for "The chicken breast should be cooked
  thoroughly."; 0.8 for "Damn, that was close!"; 0.9-1.0 for insults), hence the high thresholds.
  It was trained on English: a response that ``langid`` places in another language is scored with
  the lexicon instead.
* **Degeneration**: the share of repeated word 3-grams (``1 - distinct/total``), the same line
  three or more times, or a run of one character 20 or more long.
* **Truncation**: ``finish_reason == "length"`` where the sampler reported it (``"stop"`` means the
  model ended the text itself). Without one, a heuristic: an unclosed ``` fence, or the text ends
  mid-sentence (the last character is not closing punctuation and the last prose line has at
  least 8 words, or the text ends with ``,`` ``;`` ``:`` ``-`` ``(``).
* **On topic** (lexical, best-effort): content-word overlap. Content words are lower-cased letter
  runs of 3+ characters, minus English stop words and the vocabulary of instructions ("write",
  "explain", "words", "bullet", ...), with a crude suffix stemmer; stems of 5+ characters also
  match on their first five. ``topic = |P ∩ R| / min(|P|, 8)`` (capped at 1) for the prompt's
  content words P and the response's R. Responses with fewer than 5 content words, prompts with
  fewer than 2, and responses that a constraint asks for in another language than English are not
  judged (topic = 1). The response is flagged off topic when ``topic < on_topic_threshold`` (0.1:
  with up to 8 prompt content words, not one is shared) and it has 8+ content words and the
  prompt 3+. Good creative answers sometimes share no word with their prompt (a poem "about the
  sea" that speaks of tides and shores: 6% of the built-in demonstrations), so off topic lowers the
  ``on_topic`` feature but, alone, neither fails the instruction nor makes a response
  inappropriate.
* **Language**: the expected language is the ``language`` constraint, else the prompt's ``lang``,
  else ``langid`` on a prompt of 10+ words (skipped for prompts that name a language, mention
  "language" or ask for a translation: "summarize this in French"); a response of 12+ words, not JSON or code, whose
  ``langid`` language differs is a language mismatch (``langid`` errs on short texts, lists and
  JSON, hence these limits).
* **Reference** (where the prompt has one): content-word F1 between response and reference.
* **Hallucination** (best-effort): the response states a number of two or more significant digits
  (a year, an amount; list markers aside) that appears in neither the prompt nor the reference; or, with a reference, shares almost nothing with it (F1 < 0.1) while
  the reference is short (≤ 40 words, i.e. a factual answer rather than one possible essay). For
  prompts without a reference, only numbers not in the prompt count, and only for extraction and
  summarization (a closed_qa answer may compute a new number from the text).
* **Echo**: 90% or more of the response's word 3-grams are copied from the prompt (not judged for
  rewrite, extraction, closed_qa, summarization and classification prompts, which legitimately
  copy; a prompt without a category gets one from :func:`instructrl.data.category.tag`).
* **Role leakage**: the response goes on to write the user's next turn or a template marker
  ("User:", "Human:", "### Instruction", "<|im_start|>", ...).

Flags
-----
From these, :meth:`Assessment.flags` gives the metadata a labeler records per response (True
marks a problem), the paper's metadata questions:

=====================================  ============================================================
``fails_instruction``                   empty, degenerate, echoes the prompt, language mismatch,
                                        or fewer than half of the constraints satisfied
``violates_constraint``                 any constraint not satisfied
``toxic``                               toxicity ≥ ``toxic_threshold`` (0.8)
``truncated``                           cut off (see above)
``degenerate``                          repetition (see above) or empty
``off_topic``                           topic < ``on_topic_threshold``
``hallucination``                       best-effort (see above)
``inappropriate_for_customer_assistant`` toxicity ≥ ``inappropriate_threshold`` (0.7), role
                                        leakage, or degenerate
=====================================  ============================================================

Use::

    rubric = Rubric()
    a = rubric.assess(prompt, response)           # prompt: a records.Prompt, text or messages
    a.flags(), a.constraints_satisfied, a.toxicity, a.topic
    rubric.assess_many([(prompt, response, finish_reason), ...])   # batched toxicity and langid
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from instructrl.records import Prompt, PromptText

log = logging.getLogger(__name__)

CONSTRAINT_KINDS = (
    "max_words", "min_words", "max_sentences", "exact_bullets", "numbered_items", "include_keywords",
    "forbidden_words", "language", "json_keys", "ends_with", "starts_with", "all_lowercase",
    "all_uppercase", "no_commas", "num_paragraphs", "quote_wrapped",
)

#: Metadata flags per response; True marks a problem.
FLAGS = (
    "fails_instruction", "violates_constraint", "toxic", "truncated", "degenerate", "off_topic",
    "hallucination", "inappropriate_for_customer_assistant",
)

_INT_KINDS = {"max_words", "min_words", "max_sentences", "exact_bullets", "numbered_items", "num_paragraphs"}
_LIST_KINDS = {"include_keywords", "forbidden_words", "json_keys"}
_STR_KINDS = {"language", "ends_with", "starts_with"}
_TRUE_KINDS = {"all_lowercase", "all_uppercase", "no_commas", "quote_wrapped"}


# --------------------------------------------------------------------------- constraints


def words(text: str) -> list[str]:
    """Whitespace-separated tokens."""
    return text.split()


_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def sentences(text: str) -> list[str]:
    """Sentences: split on runs of ``.``, ``!``, ``?`` followed by whitespace or the end."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


_BULLET = re.compile(r"^\s*[-*•] ", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*(\d+)\.", re.MULTILINE)


def bullet_lines(text: str) -> int:
    """Lines starting with ``- ``, ``* `` or ``• `` after optional spaces."""
    return len(_BULLET.findall(text))


def numbered_items(text: str) -> list[int]:
    """The numbers of the lines that start with ``<digits>.`` after optional spaces."""
    return [int(n) for n in _NUMBERED.findall(text)]


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines (lines holding only whitespace count as blank)."""
    return [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]


def _word_pattern(word: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", re.IGNORECASE)


def has_word(text: str, word: str) -> bool:
    """``word`` (or phrase) occurs in ``text`` as a whole word, ignoring case."""
    return bool(_word_pattern(word).search(text))


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def parse_json_object(text: str) -> dict | None:
    """The JSON object ``text`` holds (the whole text, or the first ``` fenced block), else None."""
    candidates = [text.strip()]
    m = _FENCE.search(text)
    if m:
        candidates.insert(0, m.group(1).strip())
    for c in candidates:
        try:
            obj = json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


_QUOTES = (('"', '"'), ("\u201c", "\u201d"))


def validate_constraint(c: Any, where: str = "constraints") -> tuple[str, Any]:
    """Check one ``{"kind", "value"}`` object against the schema; returns ``(kind, value)``.

    Raises ``ValueError`` naming ``where`` and what is wrong."""
    if not isinstance(c, dict) or "kind" not in c or "value" not in c or set(c) - {"kind", "value"}:
        raise ValueError(f"{where}: a constraint is an object with exactly 'kind' and 'value', got {c!r:.80}")
    kind, value = c["kind"], c["value"]
    if kind not in CONSTRAINT_KINDS:
        raise ValueError(f"{where}: unknown constraint kind {kind!r}; valid kinds: {', '.join(CONSTRAINT_KINDS)}")
    if kind in _INT_KINDS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}: {kind} takes a non-negative integer, got {value!r}")
    elif kind in _LIST_KINDS:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{where}: {kind} takes a non-empty list of non-empty strings, got {value!r}")
    elif kind in _STR_KINDS:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {kind} takes a non-empty string, got {value!r}")
    elif value is not True:
        raise ValueError(f"{where}: {kind} takes the value true, got {value!r}")
    return kind, value


def check_constraint(kind: str, value: Any, response: str, *, language: str | None = None) -> bool:
    """Whether ``response`` satisfies one constraint (see /README and the table in the module doc).

    ``language`` is the response's language as ``langid`` sees it; needed only for ``language``
    (computed here when not given)."""
    if kind == "max_words":
        return len(words(response)) <= value
    if kind == "min_words":
        return len(words(response)) >= value
    if kind == "max_sentences":
        return len(sentences(response)) <= value
    if kind == "exact_bullets":
        return bullet_lines(response) == value
    if kind == "numbered_items":
        return numbered_items(response) == list(range(1, value + 1))
    if kind == "include_keywords":
        return all(has_word(response, k) for k in value)
    if kind == "forbidden_words":
        return not any(has_word(response, k) for k in value)
    if kind == "language":
        if language is None:
            language = detect_languages([response])[0]
        if language is None:  # langid is not installed: the constraint cannot be checked
            return True
        return language == value.strip().lower()
    if kind == "json_keys":
        obj = parse_json_object(response)
        return obj is not None and all(k in obj for k in value)
    if kind == "ends_with":
        return response.rstrip().endswith(value.rstrip())
    if kind == "starts_with":
        return response.lstrip().startswith(value.lstrip())
    if kind == "all_lowercase":
        return not any(ch.isupper() for ch in response)
    if kind == "all_uppercase":
        return not any(ch.islower() for ch in response)
    if kind == "no_commas":
        return "," not in response
    if kind == "num_paragraphs":
        return len(paragraphs(response)) == value
    if kind == "quote_wrapped":
        s = response.strip()
        return len(s) >= 2 and any(s.startswith(a) and s.endswith(b) for a, b in _QUOTES)
    raise ValueError(f"unknown constraint kind {kind!r}; valid kinds: {', '.join(CONSTRAINT_KINDS)}")


# --------------------------------------------------------------------------- language


_NO_LANGID: list[bool] = []


def detect_languages(texts: Sequence[str], max_bytes: int = 1024) -> list[str | None]:
    """``langid``'s language of each text, batched (see :mod:`instructrl.data.langid_batch`).
    Without langid and scipy (the ``label`` extra) every language is None (unknown), with a warning."""
    if not texts:
        return []
    try:
        from instructrl.data.langid_batch import get_identifier

        return get_identifier((), max_bytes).classify(list(texts))
    except ImportError:
        if not _NO_LANGID:
            _NO_LANGID.append(True)
            log.warning("langid/scipy are not installed: language checks are skipped "
                        "(pip install 'instructrl[label]')")
        return [None] * len(texts)


# --------------------------------------------------------------------------- toxicity

# A fallback for installations without alt-profanity-check: whole-word matches of strong
# profanity and direct insults. Each hit adds to a probability-like score.
_LEXICON = {
    "fuck": 0.95, "fucking": 0.95, "fucked": 0.95, "motherfucker": 0.99, "shit": 0.85, "bullshit": 0.85,
    "bitch": 0.9, "bastard": 0.9, "asshole": 0.95, "dick": 0.7, "cunt": 0.99, "whore": 0.95, "slut": 0.95,
    "idiot": 0.85, "idiots": 0.85, "moron": 0.85, "morons": 0.85, "stupid": 0.6, "dumb": 0.55, "loser": 0.6,
    "retard": 0.95, "retarded": 0.95, "damn": 0.5, "crap": 0.6, "piss": 0.6, "pissed": 0.55,
    "shut up": 0.8, "kill yourself": 0.99, "go to hell": 0.85, "hate you": 0.8, "worthless": 0.6,
}
_LEXICON_RE = {w: _word_pattern(w) for w in _LEXICON}


def lexicon_toxicity(text: str) -> float:
    """Probability-like toxicity from the built-in lexicon: ``1 - Π(1 - p_w)`` over the words found."""
    keep = 1.0
    for w, p in _LEXICON.items():
        if _LEXICON_RE[w].search(text):
            keep *= 1.0 - p
    return 1.0 - keep


class ToxicityScorer:
    """Toxicity probabilities in [0, 1], batched and cached.

    ``backend``: ``"profanity-check"`` (alt-profanity-check's shipped model), ``"lexicon"`` (the
    built-in word list), ``"auto"`` (profanity-check where installed, else the lexicon with a
    warning) or ``"none"`` (always 0)."""

    def __init__(self, backend: str = "auto", cache_size: int = 200_000):
        if backend not in ("auto", "profanity-check", "lexicon", "none"):
            raise ValueError(f"toxicity backend must be auto, profanity-check, lexicon or none, got {backend!r}")
        self.requested = backend
        self.backend: str | None = None
        self._predict = None
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.cache_size = cache_size

    def _load(self) -> None:
        if self.backend is not None:
            return
        if self.requested in ("auto", "profanity-check"):
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # sklearn version notes on unpickling
                    from profanity_check import predict_prob
                self._predict = predict_prob
                self.backend = "profanity-check"
                return
            except ImportError:
                if self.requested == "profanity-check":
                    raise ImportError(
                        "toxicity backend 'profanity-check' needs alt-profanity-check: pip install 'instructrl[label]'"
                    ) from None
                log.warning("alt-profanity-check is not installed; toxicity falls back to a small built-in lexicon "
                            "(pip install 'instructrl[label]' for the classifier)")
                self.backend = "lexicon"
                return
        self.backend = self.requested

    def scores(self, texts: Sequence[str], english: Sequence[bool] | None = None) -> list[float]:
        """Toxicity of each text. ``english[i] = False`` scores text i with the lexicon: the
        classifier was trained on English and reads other languages as noise (0.4 for a plain
        French sentence about the sea)."""
        self._load()
        english = [True] * len(texts) if english is None else list(english)
        keys = [(t, e or self.backend != "profanity-check") for t, e in zip(texts, english)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            probs = [0.0] * len(missing)
            if self.backend == "profanity-check":
                clf = [i for i, (_, e) in enumerate(missing) if e]
                for i, p in zip(clf, self._predict([missing[i][0] for i in clf]) if clf else []):
                    probs[i] = float(p)
                for i, (t, e) in enumerate(missing):
                    if not e:
                        probs[i] = lexicon_toxicity(t)
            elif self.backend == "lexicon":
                probs = [lexicon_toxicity(t) for t, _ in missing]
            for k, p in zip(missing, probs):
                self._cache[k] = p
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [self._cache.get(k, 0.0) for k in keys]


# --------------------------------------------------------------------------- content words

_STOP = set("""
a about above after again against all also am an and any are aren as at be because been before being below
between both but by can cannot could couldn did didn do does doesn doing don down during each else even ever
every few for from further get gets got had hadn has hasn have haven having he her here hers herself him himself
his how however i if in into is isn it its itself just let like made make many may me might more most much must
my myself need no nor not now of off often on once one only or other our ours ourselves out over own per please
quite rather really said same say says see seem shall she should shouldn since so some such than that the their
theirs them themselves then there these they thing things this those though through thus to too under until up
upon us use used using very via was wasn way we well were weren what when where whether which while who whom
whose why will with within without won would wouldn yes yet you your yours yourself yourselves
""".split())
# words of instructions rather than of topics
_INSTRUCTION = set("""
write writing written explain describe list give tell provide answer respond response reply question questions
word words sentence sentences paragraph paragraphs bullet bullets point points item items numbered number format
following below above text short brief briefly long detail detailed include including includes keyword keywords
language english french spanish german italian portuguese dutch lowercase uppercase letters letter capital
comma commas json key keys quote quotes quotation wrap wrapped start starts end ends begin begins exactly least
most maximum minimum only make create generate compose draft summarize summary rewrite rephrase translate
classify extract output return show help want know simple simply example examples assistant user human
two three four five six seven eight nine ten twelve twenty hundred first second third fourth fifth
""".split())


def _stem(w: str) -> str:
    """Crude suffix stripping that maps "serve", "served", "serves", "serving" to one stem."""
    for suf, n in (("ies", 3), ("ing", 3), ("ers", 3), ("ed", 2), ("es", 2), ("ly", 2), ("er", 2), ("s", 1)):
        if w.endswith(suf) and len(w) - n >= 3:
            w = w[:-n] + ("y" if suf == "ies" else "")
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


_LETTERS = re.compile(r"[^\W\d_]+")


def content_words(text: str) -> list[str]:
    """Lower-cased, stemmed letter runs of 3+ characters that are neither stop words nor
    instruction vocabulary."""
    out = []
    for w in _LETTERS.findall(text.lower()):
        if len(w) >= 3 and w not in _STOP and w not in _INSTRUCTION:
            out.append(_stem(w))
    return out


def shared_stems(a: set[str], b: set[str]) -> int:
    """How many stems of ``a`` occur in ``b``, where stems of 5+ characters also match on their
    first 5 ("bacterium" and "bacteria")."""
    prefixes = {w[:5] for w in b if len(w) >= 5}
    return sum(w in b or (len(w) >= 5 and w[:5] in prefixes) for w in a)


def f1_overlap(a: Iterable[str], b: Iterable[str]) -> float:
    """Bag-of-words F1 between two token lists (0 when either is empty)."""
    ca, cb = Counter(a), Counter(b)
    common = sum((ca & cb).values())
    if not common:
        return 0.0
    p, r = common / sum(ca.values()), common / sum(cb.values())
    return 2 * p * r / (p + r)


# --------------------------------------------------------------------------- repetition, truncation, echo


def repetition(text: str, n: int = 3) -> float:
    """``1 - distinct/total`` word n-grams (lower-cased); 0 for texts of fewer than n + 5 words."""
    toks = text.lower().split()
    if len(toks) < n + 5:
        return 0.0
    grams = [tuple(toks[i: i + n]) for i in range(len(toks) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def repeated_lines(text: str) -> int:
    """How often the most frequent non-empty line (stripped) occurs."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return max(Counter(lines).values()) if lines else 0


_CHAR_RUN = re.compile(r"(.)\1{19,}", re.DOTALL)
_CLOSING = set(".!?\"'\u201d\u2019)]}>*`\u2026\u3002\uff01\uff1f")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+)\s")


def looks_truncated(text: str) -> bool:
    """The heuristic for text whose sampler did not say why it stopped (see the module doc)."""
    s = text.rstrip()
    if not s:
        return False
    if s.count("```") % 2 == 1:
        return True
    last = s[-1]
    if last in ",;:-(":
        return True
    if last in _CLOSING or not last.isalnum():
        return False
    last_line = s.splitlines()[-1]
    if _LIST_LINE.match(last_line):
        return False
    return len(last_line.split()) >= 8


def echo_fraction(prompt: str, response: str, n: int = 3) -> float:
    """Share of the response's word n-grams that occur in the prompt (0 for short responses)."""
    r = response.lower().split()
    if len(r) < n + 2:
        return 0.0
    p = prompt.lower().split()
    pg = {tuple(p[i: i + n]) for i in range(len(p) - n + 1)}
    rg = [tuple(r[i: i + n]) for i in range(len(r) - n + 1)]
    return sum(g in pg for g in rg) / len(rg)


_ROLE = re.compile(r"(?:^|\n)\s*(?:user|human|assistant|ai|system)\s*:|<\|im_start\|>|<\|im_end\|>|<\|user\|>|"
                   r"<\|assistant\|>|<\|endoftext\|>|###\s*(?:instruction|input|response)\b|\[/?INST\]", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)*")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)


def _numbers(text: str) -> set[str]:
    """Numbers of two or more digits (years, amounts, counts), list markers left out."""
    text = _LIST_MARKER.sub(" ", text)
    out = set()
    for n in _NUMBER.findall(text):
        n = n.replace(",", "").lstrip("0")
        if sum(ch.isdigit() for ch in n) >= 2:
            out.add(n)
    return out


# --------------------------------------------------------------------------- assessment


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
        """The metadata flags (see the module doc); True marks a problem."""
        fails = (self.empty or self.degenerate or self.echo or self.lang_mismatch
                 or (bool(self.constraints) and self.constraints_satisfied < 0.5))
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
    return json.dumps([p.prompt, p.reference, p.constraints, p.lang, p.category, p.type], ensure_ascii=False,
                      sort_keys=True)


_ANSWER_FROM_TEXT = {"extraction", "summarization"}
_COPYING = {"rewrite", "extraction", "closed_qa", "summarization", "classification"}


def _category(p: Prompt) -> str:
    """The prompt's category, else the keyword rules of :mod:`instructrl.data.category`."""
    if p.category:
        return p.category
    from instructrl.data.category import tag

    return tag(p.prompt, p.type)


_NAMES_LANGUAGE = re.compile(
    r"translat|\b(?:languages?|english|french|spanish|german|italian|portuguese|dutch|russian|chinese|mandarin|japanese|"
    r"korean|arabic|hindi|turkish|polish|swedish|norwegian|danish|finnish|greek|latin|hebrew|vietnamese|"
    r"indonesian|français|francais|español|espanol|deutsch|italiano|português)\b", re.IGNORECASE)


def _structured(text: str) -> bool:
    """JSON, a code block or a table: text langid cannot place in a language."""
    s = text.strip()
    return s.startswith(("{", "[", "```", "|")) or parse_json_object(s) is not None


def _letter_words(text: str) -> int:
    return sum(len(w) >= 2 for w in _LETTERS.findall(text))


class Rubric:
    """Deterministic measurements of responses (see the module doc for every check and threshold).

    Assessments are cached by (prompt, response, finish_reason), so the labelers of a panel that
    judge the same response share the work."""

    def __init__(self, *, toxicity: str = "auto", toxic_threshold: float = 0.8, inappropriate_threshold: float = 0.7,
                 on_topic_threshold: float = 0.1, repetition_threshold: float = 0.3,
                 cache_size: int = 100_000):
        for name, v in (("toxic_threshold", toxic_threshold), ("inappropriate_threshold", inappropriate_threshold),
                        ("on_topic_threshold", on_topic_threshold), ("repetition_threshold", repetition_threshold)):
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
        return {"toxicity": self.toxicity.requested, "toxic_threshold": self.toxic_threshold,
                "inappropriate_threshold": self.inappropriate_threshold,
                "on_topic_threshold": self.on_topic_threshold, "repetition_threshold": self.repetition_threshold}

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
            if fr not in (None, "stop", "length"):
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
        need = {}
        for p in prompts:
            key = _prompt_key(p)
            if key in self._prompt_lang or key in need:
                continue
            lang = next((c["value"].strip().lower() for c in p.constraints or [] if c.get("kind") == "language"), None)
            text = _user_text(p)
            if lang is None and p.lang:
                lang = p.lang.lower()
            if lang is None and not _NAMES_LANGUAGE.search(text) and _letter_words(text) >= 10:
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
        english = [lang in (None, "en") or _letter_words(x[1]) < 5 for lang, x in zip(langs, todo)]
        tox = self.toxicity.scores([x[1] for x in todo], english)
        fresh = {}
        for i, (p, r, fr, key) in enumerate(todo):
            fresh[key] = self._cache[key] = self._assess_one(p, r, fr, tox[i], expected[i], langs[i])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return fresh

    def _assess_one(self, p: Prompt, r: str, fr: str | None, toxicity: float, expected: str | None,
                    lang: str | None) -> Assessment:
        text = _user_text(p)
        category = _category(p)
        n_words = len(words(r))
        empty = not any(ch.isalnum() for ch in r)
        constraints = [(c["kind"], c["value"], check_constraint(c["kind"], c["value"], r, language=lang))
                       for c in p.constraints or []]
        rep = repetition(r)
        degenerate = empty or rep >= self.repetition_threshold or repeated_lines(r) >= 3 or bool(_CHAR_RUN.search(r))
        truncated = (fr == "length") if fr is not None else looks_truncated(r)
        # on topic
        pw, rw = set(content_words(text)), set(content_words(r))
        wants_foreign = any(c[0] == "language" and str(c[1]).lower() != "en" for c in constraints)
        if len(rw) < 5 or len(pw) < 2 or wants_foreign:
            topic = 1.0
        else:
            topic = min(1.0, shared_stems(pw, rw) / min(len(pw), 8))
        off_topic = topic < self.on_topic_threshold and len(rw) >= 8 and len(pw) >= 3
        lang_mismatch = (expected is not None and lang is not None and lang != expected and _letter_words(r) >= 12
                         and not _structured(r))
        # reference and hallucination
        ref_f1 = None
        hallucination = False
        new_numbers = _numbers(r) - _numbers(text)
        if p.reference:
            ref_f1 = f1_overlap(content_words(r), content_words(p.reference))
            new_numbers -= _numbers(p.reference)
            short_ref = len(words(p.reference)) <= 40
            hallucination = bool(new_numbers) or (short_ref and not empty and ref_f1 < 0.1 and len(content_words(p.reference)) > 0)
        elif category in _ANSWER_FROM_TEXT:
            hallucination = bool(new_numbers)
        echo = category not in _COPYING and echo_fraction(text, r) >= 0.9
        return Assessment(
            n_words=n_words, empty=empty, constraints=constraints, toxicity=float(toxicity), repetition=rep,
            degenerate=degenerate, truncated=truncated, topic=topic, off_topic=off_topic, expected_lang=expected,
            lang=lang, lang_mismatch=lang_mismatch, reference_f1=ref_f1, hallucination=hallucination, echo=echo,
            role_leak=bool(_ROLE.search(r)), toxic_threshold=self.toxic_threshold,
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
