"""An LLM-judge labeler: a strong model behind any OpenAI-compatible endpoint labels like a person.

For users who have a strong model (an API, or a local server such as vLLM, llama.cpp or
``instructrl serve``). Requests go through :class:`~instructrl.models.generation.OpenAIGenerator`
(chat completions, greedy by default, retries, concurrency); the key is read from the environment
variable that ``api_key_env`` names.

Judging prompts
---------------
Pairwise (:data:`PAIRWISE_SYSTEM`, :data:`PAIRWISE_TEMPLATE`): the instruction and two responses
labeled A and B; the judge weighs helpfulness, truthfulness and harmlessness, as InstructGPT's
labeling instructions did, and every explicit constraint (length, format, language, keywords), and
answers ``Verdict: A``, ``Verdict: B`` or ``Verdict: tie``. **Each pair is asked in both orders**
(A/B and B/A): a verdict counts only when both orders agree, otherwise the pair is a tie, which
cancels the judge's preference for a position. The last ``Verdict:`` line of an answer counts (an
answer that is just ``A``, ``B`` or ``tie`` is accepted too); an answer without one is a tie and
counted in :attr:`LLMJudge.unparsed`.

Pointwise (:data:`POINTWISE_TEMPLATE`, when ``likert=True``): a Likert score 1-7 and the semantic
metadata flags as a JSON object. The mechanical flags (``violates_constraint``, ``truncated``,
``degenerate``) always come from the :class:`~.rubric.Rubric`, which checks them exactly; the
judge's answer gives ``fails_instruction``, ``toxic``, ``off_topic``, ``hallucination`` and
``inappropriate_for_customer_assistant`` (the rubric's value where the judge's answer lacks one).

Rankings of K responses ask all C(K, 2) pairs in both orders (K·(K-1) requests, in parallel) and
rank by Copeland score (wins + ties/2); equal scores tie. Demonstrations are the reference answer
where the prompt has one, else the candidate with the best Likert score (ties: Copeland order).

API (the panel's methods; ``rng``/``seed`` are accepted and ignored: the judge is not sampled)::

    judge = LLMJudge.from_config(JudgeConfig(base_url=..., model=..., api_key_env="OPENAI_API_KEY"))
    judge.compare(prompt, a, b)  -> "win" | "tie" | "loss"
    judge.rank(prompt, responses) -> records.Ranking (labeler_id "llm:<model>")
    judge.judge(prompt, response) -> Judgement
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

from instructrl.label.labeler import Judgement, Outcome, likert_of, make_demonstration
from instructrl.label.rubric import Rubric, as_prompt
from instructrl.models.generation import Generator, OpenAIGenerator
from instructrl.records import Demonstration, Prompt, PromptText, Ranking, prompt_text

PAIRWISE_SYSTEM = (
    "You are an expert evaluator of AI assistant responses. You compare two responses to the same "
    "instruction and decide which one a careful reviewer would prefer."
)

PAIRWISE_TEMPLATE = """\
Compare two responses to the instruction below.

Prefer the response that
1. follows the instruction and satisfies every explicit constraint in it (length, number of bullets or \
paragraphs, format such as JSON, required or forbidden words, language, how it starts or ends);
2. is helpful: answers what was asked, correctly and completely, without padding;
3. is truthful: states no invented facts, and agrees with the given text where there is one;
4. is harmless: nothing toxic, insulting or dangerous, appropriate for a customer assistant.
A response that is cut off, repeats itself or drifts off topic is worse. Ignore the order in which \
the responses are shown and do not prefer a response for its length alone.

[Instruction]
{prompt}

[Response A]
{a}

[Response B]
{b}

Think briefly if you need to, then end with exactly one line: "Verdict: A", "Verdict: B" or \
"Verdict: tie"."""

POINTWISE_TEMPLATE = """\
Rate the response to the instruction below.

[Instruction]
{prompt}

[Response]
{response}

Answer with one JSON object and nothing else:
{{"likert": <overall quality from 1 (terrible) to 7 (excellent)>,
 "fails_instruction": <true if it does not do the task asked>,
 "toxic": <true if it is rude, insulting or hateful>,
 "off_topic": <true if it is not about what was asked>,
 "hallucination": <true if it states invented or false facts>,
 "inappropriate_for_customer_assistant": <true if a customer assistant should not say it>}}"""

_VERDICT = re.compile(r"verdict\s*[:=\-]?\s*\**\s*(?:response\s+)?\(?\b(a|b|tie)\b", re.IGNORECASE)
_JUDGE_FLAGS = ("fails_instruction", "toxic", "off_topic", "hallucination", "inappropriate_for_customer_assistant")


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"``, ``"tie"`` from a judge's answer (the last ``Verdict:``), else None."""
    hits = _VERDICT.findall(text or "")
    if hits:
        v = hits[-1].lower()
        return "tie" if v == "tie" else v.upper()
    bare = (text or "").strip().strip(".*\"'` ").lower()
    if bare in ("a", "b", "tie"):
        return "tie" if bare == "tie" else bare.upper()
    return None


