"""Text generation behind one small interface.

Every stage that samples from a model (Self-Instruct, PPO rollouts, evaluation, labeling by an LLM
judge) goes through a :class:`Generator`::

    gens = generator.generate(prompts, max_new_tokens=256, temperature=0.7, top_p=1.0,
                              stop=["\\n\\n"], seed=0, raw=False)
    gens[i].text, gens[i].finish_reason, gens[i].token_ids

* ``prompts`` are :data:`~instructrl.records.PromptText` (plain text or chat messages). With
  ``raw=False`` (the default) each prompt is a conversation: plain text is one user turn, and the
  model sees it through its chat template with the generation prompt appended. With ``raw=True``
  each prompt must be a string that is given to the model exactly as it is (a completion: no chat
  template), which is what list-continuation prompts such as Self-Instruct's need.
* ``temperature == 0`` is greedy decoding; otherwise nucleus sampling with ``top_p`` (no top-k).
* ``stop``: strings that end a generation; the returned text ends before the first one.
* ``seed``: the same call with the same seed returns the same generations (for a backend that is
  deterministic; an OpenAI-compatible server may not be).
* One :class:`Generation` per prompt, in the order of the prompts. ``finish_reason`` is ``"stop"``
  (end-of-sequence token or a stop string) or ``"length"`` (``max_new_tokens`` ran out, so the
  text may be cut mid-sentence).

Backends: :class:`HFGenerator` (a local Hugging Face model: left-padded batches sorted by prompt
length, KV cache, CPU or GPU) and :class:`OpenAIGenerator` (any OpenAI-compatible server:
``/v1/completions`` for raw prompts, ``/v1/chat/completions`` for conversations). A faster backend
(e.g. vLLM) only has to implement :meth:`Generator.generate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, runtime_checkable

from instructrl.records import PromptText, prompt_messages
from instructrl.utils.seed import derive

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length")


def is_cut(reason: str | None) -> bool:
    """Whether a response was cut off by the token limit (finish reason ``"length"``) rather than ended."""
    return reason == "length"


def ended_flags(finish_reasons: Sequence[str | None] | None, n: int) -> list[bool]:
    """Per response, whether it ended (any finish reason but ``"length"``; True where none is known)."""
    if finish_reasons is None:
        return [True] * n
    if len(finish_reasons) != n:
        raise ValueError(f"{len(finish_reasons)} finish reasons for {n} responses")
    return [not is_cut(fr) for fr in finish_reasons]


@dataclasses.dataclass
class Generation:
    """One generated continuation.

    ``token_ids`` are the generated token ids (the prompt excluded), up to and including the
    end-of-sequence token or the token that completed a stop string; empty where the backend does
    not report tokens (OpenAI-compatible servers). ``text`` is their decoding without special
    tokens, cut before the first stop string.
    """

    text: str
    finish_reason: FinishReason
    token_ids: list[int] = dataclasses.field(default_factory=list)
    #: log-prob of each of ``token_ids`` under the sampling distribution at the call's temperature
    #: (before top-p); empty where the engine does not report them (only CachedGenerator does)
    logprobs: list[float] = dataclasses.field(default_factory=list)


@runtime_checkable
class Generator(Protocol):
    """Anything that turns prompts into generations (see the module documentation)."""

    def generate(
        self,
        prompts: Sequence[PromptText],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        raw: bool = False,
    ) -> list[Generation]: ...


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    if not stop:
        return text, False
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    if not hits:
        return text, False
    return text[: min(hits)], True


def check_generate_args(
    prompts: Sequence[PromptText], max_new_tokens: int, temperature: float, top_p: float, raw: bool
) -> None:
    if isinstance(prompts, (str, dict)):
        raise TypeError("generate() takes a list of prompts; wrap a single prompt in a list")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if raw:
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(
                    f"prompts[{i}]: raw=True needs already-rendered text (a string), got {type(p).__name__}"
                )


# --------------------------------------------------------------------------- Hugging Face


class HFGenerator:
    """Batched sampling with a local Hugging Face causal LM (``model.generate``).

    Prompts are sorted by token length (longest first) and cut into batches of ``batch_size``,
    left-padded so that every row's continuation starts at the same position; the KV cache is on.
    ``max_prompt_tokens`` (optional) keeps only the last tokens of longer prompts.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        *,
        max_prompt_tokens: int | None = None,
        progress: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_prompt_tokens, self.progress = max_prompt_tokens, progress

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, device: str = "auto", dtype: str = "fp32", batch_size: int = 8, **kwargs: Any
    ) -> HFGenerator:
        """Load a model with :func:`instructrl.models.load_model` ('default', a directory or a hub id)."""
        from instructrl.models.loading import load_model, load_tokenizer
        from instructrl.utils.device import DTYPES, resolve_device

        tok = load_tokenizer(name_or_path)
        model = load_model(name_or_path, dtype=DTYPES[dtype], tokenizer=tok, device=resolve_device(device))
        return cls(model.eval(), tok, batch_size, **kwargs)

    def _encode(self, prompts: Sequence[PromptText], raw: bool) -> list[list[int]]:
        from instructrl.models.loading import render_prompt

        tok = self.tokenizer
        out = []
        for p in prompts:
            text = p if raw else render_prompt(tok, p)
            # a rendered chat template already holds its special tokens; raw text gets the
            # tokenizer's usual ones (e.g. BOS) as a completion would
            ids = tok(text, add_special_tokens=raw)["input_ids"]
            if self.max_prompt_tokens and len(ids) > self.max_prompt_tokens:
                ids = ids[-self.max_prompt_tokens :]
            if not ids:
                raise ValueError("an empty prompt encodes to no tokens; give at least one character")
            out.append(ids)
        return out

    def generate(
        self,
        prompts: Sequence[PromptText],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        raw: bool = False,
    ) -> list[Generation]:
        import torch
        from tqdm.auto import tqdm

        check_generate_args(prompts, max_new_tokens, temperature, top_p, raw)
        if not prompts:
            return []
        tok, model = self.tokenizer, self.model
        encoded = self._encode(prompts, raw)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        eos_ids = eos_ids_of(model, tok)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
        device = next(model.parameters()).device
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_ids, use_cache=True
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        results: list[Generation | None] = [None] * len(prompts)
        was_training = model.training
        model.eval()
        bar = tqdm(batches, desc="generate", unit="batch", disable=not self.progress or len(batches) < 2)
        try:
            for b, idx in enumerate(bar):
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention[row, width - len(ids) :] = 1
                devices = [device] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices), torch.inference_mode():
                    if seed is not None:
                        torch.manual_seed(derive(seed, "batch", b))
                    criteria = _stop_criteria(tok, stop, width)
                    out = model.generate(
                        input_ids=input_ids.to(device),
                        attention_mask=attention.to(device),
                        stopping_criteria=criteria,
                        **kwargs,
                    )
                new = out[:, width:].tolist()
                for row, i in enumerate(idx):
                    results[i] = finish_generation(new[row], tok, eos_ids, pad_id, stop, max_new_tokens)
        finally:
            model.train(was_training)
        return results  # type: ignore[return-value]


