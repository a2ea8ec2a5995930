"""The scalar-head reward model: a causal-LM backbone without its unembedding, plus a linear head.

The reward of a (prompt, response) is the head applied to the backbone's hidden state at the last
non-padding token of ``render_prompt(prompt) + response + EOS``. The weights are a standard
Hugging Face ``*ForSequenceClassification`` model with one label (the backbone and a ``score``
head), so a checkpoint is a normal HF directory that other tools load as well. Beside it,
``reward.json`` holds the normalization bias that InstructGPT used: after training, a constant is
added so that the rewards of the demonstrations have mean 0. :func:`load_reward_model` applies it;
it is the loader for ``instructrl rm score`` and for PPO.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructrl.models.kv import cache_argument, cache_of
from instructrl.models.loading import (
    decoder_layers,
    encode_prompt,
    freeze_lower_layers,
    resolve_model_path,
    set_dropout,
)
from instructrl.records import PromptText, atomic_write_text

log = logging.getLogger(__name__)

REWARD_FILE = "reward.json"
FORMAT = "instructrl-scalar-reward-model"


# --------------------------------------------------------------------------- inputs


def truncate_pair(prompt_ids: list[int], response_ids: list[int], max_len: int) -> tuple[list[int], bool]:
    """``prompt + response`` in at most ``max_len`` tokens, and whether anything was cut.

    The prompt loses tokens from its left first, down to its last ``max_len // 4`` tokens; if the
    response alone is still too long, its end is cut (so the reward then reads a cut response).
    """
    total = len(prompt_ids) + len(response_ids)
    if total <= max_len:
        return prompt_ids + response_ids, False
    keep_prompt = max(min(len(prompt_ids), max_len // 4), max_len - len(response_ids))
    keep_prompt = min(keep_prompt, len(prompt_ids))
    prompt_part = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt else []
    return prompt_part + response_ids[: max_len - len(prompt_part)], True


def truncate_group(
    prompt_ids: list[int], responses: list[list[int]], max_len: int
) -> tuple[list[int], list[list[int]], bool]:
    """One prompt cut for all K responses, so that it can be computed once: ``(prompt part, response
    parts, whether anything was cut)``. The prompt keeps at least its last ``max_len // 4`` tokens and
    otherwise what the longest response leaves; each response is cut at its end to fit. Without
    truncation every ``prompt + response`` is the same as :func:`truncate_pair` gives."""
    longest = max(len(r) for r in responses)
    keep = min(len(prompt_ids), max(min(len(prompt_ids), max_len // 4), max_len - longest))
    prompt_part = prompt_ids[len(prompt_ids) - keep :] if keep else []
    room = max_len - len(prompt_part)
    return prompt_part, [r[:room] for r in responses], keep < len(prompt_ids) or longest > room


def response_ids(tok: Any, response: str, ended: bool = True) -> list[int]:
    """Token ids of a response as the reward model reads it: the text, then EOS (end of turn) when
    the response ended. A response its sampler cut off (finish reason ``"length"``) gets no EOS, as
    the policy left it, so the reward model can see that it was cut."""
    ids = tok(response, add_special_tokens=False)["input_ids"]
    return ids + [tok.eos_token_id] if ended else ids


def encode_for_reward(
    tok: Any, prompt: PromptText, response: str, max_len: int, ended: bool = True
) -> tuple[list[int], bool]:
    """Token ids the reward model scores for ``(prompt, response)``; see :func:`truncate_pair`."""
    return truncate_pair(encode_prompt(tok, prompt), response_ids(tok, response, ended), max_len)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] index of the last position whose mask is set (right or left padding alike)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(-1)


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (or left-padded) ``input_ids`` and ``attention_mask`` [B, T]."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


# --------------------------------------------------------------------------- model


class ScalarRewardModel(torch.nn.Module):
    """``forward(input_ids, attention_mask) -> scores [B]`` (fp32): head(h_last) + ``bias``.

    ``model`` is a Hugging Face ``*ForSequenceClassification`` with one label, optionally wrapped
    by peft (LoRA). ``bias`` is the normalization constant (0 while training; differences of
    rewards, and so the loss, do not depend on it).
    """

    def __init__(self, model: torch.nn.Module, bias: float = 0.0):
        super().__init__()
        self.model = model
        self.bias = float(bias)

    @property
    def hf_model(self) -> torch.nn.Module:
        """The underlying ``*ForSequenceClassification`` (LoRA layers, if any, stay injected)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def backbone(self) -> torch.nn.Module:
        hf = self.hf_model
        return getattr(hf, hf.base_model_prefix)

    @property
    def head(self) -> torch.nn.Module:
        hf = self.hf_model
        if not hasattr(hf, "score"):
            raise TypeError(f"{type(hf).__name__} has no 'score' head; expected a *ForSequenceClassification model")
        return hf.score

    def decoder_layers(self) -> torch.nn.ModuleList:
        """The backbone's list of transformer blocks (the ModuleList of num_hidden_layers modules)."""
        return decoder_layers(self.hf_model)[1]

    def hidden_at_last(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, H] backbone hidden state at each sequence's last non-padding token."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        idx = last_token_index(attention_mask)
        return h[torch.arange(h.shape[0], device=h.device), idx]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._score(self.hidden_at_last(input_ids, attention_mask))

    def forward_shared(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        owner: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of N responses to G prompts, each prompt computed once.

        ``prompt_ids`` [G, P] are left-padded, ``response_ids`` [N, R] right-padded, and response n
        answers prompt ``owner[n]``. The prompts' keys and values (the KV cache) are computed in one
        pass and gathered per response, and the responses run on top of them: the same scores as
        :meth:`forward` on the concatenated sequences, with each prompt's tokens forwarded once
        instead of K times. Gradients flow into the prompt pass through the cache.
        """
        p_pos = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=p_pos, use_cache=True)
        cache = cache_of(out)
        cache.reorder_cache(owner)
        mask = torch.cat([prompt_mask[owner], response_mask], dim=1)
        r_pos = prompt_mask.long().sum(-1)[owner, None] + torch.arange(response_ids.shape[1], device=owner.device)
        out = self.backbone(
            input_ids=response_ids,
            attention_mask=mask,
            position_ids=r_pos,
            use_cache=True,
            **{cache_argument(self.backbone): cache},
        )
        h = out.last_hidden_state
        idx = last_token_index(response_mask)
        return self._score(h[torch.arange(h.shape[0], device=h.device), idx])

    def _score(self, h: torch.Tensor) -> torch.Tensor:
        head = self.head
        weight_dtype = next(head.parameters()).dtype
        # the head runs outside autocast so that rewards keep fp32 precision (PPO subtracts them)
        ctx = (
            torch.autocast(device_type=h.device.type, enabled=False)
            if torch.is_autocast_enabled(h.device.type)
            else contextlib.nullcontext()
        )
        with ctx:
            scores = head(h.to(weight_dtype)).squeeze(-1).float()
        return scores + self.bias

    def freeze_lower_layers(self, trainable_layers: int) -> int:
        """Train only the top ``trainable_layers`` decoder layers, the final norm and the head (see
        :func:`instructrl.models.loading.freeze_lower_layers`). Returns the number of trainable parameters."""
        return freeze_lower_layers(self.hf_model, trainable_layers, keep=(self.head,))

    @torch.no_grad()
    def score_texts(
        self,
        tok: Any,
        prompts: list[PromptText],
        responses: list[str],
        *,
        max_len: int = 1024,
        batch_size: int = 8,
        device: torch.device | str | None = None,
        amp_dtype: torch.dtype | None = None,
        progress: bool = False,
        ended: Sequence[bool] | None = None,
    ) -> list[float]:
        """Normalized rewards of ``(prompt, response)`` pairs, batched (sorted by length inside).
        ``ended[i]`` False marks a response that was cut off (read without EOS; default: all ended)."""
        from tqdm.auto import tqdm

        from instructrl.utils.device import autocast

        device = torch.device(device) if device is not None else next(self.parameters()).device
        ended = [True] * len(responses) if ended is None else list(ended)
        if len(ended) != len(responses):
            raise ValueError(f"{len(ended)} ended flags for {len(responses)} responses")
        seqs = [encode_for_reward(tok, p, r, max_len, e)[0] for p, r, e in zip(prompts, responses, ended)]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = [0.0] * len(seqs)
        was_training = self.training
        self.eval()
        for s in tqdm(range(0, len(order), batch_size), desc="rm score", disable=not progress, dynamic_ncols=True):
            idx = order[s : s + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx], tok.pad_token_id)
            with autocast(device, amp_dtype or torch.float32):
                scores = self(ids.to(device), mask.to(device))
            for i, v in zip(idx, scores.tolist()):
                out[i] = v
        self.train(was_training)
        return out

    def merge_and_unload(self) -> ScalarRewardModel:
        """A copy with LoRA adapters merged into the weights (itself when there are none)."""
        if hasattr(self.model, "merge_and_unload"):
            return ScalarRewardModel(self.model.merge_and_unload(), self.bias)
        return self


# --------------------------------------------------------------------------- build, save, load


@contextlib.contextmanager
def _quiet_transformers():
    """Loading a causal LM into a sequence-classification class reports the new head as missing
    and the unembedding as unused, which is intended here; keep those reports out of the log."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def init_reward_model(
    name_or_path: str,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype = torch.float32,
    dropout: float | None = None,
    device: torch.device | str = "cpu",
) -> ScalarRewardModel:
    """A reward model initialized from a causal LM (an SFT checkpoint, the default model, a hub id):
    its backbone without the unembedding and a new scalar head. A reward-model checkpoint loads with
    its trained head (its normalization bias is not applied: use :func:`load_reward_model` for that).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    if (Path(path) / "adapter_config.json").exists() and not (Path(path) / "config.json").exists():
        raise ValueError(
            f"{path} holds a LoRA adapter only; initialize the reward model from a merged checkpoint "
            "(the SFT stage's final/ is merged)"
        )
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    config.num_labels = 1
    if dropout is not None:
        set_dropout(config, dropout)
    if tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=dtype)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return ScalarRewardModel(model).to(device)


def save_reward_info(path: str | os.PathLike, bias: float, **info: Any) -> Path:
    """Write ``reward.json`` (the normalization bias and how it was obtained) into ``path``."""
    data = {"format": FORMAT, "bias": float(bias), **info}
    return atomic_write_text(Path(path) / REWARD_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_reward_info(path: str | os.PathLike) -> dict:
    p = Path(path) / REWARD_FILE
    if not p.exists():
        return {}
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("bias"), (int, float)):
        raise ValueError(f"{p}: field 'bias': expected a number")
    return data


def load_reward_model(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    normalized: bool = True,
) -> tuple[ScalarRewardModel, Any]:
    """Load a reward-model checkpoint (a directory, or a run directory holding ``final/``) and its
    tokenizer; the normalization bias from ``reward.json`` is applied unless ``normalized=False``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from instructrl.models.loading import load_tokenizer

    resolved = resolve_model_path(str(path))
    config = AutoConfig.from_pretrained(resolved)
    archs = getattr(config, "architectures", None) or []
    if (
        archs
        and not any(a.endswith("ForSequenceClassification") for a in archs)
        or getattr(config, "num_labels", 1) != 1
    ):
        raise ValueError(
            f"{resolved} is not a reward model checkpoint (architectures {archs}, "
            f"{getattr(config, 'num_labels', '?')} labels); train one with `instructrl rm`"
        )
    tok = load_tokenizer(resolved)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(resolved, dtype=dtype)
    info = read_reward_info(resolved)
    if not info:
        log.warning("%s has no %s: rewards are not normalized (bias 0)", resolved, REWARD_FILE)
    rm = ScalarRewardModel(model, info.get("bias", 0.0) if normalized else 0.0).to(device)
    rm.eval()
    return rm, tok
