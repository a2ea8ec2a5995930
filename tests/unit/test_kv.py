"""models/kv.py names the KV cache the way the model inside any wrapper takes it."""

import inspect

import torch

from instructrl.config import LoraConfig
from instructrl.models.kv import cache_argument, cache_of
from instructrl.models.loading import load_model
from instructrl.models.lora import apply_lora


def _expected(model) -> str:
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def test_a_lora_wrapped_model_gets_the_name_of_the_model_inside(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    wanted = _expected(model)
    wrapped = apply_lora(model, LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    assert cache_argument(wrapped) == wanted
    # The PEFT wrapper's own signature takes **kwargs: asking it alone would pick the old name.
    assert "cache" not in inspect.signature(type(wrapped).forward).parameters


def test_a_cache_handed_through_a_wrapper_is_used(tiny_model_dir):
    model = load_model(str(tiny_model_dir)).eval()
    wrapped = apply_lora(model, LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        full = wrapped(input_ids=ids).logits[:, -1]
        first = wrapped(input_ids=ids[:, :4], use_cache=True)
        step = wrapped(input_ids=ids[:, 4:], use_cache=True, **{cache_argument(wrapped): cache_of(first)})
    torch.testing.assert_close(step.logits[:, -1], full, atol=1e-5, rtol=1e-5)