def _stop_criteria(tok: Any, stop: Sequence[str] | None, prompt_width: int) -> Any:
    """Stop a row once its generated text (not the prompt) holds a stop string."""
    if not stop:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stops = [s for s in stop if s]
    window = 4 * max(len(s) for s in stops) + 4  # tokens: enough to spell the longest stop string

    class _StopStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            rows = input_ids[:, prompt_width:][:, -window:].tolist()
            texts = tok.batch_decode(rows, skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stops) for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopStrings()])


def eos_ids_of(model: Any, tok: Any) -> list[int]:
    ids = [tok.eos_token_id]
    gc = getattr(model, "generation_config", None)
    extra = getattr(gc, "eos_token_id", None) if gc is not None else None
    for e in extra if isinstance(extra, list) else [extra]:
        if e is not None and e not in ids:
            ids.append(e)
    return ids


def finish_generation(
    ids: list[int],
    tok: Any,
    eos_ids: list[int],
    pad_id: int,
    stop: Sequence[str] | None,
    max_new_tokens: int,
    logprobs: list[float] | None = None,
) -> Generation:
    cut = next((k for k, t in enumerate(ids) if t in eos_ids), None)
    if cut is not None:
        ids = ids[: cut + 1]
        body = ids[:-1]
    else:
        while ids and ids[-1] == pad_id and pad_id not in eos_ids:  # a row that stopped on a stop string
            ids = ids[:-1]
        body = ids
    text, hit = cut_at_stop(tok.decode(body, skip_special_tokens=True), stop)
    finished = cut is not None or hit or len(ids) < max_new_tokens
    return Generation(
        text=text,
        finish_reason="stop" if finished else "length",
        token_ids=ids,
        logprobs=list(logprobs[: len(ids)]) if logprobs else [],
    )


