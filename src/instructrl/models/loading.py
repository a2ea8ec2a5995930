"""Load models and tokenizers; render prompts with the chat template.

Tokenizers are normalized on load so every stage can rely on them:

* a chat template is always present: the tokenizer's own, else :data:`FALLBACK_CHAT_TEMPLATE`;
* the pad token is distinct from EOS (an existing special token that is not EOS is reused,
  else ``<|pad|>`` is added and the embeddings are resized), so EOS is never masked as padding;
* padding is on the left for generation-time batches (``padding_side`` is set per call site).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from instructrl.records import PromptText, prompt_messages

log = logging.getLogger(__name__)

#: Used for tokenizers without a chat template. Each turn is ``<|role|>\n{content}{eos}\n``;
#: the generation prompt is ``<|assistant|>\n``. Role markers are plain text, so any vocabulary
#: can encode them.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def resolve_model_path(name_or_path: str) -> str:
    """'default' -> the cached default model directory; a local dir as is; else a hub id."""
    if name_or_path in ("default", "", None):
        from instructrl.models.default import default_model_dir

        return str(default_model_dir())
    p = Path(name_or_path).expanduser()
    if p.exists():
        final = p / "final"
        if not (p / "config.json").exists() and final.exists():  # a run directory
            return str(final)
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise FileNotFoundError(f"{p} exists but holds no config.json: not a Hugging Face model directory")
        return str(p)
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model directory {name_or_path} does not exist")
    return name_or_path  # a hub id


def load_tokenizer(name_or_path: str, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    return normalize_tokenizer(tok, padding_side=padding_side)


def normalize_tokenizer(tok: Any, padding_side: str = "right") -> Any:
    if tok.eos_token is None:
        raise ValueError(f"tokenizer {tok.name_or_path} has no EOS token; set one before training")
    if not getattr(tok, "chat_template", None):
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        candidates = [tok.unk_token, "<|endoftext|>", "<pad>", "<|pad|>"]
        vocab = tok.get_vocab()
        chosen = next((c for c in candidates if c and c in vocab and vocab[c] != tok.eos_token_id), None)
        if chosen is None:
            tok.add_special_tokens({"pad_token": "<|pad|>"})
        else:
            tok.pad_token = chosen
    tok.padding_side = padding_side
    return tok


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    dropout: float | None = None,
    tokenizer: Any = None,
    device: torch.device | str = "cpu",
    head: str = "lm",
) -> torch.nn.Module:
    """Load a causal LM (``head='lm'``) from a directory or hub id.

    ``dropout`` sets residual, attention and embedding dropout where the architecture has them
    (InstructGPT's SFT used residual dropout 0.2). When ``tokenizer`` grew (a pad token was added),
    the embeddings are resized to match.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "quantization_config", None) is not None and _is_gguf_leftover(config):
        del config.quantization_config
    if dropout is not None:
        set_dropout(config, dropout)
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device)


def decoder_layers(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
    """(the module holding the transformer blocks, the ModuleList of its ``num_hidden_layers`` blocks)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        for child in module.children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n:
                return module, child
    raise TypeError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def freeze_lower_layers(model: torch.nn.Module, trainable_layers: int, keep: tuple[torch.nn.Module, ...] = ()) -> int:
    """Train only the top ``trainable_layers`` decoder layers, the final norm and the modules in
    ``keep`` (a scalar head); the embeddings (and a head tied to them) and the lower layers are frozen,
    so the backward pass stops at the lowest trained layer. Returns the number of trainable parameters."""
    if trainable_layers < 1:
        raise ValueError(f"trainable_layers must be >= 1, got {trainable_layers}")
    backbone, layers = decoder_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    trained = list(layers)[max(0, len(layers) - trainable_layers) :]
    trained += [m for name, m in backbone.named_children() if m is not layers and "norm" in name.lower()]
    for module in trained + list(keep):
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _is_gguf_leftover(config: Any) -> bool:
    q = config.quantization_config
    method = q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)
    return str(method).lower().endswith("gguf")


DROPOUT_KEYS = (
    "resid_pdrop",
    "residual_dropout",
    "hidden_dropout",
    "hidden_dropout_prob",
    "attention_dropout",
    "attn_pdrop",
    "embd_pdrop",
    "dropout",
)


def set_dropout(config: Any, p: float) -> list[str]:
    """Set every dropout probability the config exposes; returns the keys set."""
    keys = [k for k in DROPOUT_KEYS if hasattr(config, k)]
    for k in keys:
        setattr(config, k, p)
    if not keys:
        log.warning("model config %s exposes no dropout setting; model.dropout ignored", type(config).__name__)
    return keys


# --------------------------------------------------------------------------- chat rendering


def render_prompt(tok: Any, prompt: PromptText) -> str:
    """The prompt as the model sees it before the response (chat template + generation prompt)."""
    return tok.apply_chat_template(prompt_messages(prompt), tokenize=False, add_generation_prompt=True)


def encode_prompt(tok: Any, prompt: PromptText) -> list[int]:
    return tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]


def encode_chat(tok: Any, messages: list[dict], train_on: str = "last") -> tuple[list[int], list[bool]]:
    """Token ids of a whole conversation and a mask of the tokens to train on.

    ``train_on='last'`` marks the final assistant turn, ``'all'`` every assistant turn. A turn's
    trained tokens are its content and its end-of-turn token (EOS); template text after EOS is not
    trained. The template must render each conversation prefix as a prefix of the whole (true of
    ChatML-style templates and of the fallback); otherwise a ValueError says so.
    """
    ids: list[int] = []
    mask: list[bool] = []
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant_turns:
        raise ValueError("a training conversation needs at least one assistant turn")
    targets = set(assistant_turns if train_on == "all" else assistant_turns[-1:])
    eos = tok.eos_token_id
    done_text = ""
    for i in assistant_turns:
        before = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        if not before.startswith(done_text) or not upto.startswith(before):
            raise ValueError("the chat template does not render conversation prefixes as prefixes; cannot mask turns")
        ctx_ids = tok(before[len(done_text) :], add_special_tokens=False)["input_ids"]
        ids += ctx_ids
        mask += [False] * len(ctx_ids)
        resp_ids = tok(upto[len(before) :], add_special_tokens=False)["input_ids"]
        if eos in resp_ids:  # train through EOS, not the template's trailing newline
            cut = resp_ids.index(eos) + 1
            tail, resp_ids = resp_ids[cut:], resp_ids[:cut]
        else:
            tail = []
        ids += resp_ids
        mask += [i in targets] * len(resp_ids)
        ids += tail
        mask += [False] * len(tail)
        done_text = upto
    return ids, mask