def combine_orders(first: str | None, second: str | None) -> Outcome:
    """The outcome for response ``x`` from the verdict with x shown as A (``first``) and the verdict
    with x shown as B (``second``): a win or loss only when both orders agree, else a tie."""
    x_first = {"A": 1, "B": -1}.get(first or "", 0)
    x_second = {"B": 1, "A": -1}.get(second or "", 0)
    if x_first == x_second == 1:
        return "win"
    if x_first == x_second == -1:
        return "loss"
    return "tie"


def parse_pointwise(text: str) -> dict | None:
    """``{"likert": int 1-7, <flag>: bool, ...}`` from the judge's JSON answer, else None."""
    m = re.search(r"\{.*\}", text or "", re.DOTALL)
    if m:
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            obj = None
        if (
            isinstance(obj, dict)
            and isinstance(obj.get("likert"), (int, float))
            and not isinstance(obj["likert"], bool)
        ):
            out: dict[str, Any] = {"likert": int(min(7, max(1, round(obj["likert"]))))}
            for f in _JUDGE_FLAGS:
                if isinstance(obj.get(f), bool):
                    out[f] = obj[f]
            return out
    m = re.search(r"likert\D{0,5}([1-7])\b", text or "", re.IGNORECASE)
    return {"likert": int(m.group(1))} if m else None


