"""A tiny causal LM and tokenizer built offline in about a second, for tests and smoke runs.

The tokenizer is a byte-level BPE trained on a small built-in corpus (so any text encodes), with
ChatML special tokens and a ChatML chat template; the model is a 2-layer Llama with random
weights. ``instructrl`` treats the directory like any other Hugging Face model directory.
"""

from __future__ import annotations

import os
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """The quick brown fox jumps over the lazy dog. A helpful assistant answers questions
clearly and honestly. Write a short poem about the sea. Summarize the following paragraph in one
sentence. Classify the sentiment of this review as positive or negative. What is the capital of
France? Paris is the capital of France. List three ideas for a birthday party. Translate the
sentence into French. Explain how photosynthesis works in simple terms. Plants use sunlight, water
and carbon dioxide to make sugar and oxygen. Rewrite the text to be more formal. Extract the names
of all people mentioned in the text. The answer is 42. one two three four five six seven eight nine
ten. yes no maybe good bad great terrible. Please answer in exactly three bullet points.
"""


def build_tiny_tokenizer(corpus: str | None = None, vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = (corpus or _CORPUS).split("\n")
    tk.train_from_iterator(text * 3, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 512,
    seed: int = 0,
    corpus: str | None = None,
) -> Path:
    """Write a tiny Llama model + tokenizer to ``out_dir`` and return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = build_tiny_tokenizer(corpus, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