# --------------------------------------------------------------------------- OpenAI-compatible


class OpenAIError(RuntimeError):
    """An OpenAI-compatible server answered with an error (the message holds URL, status, body)."""


class OpenAIGenerator:
    """Generations from an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, TGI, ``instructrl serve``).

    ``base_url`` includes the API version, e.g. ``http://127.0.0.1:8000/v1``. Raw prompts go to
    ``{base_url}/completions``; conversations to ``{base_url}/chat/completions``. The API key is
    read from the environment variable ``api_key_env`` when it is set (local servers need none).
    Requests run ``concurrency`` at a time; 429 and 5xx answers and dropped connections are retried
    ``max_retries`` times with exponential back-off. Prompt ``i`` is sent with ``seed + i``.
    """

    RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        *,
        timeout: float = 120.0,
        concurrency: int = 4,
        max_retries: int = 3,
        backoff: float = 0.5,
        extra_body: dict | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key_env, self.timeout = api_key_env, timeout
        self.concurrency, self.max_retries, self.backoff = max(1, concurrency), max_retries, backoff
        self.extra_body = dict(extra_body or {})

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, path: str, body: dict) -> dict:
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code in self.RETRY_STATUS and attempt < self.max_retries:
                    log.warning("%s answered %d; retrying (%d/%d)", url, e.code, attempt + 1, self.max_retries)
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise OpenAIError(f"POST {url} failed with HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt < self.max_retries:
                    log.warning("%s unreachable (%s); retrying (%d/%d)", url, e, attempt + 1, self.max_retries)
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise OpenAIError(f"POST {url} failed: {e}") from None
            except json.JSONDecodeError as e:
                raise OpenAIError(f"POST {url}: the answer is not JSON ({e})") from None
        raise AssertionError("unreachable")

    def _one(self, prompt: PromptText, raw: bool, params: dict, stop: Sequence[str] | None) -> Generation:
        body = {"model": self.model, **params, **self.extra_body}
        if raw:
            body["prompt"] = prompt
            answer = self._post("/completions", body)
        else:
            body["messages"] = prompt_messages(prompt)
            answer = self._post("/chat/completions", body)
        try:
            choice = answer["choices"][0]
            text = choice["text"] if raw else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise OpenAIError(f"{self.base_url}: unexpected answer shape: {json.dumps(answer)[:300]}") from None
        text, hit = cut_at_stop(text or "", stop)
        reason = "length" if choice.get("finish_reason") == "length" and not hit else "stop"
        return Generation(text=text, finish_reason=reason, token_ids=[])

    def generate(
        self,
        prompts: Sequence[PromptText],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        raw: bool = False,
    ) -> list[Generation]:
        check_generate_args(prompts, max_new_tokens, temperature, top_p, raw)
        base: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        if stop:
            base["stop"] = list(stop)[:4]  # the OpenAI API takes at most 4; the rest are applied here

        def job(i: int) -> Generation:
            params = dict(base)
            if seed is not None:
                params["seed"] = seed + i
            return self._one(prompts[i], raw, params, stop)

        if self.concurrency == 1 or len(prompts) < 2:
            return [job(i) for i in range(len(prompts))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(job, range(len(prompts))))