class LLMJudge:
    """A labeler backed by an LLM (see the module doc); same methods as a :class:`~.panel.Panel`."""

    def __init__(
        self,
        generator: Generator,
        *,
        model: str = "llm",
        rubric: Rubric | None = None,
        temperature: float = 0.0,
        max_tokens: int = 64,
        likert: bool = True,
    ):
        self.generator, self.model = generator, model
        self.rubric = rubric or Rubric()
        self.temperature, self.max_tokens, self.likert = temperature, max_tokens, likert
        self.id = f"llm:{model}"
        self.requests = 0
        self.unparsed = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any, rubric: Rubric | None = None) -> LLMJudge:
        """From a :class:`~instructrl.label.config.JudgeConfig`."""
        gen = OpenAIGenerator(
            cfg.base_url, cfg.model, cfg.api_key_env, timeout=cfg.timeout, concurrency=cfg.concurrency
        )
        return cls(
            gen,
            model=cfg.model,
            rubric=rubric,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            likert=cfg.likert,
        )

    # ---- requests

    def _ask(self, conversations: list[list[dict]]) -> list[str]:
        if not conversations:
            return []
        gens = self.generator.generate(
            conversations, max_new_tokens=self.max_tokens, temperature=self.temperature, seed=0
        )
        with self._lock:
            self.requests += len(conversations)
        return [g.text for g in gens]

    @staticmethod
    def _pair_messages(prompt: Prompt, a: str, b: str) -> list[dict]:
        user = PAIRWISE_TEMPLATE.format(prompt=prompt_text(prompt.prompt), a=a, b=b)
        return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]

    def _verdicts(self, items: list[tuple[Prompt, str, str]]) -> list[Outcome]:
        """Outcome for the first response of each (prompt, x, y), asking both orders."""
        convs = []
        for p, x, y in items:
            convs += [self._pair_messages(p, x, y), self._pair_messages(p, y, x)]
        answers = self._ask(convs)
        out = []
        for i in range(len(items)):
            first, second = parse_verdict(answers[2 * i]), parse_verdict(answers[2 * i + 1])
            self.unparsed += (first is None) + (second is None)
            out.append(combine_orders(first, second))
        return out

    # ---- the labeler interface

    def compare(
        self,
        prompt: Prompt | PromptText,
        a: str,
        b: str,
        rng: Any = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> Outcome:
        return self._verdicts([(as_prompt(prompt), a, b)])[0]

    def compare_many(self, prompts: Sequence, a: Sequence[str], b: Sequence[str], seed: int = 0) -> list[Outcome]:
        if not len(prompts) == len(a) == len(b):
            raise ValueError("prompts, a and b must have the same length")
        return self._verdicts([(as_prompt(p), x, y) for p, x, y in zip(prompts, a, b)])

    def judge_all(
        self,
        prompt: Prompt | PromptText,
        responses: Sequence[str],
        rng: Any = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> list[Judgement]:
        """Likert and flags per response: the judge's pointwise answer for the semantic flags and the
        Likert score, the rubric for the mechanical flags."""
        prompt = as_prompt(prompt)
        frs = list(finish_reasons) if finish_reasons is not None else [None] * len(responses)
        assessments = self.rubric.assess_many([(prompt, r, f) for r, f in zip(responses, frs)])
        answers = self._ask(
            [
                [{"role": "user", "content": POINTWISE_TEMPLATE.format(prompt=prompt_text(prompt.prompt), response=r)}]
                for r in responses
            ]
        )
        out = []
        for a, ans in zip(assessments, answers):
            flags = a.flags()
            parsed = parse_pointwise(ans)
            if parsed is None:
                self.unparsed += 1
                parsed = {}
            for f in _JUDGE_FLAGS:
                if f in parsed:
                    flags[f] = parsed[f]
            likert = parsed.get("likert")
            score = (likert - 1) / 6 if likert is not None else float("nan")
            out.append(
                Judgement(
                    likert=likert if likert is not None else likert_of(0.5),
                    flags=flags,
                    score=score,
                    quality=score,
                    labeler_id=self.id,
                    assessment=a,
                )
            )
        return out

    def judge(
        self, prompt: Prompt | PromptText, response: str, rng: Any = None, finish_reason: str | None = None
    ) -> Judgement:
        return self.judge_all(prompt, [response], rng, [finish_reason])[0]

    def judge_many(
        self,
        prompts: Sequence,
        responses: Sequence[str],
        seed: int = 0,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> list[Judgement]:
        frs = list(finish_reasons) if finish_reasons is not None else [None] * len(responses)
        return [self.judge(p, r, None, f) for p, r, f in zip(prompts, responses, frs)]

    def copeland(self, prompt: Prompt | PromptText, responses: Sequence[str]) -> list[float]:
        """Wins + ties/2 of each response over all C(K, 2) pairs, both orders asked per pair."""
        prompt = as_prompt(prompt)
        k = len(responses)
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        outcomes = self._verdicts([(prompt, responses[i], responses[j]) for i, j in pairs])
        score = [0.0] * k
        for (i, j), o in zip(pairs, outcomes):
            if responses[i] == responses[j]:
                o = "tie"
            score[i] += {"win": 1.0, "tie": 0.5, "loss": 0.0}[o]
            score[j] += {"win": 0.0, "tie": 0.5, "loss": 1.0}[o]
        return score

    def rank(
        self,
        prompt: Prompt | PromptText,
        responses: Sequence[str],
        rng: Any = None,
        finish_reasons: Sequence[str | None] | None = None,
    ) -> Ranking:
        prompt = as_prompt(prompt)
        if len(responses) < 2:
            raise ValueError(f"a ranking needs at least 2 responses, got {len(responses)}")
        score = self.copeland(prompt, responses)
        order = sorted(set(score), reverse=True)
        ranks = [order.index(s) + 1 for s in score]
        likert = flags = None
        if self.likert:
            js = self.judge_all(prompt, responses, None, finish_reasons)
            likert, flags = [j.likert for j in js], [j.flags for j in js]
        else:
            frs = list(finish_reasons) if finish_reasons is not None else [None] * len(responses)
            flags = [a.flags() for a in self.rubric.assess_many([(prompt, r, f) for r, f in zip(responses, frs)])]
        return Ranking(
            prompt=prompt.prompt,
            responses=list(responses),
            ranks=ranks,
            id=prompt.id,
            labeler_id=self.id,
            likert=likert,
            flags=flags,
            user_id=prompt.user_id,
            category=prompt.category,
        )

    def rank_many(self, groups: Sequence[tuple], seed: int = 0) -> list[Ranking]:
        return [self.rank(g[0], g[1], None, g[2] if len(g) == 3 else None) for g in groups]

    def demonstrate(
        self,
        prompt: Prompt | PromptText,
        candidates: Sequence[str] = (),
        rng: Any = None,
        finish_reasons: Sequence[str | None] | None = None,
        *,
        use_reference: bool = True,
        min_quality: float = 0.0,
    ) -> Demonstration | None:
        prompt = as_prompt(prompt)
        if use_reference and prompt.reference and prompt.reference.strip():
            return make_demonstration(prompt, prompt.reference, **{"from": "reference", "labeler_id": self.id})
        if not candidates:
            return None
        if len(candidates) == 1:
            best, q = 0, self.judge(prompt, candidates[0]).quality
        else:
            js = self.judge_all(prompt, candidates, None, finish_reasons) if self.likert else None
            cop = self.copeland(prompt, candidates)
            key = [((js[i].likert if js else 0), cop[i]) for i in range(len(candidates))]
            best = max(range(len(candidates)), key=lambda i: key[i])
            q = js[best].quality if js else cop[best] / (len(candidates) - 1)
        if not q >= min_quality:
            return None
        return make_demonstration(
            prompt,
            candidates[best],
            **{"from": "best_of_n", "n": len(candidates), "quality": round(float(q), 4), "labeler_id": self.id},
        )
